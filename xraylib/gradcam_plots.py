"""The Grad-CAM figures: a run's grid of heatmaps over test images, and one prediction's overlay beside its image.

Each `plot_*` returns a matplotlib Figure and saves a PNG if asked; the house style is `xraylib.plot_style`. The
heatmaps themselves come from `xraylib.explain`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from xraylib.errors import InputError
from xraylib.plot_style import (
    CLASS_COLORS,
    CLASS_NAMES,
    ERROR_COLOR,
    format_probability,
    frame_axis,
    gray_limits,
    save_png,
    style,
    titled,
)

HEAT_CMAP = "jet"  # Grad-CAM's colour map, in the grid and the overlay


def plot_gradcam_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str] | None = None,
    errors: Sequence[bool] | None = None,
    alpha: float = 0.45,
    cmap: str = HEAT_CMAP,
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
    vmin, vmax = gray_limits(images)
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
        fig.suptitle(titled(title, "Grad-CAM: where the model looked", suffix))
    return save_png(fig, path)


def _heat_rgba(heat: np.ndarray, cmap: str = HEAT_CMAP, max_alpha: float = 0.55) -> np.ndarray:
    """Colour and opacity of [0, 1] heat values: the colour map's colour, opacity rising with the value, so cold
    areas leave the radiograph clear (a uniform wash of blue would hide it)."""
    from matplotlib import colormaps

    heat = np.clip(np.asarray(heat, dtype="float32"), 0.0, 1.0)
    rgba = colormaps[cmap](heat).astype("float32")
    rgba[..., 3] = max_alpha * np.clip((heat - 0.2) / 0.6, 0.0, 1.0)
    return rgba


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the heatmap, stretched over the whole gray image (the model saw the whole image resized to a
    square, without cropping), blended onto it."""
    from PIL import Image

    h, w = image.shape
    heat = np.asarray(Image.fromarray(np.asarray(heatmap, dtype="float32")).resize((w, h), Image.Resampling.BILINEAR))
    rgba = _heat_rgba(heat)
    alpha = rgba[..., 3:]
    gray = np.repeat(image[..., None].astype("float32") / 255.0, 3, axis=2)
    return np.rint(255.0 * ((1.0 - alpha) * gray + alpha * rgba[..., :3])).astype(np.uint8)


def plot_prediction(
    image: np.ndarray,
    heatmap: np.ndarray,
    p: float,
    threshold: float,
    title: str = "",
    path: str | os.PathLike | None = None,
) -> Figure:
    """The radiograph and its Grad-CAM overlay side by side, titled with the prediction (P(pneumonia), threshold)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    predicted = CLASS_NAMES[int(p >= threshold)]
    explained = predicted.lower()  # explain.gradcam explains the class predicted at the threshold
    h, w = image.shape
    values = np.linspace(0.0, 1.0, 256)
    key = _heat_rgba(values)
    key = (1.0 - key[:, 3:]) * 0.5 + key[:, 3:] * key[:, :3]  # the blend as it looks over mid-gray
    with style():
        fig = Figure(figsize=(2 * 4.0 * w / max(h, w) + 1.0, 4.0 * h / max(h, w) + 1.0), layout="constrained")
        axes = fig.subplots(1, 2)
        axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[1].imshow(overlay(image, heatmap))
        for ax in axes:
            frame_axis(ax, None)
        axes[0].set_title("Radiograph", fontsize=10)
        heat = np.asarray(heatmap, dtype="float32")
        note = " (none found)" if heat.max() <= 0 else " (uniform: no localisation)" if np.ptp(heat) < 1e-3 else ""
        axes[1].set_title(f"Grad-CAM: evidence for {explained}{note}", fontsize=10)
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), ListedColormap(key)), ax=axes[1], shrink=0.8, pad=0.02)
        bar.set_label("Grad-CAM activation (normalised)", fontsize=8)
        fig.suptitle(
            f"{predicted} · P(pneumonia) = {format_probability(p, threshold)}"
            f" (threshold {format_probability(threshold)})" + (f"\n{title}" if title else ""),
            color=CLASS_COLORS[predicted.lower()],
        )
    return save_png(fig, path)
