"""The real CoronaHack radiographs (224 px copies in ../shared/data/coronahack-224): the index's counts, a small run
end to end, bfloat16 against float32, and the frozen trunk's cache. Each test skips when the folder is absent."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from xraylib.config import resolve_config
from xraylib.data import build_index

# bfloat16 against float32, Xception with ImageNet weights at 96 px on 16 real test images (8 normal, 8 pneumonia),
# measured on an AMD EPYC (bfloat16 emulated): max |dP(pneumonia)| 0.013 and 0.006, relative error of the pooled
# features (|f_bf16 - f_f32| / |f_f32|, the worst image) 0.034 and 0.030, on two sets of 16 images; on an Intel Xeon
# with AMX (bfloat16 in hardware) 0.012 and 0.028. The tolerances leave about three times that.
P_TOLERANCE = 0.04
FEATURE_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def index(real_data) -> pd.DataFrame:
    return build_index(real_data, missing="drop")


def _real_images(index: pd.DataFrame, per_label: int, size: int, skip: int = 0) -> np.ndarray:
    """`per_label` normal and as many pneumonia test images, decoded and resized as training does."""
    from xraylib.pipeline import cached_images

    test = index[index["split"] == "test"].groupby("label").nth(list(range(skip, skip + per_label)))
    return cached_images(list(test["path"]), size, cache_dir="none").astype("float32")


def test_the_real_index_counts(real_data, index):
    from xraylib.data import summarize
    from xraylib.errors import InputError

    split = index["split"]
    assert (split == "train").sum() == 5216 and (split == "test").sum() == 624
    assert index.groupby("split")["patient"].nunique().to_dict() == {"test": 427, "train": 2846}
    assert index.groupby(["split", "label"]).size().to_dict() == {
        ("test", "normal"): 234,
        ("test", "pneumonia"): 390,
        ("train", "normal"): 1341,
        ("train", "pneumonia"): 3875,
    }
    assert set(index["source"]) == {"kermany"}  # the 70 absent images are the non-Kermany ones
    assert index.attrs["dropped"] == 70
    assert "(and 70 listed but missing, dropped)" in summarize(index)
    with pytest.raises(InputError, match="70 of 5910 listed image files are missing"):
        build_index(real_data)


def test_a_small_run_end_to_end_on_the_real_images(real_data, xception_weights, index, tmp_path):
    from xraylib import runs
    from xraylib.cli import main

    out = tmp_path / "run"
    settings = ["image_size=71", "limit=40", "augment=false", f"weights={xception_weights}"]
    args = ["train", "--data", str(real_data), "--backbone", "xception", "--preset", "smoke", "--out", str(out)]
    assert main(args + [x for s in settings for x in ("--set", s)]) == 0
    for name in (runs.CONFIG, runs.HISTORY, runs.MODEL, runs.METRICS, runs.PREDICTIONS, runs.FINISHED):
        assert (out / name).is_file(), name
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["data"]["missing_dropped"] == 70
    predictions = pd.read_csv(out / runs.PREDICTIONS)
    assert len(predictions) == config["subsets"]["test"]["images"] == 40
    test = index[index["split"] == "test"].set_index("file")
    assert predictions["file"].is_unique and set(predictions["file"]) <= set(test.index)
    assert (predictions["label"].to_numpy() == test.loc[predictions["file"], "label"].to_numpy()).all()
    assert predictions["p_pneumonia"].between(0, 1).all()

    def numbers(value):
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, float | int) and not isinstance(value, bool) else []

    metrics = json.loads((out / runs.METRICS).read_text())
    assert math.isfinite(metrics["at_threshold"]["roc_auc"]["value"])
    assert all(math.isfinite(n) for n in numbers(metrics))


def test_bfloat16_predicts_as_float32_on_real_images(index, xception_weights):
    import keras

    from xraylib.models import build_model, feature_model, probability
    from xraylib.pipeline import predict_in_batches

    images = _real_images(index, 8, 96)
    cfg = resolve_config("xception", "sound", {"weights": str(xception_weights), "image_size": "96"})
    saved = keras.mixed_precision.global_policy().name
    outputs, weights = {}, None
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            model = build_model(cfg)
            if weights is None:
                weights = model.get_weights()
            model.set_weights(weights)  # the same head too (float32 variables under both policies)
            pooled = predict_in_batches(feature_model(model), images, 16).astype("float64")
            outputs[policy] = pooled, probability(predict_in_batches(model, images, 16))
    finally:
        keras.mixed_precision.set_global_policy(saved)
    (f32, p32), (bf16, p16) = outputs["float32"], outputs["mixed_bfloat16"]
    relative = np.linalg.norm(bf16 - f32, axis=1) / np.linalg.norm(f32, axis=1)
    print(f"max |dP| {np.abs(p16 - p32).max():.4f}, pooled features' relative error {relative.max():.4f}")
    assert np.abs(p16 - p32).max() < P_TOLERANCE
    assert relative.max() < FEATURE_TOLERANCE


def test_the_trunk_cache_on_real_images(index, xception_weights, tmp_path, trunk_passes):
    import keras

    from xraylib.features import split_at_trunk, trunk_outputs
    from xraylib.models import build_model

    computed = trunk_passes

    def trunk(weights: str, size: int):
        keras.backend.clear_session()  # layer names as in a new process (the key holds the output layer's name)
        settings = {"weights": weights, "image_size": str(size), "fine_tune": "17", "augment": "false"}
        return split_at_trunk(build_model(resolve_config("xception", "sound", settings)))[0]

    small = _real_images(index, 4, 71)
    first = trunk_outputs(trunk(str(xception_weights), 71), small, 8, tmp_path)
    imagenet = trunk(str(xception_weights), 71)  # the same model built again: its outputs are read back
    np.testing.assert_array_equal(trunk_outputs(imagenet, small, 8, tmp_path), first)
    assert computed == [8]
    trunk_outputs(imagenet, _real_images(index, 4, 71, skip=4), 8, tmp_path)  # other images
    trunk_outputs(trunk("none", 71), small, 8, tmp_path)  # other weights
    trunk_outputs(trunk(str(xception_weights), 96), _real_images(index, 4, 96), 8, tmp_path)  # another size
    assert computed == [8, 8, 8, 8] and len(list(tmp_path.glob("trunk-*.npy"))) == 4
