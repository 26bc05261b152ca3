"""The model's own layers: grey-level equalization, the study's augmentation (brightness, zoom + shift, seeding,
inference, serialization), gray to RGB, preprocessing, dropout; and loading a model saved before `augment` became
`layers`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xraylib.layers import (
    BackbonePreprocess,
    GaussianBlur,
    GrayToRGB,
    RandomBrightnessFactor,
    RandomNoise,
    RandomZoomShift,
    augmentation,
    equalization,
    equalizing_table,
    fit_site_tables,
)


def gradient_images(n: int = 64, size: int = 32) -> np.ndarray:
    """Images whose pixels run from 10 to 180 (never clipped by a factor up to 1.3)."""
    row = np.linspace(10, 180, size, dtype="float32")
    return np.broadcast_to(row[None, None, :, None], (n, size, size, 1)).copy()


def test_brightness_multiplies_each_image_by_one_factor_in_the_study_range():
    x = gradient_images()
    y = np.asarray(RandomBrightnessFactor(seed=1)(x, training=True))
    ratio = y / x
    per_image = ratio.reshape(len(x), -1)
    # multiplicative: one factor per image (an additive shift would give a different ratio per pixel)
    assert np.allclose(per_image.min(axis=1), per_image.max(axis=1), rtol=1e-5)
    factors = per_image[:, 0]
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.3 + 1e-6
    assert factors.min() < 0.65 and factors.max() > 1.15  # the whole range is drawn from
    mean_ratio = y.mean(axis=(1, 2, 3)) / x.mean(axis=(1, 2, 3))
    assert np.all((mean_ratio >= 0.5 - 1e-6) & (mean_ratio <= 1.3 + 1e-6))


def test_brightness_clips_to_the_pixel_range():
    y = np.asarray(RandomBrightnessFactor((1.3, 1.3))(np.full((2, 4, 4, 1), 250.0, "float32"), training=True))
    assert np.all(y == 255.0)


@pytest.mark.parametrize(
    "layer",
    [RandomBrightnessFactor(seed=0), RandomZoomShift(seed=0), RandomNoise(5.0, seed=0), augmentation(0)],
)
def test_every_layer_is_inactive_at_inference(layer):
    x = gradient_images(4)
    assert np.array_equal(layer(x), x)
    assert np.array_equal(layer(x, training=False), x)
    assert not np.array_equal(layer(x, training=True), x)


def test_inactive_inside_a_model_at_predict_time():
    inp = keras.Input((32, 32, 1))
    model = keras.Model(inp, augmentation(5)(inp))
    x = gradient_images(4)
    assert np.array_equal(model.predict(x, verbose=0), x)
    assert not np.array_equal(model(x, training=True), x)


def test_noise_adds_its_standard_deviation_pixel_by_pixel_and_clips():
    x = np.full((8, 32, 32, 1), 128.0, "float32")
    added = np.asarray(RandomNoise(10.0, seed=1)(x, training=True)) - x
    assert abs(added.std() - 10.0) < 0.3 and abs(added.mean()) < 0.3
    assert len(np.unique(added[0])) > 500  # drawn pixel by pixel, not one shift per image
    dark = np.asarray(RandomNoise(50.0, seed=1)(np.zeros((2, 16, 16, 1), "float32"), training=True))
    assert dark.min() == 0.0 and dark.max() > 0.0
    bright = np.asarray(RandomNoise(50.0, seed=1)(np.full((2, 16, 16, 1), 255.0, "float32"), training=True))
    assert bright.max() == 255.0 and bright.min() < 255.0


def test_the_model_adds_noise_to_the_raw_image_before_it_equalizes_and_augments():
    """Noise first, as a detector adds it (and as `evaluate --acquisition`'s noise-10): equalization stretches
    noise added after it by the slope of each image's grey-level mapping."""
    from xraylib.config import resolve_config
    from xraylib.models import build_model

    settings = {"weights": "none", "image_size": "71", "fine_tune": "17", "equalize": "histogram", "noise": "10"}
    names = [layer.name for layer in build_model(resolve_config("xception", "sound", settings)).layers[:5]]
    assert names == ["image", "noise", "equalize", "augmentation", "gray_to_rgb"]
    without = build_model(resolve_config("xception", "sound", {**settings, "noise": "0"}))
    assert "noise" not in [layer.name for layer in without.layers]


def test_the_blur_is_scipys_gaussian_filter_with_mirrored_edges_and_acts_at_inference(tmp_path):
    """The model's blur equals `scipy.ndimage.gaussian_filter` (edges mirrored, kernel to 3 sigma) image by image,
    in scoring as in training, and after the model is saved and loaded; a flat image stays flat to its edges."""
    from scipy import ndimage

    x = np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 1)).astype("float32")
    image = keras.Input((40, 40, 1))
    model = keras.Model(image, GaussianBlur(1.5, name="blur")(image))
    out = model.predict(x, verbose=0)
    for one, blurred in zip(x[..., 0], out[..., 0], strict=True):
        np.testing.assert_allclose(blurred, ndimage.gaussian_filter(one, 1.5, mode="mirror", truncate=3.0), atol=1e-3)
    flat = model.predict(np.full((1, 40, 40, 1), 200.0, "float32"), verbose=0)
    np.testing.assert_allclose(flat, 200.0, atol=1e-3)
    model.save(tmp_path / "blur.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "blur.keras").predict(x, verbose=0), out)


def test_the_model_blurs_the_equalized_image():
    """The blur comes after the equalization, which bins grey levels (fractional, blurred levels would put images
    in bins by float rounding, which differs between runtimes: the ONNX export's check failed so)."""
    from xraylib.config import resolve_config
    from xraylib.models import build_model

    settings = {"weights": "none", "image_size": "71", "fine_tune": "17", "equalize": "histogram", "noise": "10"}
    model = build_model(resolve_config("xception", "sound", {**settings, "blur": "1"}))
    assert [layer.name for layer in model.layers[:6]] == [
        "image",
        "noise",
        "equalize",
        "blur",
        "augmentation",
        "gray_to_rgb",
    ]
    assert model.get_layer("blur").sigma == 1.0
    without = build_model(resolve_config("xception", "sound", settings))
    assert "blur" not in [layer.name for layer in without.layers]


def test_augmentation_is_seeded():
    x = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 1)).astype("float32")
    first, again, other = augmentation(7), augmentation(7), augmentation(8)
    a = np.asarray(first(x, training=True))
    assert np.array_equal(a, np.asarray(again(x, training=True)))
    assert not np.array_equal(a, np.asarray(other(x, training=True)))
    assert not np.array_equal(a, np.asarray(first(x, training=True)))  # a new draw on each call


