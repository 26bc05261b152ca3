"""A fixed catalogue of acquisition changes (exposure curve, window, blur, noise, resolution, field of view) and a
model's predictions of images through them: how a run's validation figures would move at a site that acquires
radiographs otherwise (`run_evaluation.acquisition_of_run`), and the pool a `youden:acquisition` threshold is chosen
on. A validation split of the training set shares the training set's acquisition, so it cannot see such a
shift; this catalogue says in advance which shifts the project expects, and is the same for every run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import numpy as np
from scipy import ndimage

NOISE_SEED = 0  # the noise change draws the same noise for every run
UNCHANGED = "unchanged"


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
