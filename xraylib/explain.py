"""All of Grad-CAM: the maps, their smoothing for display, and the share of them inside lung and opacity masks.

Grad-CAM shows where in the image the model found the evidence for its prediction. The figures that draw the maps
(the grid of a run, the overlay of one prediction) are in `xraylib.gradcam_plots`. On a synthetic set with masks
(`xraylib data synth --masks`) each run measures its maps against the masks and writes gradcam_in_masks.csv.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xraylib import runs
from xraylib.errors import InputError
from xraylib.fileio import write_csv

if TYPE_CHECKING:
    import keras

# Grad-CAM's default batch: the pixels of 16 images of 224 px (125 of 80 px). An eager step holds every layer's
# output until it ends: EfficientNetV2-M needs about 0.26 GB per 224-px image (83 at once peaked at 22.7 GB).
BATCH_PIXELS = 16 * 224 * 224
LOCALIZATION_CSV = "gradcam_in_masks.csv"  # a run's per-image Grad-CAM mass and peak inside the masks
_POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def last_conv_layer(model: keras.Model) -> str:
    """Name of the backbone's last layer with a 4-D (B, H, W, C) output that is not a pooling layer."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and type(layer).__name__ not in _POOLING:
            if layer.name == "preprocess":  # models.build_model's last step before the backbone: no conv layer left
                break
            return layer.name
    raise InputError(f"model {model.name!r} has no convolutional layer for Grad-CAM")


def _evidence(features, dense, classes=None):
    """The target score from the final Dense layer's input: the sound head's logit, the study head's z1 - z0, or
    for a softmax head over three classes the logit of each image's class (`classes`: (N,) class codes)."""
    import keras

    kernel, bias = dense.kernel, dense.bias
    z = keras.ops.matmul(keras.ops.cast(features, "float32"), keras.ops.cast(kernel, "float32"))
    z = z + keras.ops.cast(bias, "float32")
    if z.shape[-1] > 2:
        return keras.ops.sum(z * keras.ops.one_hot(classes, z.shape[-1]), axis=-1)
    return z[:, 0] if z.shape[-1] == 1 else z[:, 1] - z[:, 0]


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    layer: str | None = None,
    target: str = "predicted",
    batch_size: int | None = None,
    threshold: float = 0.5,
    classes=None,
) -> np.ndarray:
    """(N, S, S) heatmaps in [0, 1] for (N, S, S, 1) float images in [0, 255]; augmentation is inactive.

    The score differentiated is the pre-sigmoid evidence for pneumonia (the final Dense layer's logit, recomputed so
    the sigmoid cannot saturate the gradient); target "predicted" explains each image's predicted class (the sign
    flips for images predicted normal at `threshold`), "pneumonia" always explains pneumonia. A three-class
    (softmax) model: the pre-softmax logit of each image's class in `classes` ((N,) codes), by default its
    predicted (argmax) class. `batch_size`: images per eager step, by default as many as `BATCH_PIXELS` holds (a
    deep backbone's per-layer cost in eager mode is paid once per batch: EfficientNetV2-M explains 75 images of
    80 px in 3.1 s at once, 7.4 s in batches of 16).
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
    # Two halves, so that the tape records the head only: taped over the whole model, TensorFlow's backprop also
    # walks every convolution below the Grad-CAM layer (about 3x the time, the same gradients).
    features = keras.Model(model.inputs, conv.output)
    head = keras.Model(conv.output, [dense.input, model.output])

    softmax = dense.units > 2

    def step(batch, wanted):  # eager: tracing a tf.function costs more than a few batches (27 s, EfficientNetV2M)
        feats = features(batch, training=False)
        with tf.GradientTape() as tape:
            tape.watch(feats)
            head_in, out = head(feats, training=False)
            if softmax and wanted is None:
                wanted = tf.argmax(out, axis=-1)
            score = _evidence(head_in, dense, wanted)
        grads = tape.gradient(score, feats)
        return feats, grads, out

    size = images.shape[1:3]
    batch_size = batch_size or max(1, BATCH_PIXELS // (size[0] * size[1]))
    maps = []
    for start in range(0, len(images), batch_size):
        wanted = None if classes is None else tf.constant(np.asarray(classes)[start : start + batch_size], "int32")
        feats, grads, out = step(tf.constant(images[start : start + batch_size]), wanted)
        feats, grads = tf.cast(feats, "float32"), tf.cast(grads, "float32")
        if target == "predicted" and not softmax:
            sign = np.where(probability(out.numpy()) >= threshold, 1.0, -1.0).astype("float32")
            grads = grads * sign[:, None, None, None]
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        maps.append(np.where(peak[:, None, None] > 0, cam / np.maximum(peak, 1e-12)[:, None, None], 0.0))
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype("float32")


def smooth_heatmaps(model: keras.Model, heatmaps: np.ndarray) -> np.ndarray:
    """Blur Grad-CAM maps by half a feature cell (display only): bilinear upsampling of a coarse grid (3x3 for a
    96 px ResNet) leaves diamond-shaped seams that are not in the evidence; each map is rescaled to peak 1."""
    from scipy.ndimage import gaussian_filter

    heatmaps = np.asarray(heatmaps, dtype="float32")
    cells = model.get_layer(last_conv_layer(model)).output.shape[1] or heatmaps.shape[1]
    sigma = 0.5 * heatmaps.shape[1] / max(1, int(cells))
    out = np.stack([gaussian_filter(h, sigma, mode="nearest") for h in heatmaps]) if len(heatmaps) else heatmaps
    peak = out.reshape(len(out), -1).max(axis=1) if len(out) else np.zeros(0)
    return np.where(peak[:, None, None] > 0, out / np.maximum(peak, 1e-12)[:, None, None], 0.0)


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


def _pneumonia_with_masks(run_dir: Path, limit: int | None = None) -> pd.DataFrame | None:
    """The run's pneumonia test predictions (the first `limit`), or None when its images have no masks."""
    from xraylib.synth import mask_paths

    frame = runs.run_predictions(run_dir)
    frame = frame[frame["label"] != "normal"].head(limit)  # pneumonia, or bacterial and viral (three classes)
    return frame if not frame.empty and mask_paths(frame["path"].iloc[0])[0].is_file() else None


