"""The model's own Keras layers: a Gaussian blur, grey-level equalization, the study's augmentation (seeded,
serializable, inside the model), noise on the raw image, gray to RGB, each backbone's preprocessing, and seeded
dropout.

The study (Keras `ImageDataGenerator`) used zoom_range=0.1, width/height_shift_range=0.1 and
brightness_range=[0.5, 1.3]. Its brightness is a multiplicative factor (PIL `ImageEnhance.Brightness`, clipped to
[0, 255]), unlike `keras.layers.RandomBrightness`, which adds. Zoom and shift are applied as ONE affine transform on
the single gray channel (the model expands to three channels afterwards): about four times faster than two Keras
layers on RGB. The augmentation layers are active only when called with training=True.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from xraylib.backbones import Backbone, get_backbone

ZOOM = 0.1
SHIFT = 0.1
BRIGHTNESS = (0.5, 1.3)


class SavesSeedState:
    """Saves the seed generator's state with the weights: a run resumed from a checkpoint (BackupAndRestore) draws
    the augmentations an uninterrupted run would have drawn (Keras' own random layers restart from the seed)."""

    def save_own_variables(self, store) -> None:
        """Store the seed generator state next to the layer's (no) variables."""
        super().save_own_variables(store)
        if getattr(self, "seed_generator", None) is not None:
            store["seed_state"] = ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store) -> None:
        """Restore the seed generator state when the file holds one (files without it load unchanged)."""
        if "seed_state" in store and getattr(self, "seed_generator", None) is not None:
            state = np.asarray(store["seed_state"])
            self.seed_generator.state.assign(ops.cast(state, self.seed_generator.state.dtype))


