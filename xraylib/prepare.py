"""A run's data, prepared once: the index split into subsets, and each subset's decoded images and labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib.config import RunConfig
from xraylib.data import build_index, fingerprint, pneumonia_codes
from xraylib.errors import InputError, check_memory
from xraylib.splits import assign_subsets, limit_subsets


@dataclass
class PreparedData:
    """The index with its subsets, and the decoded images and labels of each subset."""

    index: pd.DataFrame
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprint: str = ""

    def rows(self, subset: str) -> pd.DataFrame:
        """The index rows of one subset (train, val or test), in the order of its images."""
        return self.index[self.index["subset"] == subset].reset_index(drop=True)


def prepare_data(data: str | Path, cfg: RunConfig) -> PreparedData:
    """Index the dataset, split it, and decode (or load from cache) every image once."""
    from xraylib.pipeline import cached_images

    index = build_index(data, missing="drop")
    index = assign_subsets(
        index, mode=cfg.validation, fraction=cfg.val_fraction, seed=cfg.seed, folds=cfg.folds, fold=cfg.fold
    )
    if cfg.exclude_sources != "none":  # the test set is scored whole
        index = index[(index["subset"] == "test") | (index["source"] != cfg.exclude_sources)].reset_index(drop=True)
    index = limit_subsets(index, cfg.limit, seed=cfg.seed)
    for subset in ("train", "val", "test"):
        labels = set(index.loc[index["subset"] == subset, "label"])
        if not labels:
            raise InputError(f"the {subset} subset of {data} is empty")
        if len(labels) < 2:
            missing = " and ".join(sorted({"normal", "pneumonia"} - labels))
            raise InputError(f"the {subset} subset of {data} holds no {missing} image: both classes are needed")
    need = len(index) * cfg.image_size**2
    check_memory(need, f"decoding {len(index)} images at image_size={cfg.image_size}", "choose a smaller image_size")
    prepared = PreparedData(index=index, fingerprint=fingerprint(index))
    images = cached_images(list(index["path"]), cfg.image_size, cfg.cache_dir, key=prepared.fingerprint)
    for subset in ("train", "val", "test"):
        chosen = (index["subset"] == subset).to_numpy()
        prepared.images[subset] = images[chosen]
        prepared.labels[subset] = pneumonia_codes(index.loc[chosen, "label"]).astype(np.float32)
    return prepared


def subset_counts(prepared: PreparedData) -> dict:
    """Images, patients and pneumonia share of each subset."""
    out = {}
    for subset in ("train", "val", "test"):
        rows = prepared.rows(subset)
        out[subset] = {
            "images": len(rows),
            "patients": int(rows["patient"].nunique()),
            "pneumonia": int((rows["label"] == "pneumonia").sum()),
            "normal": int((rows["label"] == "normal").sum()),
        }
    return out