def test_zoom_and_shift_stay_within_ten_percent():
    size = 64
    x = np.zeros((64, size, size, 1), "float32")
    x[:, 30:34, 30:34] = 255.0  # a bright square at the centre
    centre = np.array([31.5, 31.5])
    assert np.allclose(RandomZoomShift(0.0, 0.0, seed=0)(x, training=True), x, atol=1e-3)
    shifted = np.asarray(RandomZoomShift(0.0, 0.1, seed=0)(x, training=True))[..., 0]
    rows, cols = np.indices((size, size))
    mass = shifted.sum(axis=(1, 2))
    com = np.stack([(shifted * rows).sum(axis=(1, 2)) / mass, (shifted * cols).sum(axis=(1, 2)) / mass], 1)
    moves = np.abs(com - centre)
    assert moves.max() <= 0.1 * size + 0.5 and moves.max() > 0.05 * size
    zoomed = np.asarray(RandomZoomShift(0.1, 0.0, seed=0)(x, training=True))[..., 0]
    mass = zoomed.sum(axis=(1, 2))
    assert np.all(mass / x[..., 0].sum(axis=(1, 2)) > 1 / 1.1**2 - 0.05)  # zoom changes the area by <= 10 % a side
    assert np.all(mass / x[..., 0].sum(axis=(1, 2)) < 1 / 0.9**2 + 0.05)
    assert not np.allclose(zoomed, x[..., 0])


