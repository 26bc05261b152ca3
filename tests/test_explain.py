"""Grad-CAM: the last convolutional layer, heatmaps that point at the evidence, mass inside a mask.

Grad-CAM on each of the nine backbones is tested in test_models.py, which reuses the models its build test made.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xraylib.config import resolve_config
from xraylib.errors import InputError
from xraylib.explain import gradcam, last_conv_layer, mask_through_grid, mass_inside, peak_inside
from xraylib.layers import BackbonePreprocess, GrayToRGB
from xraylib.models import build_model

SIZE = 48


def squares(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images; odd ones (pneumonia) carry a bright 12 px square at a random place. -> images, y, boxes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(40, 120, (n, SIZE, SIZE, 1)).astype("float32")
    y = (np.arange(n) % 2).astype("float32")
    boxes = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        r, c = rng.integers(2, SIZE - 14, 2)
        if y[i]:
            x[i, r : r + 12, c : c + 12] += 110
        boxes[i, max(r - 3, 0) : r + 15, max(c - 3, 0) : c + 15] = True  # the square and a 3 px margin
    return x, y, boxes


def tiny_cnn() -> keras.Model:
    """A small all-convolutional classifier with the suite's input and head conventions."""
    layers = keras.layers
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    h = layers.Rescaling(1 / 255.0)(inp)
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(1, activation="sigmoid", name="pneumonia")(h))


@pytest.mark.slow  # trains a tiny CNN for about 10 s
def test_gradcam_of_a_trained_model_points_at_the_signal():
    keras.utils.set_random_seed(0)
    x, y, boxes = squares(256)
    model = tiny_cnn()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.95
    assert last_conv_layer(model) == "last_conv"
    positives = np.flatnonzero(y == 1)[:16]
    maps = gradcam(model, x[positives])
    inside = [mass_inside(m, b) for m, b in zip(maps, boxes[positives], strict=True)]
    print(f"Grad-CAM mass inside the square (+3 px): {np.mean(inside):.2f}; area {boxes[positives].mean():.2f}")
    assert np.mean(inside) > 0.8 and boxes[positives].mean() < 0.2


def test_gradcam_shape_range_and_no_augmentation():
    model = build_model(resolve_config("resnet34", "smoke", {"image_size": "48", "augment": "true"}))
    x, _, _ = squares(3)
    maps = gradcam(model, x)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.array_equal(maps, gradcam(model, x[..., 0]))  # augmentation inactive: the same maps again
    assert np.allclose(gradcam(model, x, target="pneumonia")[maps.max(axis=(1, 2)) > 0].max(), 1.0)


def test_seed_head_model_is_explained_too():
    model = build_model(resolve_config("resnet34", "study", {"image_size": "48", "augment": "false"}))
    maps = gradcam(model, squares(2)[0])
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all()


def test_last_conv_layer_needs_a_conv_layer():
    inp = keras.Input((8,))
    with pytest.raises(InputError, match="no convolutional layer"):
        last_conv_layer(keras.Model(inp, keras.layers.Dense(1)(inp)))


def test_last_conv_layer_is_never_a_step_before_the_backbone():
    image = keras.Input((8, 8, 1), name="image")
    front = BackbonePreprocess("xception", name="preprocess")(GrayToRGB(name="gray_to_rgb")(image))
    pooled = keras.layers.GlobalAveragePooling2D()(front)
    with pytest.raises(InputError, match="no convolutional layer"):
        last_conv_layer(keras.Model(image, keras.layers.Dense(1)(pooled)))


def test_mass_inside():
    heat = np.zeros((10, 10))
    heat[:, :5] = 1.0
    left = np.zeros((10, 10), bool)
    left[:, :5] = True
    assert mass_inside(heat, left) == 1.0
    assert mass_inside(heat, ~left) == 0.0
    assert mass_inside(np.ones((10, 10)), left) == pytest.approx(0.5)
    big = np.kron(left, np.ones((4, 4))).astype("uint8") * 255  # a 0/255 mask of another size is resized
    assert mass_inside(heat, big) == pytest.approx(1.0)
    assert np.isnan(mass_inside(np.zeros((10, 10)), left))


def test_mask_through_grid_loses_mass_at_coarse_grids():
    disc = np.hypot(*np.mgrid[-32:32, -32:32]) < 12  # a disc covering 11 % of a 64 x 64 image
    assert mask_through_grid(disc, (64, 64), (64, 64)) == pytest.approx(1.0)  # the grid is the image: nothing spills
    shares = [mask_through_grid(disc, (g, g), (64, 64)) for g in (2, 4, 8, 16)]
    assert all(a < b for a, b in zip(shares, shares[1:], strict=False))  # finer grids keep more of it inside
    assert disc.mean() < shares[0] and shares[-1] < 1.0
    big = np.kron(disc, np.ones((2, 2))).astype("uint8") * 255  # a 0/255 mask of another size is resized first
    assert mask_through_grid(big, (8, 8), (64, 64)) == pytest.approx(shares[2])


def test_peak_inside():
    heat = np.zeros((10, 10))
    heat[2, 7] = 1.0
    left = np.zeros((10, 10), bool)
    left[:, :5] = True
    assert peak_inside(heat, ~left) == 1.0 and peak_inside(heat, left) == 0.0
    assert peak_inside(heat, np.kron(~left, np.ones((3, 3))).astype("uint8") * 255) == 1.0
    assert np.isnan(peak_inside(np.zeros((10, 10)), left))
