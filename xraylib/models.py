"""The study's self-defined ResNet-34, the model factory, and loading weight files into a model (the registry is
backbones.py; where ImageNet weights come from, weights.py)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xraylib.backbones import Backbone, get_backbone
from xraylib.errors import InputError, first_line
from xraylib.weights import fetchable_weights

if TYPE_CHECKING:  # keras (TensorFlow) is imported inside the functions: the registry stays cheap to import
    import keras

    from xraylib.config import RunConfig


def constructor(bb: Backbone) -> Callable:
    """The backbone's constructor, called as constructor(include_top=False, weights=..., input_tensor=...,
    pooling=...): a keras.applications model, or the study's ResNet-34."""
    if not bb.application:
        return resnet34
    import keras

    return getattr(keras.applications, bb.application)


# ---------------------------------------------------------------------------------------------------------------
# The study's self-defined CNN


def _basic_block(x, filters: int, stride: int, name: str):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (1x1 conv + BN when stride != 1) shortcut, add, ReLU."""
    import keras

    layers = keras.layers
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(shortcut)
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_2_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet34(
    include_top: bool = False,
    weights: str | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 2,
    classifier_activation: str = "sigmoid",
    name: str = "resnet34",
) -> keras.Model:
    """The study's ResNet-34-style CNN (docs/recipes.md, Backbones), called like a keras.applications constructor.

    Conv(64, 5, stride 2) -> BN -> ReLU -> MaxPool(3, stride 2); basic-block stages [3, 4, 6, 3] with 64/128/256/512
    filters (first block of stages 2-4 with stride 2 and a 1x1 conv + BN shortcut); `pooling` None | avg | max;
    `include_top` adds global average pooling and Dense(classes). It has no ImageNet weights: `weights` "imagenet"
    or None builds it randomly initialised, a file path loads that file with `Model.load_weights`.
    """
    import keras

    layers = keras.layers
    if input_tensor is None:
        inputs = x = keras.Input(shape=input_shape or (None, None, 3), name="input_layer")
    else:
        inputs, x = keras.utils.get_source_inputs(input_tensor), input_tensor
    x = layers.Conv2D(64, 5, strides=2, padding="same", name="conv1_conv")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, (blocks, filters) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512], strict=True), start=2):
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = _basic_block(x, filters, stride, name=f"conv{stage}_block{block}")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights not in (None, "none", "imagenet"):
        model.load_weights(weights)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Whole-model weight files


def _is_model_file(path: str) -> bool:
    """`.keras` and `.weights.h5` files hold a whole model's weights; any other `.h5` holds a backbone's."""
    return path.endswith(".keras") or path.endswith(".weights.h5")


def _copy_weights(model: keras.Model, path: str) -> None:
    """Load a whole model's weights from a `.weights.h5` file or a saved `.keras` model of the same architecture."""
    if path.endswith(".weights.h5"):
        import warnings

        try:
            with warnings.catch_warnings():  # Keras warns about each mismatched layer before it raises
                warnings.simplefilter("ignore", UserWarning)
                model.load_weights(path)
        except Exception as exc:  # Keras raises ValueError/KeyError/OSError for mismatched files
            raise InputError(
                f"weights={path}: does not fit this model (saved from another backbone or head?): {first_line(exc)}"
            ) from exc
        return
    source = load_model(path)
    mine = [layer for layer in model.layers if layer.weights]
    theirs = [layer for layer in source.layers if layer.weights]
    shapes = [[tuple(w.shape) for w in layer.weights] for layer in mine]
    if shapes != [[tuple(w.shape) for w in layer.weights] for layer in theirs]:
        raise InputError(
            f"weights={path}: that model's layers do not match this one (same backbone, head and equalize needed)"
        )
    for target, layer in zip(mine, theirs, strict=True):
        target.set_weights(layer.get_weights())


# ---------------------------------------------------------------------------------------------------------------
# The model factory


def _set_trainable(layers: list, fine_tune: str) -> None:
    """all: every backbone layer trains; none: none does; N: the last N layers do, BatchNorm kept frozen.

    A frozen (trainable=False) BatchNormalization layer runs in inference mode in Keras 3: its moving statistics
    are used and not updated, the Keras transfer-learning convention. The frozen part's Dropout layers (the
    stochastic depth of EfficientNetV2) are switched off for the same reason: a frozen feature extractor must give
    the same features in training as at inference.
    """
    import keras

    if fine_tune == "all":
        for layer in layers:
            layer.trainable = True
        return
    first = len(layers) if fine_tune == "none" else max(0, len(layers) - int(fine_tune))
    for i, layer in enumerate(layers):
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= first and not batchnorm
        if i < first and isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0