@pytest.mark.parametrize("kind", ["histogram", "clahe"])
def test_equalization_acts_at_inference_and_survives_saving(kind, tmp_path):
    """Keras' Equalization alone acts only when training; a model that equalizes must do so for every image it
    scores, and after it is saved and loaded."""
    x = np.random.default_rng(0).integers(0, 128, (2, 32, 32, 1)).astype("float32")
    image = keras.Input((32, 32, 1))
    model = keras.Model(image, equalization(kind)(image))
    out = model.predict(x, verbose=0)
    assert out.max() > 150 and not np.allclose(out, x)  # grey levels 0-127 spread upwards
    model.save(tmp_path / "equalize.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "equalize.keras").predict(x, verbose=0), out)


@pytest.mark.parametrize("kind", ["histogram", "clahe"])
def test_each_image_is_equalized_by_itself_whatever_is_batched_with_it(kind):
    """Keras' Equalization counts one histogram over the whole batch: a dark image batched with a bright one came
    out otherwise than alone, and a prediction depended on its batch."""
    rng = np.random.default_rng(2)
    dark = rng.integers(0, 100, (1, 32, 32, 1)).astype("float32")
    bright = rng.integers(100, 256, (1, 32, 32, 1)).astype("float32")
    image = keras.Input((32, 32, 1))
    model = keras.Model(image, equalization(kind)(image))
    together = model.predict(np.concatenate([dark, bright]), verbose=0)
    np.testing.assert_array_equal(together[:1], model.predict(dark, verbose=0))
    np.testing.assert_array_equal(together[1:], model.predict(bright, verbose=0))
    assert together[0].max() > dark.max() + 20  # the dark image alone spreads upwards


def test_a_model_that_equalizes_runs_when_compiled_with_xla():
    """`jit_compile=true` (and Keras' default on a GPU): XLA cannot compile the per-image histogram, so the layer
    says so and Keras runs the model uncompiled rather than failing."""
    x = np.random.default_rng(3).integers(0, 128, (3, 32, 32, 1)).astype("float32")
    image = keras.Input((32, 32, 1))
    model = keras.Model(image, equalization("histogram")(image))
    model.compile(jit_compile=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), np.asarray(equalization("histogram")(x)))


def test_histogram_equalization_ignores_an_increasing_change_of_grey_levels():
    """What it is for: an image exposed or contrasted otherwise (here each grey level g -> 2g + 1) is equalized to the
    same image."""
    x = np.random.default_rng(1).integers(0, 128, (2, 32, 32, 1)).astype("float32")
    layer = equalization("histogram")
    np.testing.assert_allclose(np.asarray(layer(2 * x + 1)), np.asarray(layer(x)), atol=1e-4)


def test_the_site_table_equalizes_the_pooled_training_histogram():
    """`equalize=site`: one table for every image, the one that flattens the training images' pooled histogram;
    for a single image it is Keras' own equalization of that image. The identity until adapted."""
    rng = np.random.default_rng(4)
    train = rng.integers(0, 128, (6, 32, 32, 1)).astype("float32")
    layer = equalization("site")
    np.testing.assert_array_equal(np.asarray(layer(train)), train)
    fit_site_tables([layer], train)
    pooled = np.asarray(layer(train))
    np.testing.assert_allclose(np.percentile(pooled, [25, 50, 75]), [64, 128, 192], atol=6)  # flat over 0-255
    fractional = train + rng.uniform(0, 1, train.shape).astype("float32")  # binned down, as `adapt` bins
    np.testing.assert_array_equal(np.asarray(layer(fractional)), np.asarray(layer.table)[train.astype(int)])
    fit_site_tables([layer], train[:1])
    keras_own = keras.layers.Equalization(value_range=(0, 255))(train[:1], training=True)
    np.testing.assert_array_equal(np.asarray(layer(train[:1])), np.asarray(keras_own))
    assert equalizing_table(np.bincount([7] * 5, minlength=256)).tolist() == list(range(256))  # one level: identity


def test_the_site_table_keeps_each_images_exposure_and_ignores_its_batch(tmp_path):
    """Unlike the equalization image by image, one table for all keeps a brighter image brighter; an image comes
    out the same alone or in a batch, and after the model is saved and loaded."""
    rng = np.random.default_rng(5)
    train = rng.integers(20, 200, (8, 32, 32, 1)).astype("float32")
    image = keras.Input((32, 32, 1))
    layer = equalization("site")
    model = keras.Model(image, layer(image))
    fit_site_tables(model.layers, train)
    dark, bright = train[:1], np.clip(train[:1] + 40, 0, 255)
    together = model.predict(np.concatenate([dark, bright]), verbose=0)
    np.testing.assert_array_equal(together[:1], model.predict(dark, verbose=0))
    assert together[1].mean() > together[0].mean() + 30
    per_image = equalization("histogram")
    assert abs(float(np.mean(per_image(bright))) - float(np.mean(per_image(dark)))) < 5  # what per image loses
    model.save(tmp_path / "site.keras")
    loaded = keras.models.load_model(tmp_path / "site.keras")
    np.testing.assert_array_equal(loaded.predict(together, verbose=0), model.predict(together, verbose=0))
    np.testing.assert_array_equal(np.asarray(loaded.get_layer("equalize").table), np.asarray(layer.table))


