"""Adapting to a new site without its labels: the trained layers' BatchNormalization statistics aligned to its images.

Why this method (chosen before any test label was read): models trained on the real training images keep a
validation specificity of 0.98 but reach 0.67-0.81 on the test set, and frozen ImageNet features tell the test set's
normal radiographs from the training set's (probe ROC-AUC 0.876, docs/honest-numbers.md): the test images differ in
appearance, and the model reads the difference as pneumonia. A shift in what the features look like, not only in how
common pneumonia is (which `calibration.correct_prior` already handles), calls for a correction of the features,
and AdaBN (Li, Wang, Shi, Liu & Hou 2016, "Revisiting Batch Normalization For Practical Domain Adaptation") is the
simplest one: no labels, no gradient step, no learning rate or epoch count to choose without labels, deterministic,
a forward pass of the trained layers over the new images, and the saved model keeps its own statistics.

Plain AdaBN replaces each BatchNormalization layer's statistics by the target's. Here the layers after the frozen
trunk (`fine_tune=N`) were trained with their BatchNormalization layers fixed at the ImageNet (or initial)
statistics, which need not be the training images' own, so replacing them would move even the training images.
Instead each layer is aligned (`align_layer`): on the target images it does what it did to the source (training)
images, channel by channel, to the first two moments. The source moments are computed once, when the run is
evaluated, and saved as the run's adapt_source.npz (`runs.write_adapt_source`). Who applies it: the run setting
`adapt=batchnorm` (`run_evaluation.evaluate_run`, to the test images), `run_evaluation.evaluate_adapted` (a
finished run's test set again), `run_evaluation.evaluate_on` and `predict.adapt_predictor` (another site's images).

What it cannot do: only each channel's mean and variance are matched, and a target whose share of pneumonia differs
from the training images' has other moments for that reason too; the alignment then pulls it toward the training
set's mix of classes as well as its appearance. `fine_tune=none` trains no BatchNormalization layer after the frozen
features, and `fine_tune=all` would need every layer of the backbone aligned (a pass over the whole backbone per
layer, too costly on a CPU): both are refused.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from xraylib.config import adapt_refusal
from xraylib.errors import InputError

if TYPE_CHECKING:
    import keras

    from xraylib.calibration import Calibration
    from xraylib.config import RunConfig

MIN_IMAGES = 32  # target images needed to estimate its moments
MIN_SCALE = 1e-3  # standard deviations below this share of sqrt(eps) count as that (var + eps stays exact in float32)
Moments = dict[str, tuple[np.ndarray, np.ndarray]]  # layer name -> per-channel (mean, variance) of its inputs


def trained_batchnorm(split: tuple | None, cfg: RunConfig) -> tuple[keras.Model | None, list, str]:
    """(frozen part, the BatchNormalization layers after it in topological order, "") of a `fine_tune=N` model
    whose `inference.frozen_split` is `split`, or (None, [], why there is nothing to adapt)."""
    import keras

    why = adapt_refusal(cfg.fine_tune)
    if why or split is None:
        return None, [], why or f"fine_tune={cfg.fine_tune} trains every layer of {cfg.backbone}: nothing is frozen"
    layers = [layer for layer in split[1].layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return None, [], f"the trained layers of {cfg.backbone} (fine_tune={cfg.fine_tune}) hold no BatchNormalization"
    return split[0], layers, ""


def require_batchnorm(split: tuple | None, cfg: RunConfig, what: str) -> tuple[keras.Model, list]:
    """`trained_batchnorm`'s frozen part and layers; a one-line InputError, led by `what`, when there are none."""
    frozen, layers, why = trained_batchnorm(split, cfg)
    if why:
        raise InputError(f"{what}: {why}")
    return frozen, layers


def input_moments(frozen: keras.Model, layers: list, inputs: np.ndarray, batch_size: int) -> Moments:
    """Each of `layers`' per-channel mean and variance of its inputs (over images and positions), when the frozen
    part's outputs `inputs` run through the layers after it as they stand (in inference mode)."""
    import keras

    probe = keras.Model(frozen.output, [layer.input for layer in layers])
    sums = [np.zeros((3, layer.input.shape[-1])) for layer in layers]  # count, sum, sum of squares
    for start in range(0, len(inputs), batch_size):
        outputs = probe.predict_on_batch(inputs[start : start + batch_size])
        for total, x in zip(sums, outputs if isinstance(outputs, (list, tuple)) else [outputs], strict=True):
            x = np.asarray(x, dtype=np.float64).reshape(-1, total.shape[1])
            total[0] += len(x)
            total[1:] += x.sum(axis=0), np.square(x).sum(axis=0)
    moments = {}
    for layer, (count, first, second) in zip(layers, sums, strict=True):
        mean = first / count
        moments[layer.name] = mean, np.maximum(second / count - np.square(mean), 0.0)
    return moments


def align_layer(layer: keras.layers.BatchNormalization, source: tuple, target: tuple) -> None:
    """Set a BatchNormalization layer's moving statistics so that it maps target inputs as it mapped source inputs.

    The layer computes gamma * (x - mu_I) / s_I + beta, s_I = sqrt(var_I + eps). Standardising each target channel
    onto the source's moments, x_S = (x_T - mu_T) * s_S / s_T + mu_S, and folding that into the layer gives
    mu' = mu_T - (mu_S - mu_I) * s_T / s_S and s' = s_I * s_T / s_S, stored as var' = s'^2 - eps (which may be
    below 0: the layer adds eps back), s_S and s_T the data's standard deviations. Variances below
    MIN_SCALE^2 * eps count as that much (a channel constant on one set gets a finite ratio), and so does s'^2.
    Equal source and target moments change nothing.
    """
    eps = float(layer.epsilon)
    floor = MIN_SCALE**2 * eps
    (mu_s, var_s), (mu_t, var_t) = source, target
    mu_i, var_i = (np.asarray(v, dtype=np.float64) for v in (layer.moving_mean, layer.moving_variance))
    ratio = np.sqrt(np.maximum(var_t, floor) / np.maximum(var_s, floor))  # s_T / s_S
    scale2 = np.maximum((var_i + eps) * np.square(ratio), floor)
    layer.moving_mean.assign((mu_t - (mu_s - mu_i) * ratio).astype(np.float32))
    layer.moving_variance.assign((scale2 - eps).astype(np.float32))


