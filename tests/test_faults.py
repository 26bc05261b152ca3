"""Hostile input at the command line: one-line errors with exit status 2, and nothing overwritten or lost."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from xraylib.cli import main
from xraylib.fileio import exclusive


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(capsys, *named: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in named:
        assert word in err, err
    return err


def test_index_never_overwrites_the_dataset_it_reads(synth_data, capsys):
    metadata = synth_data / "Chest_xray_Corona_Metadata.csv"
    before = digest(metadata)
    assert main(["data", "index", str(synth_data), "--out", str(metadata)]) == 2
    one_line_error(capsys, "inputs", str(metadata))
    image = next((synth_data).rglob("*.jpeg"))
    assert main(["data", "index", str(synth_data), "--out", str(image)]) == 2
    one_line_error(capsys, "inputs")
    assert digest(metadata) == before
    assert main(["data", "index", str(synth_data), "--out", str(synth_data)]) == 2
    one_line_error(capsys, "is a directory")


@pytest.fixture(scope="module")
def run_with_model(tmp_path_factory) -> Path:
    import keras

    run = tmp_path_factory.mktemp("run")
    image = keras.Input((32, 32, 1), name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="conv")(image))
    keras.Model(image, keras.layers.Dense(1, activation="sigmoid", name="pneumonia")(x)).save(run / "model.keras")
    (run / "predictions.csv").write_text("file,label\na.jpeg,normal\n")
    return run


@pytest.mark.parametrize("name", ["model.keras", "predictions.csv"])
def test_predict_never_overwrites_the_model_or_its_run(name, run_with_model, synth_data, capsys):
    target = run_with_model / name
    before = digest(target)
    images = str(synth_data / "Coronahack-Chest-XRay-Dataset")
    assert main(["predict", str(run_with_model / "model.keras"), images, "--out", str(target)]) == 2
    one_line_error(capsys, str(target))
    assert digest(target) == before


def test_predict_refuses_an_input_image_as_output(run_with_model, synth_data, capsys):
    image = next(synth_data.rglob("*.jpeg"))
    before = digest(image)
    assert main(["predict", str(run_with_model / "model.keras"), str(image), "--out", str(image)]) == 2
    one_line_error(capsys, "inputs")
    assert digest(image) == before


def test_a_second_writer_of_a_run_folder_is_refused(synth_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(synth_data), "--backbone", "resnet34", "--preset", "smoke", "--out", str(out)]
    with exclusive(out):  # another process (or this one) is training there
        assert main(args) == 2
        one_line_error(capsys, "in use by another xraylib process", str(out))
        sweep = ["sweep", "--data", str(synth_data), "--backbones", "resnet34", "--preset", "smoke", "--out", str(out)]
        assert main(sweep) == 2
        one_line_error(capsys, "in use")
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("verb", ["train", "sweep", "synth", "gradcam"])
def test_an_output_folder_that_is_a_file_is_one_line(verb, synth_data, run_with_model, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me\n")
    args = {
        "train": ["train", "--data", str(synth_data), "--backbone", "resnet34", "--preset", "smoke"],
        "sweep": ["sweep", "--data", str(synth_data), "--backbones", "resnet34", "--preset", "smoke"],
    }
    if verb == "synth":
        command = ["data", "synth", str(blocker)]
    elif verb == "gradcam":
        image = str(next(synth_data.rglob("*.jpeg")))
        command = ["predict", str(run_with_model / "model.keras"), image, "--gradcam", str(blocker)]
    else:
        command = [*args[verb], "--out", str(blocker)]
    assert main(command) == 2
    one_line_error(capsys, str(blocker))
    assert blocker.read_text() == "keep me\n"


def test_a_read_only_output_folder_is_one_line(synth_data, tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the check cannot be seen as root")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["data", "index", str(synth_data), "--out", str(locked / "index.csv")]) == 2
        one_line_error(capsys, "cannot be written")
    finally:
        locked.chmod(0o700)


def test_a_run_that_failed_before_training_does_not_block_its_fix(synth_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"run": {"epochs": 99}, "data": {"fingerprint": "other"}}))
    from xraylib.config import resolve_config
    from xraylib.train import prepare_data, write_config

    cfg = resolve_config("resnet34", "smoke", {"image_size": "32", "limit": "40"})
    written = write_config(prepare_data(synth_data, cfg), cfg, synth_data, out)
    assert json.loads((out / "config.json").read_text())["run"]["epochs"] == written["run"]["epochs"] == cfg.epochs
