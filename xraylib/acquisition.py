"""A run's validation images scored again under a fixed catalogue of acquisition changes (exposure curve, window,
blur, noise, resolution, field of view): how its validation figures would move at a site that acquires radiographs
otherwise. A validation split of the training set shares the training set's acquisition, so it cannot see such a
shift; this catalogue says in advance which shifts the project expects, and is the same for every run."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from xraylib import runs
from xraylib.fileio import write_json
from xraylib.plot_style import REPORT_DIGITS, format_interval

NOISE_SEED = 0  # the noise change draws the same noise for every run
UNCHANGED = "unchanged"
IN_SAMPLE = "its threshold was chosen on these changed copies: the sensitivity and specificity below are in-sample"
HEADLINE = ("roc_auc", "sensitivity", "specificity")  # per change, at the run's threshold


def gamma(power: float) -> Callable[[np.ndarray], np.ndarray]:
    """g -> 255 (g / 255) ** power: another exposure curve."""
    return lambda x: 255.0 * (x / 255.0) ** power


def contrast(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """g -> m + factor (g - m), m each image's mean grey level: another window."""
    return lambda x: np.clip(x.mean(axis=(1, 2, 3), keepdims=True) * (1 - factor) + factor * x, 0, 255)


def blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    """A Gaussian blur of `sigma` pixels within each image: a softer detector."""
    return lambda x: ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest")


def noise(sd: float) -> Callable[[np.ndarray], np.ndarray]:
    """Gaussian noise of `sd` grey levels, drawn with the seed NOISE_SEED (so the same for every run scored on the
    same validation images), clipped to 0-255: a lower dose."""
    return lambda x: np.clip(x + np.random.default_rng(NOISE_SEED).normal(0.0, sd, x.shape), 0, 255)


def resolution(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Down to `factor` of the size and back up (bilinear): a coarser detector."""

    def change(x: np.ndarray) -> np.ndarray:
        import keras

        size = x.shape[1:3]
        small = keras.ops.image.resize(x, [round(s * factor) for s in size], interpolation="bilinear")
        return np.asarray(keras.ops.image.resize(small, size, interpolation="bilinear"))

    return change


def zoom_out(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Each image shrunk by `factor` and framed in black at its centre: a wider field of view."""

    def change(x: np.ndarray) -> np.ndarray:
        import keras

        size = np.array(x.shape[1:3])
        inner = np.round(size / factor).astype(int)
        small = np.asarray(keras.ops.image.resize(x, inner.tolist(), interpolation="bilinear"))
        top, left = (size - inner) // 2
        framed = np.zeros_like(x)
        framed[:, top : top + inner[0], left : left + inner[1]] = small
        return framed

    return change


CHANGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gamma-0.6": gamma(0.6),
    "gamma-1.6": gamma(1.6),
    "contrast-0.6": contrast(0.6),
    "blur-1.5": blur(1.5),
    "noise-10": noise(10.0),
    "half-resolution": resolution(0.5),
    "zoom-out-15": zoom_out(1.15),
}


def changed(images: np.ndarray, name: str) -> np.ndarray:
    """`images` (N, S, S, 1), grey levels 0-255, through the catalogue's change `name`, as float32."""
    return np.asarray(CHANGES[name](images.astype(np.float32)), dtype=np.float32)


def changed_probabilities(model, images: np.ndarray, cfg) -> Iterator[tuple[str, np.ndarray]]:
    """(change, the model's uncalibrated P(pneumonia) of `images` through it), change by change of the catalogue."""
    from xraylib.inference import predict_probabilities

    for name in CHANGES:
        yield name, predict_probabilities(model, changed(images, name), cfg)


def with_changed_copies(
    model, images: np.ndarray, y: np.ndarray, raw: np.ndarray, groups: np.ndarray, cfg
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, uncalibrated probabilities, patients) of `images`, whose labels, probabilities and patients are `y`,
    `raw` and `groups`, followed by those of their copies through each change of the catalogue: the pool a
    `threshold=youden:acquisition` run chooses its threshold on. Each copy keeps its image's label and patient."""
    pooled = [raw]
    for name, p in changed_probabilities(model, images, cfg):
        pooled.append(p)
        print(
            f"threshold pool: validation images through {name} ({len(pooled) - 1}/{len(CHANGES)})",
            file=sys.stderr,
            flush=True,
        )
    return np.tile(y, len(pooled)), np.concatenate(pooled), np.tile(groups, len(pooled))


