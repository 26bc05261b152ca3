"""The backbone registry, the self-defined ResNet-34, the model factory, weights, saving and loading."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import time

import keras
import numpy as np
import pytest

from xraylib.backbones import BACKBONES
from xraylib.config import resolve_config
from xraylib.errors import InputError
from xraylib.explain import gradcam, last_conv_layer
from xraylib.models import build_model, load_model, probability, resnet34
from xraylib.weights import check_imagenet

LAST_CONV = {
    "xception": "block14_sepconv2_act",
    "vgg16": "block5_conv3",
    "vgg19": "block5_conv4",
    "resnet101v2": "post_relu",
    "inceptionv3": "mixed10",
    "inceptionresnetv2": "conv_7b_ac",
    "efficientnetv2s": "top_activation",
    "efficientnetv2m": "top_activation",
    "resnet34": "conv5_block3_out",
}


def config(backbone: str = "resnet34", **overrides):
    """A smoke config with weights=none (tests never reach the network)."""
    return resolve_config(backbone, "smoke", {"weights": "none", **{k: str(v) for k, v in overrides.items()}})


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random gray images (n, size, size, 1) float32 in [0, 255]."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype("float32")


@pytest.fixture(scope="module")
def built() -> dict:
    """Models built at 150 px by the build test, reused by the Grad-CAM test (building is the slow part)."""
    return {}


@pytest.mark.slow  # about 75 s of model building for the nine (EfficientNetV2M, InceptionResNetV2: 15 s each)
@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_at_smallest_and_150px_and_gives_one_probability_per_image(name, built):
    for size in (BACKBONES[name].min_size, 150):
        start = time.perf_counter()
        model = build_model(config(name, image_size=size))
        p = probability(model(images(2, size), training=False))
        print(f"{name} {size}px: build + call {time.perf_counter() - start:.1f}s")
        assert model.input_shape == (None, size, size, 1) and model.inputs[0].name == "image"
        assert model.output_shape == (None, 1)
        assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
        # flat: the backbone's layers sit in the one functional model (Grad-CAM reaches them)
        assert not any(isinstance(layer, keras.Model) and layer.name != "augmentation" for layer in model.layers)
    built[name] = model


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_gradcam_finds_the_last_conv_layer_and_runs_on_every_backbone(name, built):
    model = built.get(name) or build_model(config(name, image_size=150))
    layer = last_conv_layer(model)
    assert layer == LAST_CONV[name]
    assert len(model.get_layer(layer).output.shape) == 4
    maps = gradcam(model, images(2, 150))
    assert maps.shape == (2, 150, 150) and np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_resnet34_is_the_study_network_with_about_21_3_million_parameters():
    model = resnet34(include_top=False, weights=None, input_shape=(150, 150, 3))
    assert model.count_params() == 21_305_600
    assert 21.2e6 < model.count_params() < 21.4e6
    stem = model.get_layer("conv1_conv")
    assert stem.kernel_size == (5, 5) and stem.strides == (2, 2) and stem.filters == 64
    assert model.get_layer("pool1_pool").pool_size == (3, 3)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 3 + 4 + 6 + 3
    shortcuts = [layer.name for layer in model.layers if layer.name.endswith("_0_conv")]
    assert shortcuts == ["conv3_block1_0_conv", "conv4_block1_0_conv", "conv5_block1_0_conv"]
    assert model.output_shape == (None, 5, 5, 512)
    assert resnet34(input_shape=(64, 64, 3), pooling="avg").output_shape == (None, 512)
    assert resnet34(include_top=True, input_shape=(64, 64, 3), classes=2).output_shape == (None, 2)


def test_seed_head_is_the_study_dense2_sigmoid_on_avg_pooling():
    model = build_model(resolve_config("resnet34", "study", {"image_size": "32", "augment": "false"}))
    assert model.output_shape == (None, 2)
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert isinstance(model.layers[-2], keras.layers.GlobalAveragePooling2D)
    out = np.asarray(model(images(3, 32), training=False))
    p = probability(out)
    assert np.allclose(p, out[:, 1] / out.sum(axis=1))
    assert np.array_equal(p > 0.5, out.argmax(axis=1) == 1)


def test_probability_reads_both_heads():
    assert np.allclose(probability(np.array([[0.2], [0.9]])), [0.2, 0.9])
    assert np.allclose(probability(np.array([[0.1, 0.3], [0.8, 0.2]])), [0.75, 0.2])
    with pytest.raises(InputError, match="shape"):
        probability(np.zeros((2, 3)))


def test_fine_tune_none_n_all_and_frozen_batchnorm():
    frozen = build_model(config(fine_tune="none", image_size=32))
    assert [w.name for w in frozen.trainable_weights] == ["kernel", "bias"]  # the head only
    top = build_model(config(fine_tune="7", pooled_norm=False, image_size=32))  # conv5_block3: 1_conv ... out
    trainable = [layer.name for layer in top.layers if layer.trainable and layer.weights]
    assert trainable == ["conv5_block3_1_conv", "conv5_block3_2_conv", "pneumonia"]
    assert not any(layer.trainable for layer in top.layers if isinstance(layer, keras.layers.BatchNormalization))
    everything = build_model(config(fine_tune="all", pooled_norm=False, image_size=32))
    assert all(layer.trainable for layer in everything.layers)
    # a frozen BatchNorm runs in inference mode: training=True leaves its moving statistics alone
    bn = frozen.get_layer("conv1_bn")
    before = keras.ops.convert_to_numpy(bn.moving_mean)
    frozen(images(4, 32), training=True)
    assert np.array_equal(before, keras.ops.convert_to_numpy(bn.moving_mean))


def test_save_and_load_roundtrip_with_safe_mode_gives_identical_predictions(tmp_path):
    """A small model holding every custom layer (the full-size resnet34 round trip is the weights test below)."""
    from xraylib.layers import BackbonePreprocess, GrayToRGB, augmentation

    inp = keras.Input((32, 32, 1), name="image")
    x = BackbonePreprocess("vgg16")(GrayToRGB()(augmentation(3)(inp)))
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.save(tmp_path / "small.keras")
    loaded = load_model(tmp_path / "small.keras")
    x = images(4, 32)
    assert np.array_equal(model(x, training=False), loaded(x, training=False))
    assert [type(layer).__name__ for layer in loaded.layers[:4]] == [
        "InputLayer",
        "Sequential",
        "GrayToRGB",
        "BackbonePreprocess",
    ]
    assert loaded.layers[3].backbone == "vgg16"


def test_load_model_refuses_non_keras_and_unsafe_files_in_one_line(tmp_path):
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "missing.keras")
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(InputError, match="not a loadable Keras model") as info:
        load_model(text)
    assert "\n" not in str(info.value)
    assert info.value.__cause__ is not None, "Keras' own error stays the cause, for a notebook's traceback"
    inp = keras.Input((4,))
    unsafe = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    unsafe.save(tmp_path / "lambda.keras")
    with pytest.raises(InputError, match="safe mode") as info:
        load_model(tmp_path / "lambda.keras")
    assert "\n" not in str(info.value)
    assert info.value.__cause__ is not None


def test_weights_path_loads_a_whole_model_from_keras_or_weights_h5(tmp_path):
    source = build_model(config(image_size=32))
    source.save(tmp_path / "run.keras")
    source.save_weights(tmp_path / "run.weights.h5")
    x = images(3, 32)
    expected = np.asarray(source(x, training=False))
    for name in ("run.keras", "run.weights.h5"):
        model = build_model(config(image_size=32, weights=tmp_path / name))
        assert np.allclose(model(x, training=False), expected, atol=1e-6), name
    with pytest.raises(InputError, match="does not fit this model"):
        build_model(config(image_size=32, head="study", weights=tmp_path / "run.weights.h5"))
    larger = build_model(config(image_size=48, weights=tmp_path / "run.keras"))  # fine-tuning at a larger size
    assert np.array_equal(larger.get_layer("conv1_conv").kernel, source.get_layer("conv1_conv").kernel)


def test_weights_path_loads_backbone_weights_from_a_legacy_h5_file(tmp_path):
    backbone = resnet34(input_shape=(32, 32, 3))
    backbone.save(tmp_path / "resnet34_notop.h5")  # the legacy HDF5 format of Keras' ImageNet files
    model = build_model(config(image_size=32, weights=tmp_path / "resnet34_notop.h5"))
    assert np.array_equal(model.get_layer("conv1_conv").kernel, backbone.get_layer("conv1_conv").kernel)


def test_imagenet_offline_fails_within_seconds_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        build_model(config("vgg16", image_size=32, weights="imagenet"))
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message and "weights=none" in message and "vgg16_weights" in message
    # a file in the Keras cache that fails Keras' md5 check: one line naming it and what to do, in seconds
    cached = tmp_path / "models" / BACKBONES["vgg16"].weights_file
    cached.parent.mkdir()
    cached.write_bytes(b"not Keras' download")
    with pytest.raises(InputError, match=r"fails Keras' md5 check .* --set weights=") as info:
        check_imagenet(BACKBONES["vgg16"])
    assert str(cached) in str(info.value) and "\n" not in str(info.value)
    # an intact file in the Keras cache is enough (no network needed)
    intact = dataclasses.replace(BACKBONES["vgg16"], weights_md5=hashlib.md5(cached.read_bytes()).hexdigest())
    monkeypatch.setitem(BACKBONES, "vgg16", intact)
    check_imagenet(BACKBONES["vgg16"])
    # the self-defined CNN has no ImageNet weights: built from scratch, no network
    assert build_model(config("resnet34", image_size=32, weights="imagenet")).count_params() > 21e6


def test_builds_under_mixed_precision_with_a_float32_output():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(config(image_size=32))
        out = model(images(2, 32), training=False)
        assert model.get_layer("conv1_conv").compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32" and np.isfinite(np.asarray(out)).all()
