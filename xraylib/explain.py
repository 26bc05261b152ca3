"""Grad-CAM: where in the image the model found the evidence for its prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xraylib.errors import InputError

if TYPE_CHECKING:
    import keras

_POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def last_conv_layer(model: keras.Model) -> str:
    """Name of the backbone's last layer with a 4-D (B, H, W, C) output that is not a pooling layer."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and type(layer).__name__ not in _POOLING:
            if layer.name in ("image", "augmentation", "gray_to_rgb", "preprocess"):
                break
            return layer.name
    raise InputError(f"model {model.name!r} has no convolutional layer for Grad-CAM")


def _evidence(features, dense):
    """The target score from the final Dense layer's input: the sound head's logit, or the seed head's z1 - z0."""
    import keras

    kernel, bias = dense.kernel, dense.bias
    z = keras.ops.matmul(keras.ops.cast(features, "float32"), keras.ops.cast(kernel, "float32"))
    z = z + keras.ops.cast(bias, "float32")
    return z[:, 0] if z.shape[-1] == 1 else z[:, 1] - z[:, 0]


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    layer: str | None = None,
    target: str = "predicted",
    batch_size: int = 16,
    threshold: float = 0.5,
) -> np.ndarray:
    """(N, S, S) heatmaps in [0, 1] for (N, S, S, 1) float images in [0, 255]; augmentation is inactive.

    The score differentiated is the pre-sigmoid evidence for pneumonia (the final Dense layer's logit, recomputed so
    the sigmoid cannot saturate the gradient); target "predicted" explains each image's predicted class (the sign
    flips for images predicted normal at `threshold`), "pneumonia" always explains pneumonia.
    """
    import keras
    import tensorflow as tf

    from xraylib.models import probability

    images = np.asarray(images, dtype="float32")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise InputError(f"gradcam: expected images of shape (N, S, S, 1), got {images.shape}")
    if target not in ("predicted", "pneumonia"):
        raise InputError(f"gradcam: target {target!r}: expected predicted or pneumonia")
    conv = model.get_layer(layer or last_conv_layer(model))
    dense = model.layers[-1]
    if not isinstance(dense, keras.layers.Dense):
        raise InputError(f"gradcam: the model's last layer {dense.name!r} is not the Dense head")
    grad_model = keras.Model(model.inputs, [conv.output, dense.input, model.output])

    def step(batch):  # eager: tracing a tf.function costs more than a few batches of Grad-CAM (27 s, EfficientNetV2M)
        with tf.GradientTape() as tape:
            feats, head_in, out = grad_model(batch, training=False)
            score = _evidence(head_in, dense)
        grads = tape.gradient(score, feats)
        return feats, grads, out

    size = images.shape[1:3]
    maps = []
    for start in range(0, len(images), batch_size):
        feats, grads, out = step(tf.constant(images[start : start + batch_size]))
        feats, grads = tf.cast(feats, "float32"), tf.cast(grads, "float32")
        if target == "predicted":
            sign = np.where(probability(out.numpy()) >= threshold, 1.0, -1.0).astype("float32")
            grads = grads * sign[:, None, None, None]
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        maps.append(np.where(peak[:, None, None] > 0, cam / np.maximum(peak, 1e-12)[:, None, None], 0.0))
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype("float32")


def fit_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask (bool or 0/255, 2-D or with one channel), nearest-resized to `shape` if needed."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != shape:
        from PIL import Image

        img = Image.fromarray((mask > 0).astype("uint8") * 255)
        mask = np.asarray(img.resize(shape[::-1], Image.NEAREST))
    return mask > 0


def mass_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the heatmap's mass inside a mask (resized to fit); NaN for an empty map."""
    heatmap = np.asarray(heatmap, dtype="float64")
    total = heatmap.sum()
    if total <= 0:
        return float("nan")
    return float(heatmap[fit_mask(mask, heatmap.shape)].sum() / total)


def mask_through_grid(mask: np.ndarray, grid: tuple[int, int], shape: tuple[int, int]) -> float:
    """`mass_inside` the mask of a heatmap equal to the mask, seen through a `grid` (the Grad-CAM layer's H, W):
    the mask, resized to the heatmap's `shape`, area-averaged onto the grid and resized back bilinearly as `gradcam`
    does. What a map with its evidence exactly on the mask scores at that resolution (not an upper bound)."""
    import tensorflow as tf

    mask = fit_mask(mask, tuple(shape))
    coarse = tf.image.resize(mask[None, ..., None].astype("float32"), grid, method="area")
    return mass_inside(tf.image.resize(coarse, mask.shape, method="bilinear")[0, ..., 0].numpy(), mask)


def peak_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if the heatmap's maximum lies inside the mask (the "pointing game"), else 0.0; NaN for an empty map."""
    heatmap = np.asarray(heatmap, dtype="float64")
    if heatmap.max() <= 0:
        return float("nan")
    return float(fit_mask(mask, heatmap.shape)[np.unravel_index(np.argmax(heatmap), heatmap.shape)])
