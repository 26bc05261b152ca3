"""A frozen trunk computed once: the split reproduces the model, and its cached outputs are reused only when the
weights and the images are the same (the image size is part of both)."""

from __future__ import annotations

import numpy as np
import pytest

from xraylib.config import resolve_config


@pytest.fixture(scope="module")
def xception():
    """Xception at 71 px, random weights, the last 17 layers trained (block 13 and 14, as in the `cpu` recipe)."""
    from xraylib.models import build_model

    cfg = resolve_config(
        "xception", "sound", {"weights": "none", "image_size": "71", "fine_tune": "17", "augment": "false"}
    )
    return build_model(cfg)


def _images(n: int, size: int = 71, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype("float32")


def test_split_at_a_block_boundary_reproduces_the_model(xception):
    import keras

    from xraylib.features import split_at_trunk

    trunk, top = split_at_trunk(xception)
    # the trunk ends with block 12's residual sum (Keras numbers "add_N" per process), the top starts block 13
    assert isinstance(trunk.layers[-1], keras.layers.Add)
    assert "block13_sepconv1_act" in [layer.name for layer in top.layers[:3]]
    assert "block12_sepconv3_bn" in [layer.name for layer in trunk.layers]
    assert not any(layer.trainable_weights for layer in trunk.layers)
    assert top.trainable_weights and len(top.trainable_weights) == len(xception.trainable_weights)
    x = _images(4)
    np.testing.assert_allclose(top(trunk(x)), xception(x), rtol=1e-5, atol=1e-6)


def test_a_fully_trained_model_has_no_trunk():
    from xraylib.features import split_at_trunk
    from xraylib.models import build_model

    cfg = resolve_config("resnet34", "smoke", {"image_size": "32", "fine_tune": "all", "pooled_norm": "false"})
    assert split_at_trunk(build_model(cfg)) is None


def test_trunk_outputs_are_cached_and_keyed(xception, tmp_path, trunk_passes):
    from xraylib.features import split_at_trunk, trunk_outputs

    trunk, _ = split_at_trunk(xception)
    computed = trunk_passes
    x = _images(5)
    first = trunk_outputs(trunk, x, 4, tmp_path)
    again = trunk_outputs(trunk, x, 2, tmp_path)  # another batch size: the same outputs, read back
    assert computed == [5] and len(list(tmp_path.glob("trunk-*.npy"))) == 1
    np.testing.assert_array_equal(first, again)
    trunk_outputs(trunk, _images(5, seed=1), 4, tmp_path)  # other images
    weight = trunk.layers[-3].weights[0]
    weight.assign(weight.numpy() * 1.01)  # other weights
    trunk_outputs(trunk, x, 4, tmp_path)
    assert computed == [5, 5, 5] and len(list(tmp_path.glob("trunk-*.npy"))) == 3
    trunk_outputs(trunk, x, 4, None)  # no cache folder: computed, nothing written
    assert computed == [5, 5, 5, 5] and len(list(tmp_path.glob("trunk-*.npy"))) == 3


def test_an_augmented_model_reads_the_outputs_cached_without_augmentation(xception, tmp_path, trunk_passes):
    """The augmentation block is the identity outside training: the same trunk with it gives the same outputs, under
    the same key, so a run with augment=true is evaluated on the plain run's cache."""
    from xraylib.features import split_at_trunk, trunk_key, trunk_outputs
    from xraylib.models import build_model

    cfg = resolve_config(
        "xception", "sound", {"weights": "none", "image_size": "71", "fine_tune": "17", "augment": "true"}
    )
    augmented = build_model(cfg)
    augmented.set_weights(xception.get_weights())
    plain, trunk = split_at_trunk(xception)[0], split_at_trunk(augmented)[0]
    assert "augmentation" in [layer.name for layer in trunk.layers]
    x = _images(3)
    assert trunk_key(trunk, x) == trunk_key(plain, x)
    first = trunk_outputs(plain, x, 4, tmp_path)
    np.testing.assert_array_equal(trunk_outputs(trunk, x, 4, tmp_path), first)
    assert trunk_passes == [3]
    np.testing.assert_allclose(trunk.predict(x, verbose=0), first, rtol=1e-5, atol=1e-6)


def test_a_damaged_trunk_cache_is_computed_again(xception, tmp_path):
    from xraylib.features import split_at_trunk, trunk_outputs

    trunk, _ = split_at_trunk(xception)
    x = _images(3)
    first = trunk_outputs(trunk, x, 4, tmp_path)
    (cached,) = tmp_path.glob("trunk-*.npy")
    data = bytearray(cached.read_bytes())
    data[-8:] = b"\x00" * 8
    cached.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        again = trunk_outputs(trunk, x, 4, tmp_path)
    np.testing.assert_array_equal(first, again)


def _trunk_key_with(xception, x: np.ndarray, **settings: str) -> str:
    """The trunk key of the fixture's model (its weights) built with `settings` besides its own."""
    from xraylib.features import split_at_trunk, trunk_key
    from xraylib.models import build_model

    base = {"weights": "none", "image_size": "71", "fine_tune": "17", "augment": "false"}
    model = build_model(resolve_config("xception", "sound", {**base, **settings}))
    model.set_weights(xception.get_weights())
    return trunk_key(split_at_trunk(model)[0], x)


def test_an_equalized_trunk_has_its_own_cache_key(xception):
    """An equalization layer has no weights: the key must still tell trunks with and without it, and its kinds,
    apart, or a run with `equalize` would be trained on another run's cached outputs."""
    x = _images(2)
    keys = {_trunk_key_with(xception, x, equalize=kind) for kind in ("none", "histogram", "clahe")}
    assert len(keys) == 3


def test_a_blurred_trunk_has_its_own_cache_key_for_each_sigma(xception):
    """The blur has no weights and acts on every image: its presence and its sigma must change the key, or a run
    with `blur` would be trained on another run's cached outputs."""
    x = _images(2)
    keys = {_trunk_key_with(xception, x, blur=sigma) for sigma in ("0", "1", "2")}
    assert len(keys) == 3


def test_the_site_table_is_part_of_the_cache_key(xception):
    """`equalize=site` keeps its table as a weight: a trunk adapted to other training images has another key."""
    from xraylib.features import split_at_trunk, trunk_key
    from xraylib.layers import fit_site_tables
    from xraylib.models import build_model

    x = _images(2)
    settings = {"weights": "none", "image_size": "71", "fine_tune": "17", "augment": "false", "equalize": "site"}
    model = build_model(resolve_config("xception", "sound", settings))
    trunk = split_at_trunk(model)[0]
    keys = [trunk_key(trunk, x)]
    for train in (x, x[:1] // 2):
        fit_site_tables(model.layers, train)
        keys.append(trunk_key(trunk, x))
    assert len(set(keys)) == 3


def test_a_noisy_run_is_evaluated_on_the_outputs_cached_without_its_noise(xception):
    """Noise, like the augmentation, is the identity outside training: the trunk key leaves it out, so a run with
    `noise` scores its images through the outputs the same trunk cached without it (and never trains on them)."""
    x = _images(2)
    keys = {_trunk_key_with(xception, x, augment="true", noise=noise) for noise in ("0", "10")}
    assert len(keys) == 1


def test_a_model_frozen_nowhere_but_its_site_table_has_no_trunk():
    """The site equalization's table is a weight but is set, not trained: a model whose every backbone layer trains
    has no frozen trunk to cache (else the cache would hold the preprocessed images themselves)."""
    from xraylib.features import split_at_trunk
    from xraylib.models import build_model

    settings = {"weights": "none", "image_size": "32", "fine_tune": "all", "augment": "false", "equalize": "site"}
    assert split_at_trunk(build_model(resolve_config("resnet34", "sound", settings))) is None
