"""A run's data, prepared once: the index split into subsets, and each subset's decoded images and labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib.config import RunConfig
from xraylib.data import CLASSES, build_index, fingerprint, pneumonia_kind
from xraylib.errors import InputError
from xraylib.splits import assign_subsets, limit_subsets


@dataclass
class PreparedData:
    """The index with its subsets, the decoded images of all its rows, and the images and labels of each subset."""

    index: pd.DataFrame
    all_images: np.ndarray | None = None  # every row's image, in the index's order (whatever the split)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # class codes: positions in CLASSES[task]
    fingerprint: str = ""
    task: str = "binary"
    left_out: int = 0  # pneumonia images of neither kind (ARDS), left out of the three-class task
    dropped: int = 0  # images listed in the metadata but absent from the folder, dropped from the index
    dropped_test: int = 0  # of them, test images (dropped only with missing_test=drop)

    def rows(self, subset: str) -> pd.DataFrame:
        """The index rows of one subset (train, val or test), in the order of its images."""
        return self.index[self.index["subset"] == subset].reset_index(drop=True)


LEFT_OUT = "neither bacterial nor viral (ARDS), or a file name that does not say"


def class_names(index: pd.DataFrame, task: str = "binary") -> pd.Series:
    """Each row's class in `task`: its label (binary); normal, bacterial or viral (three_class), "" for a
    pneumonia of neither kind (ARDS, or a file name that does not say)."""
    if task == "binary":
        return index["label"]
    return index["label"].where(index["label"] == "normal", index["subtype"].map(pneumonia_kind))


def class_labels(index: pd.DataFrame, task: str = "binary") -> np.ndarray:
    """Each row's class code (its position in CLASSES[task]) as float32."""
    codes = {name: i for i, name in enumerate(CLASSES[task])}
    return class_names(index, task).map(codes).to_numpy(np.float32)


def prepare_data(data: str | Path, cfg: RunConfig) -> PreparedData:
    """Index the dataset, split it, and decode (or load from cache) every image once. The three-class task
    leaves out the pneumonia images of neither kind (CoronaHack's two Stress-Smoking ARDS images)."""
    from xraylib.pipeline import cached_images

    index = build_index(data, missing="drop")
    _report_missing(index, data, cfg)
    kept = class_names(index, cfg.task) != ""
    left_out = int((~kept).sum())
    if left_out:
        print(f"task={cfg.task}: left out {left_out} pneumonia image(s) of neither kind: {LEFT_OUT}")
        index = index[kept].reset_index(drop=True)
    index = assign_subsets(
        index, mode=cfg.validation, fraction=cfg.val_fraction, seed=cfg.seed, folds=cfg.folds, fold=cfg.fold
    )
    if cfg.exclude_sources != "none":  # the test set is scored whole
        index = index[(index["subset"] == "test") | (index["source"] != cfg.exclude_sources)].reset_index(drop=True)
    index = limit_subsets(index, cfg.limit, seed=cfg.seed)
    classes = class_names(index, cfg.task)
    for subset in ("train", "val", "test"):
        labels = set(classes[index["subset"] == subset])
        if not labels:
            raise InputError(f"the {subset} subset of {data} is empty")
        missing = " and ".join(c for c in CLASSES[cfg.task] if c not in labels)
        if missing:
            raise InputError(f"the {subset} subset of {data} holds no {missing} image: every class is needed")
    prepared = PreparedData(
        index=index,
        fingerprint=fingerprint(index),
        task=cfg.task,
        left_out=left_out,
        dropped=index.attrs["dropped"],
        dropped_test=index.attrs["dropped_test"],
    )
    images = cached_images(list(index["path"]), cfg.image_size, cfg.cache_dir, key=prepared.fingerprint)
    prepared.all_images = images
    for subset in ("train", "val", "test"):
        chosen = (index["subset"] == subset).to_numpy()
        prepared.images[subset] = images[chosen]
        prepared.labels[subset] = class_labels(index[chosen], cfg.task)
    return prepared


def _report_missing(index: pd.DataFrame, data: str | Path, cfg: RunConfig) -> None:
    """Say how many listed images the folder lacks (they are left out, a link loop too); refuse when test images
    are among them, since the test set would shrink, unless `missing_test=drop`."""
    dropped, test = index.attrs["dropped"], index.attrs["dropped_test"]
    if test and cfg.missing_test != "drop":
        raise InputError(
            f"{data}: {test} test image(s) listed in its metadata are missing (first: "
            f"{index.attrs['dropped_test_first']}): the test set would shrink; restore them, or --set "
            "missing_test=drop to score the test set without them"
        )
    if dropped:
        print(
            f"left out {dropped} image(s) listed in the metadata of {data} but absent from it, {test} of them test "
            f"images (first: {index.attrs['dropped_first']})"
        )


def subset_counts(prepared: PreparedData) -> dict:
    """Images, patients and class counts of each subset."""
    out: dict = {}
    for subset in ("train", "val", "test"):
        rows = prepared.rows(subset)
        out[subset] = {
            "images": len(rows),
            "patients": int(rows["patient"].nunique()),
            "pneumonia": int((rows["label"] == "pneumonia").sum()),
            "normal": int((rows["label"] == "normal").sum()),
        }
        if prepared.task != "binary":
            out[subset].update(
                class_names(rows, prepared.task)
                .value_counts()
                .reindex(CLASSES[prepared.task][1:], fill_value=0)
                .astype(int)
                .to_dict()
            )
    return out
