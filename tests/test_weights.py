"""Where ImageNet weights come from: weights_dir, Keras' cache, the download; the network asked only when fetching."""

from __future__ import annotations

import pytest

from xraylib.backbones import BACKBONES
from xraylib.config import PRESETS, resolve_config, settle_weights
from xraylib.weights import fetchable_weights, resolve_weights


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No Keras cache, and a download server that cannot be reached."""
    monkeypatch.setattr("xraylib.weights.reachable", lambda *a, **k: False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def test_weights_dir_gives_each_backbone_its_own_file(tmp_path, offline):
    (tmp_path / BACKBONES["vgg16"].weights_file).write_bytes(b"x")
    vgg16, vgg19, resnet34 = BACKBONES["vgg16"], BACKBONES["vgg19"], BACKBONES["resnet34"]
    assert resolve_weights(vgg16, "imagenet", str(tmp_path)) == str(tmp_path / vgg16.weights_file)
    assert resolve_weights(vgg16, "auto", str(tmp_path)).endswith("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert resolve_weights(vgg19, "auto", str(tmp_path)) == "auto", "no file, no cache: the download decides"
    assert fetchable_weights(vgg19, "auto") == "none", "no file, no cache, offline: random weights"
    assert resolve_weights(vgg19, "imagenet", str(tmp_path)) == "imagenet", "imagenet stays asked for"
    assert resolve_weights(resnet34, "auto", str(tmp_path)) == "none"


def test_resolving_a_configuration_never_asks_the_network(monkeypatch, tmp_path):
    monkeypatch.setattr("xraylib.weights.reachable", lambda *a, **k: pytest.fail("resolving must not go online"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for name in BACKBONES:
        for preset in PRESETS:
            resolve_config(name, preset)
    assert resolve_config("vgg16", "demo").weights == "auto"


def test_settling_auto_weights_where_they_are_fetched(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cfg = resolve_config("vgg16", "demo")
    monkeypatch.setattr("xraylib.weights.reachable", lambda *a, **k: True)
    assert settle_weights(cfg).weights == "imagenet"
    monkeypatch.setattr("xraylib.weights.reachable", lambda *a, **k: False)
    assert settle_weights(cfg).weights == "none" and cfg.weights == "auto"
    assert settle_weights(resolve_config("resnet34", "demo")).weights == "none"
