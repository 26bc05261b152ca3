"""The look every figure shares: style(), save_png, class names and colours, titles, image tiles, frames, and how a
probability and a value with its confidence interval are written (`format_probability`, `format_interval`,
`format_ci`), in figures and printed tables alike.

Figures are built with `matplotlib.figure.Figure` (the Agg canvas), never through pyplot's global state: they work
headless, leak nothing in long sweeps, and still display in Jupyter when returned from a cell.
Classes are called Normal and Pneumonia everywhere (the study's "Covid" label was wrong: its test set holds none).
The figure modules are listed in the package's module map (`xraylib/__init__.py`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xraylib.errors import InputError
from xraylib.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CLASS_NAMES = ("Normal", "Pneumonia")
CLASS_COLORS = {"normal": "#4C72B0", "pneumonia": "#DD8452", "bacterial": "#DD8452", "viral": "#55A868"}  # data.CLASSES
TRAIN_COLOR, VAL_COLOR, BEST_COLOR, ERROR_COLOR = "#4C72B0", "#DD8452", "#2CA02C", "#D62728"
DPI = 150
REPORT_DIGITS = 4  # decimals of a metric in the printed text reports (`format_interval` gives 3 elsewhere)


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


def titled(title: str | None, default: str, note: str = "") -> str:
    """The caller's title (or the default), with an explanatory note on a second line."""
    return (title or default) + (f"\n{note}" if note else "")


def prediction_columns(predictions: pd.DataFrame) -> pd.DataFrame:
    """Columns y_true, p, y_pred from either tidy_predictions' frame or a raw predictions.csv frame."""
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


def gray_limits(images: np.ndarray) -> tuple[float, float]:
    """Fixed display range so brightness differences stay visible: [0, 255] or [0, 1]."""
    return (0.0, 1.0) if images.dtype.kind == "f" and np.nanmax(images) <= 1.0 else (0.0, 255.0)


def thumbnail(image: np.ndarray, side: int = 400) -> np.ndarray:
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


def format_probability(x: float, threshold: float | None = None) -> str:
    """3 decimals, or as many as it takes (up to 7) to show that x differs from 0, 1 or the threshold."""
    for digits in range(3, 8):
        text = f"{x:.{digits}f}"
        close = [float(text) == v != x for v in (0.0, 1.0, threshold) if v is not None]
        if not any(close) and (threshold is None or (float(text) >= threshold) == (x >= threshold)):
            return text
    return f"{x:.7f}"


def format_interval(entry: dict, digits: int = 3) -> str:
    """A value with its 95 % CI ({value, low, high}) as `value [low, high]`: the value alone without a CI,
    `undefined` without a value (None and NaN alike)."""
    if pd.isna(entry.get("value")):
        return "undefined"
    text = f"{entry['value']:.{digits}f}"
    if not format_ci(entry):
        return text
    return f"{text} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


def format_ci(entry: dict, digits: int = 3) -> str:
    """The 95 % CI of a {value, low, high} alone, as `low–high`; "" without one (None and NaN alike)."""
    if pd.isna(entry.get("low")) or pd.isna(entry.get("high")):
        return ""
    return f"{entry['low']:.{digits}f}–{entry['high']:.{digits}f}"
