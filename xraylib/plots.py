"""The figures of one run: training curves, confusion matrix, ROC and PR curves, reliability, example predictions.

Each `plot_*` returns a matplotlib Figure and saves a PNG if asked; the house style is `xraylib.plot_style`.
The other figures: `xraylib.gradcam_plots` (a run's Grad-CAM grid, one prediction's overlay),
`xraylib.compare_plots` (several runs), `xraylib.data_plots` (a dataset).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from xraylib.errors import InputError
from xraylib.metrics import expected_calibration_error, infer_threshold, reliability_bins
from xraylib.plot_style import (
    BEST_COLOR,
    CLASS_COLORS,
    CLASS_NAMES,
    ERROR_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    format_ci,
    frame_axis,
    prediction_columns,
    save_png,
    style,
    thumbnail,
    titled,
)


def _name(y: int) -> str:
    return CLASS_NAMES[int(y)]


# ---------------------------------------------------------------------------------------------- training


TRAINING_PANELS = (("loss", "Loss (binary cross-entropy)"), ("auc", "ROC-AUC"), ("accuracy", "Accuracy"))
THREE_CLASS_PANELS = (
    ("loss", "Loss (categorical cross-entropy)"),
    ("auc", "ROC-AUC (micro one-vs-rest)"),
    ("accuracy", "Accuracy"),
)


def best_epoch(history: pd.DataFrame, monitor: str = "val_auc") -> tuple[int | None, str | None]:
    """Row position of the best epoch by `monitor` (max for AUC/accuracy, min for loss), or (None, None)."""
    for column in (monitor, "val_auc", "val_loss", "val_accuracy"):
        if column in history and history[column].notna().any():
            values = history[column]
            return int(values.idxmin() if "loss" in column else values.idxmax()), column
    return None, None


def plot_training_curves(
    history: pd.DataFrame,
    monitor: str = "val_auc",
    title: str | None = None,
    path: str | os.PathLike | None = None,
    panels: tuple = TRAINING_PANELS,
) -> Figure:
    """Loss, ROC-AUC and accuracy per epoch, train vs validation, the best epoch marked (history.csv frame);
    `panels`: (column, title) of each panel (THREE_CLASS_PANELS for a three-class run)."""
    if history is None or len(history) == 0:
        raise InputError("training history is empty: no epoch to plot")
    history = history.reset_index(drop=True)
    if "epoch" in history:
        epochs = history["epoch"].to_numpy() + (1 if history["epoch"].min() == 0 else 0)
    else:
        epochs = np.arange(1, len(history) + 1)
    best, best_column = best_epoch(history, monitor)
    marker = "o" if len(history) <= 30 else None
    with style():
        fig = Figure(figsize=(13, 3.9), layout="constrained")
        axes = fig.subplots(1, 3)
        for ax, (key, label) in zip(axes, panels, strict=True):
            drawn = False
            for column, name, color in ((key, "train", TRAIN_COLOR), (f"val_{key}", "validation", VAL_COLOR)):
                if column in history and history[column].notna().any():
                    ax.plot(epochs, history[column], marker=marker, ms=3.5, color=color, lw=1.8, label=name)
                    drawn = True
            ax.set_title(label)
            if not drawn:
                ax.text(
                    0.5,
                    0.5,
                    f"{label.split(' (')[0]}\nnot recorded in the history",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.4",
                    fontsize=11,
                )
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            if best is not None:
                ax.axvline(
                    epochs[best],
                    color=BEST_COLOR,
                    ls="--",
                    lw=1.2,
                    label=f"best epoch {epochs[best]} ({'min' if 'loss' in best_column else 'max'} {best_column})",
                )
                if f"val_{key}" in history and pd.notna(history.loc[best, f"val_{key}"]):
                    ax.plot(epochs[best], history.loc[best, f"val_{key}"], "*", color=BEST_COLOR, ms=13, zorder=5)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(label.split(" (")[0])
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
            if key != "loss":
                low = np.nanmin([history[c].min() for c in (key, f"val_{key}") if c in history] or [0.0])
                ax.set_ylim(max(0.0, min(low, 0.9) - 0.05), 1.01)
            ax.legend(loc="best", fontsize="small")
        fig.suptitle(title or "Training curves")
    return save_png(fig, path)


# ---------------------------------------------------------------------------------------------- one run


def plot_confusion_matrix(
    y_true,
    y_pred,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    classes: tuple[str, ...] = CLASS_NAMES,
) -> Figure:
    """Confusion matrix of class codes (0 = classes[0], ...): counts and row percentages, shaded by row percentage.
    Normal / Pneumonia by default; the three-class task passes its three classes."""
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    k = len(classes)
    counts = skm.confusion_matrix(y_true, y_pred, labels=list(range(k)))
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = counts / counts.sum(axis=1, keepdims=True) * 100
    with style():
        fig = Figure(figsize=(2.5 * k, 2.15 * k), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(np.nan_to_num(rows), cmap="Blues", vmin=0, vmax=100)
        for i in range(k):
            for j in range(k):
                percent = "n/a" if np.isnan(rows[i, j]) else f"{rows[i, j]:.1f} %"
                color = "white" if np.nan_to_num(rows[i, j]) > 55 else "black"
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]}\n{percent}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=13,
                    fontweight="bold",
                )
        ax.set_xticks(range(k), [name.title() for name in classes])
        ax.set_yticks(range(k), [name.title() for name in classes])
        ax.set_xlabel("Predicted label")
        ax.set_ylabel("True label")
        ax.grid(False)
        ax.set_title(titled(title, "Confusion matrix", f"n = {counts.sum()} images"))
        bar = fig.colorbar(image, ax=ax, shrink=0.85)
        bar.set_label("% of the true class (row)")
    return save_png(fig, path)


def _legend_with_ci(name: str, entry: dict) -> str:
    """`NAME value (95 % CI low–high)`, without the CI when there is none."""
    ci = format_ci(entry)
    return f"{name} {entry['value']:.3f}" + (f" (95 % CI {ci})" if ci else "")


def _mark_point(ax, x: float, y: float, label: str) -> None:
    """The operating point: a large red dot with a white edge, above the curves."""
    ax.plot(x, y, "o", ms=9, color=ERROR_COLOR, mec="white", mew=1.5, zorder=5, label=label)


def plot_roc_pr(
    y,
    p,
    threshold: float = 0.5,
    groups=None,
    metrics: dict | None = None,
    n_boot: int = 500,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """ROC and precision-recall curves, AUC with its patient-bootstrap CI in the legend, operating point marked.

    `metrics`: a result of xraylib.metrics.binary_metrics_ci at `threshold` (computed here when absent).
    """
    from xraylib.metrics import binary_metrics_ci

    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if not 0 < y.sum() < len(y) or np.isnan(p).any():
        raise InputError("ROC and PR curves need probabilities and both classes")
    metrics = metrics or binary_metrics_ci(y, p, groups, threshold, n_boot=n_boot)
    fpr, tpr, _ = skm.roc_curve(y, p)
    precision, recall, _ = skm.precision_recall_curve(y, p)
    pred = p >= threshold
    sens, spec = (pred & (y == 1)).sum() / y.sum(), (~pred & (y == 0)).sum() / (y == 0).sum()
    ppv = (pred & (y == 1)).sum() / max(pred.sum(), 1)
    prevalence = y.mean()
    point = f"threshold {threshold:.3g}"
    with style():
        fig = Figure(figsize=(10, 5.3), layout="constrained")
        roc, pr = fig.subplots(1, 2)
        roc.plot(
            fpr,
            tpr,
            color=TRAIN_COLOR,
            lw=2,
            label=_legend_with_ci("ROC-AUC", metrics["roc_auc"]),
        )
        roc.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1, label="chance")
        _mark_point(roc, 1 - spec, sens, f"{point}: sensitivity {sens:.3f}, specificity {spec:.3f}")
        roc.set_xlabel("1 − specificity (false positive rate)")
        roc.set_ylabel("Sensitivity (true positive rate)")
        roc.set_title("ROC curve")
        pr.step(
            recall,
            precision,
            where="post",
            color=TRAIN_COLOR,
            lw=2,
            label=_legend_with_ci("PR-AUC (AP)", metrics["pr_auc"]),
        )
        pr.axhline(prevalence, ls=":", color="0.5", lw=1, label=f"chance (prevalence {prevalence:.3f})")
        _mark_point(pr, sens, ppv, f"{point}: recall {sens:.3f}, precision {ppv:.3f}")
        pr.set_xlabel("Recall (sensitivity)")
        pr.set_ylabel("Precision (PPV)")
        pr.set_title("Precision–recall curve")
        for ax in (roc, pr):
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_aspect("equal")
            ax.legend(loc="lower right" if ax is roc else "lower left", fontsize="small")
        n_pat = metrics.get("n_patients", len(y))
        note = f"{len(y)} test images, {n_pat} patients; 95 % CI: bootstrap over patients"
        fig.suptitle(titled(title, "ROC and precision–recall curves", note))
    return save_png(fig, path)


def _reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(filled bins, mean probability, observed pneumonia rate) per equal-width bin of p."""
    count, p_sum, positives = reliability_bins(y, p, n_bins)
    filled = count > 0
    return filled, p_sum[filled] / count[filled], positives[filled] / count[filled]