def acquisition_of_run(run_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0) -> dict:
    """A finished binary run's validation images, unchanged and through each change of the catalogue, scored by its
    model (calibrated as the run was) at its validation-chosen threshold, with patient-bootstrap CIs; the means over
    the changes of ROC-AUC, sensitivity and specificity, and the run's own validation ROC-AUC (`metrics.json`) beside
    the unchanged row's. Written to RUN_DIR/acquisition.json and returned; each change's progress goes to stderr."""
    from xraylib.errors import InputError, check_memory
    from xraylib.fileio import output_dir
    from xraylib.inference import predict_probabilities
    from xraylib.metrics import binary_metrics_ci
    from xraylib.models import load_model
    from xraylib.run_evaluation import require_finished_run, run_and_data

    run_dir = Path(run_dir)
    require_finished_run(run_dir)
    runs.binary_run_only(run_dir, "--acquisition")
    output_dir(run_dir, "--run")
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    cfg, prepared = run_and_data(run_dir, "--acquisition")
    model, calibration = load_model(run_dir / runs.MODEL), runs.read_calibration(run_dir)
    threshold = runs.read_threshold(run_dir)
    images, y = prepared.images["val"], prepared.labels["val"]
    groups = prepared.rows("val")["patient"].to_numpy()
    check_memory(16 * n_boot * len(y), f"--bootstrap {n_boot} over {len(y)} images", "use fewer resamples")
    scored = {}
    unchanged = ((UNCHANGED, predict_probabilities(model, images, cfg)),)
    for name, raw in itertools.chain(unchanged, changed_probabilities(model, images, cfg)):
        p = calibration(raw)
        entry = binary_metrics_ci(y, p, groups, threshold, n_boot=n_boot, seed=seed)
        scored[name] = {
            **{metric: entry[metric] for metric in HEADLINE},
            "mean_p_normal": float(p[y == 0].mean()),
        }
        print(f"{name}: validation ROC-AUC {entry['roc_auc']['value']:.4f}", file=sys.stderr, flush=True)
    own = runs.validation_of(runs.read_metrics(run_dir), run_dir)
    result = {
        "run": str(run_dir.resolve()),
        "threshold": threshold,
        "threshold_chosen_on": runs.threshold_pool(cfg.threshold),
        "run_validation_roc_auc": own.get("roc_auc", {}).get("value"),
        "n_validation_images": int(len(y)),
        "n_validation_patients": int(len(set(groups))),
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "patient"},
        "noise_seed": NOISE_SEED,
        "changes": scored,
        "mean_over_changes": {
            metric: float(np.mean([scored[name][metric]["value"] for name in CHANGES])) for metric in HEADLINE
        },
    }
    write_json(run_dir / runs.ACQUISITION, result)
    return result


def _value(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.4f}"


def format_acquisition(result: dict) -> str:
    """`acquisition_of_run`'s result as a table: one row per change, then the means over the changes."""
    lines = [
        f"run: {result['run']}",
        f"its {result['n_validation_images']} validation images ({result['n_validation_patients']} patients), each "
        f"change applied before the model; threshold {result['threshold']:.4f} (the run's, chosen on its "
        f"{result['threshold_chosen_on']})",
        *([IN_SAMPLE] if result["threshold_chosen_on"] != "validation" else []),
        f"95 % CIs: bootstrap over patients, {result['bootstrap']['resamples']} resamples, seed "
        f"{result['bootstrap']['seed']}",
        f"the run's own validation ROC-AUC (metrics.json): {_value(result['run_validation_roc_auc'])}",
        "",
        f"{'change':<18}{'ROC-AUC':<26}{'sensitivity':<26}{'specificity':<26}mean P(pneumonia) of normals",
    ]
    for name, entry in result["changes"].items():
        cells = "".join(f"{format_interval(entry[m], REPORT_DIGITS):<26}" for m in HEADLINE)
        lines.append(f"{name:<18}{cells}{entry['mean_p_normal']:.4f}")
    means = result["mean_over_changes"]
    lines.append(f"{'mean of changes':<18}" + "".join(f"{means[m]:<26.4f}" for m in HEADLINE))
    return "\n".join([*lines, "", f"written to {Path(result['run']) / runs.ACQUISITION}"])