def source_moments(split: tuple | None, cfg: RunConfig, train_outputs: np.ndarray | None, run_dir) -> Moments | None:
    """The BatchNormalization layers' input moments on the training images (the frozen part's outputs
    `train_outputs`), written to `run_dir`'s adapt_source.npz; None (and no file) when there is nothing to adapt."""
    from xraylib import runs

    frozen, layers, why = trained_batchnorm(split, cfg)
    if why or train_outputs is None:
        return None
    moments = input_moments(frozen, layers, train_outputs, cfg.batch_size)
    runs.write_adapt_source(run_dir, moments, len(train_outputs))
    return moments


def align(split: tuple | None, cfg: RunConfig, target_outputs: np.ndarray | None, source: Moments | None) -> dict:
    """Align every BatchNormalization layer after the frozen part of a model (`split`: its `inference.frozen_split`) to
    the target images whose frozen outputs are `target_outputs`, in topological order (each on the target's inputs
    through the layers already aligned); `source`: the training images' moments (`source_moments`). Returns what
    was done."""
    from xraylib import runs

    frozen, layers = require_batchnorm(split, cfg, "adapt=batchnorm")
    names = [layer.name for layer in layers]
    if source is None or list(source) != names:
        raise InputError(f"adapt=batchnorm: no source statistics of this model's layers ({runs.ADAPT_SOURCE})")
    if len(target_outputs) < MIN_IMAGES:
        raise InputError(f"adapt=batchnorm needs at least {MIN_IMAGES} target images, got {len(target_outputs)}")
    for layer in layers:
        target = input_moments(frozen, [layer], target_outputs, cfg.batch_size)[layer.name]
        align_layer(layer, source[layer.name], target)
    return {"method": "batchnorm", "layers": names, "n_target_images": len(target_outputs)}


def prevalence_estimates(calibration: Calibration, validation: float, before, after) -> dict:
    """EM estimates (Saerens et al. 2002, `calibration.estimate_prevalence`) of the target images' pneumonia
    prevalence from their raw probabilities `before` and `after` adaptation, each calibrated by `calibration`
    without a prior shift (posteriors at the `validation` prevalence); their labels are not read."""
    from xraylib.calibration import EM_RANGE, estimate_prevalence

    fitted = dataclasses.replace(calibration, shift=0.0)
    entry: dict = {"validation": validation}
    for name, raw in (("before", before), ("after", after)):
        value, iterations = estimate_prevalence(fitted(raw), validation)
        entry[name] = {"estimate": value, "em_iterations": iterations, "in_range": EM_RANGE[0] <= value <= EM_RANGE[1]}
    return entry


def run_entry(applied: dict, fitted: Calibration, cfg: RunConfig, val: tuple, test: tuple, unadapted, groups) -> dict:
    """metrics.json's `adaptation` of a run adapted to its test images: what `align` did, the EM prevalence
    estimates before and after (`prevalence_estimates`) beside the test labels' prevalence, and what the unadapted
    model scored on the test images at its own threshold (metrics with CIs; Brier, ECE and log loss before and after
    the calibration). `val`, `test`: (labels, raw probabilities), the test's adapted; `val` is what the run chose
    its threshold on (`threshold=youden:acquisition`: the validation images with their changed copies)."""
    from xraylib.calibration import correct_prior, effect
    from xraylib.metrics import binary_metrics_ci

    (val_y, _), (test_y, test_raw) = val, test
    calibration, threshold, _ = correct_prior(fitted, cfg.prevalence, cfg.threshold, val, (test_y, unadapted))
    prevalence = prevalence_estimates(fitted, float(np.mean(val_y)), unadapted, test_raw)
    return {
        **applied,
        "target": "test",
        "prevalence": {**prevalence, "test_labels": float(np.mean(test_y))},
        "unadapted": {
            "threshold": threshold,
            "at_threshold": binary_metrics_ci(
                test_y, calibration(unadapted), groups, threshold, cfg.bootstrap, cfg.seed
            ),
            "calibration": effect(test_y, unadapted, fitted),
        },
    }


def format_entry(entry: dict) -> list[str]:
    """Lines saying what an `adaptation` entry did, and the EM prevalence estimates before and after."""
    lines = [
        f"adapted (label-free) to {entry['n_target_images']} images: {len(entry['layers'])} BatchNormalization "
        f"layers aligned ({', '.join(entry['layers'])})"
    ]
    prevalence = entry.get("prevalence")
    if prevalence:
        estimates = (f"{prevalence[k]['estimate']:.4f}" for k in ("before", "after"))
        line = "EM prevalence estimate before {} and after adaptation {}".format(*estimates)
        line += f" (validation {prevalence['validation']:.4f}"
        if "test_labels" in prevalence:
            line += f"; the test labels, not read by either: {prevalence['test_labels']:.4f}"
        lines.append(line + ")")
    return lines