def plot_reliability(
    y,
    p,
    n_bins: int = 10,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    p_uncalibrated=None,
) -> Figure:
    """Reliability diagram (observed pneumonia rate vs mean predicted probability per bin) with the ECE, and the
    histogram of predicted probabilities by true class below; with `p_uncalibrated`, the model's probabilities
    before calibration as a second curve."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if np.isnan(p).any():
        raise InputError("a reliability diagram needs probabilities, not hard labels")
    edges = np.linspace(0, 1, n_bins + 1)
    filled, mean_p, rate = _reliability_curve(y, p, n_bins)
    ece = expected_calibration_error(y, p, n_bins)
    with style():
        fig = Figure(figsize=(5.6, 6.4), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.2))
        centers = (edges[:-1] + edges[1:])[filled] / 2
        top.bar(
            centers,
            rate,
            width=1 / n_bins,
            color=TRAIN_COLOR,
            alpha=0.25,
            edgecolor=TRAIN_COLOR,
            label="observed rate per bin",
        )
        top.plot([0, 1], [0, 1], ls=":", color="0.4", lw=1.2, label="perfect calibration")
        model = "calibrated" if p_uncalibrated is not None else "model"
        if p_uncalibrated is not None:
            raw = np.asarray(p_uncalibrated, dtype=float)
            _, raw_p, raw_rate = _reliability_curve(y, raw, n_bins)
            raw_ece = expected_calibration_error(y, raw, n_bins)
            label = f"before calibration (ECE {raw_ece:.3f})"
            top.plot(raw_p, raw_rate, "s--", color="0.45", lw=1.5, ms=5, label=label)
        top.plot(mean_p, rate, "o-", color=TRAIN_COLOR, lw=2, ms=6, label=f"{model} (ECE {ece:.3f}, {n_bins} bins)")
        top.set_ylabel("Observed fraction of pneumonia")
        top.set_ylim(-0.01, 1.01)
        top.legend(loc="upper left", fontsize="small")
        top.set_title(title or "Reliability diagram")
        for label in (0, 1):
            bottom.hist(
                p[y == label],
                bins=edges,
                alpha=0.6,
                color=CLASS_COLORS[_name(label).lower()],
                label=f"true {_name(label)}",
            )
        calibrated = " (calibrated)" if p_uncalibrated is not None else ""
        bottom.set_xlabel(f"Predicted probability of pneumonia{calibrated}")
        bottom.set_ylabel("Images")
        bottom.set_xlim(0, 1)
        bottom.set_ylim(0, bottom.get_ylim()[1] * 1.3)  # room for the legend
        bottom.legend(loc="upper center", fontsize="small", ncols=2)
    return save_png(fig, path)


def sample_outcomes(predictions: pd.DataFrame, n: int = 16, seed: int = 0) -> pd.DataFrame:
    """Up to n rows spread evenly over TP, TN, FP, FN (short categories filled from the others), in that order.

    Accepts tidy_predictions' frame or a raw predictions.csv frame; keeps every column, adds y_true, p, y_pred
    and `outcome`.
    """
    frame = prediction_columns(predictions).reset_index(drop=True)
    outcome = np.where(
        frame["y_true"] == 1, np.where(frame["y_pred"] == 1, "TP", "FN"), np.where(frame["y_pred"] == 1, "FP", "TN")
    )
    frame = frame.assign(outcome=outcome)
    rng = np.random.default_rng(seed)
    pools = {k: list(rng.permutation(np.flatnonzero(outcome == k))) for k in ("TP", "TN", "FP", "FN")}
    chosen: list[int] = []
    while len(chosen) < min(n, len(frame)):
        for key in pools:
            if pools[key] and len(chosen) < n:
                chosen.append(pools[key].pop())
    order = {"TP": 0, "TN": 1, "FP": 2, "FN": 3}
    return frame.iloc[chosen].sort_values("outcome", key=lambda s: s.map(order), kind="stable")


def plot_examples(
    predictions: pd.DataFrame,
    n: int = 16,
    ncols: int = 4,
    seed: int = 0,
    image_size: int | None = None,
    threshold: float | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """A grid of test images sampled across TP/TN/FP/FN: true, predicted and P(pneumonia) in each title; errors
    framed in red. `predictions` needs a `path` column (images are read with xraylib.images.load_gray); the
    threshold shown is inferred from the predictions when not given."""
    if "path" not in predictions:
        raise InputError("the example grid needs a `path` column with each image's file")
    sample = sample_outcomes(predictions, n, seed)
    if threshold is None:
        threshold = infer_threshold(prediction_columns(predictions))
    titles = [
        f"{row['outcome']} · true {_name(row['y_true'])}\npredicted {_name(row['y_pred'])}"
        + ("" if pd.isna(row["p"]) else f", p = {row['p']:.3f}")
        for _, row in sample.iterrows()
    ]
    cut = f", threshold {threshold:.3g}" if threshold is not None else ""
    suptitle = titled(title, "Example test predictions", f"p = P(pneumonia){cut}; errors framed in red")
    errors = list(sample["y_true"] != sample["y_pred"])
    return image_grid(list(sample["path"]), titles, errors, suptitle, ncols, image_size, path)


def image_grid(
    paths: list,
    titles: list[str],
    errors: list[bool],
    suptitle: str,
    ncols: int = 4,
    image_size: int | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Images in a grid with a title each; errors titled and framed in red."""
    from xraylib.images import load_gray

    rows = math.ceil(len(paths) / ncols)
    with style():
        fig = Figure(figsize=(3.0 * ncols, 3.35 * rows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, ncols)).ravel()
        for ax, file, text, error in zip(axes, paths, titles, errors, strict=False):
            ax.imshow(thumbnail(load_gray(file, size=image_size)), cmap="gray", vmin=0, vmax=255)
            color, weight = (ERROR_COLOR, "bold") if error else ("black", "normal")
            ax.set_title(text, fontsize=9.5, color=color, fontweight=weight)
            frame_axis(ax, error)
        for ax in axes[len(paths) :]:
            ax.set_visible(False)
        fig.suptitle(suptitle)
    return save_png(fig, path)
