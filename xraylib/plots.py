"""Every figure of a run and of a comparison: each `plot_*` returns a matplotlib Figure and saves a PNG if asked.

Figures are built with `matplotlib.figure.Figure` (the Agg canvas), never through pyplot's global state: they work
headless, leak nothing in long sweeps, and still display in Jupyter when returned from a cell.
Classes are called Normal and Pneumonia everywhere (the study's "Covid" label was wrong: its test set holds none).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from xraylib.errors import InputError
from xraylib.fileio import atomic_path
from xraylib.metrics import infer_threshold

CLASS_NAMES = ("Normal", "Pneumonia")
CLASS_COLORS = {"Normal": "#4C72B0", "Pneumonia": "#DD8452"}
TRAIN_COLOR, VAL_COLOR, BEST_COLOR, ERROR_COLOR = "#4C72B0", "#DD8452", "#2CA02C", "#D62728"
DPI = 150
OTHER_GROUP = "Pneumonia: other\n(from papers)"
SUBSET_TITLES = {"train": "Train", "val": "Validation", "test": "Test"}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Seaborn's whitegrid look at a readable paper size, scoped to one figure."""
    import matplotlib as mpl
    import seaborn as sns

    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.85))
    rc.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "axes.titleweight": "bold",
            "legend.framealpha": 0.9,
            "figure.titlesize": "large",
            "figure.titleweight": "bold",
        }
    )
    with mpl.rc_context(rc):
        yield