def test_layers_serialize():
    for layer in (RandomZoomShift(0.2, 0.05, seed=3), RandomBrightnessFactor((0.7, 1.1), seed=4), GrayToRGB()):
        clone = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    clone = keras.layers.deserialize(keras.layers.serialize(BackbonePreprocess("inceptionv3")))
    assert clone.backbone == "inceptionv3"


def test_gray_to_rgb_and_the_backbones_own_preprocessing():
    x = gradient_images(2)
    rgb = np.asarray(GrayToRGB()(x))
    assert rgb.shape == (2, 32, 32, 3) and np.array_equal(rgb[..., 2], x[..., 0])
    vgg = keras.applications.vgg16.preprocess_input(rgb.copy())
    assert np.allclose(BackbonePreprocess("vgg16")(rgb), vgg, atol=1e-4)
    assert np.allclose(BackbonePreprocess("xception")(rgb), rgb / 127.5 - 1.0, atol=1e-5)
    assert np.allclose(BackbonePreprocess("efficientnetv2s")(rgb), rgb)  # the model rescales inside
    assert np.allclose(BackbonePreprocess("resnet34")(rgb), rgb / 127.5 - 1.0, atol=1e-5)


def test_seed_state_is_saved_with_the_weights_so_a_resumed_run_draws_the_same(tmp_path):
    from xraylib.layers import SeededDropout

    def model():
        inp = keras.Input((16, 16, 1))
        x = keras.layers.Flatten()(augmentation(3)(RandomNoise(5.0, seed=3)(inp)))
        return keras.Model(inp, SeededDropout(0.5, seed=4)(x))

    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    running = model()
    running(x, training=True)  # "epoch 1"
    running.save_weights(tmp_path / "backup.weights.h5")
    resumed = model()
    resumed.load_weights(tmp_path / "backup.weights.h5")
    assert np.array_equal(running(x, training=True), resumed(x, training=True))  # "epoch 2" draws agree
    assert not np.array_equal(model()(x, training=True), resumed(x, training=True))
    no_dropout = keras.Sequential([keras.Input((4,)), SeededDropout(0.0)])  # rate 0 has no seed generator
    no_dropout.save_weights(tmp_path / "plain.weights.h5")
    no_dropout.load_weights(tmp_path / "plain.weights.h5")


def test_a_model_saved_before_the_rename_of_augment_to_layers_still_loads():
    """tests/fixtures/layers-before-rename.keras was written when these layers lived in `xraylib.augment`."""
    from pathlib import Path

    from xraylib.models import load_model

    fixtures = Path(__file__).parent / "fixtures"
    model = load_model(fixtures / "layers-before-rename.keras")
    names = {type(layer).__name__ for layer in model.layers}
    assert {"GrayToRGB", "BackbonePreprocess", "SeededDropout"} <= names
    probe = np.linspace(0, 255, 2 * 32 * 32, dtype="float32").reshape(2, 32, 32, 1)
    expected = np.load(fixtures / "layers-before-rename-outputs.npy")
    np.testing.assert_allclose(np.asarray(model(probe, training=False)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("augment", ["true", "false"])
def test_a_run_with_the_site_table_fits_it_on_its_training_images(augment, synth_data, tmp_path, train_run):
    """Trained end to end (`augment=true`) or on the frozen trunk's cached outputs (`false`), the saved model's
    table is the equalization of its own training images' pooled histogram."""
    from xraylib import runs
    from xraylib.config import resolve_config
    from xraylib.prepare import prepare_data

    cfg = resolve_config("resnet34", "smoke", {"image_size": "48", "equalize": "site", "augment": augment})
    run = train_run(synth_data, cfg, tmp_path / "resnet34")
    train = prepare_data(synth_data, cfg).images["train"]
    expected = equalizing_table(np.bincount(np.clip(train, 0, 255).astype(np.int64).ravel(), minlength=256))
    table = np.asarray(keras.models.load_model(run / runs.MODEL).get_layer("equalize").table)
    np.testing.assert_array_equal(table, expected)
    assert not np.array_equal(table, np.arange(256))