def gradcam_in_masks(run_dir: str | Path, limit: int | None = None, model=None) -> pd.DataFrame:
    """Per pneumonia test image (the first `limit`; all by default) of a synthetic set with masks: the share of
    Grad-CAM mass inside the lungs and the opacities, beside the share of the image each mask covers (what a uniform
    heatmap would score) and what a lung-shaped map scores through the Grad-CAM layer's grid (`mask_through_grid`),
    and whether the heatmap's peak lies inside each mask (the pointing game)."""
    run_dir = Path(run_dir)
    frame = _pneumonia_with_masks(run_dir, limit)
    if frame is None:
        raise InputError(f"{run_dir}: its test images have no masks (make the data with `xraylib data synth --masks`)")
    return _localization_table(run_dir, frame, model)


def _localization_table(run_dir: Path, frame: pd.DataFrame, model=None) -> pd.DataFrame:
    """`gradcam_in_masks` of the images in `frame` (pneumonia test predictions whose masks exist)."""
    from PIL import Image

    from xraylib.images import load_gray
    from xraylib.models import load_model
    from xraylib.multiclass import class_codes
    from xraylib.synth import mask_paths

    cfg = runs.read_config(run_dir)
    images = np.stack([load_gray(p, cfg.image_size) for p in frame["path"]]).astype(np.float32)
    if model is None:
        model = load_model(run_dir / runs.MODEL)
    three = cfg.task == "three_class"  # explain the image's own pneumonia kind
    true_classes = class_codes(frame["label"]) if three else None
    heatmaps = gradcam(model, images[..., None], target="predicted" if three else "pneumonia", classes=true_classes)
    grid = tuple(model.get_layer(last_conv_layer(model)).output.shape[1:3])
    rows = []
    for heat, (lungs, opacity) in zip(heatmaps, map(mask_paths, frame["path"]), strict=True):
        lung, opac = (np.asarray(Image.open(m)) > 0 for m in (lungs, opacity))
        lung_fit, opac_fit = fit_mask(lung, heat.shape), fit_mask(opac, heat.shape)  # resized once, used thrice
        rows.append(
            {
                "in_lungs": mass_inside(heat, lung_fit),
                "lung_area": float(lung.mean()),
                "lung_map_in_lungs": mask_through_grid(lung_fit, grid, heat.shape),
                "peak_in_lungs": peak_inside(heat, lung_fit),
                "in_opacity": mass_inside(heat, opac_fit),
                "opacity_area": float(opac.mean()),
                "peak_in_opacity": peak_inside(heat, opac_fit),
            }
        )
    return pd.DataFrame(rows, index=pd.Index(frame["file"].to_numpy(), name="file"))


def save_localization(run_dir: str | Path, model=None) -> pd.DataFrame | None:
    """On a synthetic set with masks, write gradcam_in_masks.csv (`gradcam_in_masks` of every pneumonia test image)
    and return its means; None on data without masks (real radiographs)."""
    run_dir = Path(run_dir)
    frame = _pneumonia_with_masks(run_dir)
    if frame is None:
        return None
    table = _localization_table(run_dir, frame, model)
    write_csv(run_dir / LOCALIZATION_CSV, table.reset_index())
    return table.mean().to_frame("mean over pneumonia test images").round(3)


def localization_means(run: str | Path) -> dict[str, float]:
    """The run's mean Grad-CAM mass and peak inside the lungs (and the lungs' area) from its gradcam_in_masks.csv, as
    leaderboard columns; {} when it did not measure them."""
    masks = Path(run) / LOCALIZATION_CSV
    if not masks.is_file():
        return {}
    try:
        means = pd.read_csv(masks).mean(numeric_only=True)
        row = {"gradcam_in_lungs": float(means["in_lungs"]), "lung_area": float(means["lung_area"])}
    except (ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError):
        raise InputError(f"{masks} is unreadable or lacks in_lungs/lung_area: rerun the run") from None
    row["gradcam_peak_in_lungs"] = float(means.get("peak_in_lungs", float("nan")))
    return row