def save_png(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Save the figure as PNG (dpi 150, tight box, atomically) when a path is given."""
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return fig


def _title(title: str | None, default: str, note: str = "") -> str:
    """The caller's title (or the default), with an explanatory note on a second line."""
    return (title or default) + (f"\n{note}" if note else "")


def _frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """Columns y_true, p, y_pred from either read_predictions' frame or a raw predictions.csv frame."""
    from xraylib.metrics import LABEL_VALUES

    frame = predictions.copy()
    renames = {"label": "y_true", "p_pneumonia": "p", "predicted": "y_pred"}
    for raw, tidy in renames.items():
        if tidy not in frame and raw in frame:
            values = frame[raw]
            if not pd.api.types.is_numeric_dtype(values):
                values = values.astype(str).str.strip().str.lower().map(LABEL_VALUES)
            frame[tidy] = values
    missing = [c for c in ("y_true", "p") if c not in frame]
    if missing:
        raise InputError(f"predictions frame lacks column(s) {', '.join(missing)} (or label, p_pneumonia)")
    if "y_pred" not in frame:
        frame["y_pred"] = (frame["p"] >= 0.5).astype(int)
    return frame


def _name(y: int) -> str:
    return CLASS_NAMES[int(y)]


def _gray_limits(images: np.ndarray) -> tuple[float, float]:
    """Fixed display range so brightness differences stay visible: [0, 255] or [0, 1]."""
    return (0.0, 1.0) if images.dtype.kind == "f" and np.nanmax(images) <= 1.0 else (0.0, 255.0)


def _thumbnail(image: np.ndarray, side: int = 400) -> np.ndarray:
    """Downscale to at most `side` pixels on the long side and pad to a square (black), keeping the aspect."""
    from PIL import Image

    if max(image.shape) > side:
        small = Image.fromarray(image)
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
        image = np.asarray(small)
    h, w = image.shape
    square = np.zeros((max(h, w), max(h, w)), dtype=image.dtype)  # letterbox: equal tiles, aspect kept
    top, left = (max(h, w) - h) // 2, (max(h, w) - w) // 2
    square[top : top + h, left : left + w] = image
    return square


def frame_axis(ax, error: bool | None) -> None:
    """No ticks; a thick red frame for errors, a thin grey one otherwise."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(ERROR_COLOR if error else "#BBBBBB")
        spine.set_linewidth(4.0 if error else 0.8)


# ---------------------------------------------------------------------------------------------- training


TRAINING_PANELS = (("loss", "Loss (binary cross-entropy)"), ("auc", "ROC-AUC"), ("accuracy", "Accuracy"))


def best_epoch(history: pd.DataFrame, monitor: str = "val_auc") -> tuple[int | None, str | None]:
    """Row position of the best epoch by `monitor` (max for AUC/accuracy, min for loss), or (None, None)."""
    for column in (monitor, "val_auc", "val_loss", "val_accuracy"):
        if column in history and history[column].notna().any():
            values = history[column]
            return int(values.idxmin() if "loss" in column else values.idxmax()), column
    return None, None


def plot_training_curves(
    history: pd.DataFrame, monitor: str = "val_auc", title: str | None = None, path: str | os.PathLike | None = None
) -> Figure:
    """Loss, ROC-AUC and accuracy per epoch, train vs validation, the best epoch marked (history.csv frame)."""
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
        for ax, (key, label) in zip(axes, TRAINING_PANELS, strict=True):
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


def plot_confusion_matrix(y_true, y_pred, title: str | None = None, path: str | os.PathLike | None = None) -> Figure:
    """2x2 confusion matrix: counts and row percentages, Normal / Pneumonia, shaded by row percentage."""
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    counts = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = counts / counts.sum(axis=1, keepdims=True) * 100
    with style():
        fig = Figure(figsize=(5.0, 4.3), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(np.nan_to_num(rows), cmap="Blues", vmin=0, vmax=100)
        for i in range(2):
            for j in range(2):
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
        ax.set_xticks([0, 1], CLASS_NAMES)
        ax.set_yticks([0, 1], CLASS_NAMES)
        ax.set_xlabel("Predicted label")
        ax.set_ylabel("True label")
        ax.grid(False)
        ax.set_title(_title(title, "Confusion matrix", f"n = {counts.sum()} images"))
        bar = fig.colorbar(image, ax=ax, shrink=0.85)
        bar.set_label("% of the true class (row)")
    return save_png(fig, path)


def _ci_text(entry: dict | None) -> str:
    if not entry or entry.get("low") is None:
        return ""
    return f" (95 % CI {entry['low']:.3f}–{entry['high']:.3f})"


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

    `metrics`: a result of xraylib.metrics.evaluate at `threshold` (computed here when absent).
    """
    from xraylib.metrics import evaluate

    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if not 0 < y.sum() < len(y) or np.isnan(p).any():
        raise InputError("ROC and PR curves need probabilities and both classes")
    metrics = metrics or evaluate(y, p, groups, threshold, n_boot=n_boot)
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
            label=f"ROC-AUC {metrics['roc_auc']['value']:.3f}{_ci_text(metrics['roc_auc'])}",
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
            label=f"PR-AUC (AP) {metrics['pr_auc']['value']:.3f}{_ci_text(metrics['pr_auc'])}",
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
        fig.suptitle(_title(title, "ROC and precision–recall curves", note))
    return save_png(fig, path)


def _reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(filled bins, mean probability, observed pneumonia rate) per equal-width bin of p."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    filled = count > 0
    mean_p = np.bincount(bins, weights=p, minlength=n_bins)[filled] / count[filled]
    rate = np.bincount(bins, weights=y, minlength=n_bins)[filled] / count[filled]
    return filled, mean_p, rate


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
    from xraylib.metrics import expected_calibration_error

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
                p[y == label], bins=edges, alpha=0.6, color=CLASS_COLORS[_name(label)], label=f"true {_name(label)}"
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

    Accepts read_predictions' frame or a raw predictions.csv frame; keeps every column, adds y_true, p, y_pred
    and `outcome`.
    """
    frame = _frame(predictions).reset_index(drop=True)
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
    from xraylib.images import load_gray

    if "path" not in predictions:
        raise InputError("the example grid needs a `path` column with each image's file")
    sample = sample_outcomes(predictions, n, seed)
    if threshold is None:
        threshold = infer_threshold(_frame(predictions))
    rows = math.ceil(len(sample) / ncols)
    with style():
        fig = Figure(figsize=(3.0 * ncols, 3.35 * rows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, ncols)).ravel()
        for ax, (_, row) in zip(axes, sample.iterrows(), strict=False):
            image = _thumbnail(load_gray(row["path"], size=image_size))
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            error = row["y_true"] != row["y_pred"]
            prob = "" if pd.isna(row["p"]) else f", p = {row['p']:.3f}"
            ax.set_title(
                f"{row['outcome']} · true {_name(row['y_true'])}\npredicted {_name(row['y_pred'])}{prob}",
                fontsize=9.5,
                color=ERROR_COLOR if error else "black",
                fontweight="bold" if error else "normal",
            )
            frame_axis(ax, error)
        for ax in axes[len(sample) :]:
            ax.set_visible(False)
        cut = f", threshold {threshold:.3g}" if threshold is not None else ""
        fig.suptitle(_title(title, "Example test predictions", f"p = P(pneumonia){cut}; errors framed in red"))
    return save_png(fig, path)


def plot_gradcam_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str] | None = None,
    errors: Sequence[bool] | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    ncols: int = 4,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Grad-CAM heatmaps (N, S, S) in [0, 1] over their images (N, S, S) (or (N, S, S, 1)); errors framed red."""
    images = np.asarray(images)
    heatmaps = np.asarray(heatmaps, dtype=float)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if heatmaps.ndim == 4 and heatmaps.shape[-1] == 1:
        heatmaps = heatmaps[..., 0]
    if images.ndim != 3 or heatmaps.ndim != 3 or len(images) != len(heatmaps) or not len(images):
        raise InputError(
            f"Grad-CAM grid needs images (N,S,S) and heatmaps (N,S,S); got {images.shape}, {heatmaps.shape}"
        )
    count = len(images)
    for name, seq in (("titles", titles), ("errors", errors)):
        if seq is not None and len(seq) != count:
            raise InputError(f"Grad-CAM grid: {len(seq)} {name} for {count} images")
    ncols = min(ncols, count)
    rows = math.ceil(count / ncols)
    vmin, vmax = _gray_limits(images)
    with style():
        fig = Figure(figsize=(3.0 * ncols + 0.9, 3.2 * rows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, ncols)).ravel()
        overlay = None
        for i, ax in enumerate(axes[:count]):
            h, w = images[i].shape
            extent = (-0.5, w - 0.5, h - 0.5, -0.5)
            ax.imshow(images[i], cmap="gray", vmin=vmin, vmax=vmax, extent=extent)
            overlay = ax.imshow(
                np.clip(heatmaps[i], 0, 1),
                cmap=cmap,
                alpha=alpha,
                vmin=0,
                vmax=1,
                extent=extent,
                interpolation="bilinear",
            )
            error = bool(errors[i]) if errors is not None else None
            if titles is not None:
                ax.set_title(titles[i], fontsize=9.5, color=ERROR_COLOR if error else "black")
            frame_axis(ax, error)
        for ax in axes[count:]:
            ax.set_visible(False)
        bar = fig.colorbar(overlay, ax=axes.tolist(), shrink=0.6, pad=0.02)
        bar.set_label("Grad-CAM activation (normalised)")
        suffix = "errors framed in red" if errors is not None and any(errors) else ""
        fig.suptitle(_title(title, "Grad-CAM: where the model looked", suffix))
    return save_png(fig, path)


# ---------------------------------------------------------------------------------------------- the dataset


def plot_class_distribution(
    index: pd.DataFrame, title: str | None = None, path: str | os.PathLike | None = None
) -> Figure:
    """Normal / Pneumonia counts with counts on the bars: all, train and test (index columns label, split); with a
    `subset` column (a run's index) the panels are all, train, validation and test subsets."""
    missing = [c for c in ("label", "split") if c not in index]
    if missing:
        raise InputError(f"class distribution needs the index columns label and split (missing {', '.join(missing)})")
    labels = index["label"].astype(str).str.lower()
    everything = np.ones(len(index), bool)
    if "subset" in index:
        subset = index["subset"].astype(str).str.lower()
        panels = [("All images", everything)]
        panels += [(name, (subset == key).to_numpy()) for key, name in SUBSET_TITLES.items() if (subset == key).any()]
    else:
        split = index["split"].astype(str).str.lower()
        panels = [
            ("All images", everything),
            ("Train", (split == "train").to_numpy()),
            ("Test", (split == "test").to_numpy()),
        ]
    with style():
        fig = Figure(figsize=(4.0 * len(panels), 4.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (name, mask) in zip(axes, panels, strict=True):
            counts = [int(((labels == c.lower()).to_numpy() & mask).sum()) for c in CLASS_NAMES]
            total = max(sum(counts), 1)
            bars = ax.bar(CLASS_NAMES, counts, color=[CLASS_COLORS[c] for c in CLASS_NAMES], width=0.6)
            ax.bar_label(bars, labels=[f"{c:,}\n({c / total:.0%})" for c in counts], padding=3, fontsize=10)
            ax.set_ylim(0, max(max(counts), 1) * 1.22)
            ax.set_title(f"{name} (n = {sum(counts):,})")
            ax.set_ylabel("Images")
            ax.grid(axis="x", visible=False)
        fig.suptitle(title or "Class distribution")
    return save_png(fig, path)


def plot_samples(
    index: pd.DataFrame,
    per_group: int = 4,
    seed: int = 0,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """A few images of each group (Normal, bacterial, viral, pneumonia from papers) from a dataset index (path,
    label, subtype, source), one row per group, titled with file name and split."""
    from xraylib.images import load_gray

    missing = [c for c in ("path", "label") if c not in index]
    if missing:
        raise InputError(f"sample grid needs the index columns path and label (missing {', '.join(missing)})")
    subtype = index["subtype"].astype(str).str.lower() if "subtype" in index else pd.Series("none", index=index.index)
    group = np.where(index["label"].astype(str).str.lower() == "normal", "Normal", "")
    if "source" in index:  # the ~70 images from papers (not Kermany's): a known shortcut source
        group = np.where((group == "") & (index["source"].astype(str) == "other").to_numpy(), OTHER_GROUP, group)
    for key, name in (("bacteria", "Pneumonia: bacterial"), ("virus", "Pneumonia: viral")):
        group = np.where((group == "") & (subtype == key).to_numpy(), name, group)
    group = np.where(group == "", OTHER_GROUP, group)
    rng = np.random.default_rng(seed)
    rows = []
    for name in ("Normal", "Pneumonia: bacterial", "Pneumonia: viral", OTHER_GROUP):
        members = np.flatnonzero(group == name)
        if len(members):
            rows.append((name, rng.choice(members, min(per_group, len(members)), replace=False)))
    if not rows:
        raise InputError("the index holds no image to show")
    with style():
        fig = Figure(figsize=(2.9 * per_group + 0.6, 3.2 * len(rows) + 0.4), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(rows), per_group))
        for r, (name, members) in enumerate(rows):
            for c in range(per_group):
                ax = axes[r, c]
                if c >= len(members):
                    ax.set_visible(False)
                    continue
                record = index.iloc[members[c]]
                ax.imshow(_thumbnail(load_gray(record["path"])), cmap="gray", vmin=0, vmax=255)
                split = f" ({record['split']})" if "split" in index else ""
                name_text = _short(str(record.get("file", Path(record["path"]).name)))
                ax.set_title(f"{name_text}{split}", fontsize=8.5, fontweight="normal")
                frame_axis(ax, None)
                if c == 0:
                    ax.set_ylabel(name, fontsize=11, fontweight="bold")
        fig.suptitle(title or "Sample images by class")
    return save_png(fig, path)


def _short(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_image_sizes(
    index: pd.DataFrame,
    max_images: int = 3000,
    seed: int = 0,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Image width vs height (read from file headers) by source, and the distribution of aspect ratios."""
    from PIL import Image

    if "path" not in index:
        raise InputError("image sizes need the index column path")
    rng = np.random.default_rng(seed)
    rows = index if len(index) <= max_images else index.iloc[np.sort(rng.choice(len(index), max_images, False))]
    sizes = []
    for file in rows["path"]:
        try:
            with Image.open(file) as im:  # header only: no pixel is decoded
                sizes.append(im.size)
        except OSError:
            sizes.append((np.nan, np.nan))
    size = pd.DataFrame(sizes, columns=["width", "height"], index=rows.index)
    source = rows["source"].astype(str) if "source" in rows else pd.Series("all", index=rows.index)
    sampled = f"random {len(rows):,} of {len(index):,} images" if len(rows) < len(index) else f"{len(rows):,} images"
    with style():
        fig = Figure(figsize=(11, 4.6), layout="constrained")
        scatter, hist = fig.subplots(1, 2)
        for i, name in enumerate(sorted(source.unique())):
            part = size[source == name]
            color = ("#4C72B0", "#C44E52", "#55A868")[i % 3]
            scatter.scatter(part["width"], part["height"], s=8, alpha=0.5, color=color, label=f"{name} ({len(part):,})")
            hist.hist(part["width"] / part["height"], bins=40, alpha=0.6, color=color, label=name)
        scatter.set_xlabel("Width (pixels)")
        scatter.set_ylabel("Height (pixels)")
        scatter.set_title("Image size")
        scatter.legend(title="source", fontsize="small")
        hist.set_xlabel("Aspect ratio (width / height)")
        hist.set_ylabel("Images")
        hist.set_title("Aspect ratio")
        hist.legend(title="source", fontsize="small")
        fig.suptitle(_title(title, "Image sizes", sampled))
    return save_png(fig, path)


def plot_images_per_patient(
    index: pd.DataFrame, title: str | None = None, path: str | os.PathLike | None = None
) -> Figure:
    """How many images each patient key holds, per split: why validation must be split by patient."""
    missing = [c for c in ("patient", "split") if c not in index]
    if missing:
        raise InputError(f"images per patient needs the index columns patient and split (missing {', '.join(missing)})")
    splits = [s for s in ("train", "test") if (index["split"] == s).any()] or sorted(index["split"].unique())
    with style():
        fig = Figure(figsize=(5.2 * len(splits), 4.3), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(splits)))
        for ax, split in zip(axes, splits, strict=True):
            counts = index.loc[index["split"] == split, "patient"].value_counts()
            table = counts.value_counts().sort_index()
            bars = ax.bar(table.index, table.to_numpy(), color=TRAIN_COLOR, width=0.8)
            if table.index.max() <= 20:
                ax.bar_label(bars, padding=2, fontsize=8)
                ax.set_xticks(range(1, int(table.index.max()) + 1))
            ax.set_yscale("log")
            ax.set_xlabel("Images per patient")
            ax.set_ylabel("Patients (log scale)")
            several = int((counts > 1).sum())
            ax.set_title(
                f"{split.title()}: {len(counts):,} patients, {int(counts.sum()):,} images\n"
                f"{several:,} patients ({several / max(len(counts), 1):.0%}) have more than one image",
                fontsize=10,
            )
            ax.grid(axis="x", visible=False)
        fig.suptitle(title or "Images per patient")
    return save_png(fig, path)


def plot_augmentations(
    original: np.ndarray,
    augmented: np.ndarray | Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One image and several augmentation draws of it, on a fixed gray scale so brightness changes show."""
    original = np.squeeze(np.asarray(original))
    augmented = [np.squeeze(np.asarray(a)) for a in augmented]
    if original.ndim != 2 or any(a.ndim != 2 for a in augmented) or not augmented:
        raise InputError("augmentation grid needs a 2-D image and a list of 2-D augmented images")
    images = [original, *augmented]
    names = ["original", *(titles or [f"draw {i + 1}" for i in range(len(augmented))])]
    vmin, vmax = _gray_limits(np.asarray(original))
    ncols = min(ncols, len(images))
    rows = math.ceil(len(images) / ncols)
    with style():
        fig = Figure(figsize=(2.8 * ncols, 2.95 * rows + 0.5), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, ncols)).ravel()
        for ax, image, name in zip(axes, images, names, strict=False):
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(name, fontsize=10, fontweight="bold" if name == "original" else "normal")
            frame_axis(ax, None)
        for ax in axes[len(images) :]:
            ax.set_visible(False)
        fig.suptitle(title or "Training augmentation: zoom ±10 %, shift ±10 %, brightness ×[0.5, 1.3]")
    return save_png(fig, path)


# ---------------------------------------------------------------------------------------------- comparisons


def plot_roc_overlay(
    predictions: dict[str, pd.DataFrame], title: str | None = None, path: str | os.PathLike | None = None
) -> Figure:
    """ROC curves of several backbones on one set of axes, AUC in the legend (hard-label files: one point)."""
    if not predictions:
        raise InputError("ROC overlay needs at least one backbone's predictions")
    curves = []
    for name, raw in predictions.items():
        frame = _frame(raw)
        y = frame["y_true"].to_numpy().astype(int)
        p = frame["p"].to_numpy(dtype=float)
        if np.isnan(p).any():
            pred = frame["y_pred"].to_numpy().astype(int)
            tpr, fpr = (pred & y).sum() / y.sum(), (pred & (1 - y)).sum() / (1 - y).sum()
            curves.append((float("-inf"), name, None, (fpr, tpr)))
        else:
            fpr, tpr, _ = skm.roc_curve(y, p)
            curves.append((skm.roc_auc_score(y, p), name, (fpr, tpr), None))
    curves.sort(key=lambda c: -c[0])
    import seaborn as sns

    colors = sns.color_palette("tab10" if len(curves) <= 10 else "husl", len(curves))
    with style():
        fig = Figure(figsize=(6.4, 6.0), layout="constrained")
        ax = fig.subplots()
        for color, (auc, name, curve, point) in zip(colors, curves, strict=True):
            if curve is not None:
                ax.plot(*curve, color=color, lw=1.8, label=f"{name} (AUC {auc:.3f})")
            else:
                ax.plot(*point, "D", color=color, ms=8, label=f"{name} (hard labels: one point)")
        ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1, label="chance")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("1 − specificity (false positive rate)")
        ax.set_ylabel("Sensitivity (true positive rate)")
        ax.legend(loc="lower right", fontsize="small")
        ax.set_title(title or "ROC curves of the backbones (test set)")
    return save_png(fig, path)


def plot_metric_bars(
    leaderboard: pd.DataFrame,
    metrics: Sequence[str] = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity", "f1"),
    name_column: str = "backbone",
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One panel per metric: a horizontal bar per backbone with its 95 % CI (columns m, m_low, m_high), sorted by
    the first metric (leaderboard frame as built from xraylib.metrics.leaderboard_row)."""
    from xraylib.metrics import TITLES

    table = leaderboard.copy()
    if name_column not in table:
        table[name_column] = table.index.astype(str)
    metrics = [m for m in metrics if m in table and table[m].notna().any()]
    if not metrics or table.empty:
        raise InputError("the leaderboard holds none of the metrics to plot")
    table = table.sort_values(metrics[0], ascending=True, na_position="first").reset_index(drop=True)
    names = table[name_column].astype(str).tolist()
    with style():
        fig = Figure(figsize=(2.9 * len(metrics) + 1.2, 0.42 * len(table) + 1.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
        for ax, metric in zip(axes, metrics, strict=True):
            value = table[metric].astype(float).to_numpy()
            low = table.get(f"{metric}_low", pd.Series(np.nan, index=table.index)).astype(float).to_numpy()
            high = table.get(f"{metric}_high", pd.Series(np.nan, index=table.index)).astype(float).to_numpy()
            err = np.vstack([np.nan_to_num(value - low), np.nan_to_num(high - value)])
            ax.barh(names, np.nan_to_num(value), color=TRAIN_COLOR, alpha=0.8, height=0.65)
            ax.errorbar(value, np.arange(len(names)), xerr=err, fmt="none", ecolor="black", capsize=3, lw=1.1)
            for i, v in enumerate(value):
                if np.isfinite(v):
                    ax.text(0.02, i, f"{v:.3f}", va="center", ha="left", color="white", fontsize=8.5, fontweight="bold")
            ax.set_xlim(0, 1.06)
            ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "0.25", "0.5", "0.75", "1"])
            ax.set_title(TITLES.get(metric, metric).split(" (")[0])
            ax.set_xlabel("value (95 % CI)")
            ax.grid(axis="y", visible=False)
        note = "bars: point estimate; whiskers: 95 % CI (bootstrap over patients)"
        fig.suptitle(_title(title, "Test metrics by backbone", note))
    return save_png(fig, path)


def plot_run_spread(
    runs: pd.DataFrame,
    metrics: Sequence[str] = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity"),
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One panel per metric: each run's test value as a dot (seeds, folds), a box per backbone over its runs
    (frame of `xraylib.report.run_table`: one row per run, column `backbone`); backbones by median of the first."""
    import seaborn as sns

    from xraylib.metrics import TITLES

    metrics = [m for m in metrics if m in runs and runs[m].notna().any()]
    if not metrics or runs.empty:
        raise InputError("the runs table holds none of the metrics to plot")
    order = runs.groupby("backbone")[metrics[0]].median().sort_values(ascending=False).index.tolist()
    with style():
        fig = Figure(figsize=(2.9 * len(metrics) + 1.4, 0.5 * len(order) + 1.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
        for ax, metric in zip(axes, metrics, strict=True):
            box = dict(order=order, ax=ax, x=metric, y="backbone")
            with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert`: not ours
                warnings.filterwarnings("ignore", message="vert: bool was deprecated")
                sns.boxplot(runs, **box, color="0.9", width=0.6, showfliers=False, linewidth=1)
            sns.stripplot(runs, **box, color=TRAIN_COLOR, size=5, jitter=0.15, alpha=0.85)
            ax.set_title(TITLES.get(metric, metric).split(" (")[0])
            ax.set_xlabel("value per run")
            ax.set_ylabel("")
        counts = runs.groupby("backbone").size()
        per = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
        note = f"dots: one run each ({per} per backbone); boxes: quartiles over runs"
        fig.suptitle(_title(title, "Test metrics per run", note))
    return save_png(fig, path)