def grey_steps(cfg: RunConfig, augment: bool | None = None) -> list[keras.layers.Layer]:
    """The model's steps on the grey image, in their order: noise (`cfg.noise` > 0), equalization (`cfg.equalize`),
    blur (`cfg.blur` > 0; after the equalization, which bins grey levels: bins of blurred, fractional levels would
    hang on float rounding, which differs between runtimes), the study's augmentation (`augment`, default
    `cfg.augment`)."""
    from xraylib.layers import GaussianBlur, augmentation, equalization, noise

    steps = [noise(cfg.noise, cfg.seed)] if cfg.noise else []
    if cfg.equalize != "none":
        steps.append(equalization(cfg.equalize))
    if cfg.blur:
        steps.append(GaussianBlur(cfg.blur, name="blur"))
    if cfg.augment if augment is None else augment:
        steps.append(augmentation(cfg.seed))
    return steps


def build_model(cfg: RunConfig) -> keras.Model:
    """Input "image" (S, S, 1) float [0, 255] -> [noise] -> [equalization] -> [blur] -> [augmentation] -> gray to RGB ->
    preprocess -> backbone -> head.

    cfg.weights: "imagenet" (Keras download/cache; resnet34 has none and is built from scratch), "auto" (settled by
    `weights.fetchable_weights`), "none", or a path:
    a `.keras` model or `.weights.h5` file loads the WHOLE model (same backbone and head, any image size; e.g. an
    earlier run's model.keras); any other file (e.g. Keras' `*_notop.h5` ImageNet file) loads into the BACKBONE.
    Not compiled.
    """
    bb = get_backbone(cfg.backbone)
    weights = fetchable_weights(bb, str(cfg.weights))  # before importing TensorFlow: offline, fails in under a second

    import keras

    from xraylib.layers import BackbonePreprocess, GrayToRGB, SeededDropout

    size = int(cfg.image_size or bb.default_size)
    image = keras.Input((size, size, 1), name="image", dtype="float32")
    x = image
    for step in grey_steps(cfg):
        x = step(x)
    x = GrayToRGB(name="gray_to_rgb")(x)
    x = BackbonePreprocess(bb.name, name="preprocess")(x)
    front_layers = keras.Model(image, x).layers
    front = {id(layer) for layer in front_layers}
    weighted_front = any(layer.weights for layer in front_layers)  # the site equalization's table

    backbone_weights = None
    if weights == "imagenet" and bb.weights_file:
        backbone_weights = "imagenet"
    elif weights not in ("imagenet", "none") and not _is_model_file(weights):
        backbone_weights = weights
    pooling = "avg" if cfg.head == "study" else None
    try:
        make = constructor(bb)
        base = make(
            include_top=False, weights=None if weighted_front else backbone_weights, input_tensor=x, pooling=pooling
        )
        if weighted_front and backbone_weights is not None:  # Keras' loader would count the front's weights too
            reference = make(
                include_top=False, weights=backbone_weights, input_shape=tuple(x.shape[1:]), pooling=pooling
            )
            keras.Model(x, base.output).set_weights(reference.get_weights())
    except InputError:
        raise
    except Exception as exc:
        if backbone_weights is None:
            raise
        raise InputError(f"weights={weights}: could not load into {bb.name} ({first_line(exc)})") from exc
    backbone_layers = [layer for layer in base.layers if id(layer) not in front]
    _set_trainable(backbone_layers, str(cfg.fine_tune))

    if cfg.head == "study":  # the study's head, as published: Dense(2, sigmoid) on avg-pooled features
        output = keras.layers.Dense(2, activation="sigmoid", dtype="float32", name="predictions")(base.output)
    else:
        y = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
        if cfg.pooled_norm:  # standardised with statistics of the training images: see adapt_to_data
            y = keras.layers.Normalization(name="pool_norm")(y)
        y = SeededDropout(cfg.dropout, seed=cfg.seed, name="dropout")(y)
        if cfg.task == "three_class":  # softmax over normal, bacterial, viral
            output = keras.layers.Dense(3, activation="softmax", dtype="float32", name="classes")(y)
        else:
            output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="pneumonia")(y)
    model = keras.Model(image, output, name=f"{bb.name}_{cfg.head}")
    if weights not in ("imagenet", "none") and _is_model_file(weights):
        _copy_weights(model, weights)
    return model


def _pooled_index(model: keras.Model) -> int:
    """Position of the layer whose output feeds the head: "pool" (sound head), the backbone's pooling (study head)."""
    names = [layer.name for layer in model.layers]
    return names.index("pool") if "pool" in names else len(names) - 2


_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its split_at_features


