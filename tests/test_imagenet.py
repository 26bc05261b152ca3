"""Transfer from ImageNet: xraylib's model front against keras.applications, and the real Xception weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from xraylib.backbones import BACKBONES
from xraylib.config import resolve_config
from xraylib.images import load_gray
from xraylib.layers import preprocess_input
from xraylib.models import build_model, constructor, feature_model
from xraylib.prepare import prepare_data
from xraylib.run_evaluation import evaluate_run
from xraylib.train import build_run_model, fit

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "samples" / "coronahack-test"
APPLICATIONS = [name for name, bb in BACKBONES.items() if bb.application]


def radiographs(size: int) -> np.ndarray:
    """(N, S, S, 1) float32 in [0, 255]: real radiographs where the shared samples exist, else a smooth ramp."""
    files = sorted(SAMPLES.glob("*.jp*g"))[:3]
    if files:
        return np.stack([load_gray(f, size) for f in files])[..., None].astype("float32")
    ramp = np.linspace(0, 255, size * size, dtype="float32").reshape(1, size, size, 1)
    return np.concatenate([ramp, 255 - ramp])


def plain_features(name: str, cfg, ours: keras.Model, images: np.ndarray) -> np.ndarray:
    """Pooled features of the plain keras.applications model, holding our model's backbone weights, fed
    `preprocess_input` of the same images repeated to RGB."""
    bb = BACKBONES[name]
    size = cfg.image_size
    plain = constructor(bb)(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    mine = [layer for layer in ours.layers if layer.weights and layer.name != "pneumonia"]
    for target, source in zip([layer for layer in plain.layers if layer.weights], mine, strict=True):
        target.set_weights(source.get_weights())  # same order, same shapes (set_weights checks them)
    rgb = np.repeat(images, 3, axis=-1)
    return np.asarray(plain(preprocess_input(bb)(rgb.copy()), training=False))


@pytest.mark.parametrize("name", APPLICATIONS)
def test_front_matches_keras_applications(name):
    cfg = resolve_config(name, "sound", {"weights": "none", "image_size": "96", "augment": "false"})
    cfg.image_size = max(96, BACKBONES[name].min_size)
    model = build_model(cfg)
    images = radiographs(cfg.image_size)
    ours = np.asarray(feature_model(model)(images, training=False))
    np.testing.assert_allclose(ours, plain_features(name, cfg, model, images), rtol=1e-4, atol=1e-5)


def test_front_matches_keras_applications_with_imagenet_xception(xception_weights):
    cfg = resolve_config("xception", "sound", {"weights": str(xception_weights), "image_size": "150"})
    model = build_model(cfg)
    images = radiographs(150)
    ours = np.asarray(feature_model(model)(images, training=False))
    reference = keras.applications.Xception(include_top=False, weights=str(xception_weights), pooling="avg")
    theirs = np.asarray(
        reference(keras.applications.xception.preprocess_input(np.repeat(images, 3, -1)), training=False)
    )
    assert np.abs(ours).max() > 0.1, "ImageNet features of a radiograph are not all zero"
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_imagenet_weights_load_behind_the_site_table(xception_weights):
    """Keras loads a weights file into an application by counting the layers with weights from the model's input;
    the site equalization's table is one more, so the backbone's weights are loaded into it alone."""
    cfg = resolve_config(
        "xception", "sound", {"weights": str(xception_weights), "image_size": "71", "equalize": "site"}
    )
    model = build_model(cfg)
    reference = keras.applications.Xception(include_top=False, weights=str(xception_weights), input_shape=(71, 71, 3))
    for name in ("block1_conv1", "block14_sepconv2", "block14_sepconv2_bn"):
        for ours, theirs in zip(
            model.get_layer(name).get_weights(), reference.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(ours, theirs)


def _demo_run(data: Path, weights: str, out: Path) -> tuple[pd.DataFrame, dict]:
    cfg = resolve_config("xception", "demo", {"weights": weights, "bootstrap": "50", "gradcam_images": "0"})
    prepared = prepare_data(data, cfg)
    model = build_run_model(cfg)
    history = fit(model, prepared, cfg, out)
    return history, evaluate_run(model, prepared, cfg, out)


@pytest.fixture(scope="module")
def larger_synth(tmp_path_factory) -> Path:
    from xraylib.synth import write_synthetic_set

    return write_synthetic_set(tmp_path_factory.mktemp("synth300") / "coronahack", n_train=300, n_test=100, seed=3)


def test_frozen_imagenet_features_beat_random_ones_with_sane_losses(xception_weights, larger_synth, tmp_path):
    imagenet, m_imagenet = _demo_run(larger_synth, str(xception_weights), tmp_path / "imagenet")
    random, m_random = _demo_run(larger_synth, "none", tmp_path / "random")
    auc = {k: m["at_threshold"]["roc_auc"]["value"] for k, m in (("imagenet", m_imagenet), ("random", m_random))}
    assert auc["imagenet"] > auc["random"] + 0.02, auc
    # the standardised head stays numerically sane on real features (it once gave validation losses in the 1,000s)
    assert imagenet["val_loss"].max() < 1.5 and imagenet["val_loss"].min() < 1.0, imagenet["val_loss"].tolist()
    assert random["val_loss"].min() < 1.0, random["val_loss"].tolist()


def test_fine_tuning_from_imagenet_keeps_batchnorm_frozen_and_validation_alive(xception_weights, synth_data, tmp_path):
    settings = {"weights": str(xception_weights), "image_size": "96", "fine_tune": "30", "epochs": "2"}
    settings.update(limit="48", batch_size="16", bootstrap="20", gradcam_images="0", augment="false")
    cfg = resolve_config("xception", "sound", settings)
    prepared = prepare_data(synth_data, cfg)
    model = build_run_model(cfg)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.asarray(layer.moving_mean).copy() for layer in bn]
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert trainable and "pneumonia" in trainable and not any(layer.trainable for layer in bn)
    history = fit(model, prepared, cfg, tmp_path / "run")
    for layer, mean in zip(bn, before, strict=True):
        np.testing.assert_array_equal(np.asarray(layer.moving_mean), mean, err_msg=f"{layer.name} moved")
    assert np.isfinite(history["val_loss"]).all() and history["val_loss"].min() < 1.5
    result = evaluate_run(model, prepared, cfg, tmp_path / "run")
    p = pd.read_csv(tmp_path / "run" / "val_predictions.csv")["p_pneumonia"]
    assert p.std() > 0.01, "validation collapsed to one constant prediction"
    assert result["at_threshold"]["roc_auc"]["value"] > 0.6
