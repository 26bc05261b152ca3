"""The figures comparing runs: ROC curves overlaid, metric bars with CIs, and the spread of repeated runs.

Each `plot_*` returns a matplotlib Figure and saves a PNG if asked; the house style is `xraylib.plot_style`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from xraylib.errors import InputError
from xraylib.plot_style import TRAIN_COLOR, prediction_columns, save_png, style, titled


def plot_roc_overlay(
    predictions: dict[str, pd.DataFrame], title: str | None = None, path: str | os.PathLike | None = None
) -> Figure:
    """ROC curves of several backbones on one set of axes, AUC in the legend (hard-label files: one point)."""
    if not predictions:
        raise InputError("ROC overlay needs at least one backbone's predictions")
    curves = []
    for name, raw in predictions.items():
        frame = prediction_columns(raw)
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
    the first metric (leaderboard frame as built from xraylib.leaderboard.leaderboard_row)."""
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
        fig.suptitle(titled(title, "Test metrics by backbone", note))
    return save_png(fig, path)


@contextlib.contextmanager
def _fixed_jitter(seed: int = 0) -> Iterator[None]:
    """seaborn's stripplot jitters its dots with NumPy's global random state: seed it for one plot, so that the
    figure comes out the same byte for byte every time, then give the caller its state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def plot_run_spread(
    runs: pd.DataFrame,
    metrics: Sequence[str] = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity"),
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One panel per metric: each run's test value as a dot (seeds, folds), a box per backbone over its runs
    (frame of `xraylib.leaderboard.run_table`: one row per run, column `backbone`); backbones by median of the first."""
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
            with _fixed_jitter():
                sns.stripplot(runs, **box, color=TRAIN_COLOR, size=5, jitter=0.15, alpha=0.85)
            ax.set_title(TITLES.get(metric, metric).split(" (")[0])
            ax.set_xlabel("value per run")
            ax.set_ylabel("")
        counts = runs.groupby("backbone").size()
        per = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
        note = f"dots: one run each ({per} per backbone); boxes: quartiles over runs"
        fig.suptitle(titled(title, "Test metrics per run", note))
    return save_png(fig, path)
