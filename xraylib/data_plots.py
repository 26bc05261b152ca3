"""The figures of a dataset: class distribution, sample images, image sizes, images per patient, augmentation draws.

Each `plot_*` returns a matplotlib Figure and saves a PNG if asked; the house style is `xraylib.plot_style`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xraylib.errors import InputError
from xraylib.plot_style import (
    CLASS_COLORS,
    CLASS_NAMES,
    TRAIN_COLOR,
    frame_axis,
    gray_limits,
    save_png,
    style,
    thumbnail,
    titled,
)

OTHER_GROUP = "Pneumonia: other\n(from papers)"
SUBSET_TITLES = {"train": "Train", "val": "Validation", "test": "Test"}


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
            bars = ax.bar(CLASS_NAMES, counts, color=[CLASS_COLORS[c.lower()] for c in CLASS_NAMES], width=0.6)
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
                ax.imshow(thumbnail(load_gray(record["path"])), cmap="gray", vmin=0, vmax=255)
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
        fig.suptitle(titled(title, "Image sizes", sampled))
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
    vmin, vmax = gray_limits(np.asarray(original))
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
        fig.suptitle(title or "Training augmentation draws")
    return save_png(fig, path)
