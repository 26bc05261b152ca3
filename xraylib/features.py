"""A frozen trunk computed once: a model split where its trained layers begin, the trunk's outputs cached on disk.

A run whose backbone is frozen below some layer (`fine_tune=none` or `fine_tune=N`) and whose images are not
augmented feeds every epoch the same trunk outputs. Computing them once and training only the layers above them
trains the model exactly as end-to-end training would (the trunk's BatchNormalization layers run in inference
mode either way), at a fraction of the cost: the trunk is most of a backbone's arithmetic. The outputs are saved
under the cache folder (`cache_dir`), named by a hash of the trunk's layers and weights, of the images and of the
precision policy, so a second run with another seed, head setting, learning rate or threshold rule skips the trunk,
and a change of weights, equalization, image size or data computes it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref

import numpy as np

from xraylib.pipeline import cache_checksum, predict_in_batches, read_cache, resolve_cache_dir, write_cache

_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (trunk, top)
# 2: histogram equalization became image by image (Keras' own counts over the batch); trunks cached before differ
KEY_VERSION = 2
CHUNK = 512  # images per predict call: the outputs go into one array, not a list of batches and its concatenation


def _first_trained(model) -> int | None:
    """Index of the first layer with trainable weights (None: nothing trains)."""
    return next((i for i, layer in enumerate(model.layers) if layer.trainable_weights), None)


def split_at_trunk(model):
    """(trunk, top) sharing `model`'s layers: the trunk ends at the last layer before the first trained one whose
    output alone feeds everything after it (a block boundary of a residual backbone); the top is the rest. None
    when the trunk would hold no weights (every backbone layer trains). Built once per model, so each half's
    traced predict is reused."""
    import keras

    if model in _SPLITS:
        return _SPLITS[model]
    first = _first_trained(model)
    split = None
    for i in range(first - 1 if first is not None else len(model.layers) - 1, 0, -1):
        try:  # Keras refuses a top whose outputs need a tensor from before the cut (a skip connection)
            top = keras.Model(model.layers[i].output, model.outputs, name="top")
        except ValueError:
            continue
        if not any(layer.weights for layer in model.layers[: i + 1] if layer.name != "equalize"):
            break  # nothing frozen but the input steps (the site equalization's table is set, not trained)
        split = keras.Model(model.inputs, model.layers[i].output, name="trunk"), top
        break
    _SPLITS[model] = split
    return split


def _layers(trunk) -> str:
    """The trunk's layers, each as its class and its configuration less its name (Keras numbers names anew per
    model), less the model's noise and augmentation (`layers.noise`, `layers.augmentation`): the identity outside
    training, so a run with `augment=true` is evaluated on the outputs cached by the same trunk without them."""
    described = []
    for layer in trunk.layers:
        if layer.name in ("noise", "augmentation"):
            continue
        config = {key: value for key, value in layer.get_config().items() if key not in ("name", "trainable")}
        described.append(f"{type(layer).__name__}:{json.dumps(config, sort_keys=True, default=str)}")
    return "\n".join(described)


def trunk_key(trunk, images: np.ndarray) -> str:
    """A digest of the trunk's layers (class and configuration: an equalization or its kind counts), its weights
    (moving statistics included) and output shape, the images and the dtype policy: equal keys give equal outputs."""
    import keras

    h = hashlib.blake2b(digest_size=16)
    policy = keras.mixed_precision.global_policy().name
    h.update(f"{KEY_VERSION}|{_layers(trunk)}|{tuple(trunk.output.shape[1:])}|{policy}|{images.shape}|".encode())
    for weight in trunk.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).data)
    h.update(cache_checksum(images).encode())
    return h.hexdigest()


def trunk_outputs(trunk, images: np.ndarray, batch_size: int, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The trunk's outputs for `images`, read from the cache folder when an equal trunk computed them before (see
    `trunk_key`), else computed and saved there; `cache_dir=None`: computed, never saved."""
    shape = (len(images), *trunk.output.shape[1:])
    folder = resolve_cache_dir(cache_dir)
    path = folder / f"trunk-{trunk_key(trunk, images)}.npy" if folder is not None else None
    hit = read_cache(path, shape, np.dtype("float32")) if path is not None else None
    if hit is not None:
        return hit
    outputs = np.empty(shape, dtype="float32")
    for start in range(0, len(images), CHUNK):
        outputs[start : start + CHUNK] = predict_in_batches(trunk, images[start : start + CHUNK], batch_size)
    if path is not None:
        write_cache(path, outputs)
    return outputs
