"""The figures of a three-class run: one-vs-rest ROC curves, top-label reliability, example predictions.

Its confusion matrix is `plots.plot_confusion_matrix` with the three classes; the house style is
`xraylib.plot_style`. Each `plot_*` takes class codes (0 normal, 1 bacterial, 2 viral) and the (N, 3) class
probabilities, returns a matplotlib Figure and saves a PNG if asked.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from xraylib.errors import InputError
from xraylib.multiclass import THREE_CLASSES, calibration_scores, class_codes, probability_columns
from xraylib.plot_style import CLASS_COLORS, TRAIN_COLOR, format_interval, save_png, style, titled
from xraylib.plots import image_grid


def plot_ovr_roc(y, probs, result: dict, title: str | None = None, path: str | os.PathLike | None = None) -> Figure:
    """One ROC curve per class against the other two, its AUC and patient-bootstrap CI in the legend
    (`result`: `multiclass.multiclass_metrics_ci` of the same predictions)."""
    y, probs = np.asarray(y).astype(int), np.asarray(probs, dtype=float)
    with style():
        fig = Figure(figsize=(5.6, 5.4), layout="constrained")
        ax = fig.subplots()
        for c, name in enumerate(result["classes"]):
            if not 0 < (y == c).sum() < len(y):
                continue
            fpr, tpr, _ = skm.roc_curve(y == c, probs[:, c])
            auc = result["per_class"][name]["roc_auc"]
            label = f"{name} vs rest: AUC {format_interval(auc)}"
            ax.plot(fpr, tpr, lw=2, color=CLASS_COLORS.get(name), label=label)
        ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1, label="chance")
        ax.set_xlabel("False positive rate (the other classes)")
        ax.set_ylabel("True positive rate (the class)")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize="small")
        macro = format_interval(result["macro_roc_auc"])
        note = f"macro AUC {macro}; {result['n_images']} images, {result['n_patients']} patients"
        ax.set_title(titled(title, "One-vs-rest ROC curves", note + "\n95 % CI: bootstrap over patients"))
    return save_png(fig, path)


def plot_top_label_reliability(
    y, probs, raw=None, n_bins: int = 10, title: str | None = None, path: str | os.PathLike | None = None
) -> Figure:
    """Top-label reliability: the share of correct argmax predictions against their probability, per bin, with the
    top-label ECE; with `raw`, the model's probabilities before calibration as a second curve."""
    y, probs = np.asarray(y).astype(int), np.asarray(probs, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    with style():
        fig = Figure(figsize=(5.6, 5.2), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], ls=":", color="0.4", lw=1.2, label="perfect calibration")
        curves = [(raw, "before calibration", "s--", "0.45")] if raw is not None else []
        curves.append((probs, "calibrated" if raw is not None else "model", "o-", TRAIN_COLOR))
        for q, name, marker, color in curves:
            q = np.asarray(q, dtype=float)
            confidence, correct = q.max(axis=1), q.argmax(axis=1) == y
            bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
            count = np.bincount(bins, minlength=n_bins)
            filled = count > 0
            mean_p = np.bincount(bins, weights=confidence, minlength=n_bins)[filled] / count[filled]
            rate = np.bincount(bins, weights=correct, minlength=n_bins)[filled] / count[filled]
            ece = calibration_scores(y, q)["ece"]
            ax.plot(mean_p, rate, marker, color=color, lw=2, ms=6, label=f"{name} (top-label ECE {ece:.3f})")
        ax.set_xticks(edges[::2])
        ax.set_xlabel("Probability of the predicted class")
        ax.set_ylabel("Fraction of correct predictions")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.legend(loc="upper left", fontsize="small")
        ax.set_title(titled(title, "Top-label reliability", f"{len(y)} test images, {n_bins} bins"))
    return save_png(fig, path)


def sample_cells(frame: pd.DataFrame, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Up to n rows of a three-class predictions frame spread over its (true, predicted) cells, the correct cells
    and then the errors in turn; sorted by true class, then predicted class."""
    y = class_codes(frame["label"], where="label")
    pred = class_codes(frame["predicted"], where="predicted")
    rng = np.random.default_rng(seed)
    cells = [(i, i) for i in range(3)] + [(i, j) for i in range(3) for j in range(3) if i != j]
    pools = [list(rng.permutation(np.flatnonzero((y == i) & (pred == j)))) for i, j in cells]
    chosen: list[int] = []
    while len(chosen) < min(n, len(frame)):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return (
        frame.iloc[chosen]
        .assign(true_code=y[chosen], pred_code=pred[chosen])
        .sort_values(["true_code", "pred_code"], kind="stable")
    )


def plot_three_class_examples(
    frame: pd.DataFrame,
    n: int = 12,
    ncols: int = 4,
    seed: int = 0,
    image_size: int | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """A grid of test images over the (true, predicted) cells: true and predicted class and the predicted class's
    probability in each title; errors framed in red. `frame`: a three-class predictions.csv (with `path`)."""
    if "path" not in frame:
        raise InputError("the example grid needs a `path` column with each image's file")
    sample = sample_cells(frame, n, seed)
    columns = probability_columns(THREE_CLASSES)
    titles = [
        f"true {THREE_CLASSES[row.true_code].title()}\npredicted {THREE_CLASSES[row.pred_code].title()}, "
        f"p = {getattr(row, columns[row.pred_code]):.3f}"
        for row in sample.itertuples()
    ]
    errors = list(sample["true_code"] != sample["pred_code"])
    suptitle = titled(title, "Example test predictions", "p = probability of the predicted class; errors framed in red")
    return image_grid(list(sample["path"]), titles, errors, suptitle, ncols, image_size, path)
