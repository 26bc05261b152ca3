"""Inference: a model split into its frozen part and its trained part, the frozen part's outputs computed once
(cached by `xraylib.features`), and P(pneumonia) through the split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xraylib.config import RunConfig
from xraylib.pipeline import predict_in_batches

if TYPE_CHECKING:
    from xraylib.prepare import PreparedData


def frozen_split(model, cfg: RunConfig):
    """(frozen part, trained part) of `model` sharing its layers, or None when every layer trains: the pooled
    features and the head (`fine_tune=none`), or the trunk below the trained layers and the top
    (`fine_tune=N`, `features.split_at_trunk`)."""
    from xraylib.features import split_at_trunk
    from xraylib.models import split_at_features

    if cfg.fine_tune == "all":
        return None
    with model.distribute_strategy.scope():
        return split_at_features(model) if cfg.fine_tune == "none" else split_at_trunk(model)


def frozen_outputs(model, prepared: PreparedData, cfg: RunConfig) -> dict[str, np.ndarray] | None:
    """Each subset's outputs of the frozen part (`frozen_split`), computed over every image of the index at once
    and cached on disk (`features.trunk_outputs`), so that a run with another seed, split or fold reuses them;
    None when every layer trains."""
    from xraylib.features import trunk_outputs

    split = frozen_split(model, cfg)
    if split is None:
        return None
    every = trunk_outputs(split[0], prepared.all_images, cfg.batch_size, cfg.cache_dir)
    subsets = prepared.index["subset"].to_numpy()
    return {subset: every[subsets == subset] for subset in ("train", "val", "test")}


def predict_probabilities(model, images: np.ndarray, cfg: RunConfig, computed: np.ndarray | None = None) -> np.ndarray:
    """P(pneumonia) per image, (N,), or three classes' probabilities, (N, 3); with `cfg.tta`, averaged with the
    horizontally flipped image. A partly frozen model: the frozen part's outputs, then the rest (`frozen_split`,
    whose frozen half has run on the training images already); `computed`: those outputs of `images`, when the
    caller has them (`frozen_outputs`)."""
    from xraylib.models import probability

    split = frozen_split(model, cfg)

    def run(x, computed=None):
        if split is None:
            out = predict_in_batches(model, x, cfg.batch_size)
        else:
            frozen, trained = split
            if computed is None:
                computed = predict_in_batches(frozen, x, cfg.batch_size)
            out = predict_in_batches(trained, computed, cfg.batch_size)
        return np.asarray(out, dtype="float64") if cfg.task == "three_class" else probability(out)

    p = run(images, computed)
    if cfg.tta:
        p = (p + run(images[:, :, ::-1, :])) / 2.0
    return p
