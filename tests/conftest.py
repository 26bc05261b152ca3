"""Shared fixtures: the real data and Xception's ImageNet weights beside the repository, and a small synthetic
dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xraylib.backbones import BACKBONES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XRAYLIB_CACHE", "none")
os.environ["XRAYLIB_WEIGHTS_DIR"] = ""  # tests choose their weights themselves

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = SHARED / "coronahack-224"
XCEPTION = SHARED.parent / "weights" / BACKBONES["xception"].weights_file


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the clone; skip when it is absent (a user's clone has none)."""
    if not SHARED.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED}, which this clone does not have")
    return SHARED


@pytest.fixture(scope="session")
def real_data() -> Path:
    """`../shared/data/coronahack-224`, the real radiographs as 224 px copies; skip when it is absent."""
    if not REAL.is_dir():
        pytest.skip(f"needs the real images in {REAL}, which this clone does not have")
    return REAL


@pytest.fixture(scope="session")
def xception_weights() -> Path:
    """Keras' ImageNet weights of Xception in `../shared/weights`; skip when they are absent."""
    if not XCEPTION.is_file():
        pytest.skip(f"needs the ImageNet weights {XCEPTION}, which this clone does not have")
    return XCEPTION


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle layout, with masks."""
    from xraylib.synth import write_synthetic_set

    return write_synthetic_set(
        tmp_path_factory.mktemp("synth") / "coronahack", n_train=160, n_test=60, seed=1, masks=True
    )


@pytest.fixture(scope="session")
def untrained_run(tmp_path_factory) -> Path:
    """A run directory as `xraylib train` leaves it, with an untrained ResNet-34 at 32 px: model.keras,
    config.json, metrics.json (threshold 0.4)."""
    import json

    from xraylib.config import resolve_config
    from xraylib.models import build_model

    cfg = resolve_config("resnet34", "smoke", {"image_size": "32"})
    out = tmp_path_factory.mktemp("run")
    build_model(cfg).save(out / "model.keras")
    (out / "config.json").write_text(json.dumps({"run": cfg.to_json()}))
    (out / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.4}}))
    return out


@pytest.fixture(scope="session")
def train_run():
    """A function (data, cfg, out) -> out that trains and evaluates a run as `xraylib train` does, without its
    figures: config.json, model.keras, predictions, metrics.json."""

    def train(data: Path, cfg, out: Path) -> Path:
        from xraylib.prepare import prepare_data
        from xraylib.run_evaluation import evaluate_run
        from xraylib.train import build_run_model, fit, record_config

        prepared = prepare_data(data, cfg)
        record_config(prepared, cfg, data, out)
        model = build_run_model(cfg)
        fit(model, prepared, cfg, out)
        evaluate_run(model, prepared, cfg, out)
        return out

    return train


@pytest.fixture(scope="module")
def shifted_data(synth_data, tmp_path_factory) -> Path:
    """A copy of the synthetic set whose test images are brighter (x 1.25 + 20 grey levels) than its training images:
    a new site."""
    import shutil

    from PIL import Image

    from xraylib.data import build_index

    copy = shutil.copytree(synth_data, tmp_path_factory.mktemp("shifted") / "coronahack")
    index = build_index(copy)
    for path in index.loc[index["split"] == "test", "path"]:
        with Image.open(path) as image:
            brighter = image.point(lambda v: min(255, int(v * 1.25 + 20)))
        brighter.save(path, quality=90)
    return copy


@pytest.fixture
def trunk_passes(monkeypatch) -> list[int]:
    """The number of images of each forward pass `xraylib.features` computes (a pass read from its cache is none)."""
    from xraylib import features

    computed: list[int] = []
    real = features.predict_in_batches

    def counting(model, images, batch_size):
        computed.append(len(images))
        return real(model, images, batch_size)

    monkeypatch.setattr(features, "predict_in_batches", counting)
    return computed


@pytest.fixture(scope="session")
def stop_before_epoch():
    """A maker of Keras callbacks that interrupt `fit` (KeyboardInterrupt, as a kill would) when epoch `n` (counted
    from 0) begins."""
    import keras

    class StopBeforeEpoch(keras.callbacks.Callback):
        def __init__(self, n: int):
            super().__init__()
            self.n = n

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.n:
                raise KeyboardInterrupt

    return StopBeforeEpoch