def feature_model(model: keras.Model) -> keras.Model:
    """The part of `model` from the image to the pooled backbone features, sharing its layers."""
    import keras

    return keras.Model(model.inputs, model.layers[_pooled_index(model)].output, name="features")


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(features, head) sharing `model`'s layers: `feature_model`, and the layers after it. Training the head
    trains `model`'s head. Built once per model, so that each half's traced predict is reused."""
    import keras

    if model not in _SPLITS:
        features = feature_model(model)
        x = pooled = keras.Input(features.output.shape[1:], name="pooled")
        for layer in model.layers[_pooled_index(model) + 1 :]:
            x = layer(x)
        _SPLITS[model] = features, keras.Model(pooled, x, name="head")
    return _SPLITS[model]


def adapt_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Give each frozen BatchNormalization layer of a randomly initialised backbone the mean and variance of its
    inputs on one batch of `images` (instead of its initial 0 and 1, which let activations grow layer after layer)."""
    import keras

    frozen_bn = [x for x in model.layers if isinstance(x, keras.layers.BatchNormalization) and not x.trainable]
    if not frozen_bn:
        return
    momenta = [layer.momentum for layer in frozen_bn]
    for layer in frozen_bn:
        layer.trainable, layer.momentum = True, 0.0  # one training-mode pass sets the moving statistics
    model(images[:128].astype("float32"), training=True)
    for layer, momentum in zip(frozen_bn, momenta, strict=True):
        layer.trainable, layer.momentum = False, momentum


def adapt_to_data(model: keras.Model, images: np.ndarray, random_backbone: bool, batch_size: int = 32) -> None:
    """Statistics of a model's frozen parts from training images, before training: the site equalization's table
    (`layers.fit_site_tables`, `equalize=site`), `adapt_batchnorm` for a randomly initialised backbone, then the
    `pool_norm` layer, if any, standardises the pooled features (`standardise_pooled`). Together they turn a frozen
    backbone, random or ImageNet, into features a linear head learns from (the `demo` preset)."""
    from xraylib.layers import fit_site_tables
    from xraylib.pipeline import predict_in_batches

    fit_site_tables(model.layers, images)
    if random_backbone:
        adapt_batchnorm(model, images)
    if "pool_norm" in {layer.name for layer in model.layers}:
        standardise_pooled(model.get_layer("pool_norm"), predict_in_batches(feature_model(model), images, batch_size))


def standardise_pooled(layer: keras.layers.Normalization, pooled: np.ndarray) -> None:
    """Set a Normalization layer to centre each pooled channel on its training mean and divide it by its training
    variance shrunk toward the mean variance of all channels (var_c + mean(var)).

    Plain per-channel standardisation divides by each channel's own SD. Post-ReLU ImageNet channels that almost
    never fire on the training images have an SD near 0, so a validation image on which one fires is standardised
    to values in the thousands (measured: |z| up to 1,536 with Xception's ImageNet weights), and the head's loss
    explodes. The shrunk variance keeps every channel's gain below 1 / SD of a typical channel.
    """
    layer.adapt(pooled)
    variance = np.asarray(layer.adapt_variance)
    layer.adapt_variance.assign(variance + variance.mean())
    layer.finalize_state()


def fit_probe_head(
    model: keras.Model, start, inputs: np.ndarray, labels: np.ndarray, balanced: bool, batch_size: int
) -> None:
    """Set the head (`model`'s last layer, Dense) to a logistic regression (scikit-learn's, its default L2 penalty)
    fitted to the features it reads of `inputs`, fed at `model`'s tensors `start` (its inputs, or a trunk's
    outputs), and their class codes `labels`, each class weighed by its inverse frequency if `balanced`: the
    linear probe of LP-FT (Kumar et al. 2022), so fine-tuning starts from a fitted head instead of a random one."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from xraylib.pipeline import predict_in_batches

    head = model.layers[-1]
    features = predict_in_batches(keras.Model(start, head.input), inputs, batch_size)
    probe = LogisticRegression(max_iter=1000, class_weight="balanced" if balanced else None)
    probe.fit(features.reshape(len(features), -1).astype("float64"), labels.astype(int))
    head.set_weights([probe.coef_.T.astype("float32"), probe.intercept_.astype("float32")])


def probability(outputs) -> np.ndarray:
    """(N,) P(pneumonia) from the sound head's (N, 1) or the study head's (N, 2) one-hot [normal, pneumonia] outputs.

    For the study head the two sigmoid units are normalised, p = o1 / (o0 + o1), so p > 0.5 is the study's argmax.
    """
    out = np.asarray(outputs, dtype="float64")
    if out.ndim == 1:
        return out
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim == 2 and out.shape[1] == 2:
        total = out.sum(axis=1)
        return np.divide(out[:, 1], total, out=np.full(len(out), 0.5), where=total > 0)
    raise InputError(f"model outputs of shape {out.shape}: expected (N,), (N, 1) or (N, 2)")


def load_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a `.keras` model with safe_mode=True; a one-line InputError for missing, non-Keras or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    import keras

    import xraylib.layers  # noqa: F401  (registers the custom layers)

    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:
        text = first_line(exc)
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            raise InputError(f"{path}: refused by Keras safe mode ({text})") from exc
        raise InputError(f"{path}: not a loadable Keras model file ({text})") from exc