@keras.saving.register_keras_serializable(package="xraylib")
class RandomZoomShift(SavesSeedState, keras.layers.Layer):
    """Random zoom (x and y factors in [1 - zoom, 1 + zoom]) and shift (± shift of width/height) as one affine map."""

    def __init__(
        self,
        zoom: float = ZOOM,
        shift: float = SHIFT,
        fill_mode: str = "nearest",
        interpolation: str = "bilinear",
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.zoom, self.shift = float(zoom), float(shift)
        self.fill_mode, self.interpolation, self.seed = fill_mode, interpolation, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training:
            return inputs
        batch = ops.shape(inputs)[0]
        height = ops.cast(ops.shape(inputs)[1], "float32")
        width = ops.cast(ops.shape(inputs)[2], "float32")
        draw = keras.random.uniform((batch, 4), minval=-1.0, maxval=1.0, seed=self.seed_generator)
        zx, zy = 1.0 + self.zoom * draw[:, 0], 1.0 + self.zoom * draw[:, 1]
        tx, ty = self.shift * width * draw[:, 2], self.shift * height * draw[:, 3]
        # output pixel (x, y) samples input ((x - cx) * zx + cx + tx, (y - cy) * zy + cy + ty)
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        zeros = ops.zeros_like(zx)
        transform = ops.stack([zx, zeros, cx * (1.0 - zx) + tx, zeros, zy, cy * (1.0 - zy) + ty, zeros, zeros], 1)
        return ops.image.affine_transform(inputs, transform, interpolation=self.interpolation, fill_mode=self.fill_mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(
            zoom=self.zoom,
            shift=self.shift,
            fill_mode=self.fill_mode,
            interpolation=self.interpolation,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="xraylib")
class RandomBrightnessFactor(SavesSeedState, keras.layers.Layer):
    """Multiply each image by a factor drawn from [lower, upper], clipped to value_range (the study's brightness)."""

    def __init__(
        self,
        factor: tuple[float, float] = BRIGHTNESS,
        value_range: tuple[float, float] = (0.0, 255.0),
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        lower, upper = (float(f) for f in factor)
        if not 0.0 <= lower <= upper:
            raise ValueError(f"brightness factor must satisfy 0 <= lower <= upper, got {factor}")
        self.factor, self.value_range, self.seed = (lower, upper), tuple(float(v) for v in value_range), seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training:
            return inputs
        shape = (ops.shape(inputs)[0], 1, 1, 1)
        scale = keras.random.uniform(shape, self.factor[0], self.factor[1], seed=self.seed_generator)
        return ops.clip(inputs * ops.cast(scale, inputs.dtype), self.value_range[0], self.value_range[1])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(factor=list(self.factor), value_range=list(self.value_range), seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="xraylib")
class SeededDropout(SavesSeedState, keras.layers.Dropout):
    """keras.layers.Dropout whose seed state is saved with the weights (the head's dropout; exact resume)."""


# ---------------------------------------------------------------------------------------------------------------
# Input layers: gray -> RGB and each backbone's own preprocess_input


@keras.saving.register_keras_serializable(package="xraylib")
class GrayToRGB(keras.layers.Layer):
    """Repeat a single gray channel three times; three-channel input passes through."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        if inputs.shape[-1] == 3:
            return inputs
        return keras.ops.concatenate([inputs, inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def preprocess_input(bb: Backbone):
    """The backbone's own keras.applications `preprocess_input` (RGB in [0, 255]); the self-defined CNN scales
    to [-1, 1]."""
    if not bb.preprocessing:
        return lambda x: x / 127.5 - 1.0
    import importlib

    return importlib.import_module(f"keras.applications.{bb.preprocessing}").preprocess_input


@keras.saving.register_keras_serializable(package="xraylib")
class BackbonePreprocess(keras.layers.Layer):
    """`preprocess_input` of the named backbone, on RGB in [0, 255]."""

    def __init__(self, backbone: str, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        bb = get_backbone(backbone)
        self.backbone = bb.name
        self._preprocess = preprocess_input(bb)

    def call(self, inputs):
        return self._preprocess(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        return {**super().get_config(), "backbone": self.backbone}


@keras.saving.register_keras_serializable(package="xraylib")
class HistogramEqualization(keras.layers.Equalization):
    """Keras' `Equalization` as a model's own step, image by image. Keras applies it only when training, as an
    augmentation, its symbolic output is its input tensor, so a functional model built with it leaves it out, and
    it counts one histogram over the whole batch, so an image's equalization depended on the images batched with
    it; a model equalizing its training images must equalize every image it scores, by that image alone."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_jit = False  # XLA cannot compile a histogram counted inside the per-image loop

    def call(self, data, training=True):
        return super().call(data, training=True)

    def transform_images(self, images, transformation=None, training=True):
        equalize = super().transform_images
        return keras.ops.map(lambda image: equalize(image, transformation, training=True), images)

    def compute_output_spec(self, inputs, **kwargs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="xraylib")
class GaussianBlur(keras.layers.Layer):
    """Each image blurred by a Gaussian of `sigma` pixels (kernel to 3 sigma), in training and scoring alike, on
    the image mirrored at its edges (zeros would darken them). A fixed kernel and `ops.depthwise_conv`, not Keras'
    `ops.image.gaussian_blur`: that builds its kernel from the batch's shape at run time, which the ONNX export
    does not reproduce (its check failed by 0.3). (B, S, S, 1) float [0, 255] in and out, in float32."""

    def __init__(self, sigma: float, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sigma = float(sigma)
        self.radius = int(np.ceil(3 * self.sigma))
        taps = np.exp(-0.5 * (np.arange(-self.radius, self.radius + 1) / self.sigma) ** 2)
        taps /= taps.sum()
        self.kernel = np.outer(taps, taps).astype("float32")[:, :, None, None]

    def call(self, images):
        r = self.radius
        mirrored = ops.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
        return ops.depthwise_conv(mirrored, ops.convert_to_tensor(self.kernel), strides=1, padding="valid")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        return {**super().get_config(), "sigma": self.sigma}


def equalizing_table(counts: np.ndarray) -> np.ndarray:
    """The 256 grey levels that equalize a histogram of 256 `counts` (grey levels 0-255), as Keras' `Equalization`
    computes them for one image: round(255 (cdf - cdf_min) / (n - cdf_min)); the identity for a single level."""
    cdf = np.cumsum(np.asarray(counts, dtype=np.float64))
    cdf_min = cdf[np.nonzero(cdf)[0][0]] if cdf[-1] > 0 else 0.0
    if cdf[-1] - cdf_min == 0:
        return np.arange(256, dtype=np.float32)
    return np.clip(np.round((cdf - cdf_min) * 255.0 / (cdf[-1] - cdf_min)), 0, 255).astype(np.float32)


@keras.saving.register_keras_serializable(package="xraylib")
class SiteEqualization(keras.layers.Layer):
    """Every image's grey levels mapped through one table: the equalization of the pooled histogram of the images
    given to `adapt` (a run's training images), the same map for every image the model scores, so each image keeps
    its exposure relative to the others and no image's result depends on another. The identity until adapted;
    the table is saved with the weights. (B, S, S, 1) float [0, 255] in and out."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.table = self.add_weight(
            name="table", shape=(256,), initializer=lambda shape, dtype: ops.arange(256, dtype=dtype), trainable=False
        )

    def adapt(self, images: np.ndarray, chunk: int = 256) -> None:
        """Set the table from the pooled histogram of `images`, grey levels 0-255 (binned as `call` bins them)."""
        counts = np.zeros(256, dtype=np.int64)
        for start in range(0, len(images), chunk):
            levels = np.clip(np.asarray(images[start : start + chunk], dtype=np.float32), 0, 255).astype(np.int64)
            counts += np.bincount(levels.ravel(), minlength=256)
        self.table.assign(equalizing_table(counts))

    def call(self, inputs):
        return ops.take(self.table, ops.cast(ops.clip(inputs, 0, 255), "int32"))

    def compute_output_shape(self, input_shape):
        return input_shape


def equalization(kind: str) -> keras.layers.Layer:
    """Grey levels equalized: each image through its own cumulative histogram (`histogram`), or tile by tile with
    a clipped histogram (`clahe`, Keras' CLAHE layer; slower), or every image through the table that equalizes the
    training images' pooled histogram (`site`, `SiteEqualization`, set by `fit_site_tables`). (B, S, S, 1) float
    [0, 255] in and out, in float32 under any precision policy."""
    if kind == "site":
        return SiteEqualization(name="equalize")
    layer = keras.layers.ContrastLimitedAdaptiveHistogramEqualization if kind == "clahe" else HistogramEqualization
    return layer(value_range=(0, 255), dtype="float32", name="equalize")


def fit_site_tables(layers, images: np.ndarray) -> None:
    """Adapt each `SiteEqualization` among `layers` (a model's, or `models.grey_steps`') to `images`, the training
    images: before training, as other statistics of the training images are set."""
    for layer in layers:
        if isinstance(layer, SiteEqualization):
            layer.adapt(images)


@keras.saving.register_keras_serializable(package="xraylib")
class RandomNoise(SavesSeedState, keras.layers.Layer):
    """Add Gaussian noise of `stddev` grey levels to each pixel, clipped to value_range: a lower dose. (Keras'
    `GaussianNoise` takes a standard deviation of at most 1, for inputs scaled to [0, 1]; these are [0, 255].)"""

    def __init__(
        self, stddev: float, value_range: tuple[float, float] = (0.0, 255.0), seed: int | None = None, **kwargs
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not stddev >= 0:
            raise ValueError(f"noise stddev must not be negative, got {stddev}")
        self.stddev, self.value_range, self.seed = float(stddev), tuple(float(v) for v in value_range), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        noise = keras.random.normal(ops.shape(inputs), stddev=self.stddev, seed=self.seed_generator)
        return ops.clip(inputs + ops.cast(noise, inputs.dtype), self.value_range[0], self.value_range[1])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(stddev=self.stddev, value_range=list(self.value_range), seed=self.seed)
        return config


def augmentation(seed: int, zoom: float = ZOOM, shift: float = SHIFT, brightness=BRIGHTNESS) -> keras.Sequential:
    """The study's augmentation block: (B, S, S, 1) float [0, 255] in and out; identity unless training."""
    return keras.Sequential(
        [
            RandomZoomShift(zoom, shift, seed=seed, name="zoom_shift"),
            RandomBrightnessFactor(brightness, seed=seed + 1, name="brightness"),
        ],
        name="augmentation",
    )


AUGMENTATION_TEXT = f"zoom ±{ZOOM * 100:g} %, shift ±{SHIFT * 100:g} %, brightness × [{BRIGHTNESS[0]}, {BRIGHTNESS[1]}]"


def noise(stddev: float, seed: int) -> RandomNoise:
    """The model's noise step, first of all (before any equalization, as a detector's noise comes before any
    processing): `stddev` grey levels; identity unless training."""
    return RandomNoise(stddev, seed=seed + 2, name="noise")  # seed and seed + 1 draw the augmentation
