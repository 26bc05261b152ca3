"""Hostile input at the command line: one-line errors with exit status 2, and nothing overwritten or lost."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
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
    from xraylib.prepare import prepare_data
    from xraylib.train import record_config

    cfg = resolve_config("resnet34", "smoke", {"image_size": "32", "limit": "40"})
    written = record_config(prepare_data(synth_data, cfg), cfg, synth_data, out)
    assert json.loads((out / "config.json").read_text())["run"]["epochs"] == written["run"]["epochs"] == cfg.epochs


TRAIN = ["train", "--backbone", "resnet34", "--preset", "smoke"]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("seed=-1", "seed"),
        (f"seed={2**70}", "seed"),
        ("limit=1", "holds no"),
        ("image_size=100000", "GB"),
    ],
)
def test_impossible_settings_are_one_line(setting, named, synth_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--data", str(synth_data), "--set", setting, "--out", str(out)]) == 2
    one_line_error(capsys, named)
    assert not (out / "config.json").exists()


@pytest.mark.parametrize(
    "command",
    [["data", "synth", "{tmp}/s", "--seed", "-1"], ["bench", "pipeline", "--data", "{data}", "--limit", "-1"]],
    ids=["synth-seed", "bench-limit"],
)
def test_impossible_options_are_one_line(command, synth_data, tmp_path, capsys):
    assert main([c.format(tmp=tmp_path, data=synth_data) for c in command]) == 2
    one_line_error(capsys, command[-2])


def _run_folder(root: Path) -> Path:
    import numpy as np
    import pandas as pd

    from xraylib.config import resolve_config
    from xraylib.fileio import write_csv, write_json
    from xraylib.run_evaluation import predictions_frame, run_metrics

    run = root / "resnet34"
    y = np.array([0.0, 1.0] * 10)
    p = np.linspace(0.05, 0.95, 20)
    patients = np.array([f"p{i}" for i in range(20)])
    rows = pd.DataFrame({"file": [f"{i}.jpeg" for i in range(20)], "patient": patients, "label": "", "path": ""})
    rows["subtype"] = "none"
    rows["label"] = np.where(y == 1, "pneumonia", "normal")
    cfg = resolve_config("resnet34", "smoke")
    write_json(run / "config.json", {"run": cfg.to_json()})
    write_csv(run / "predictions.csv", predictions_frame(rows, p, 0.5))
    write_json(run / "metrics.json", run_metrics(cfg, y, p, patients, 0.5))
    write_json(run / "status.json", {"backbone": "resnet34", "status": "done", "seconds": 1.0})
    return run


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("metrics.json", b'{"threshold": {"va'),
        ("metrics.json", b""),
        ("metrics.json", b"{}"),
        ("status.json", b"\xff\x00"),
        ("gradcam_in_masks.csv", bytes(range(200))),
    ],
)
def test_report_on_corrupt_run_files_is_one_line(name, content, tmp_path, capsys):
    run = _run_folder(tmp_path / "report")
    (run / name).write_bytes(content)
    assert main(["report", str(tmp_path / "report")]) == 2
    one_line_error(capsys, name)


def test_evaluate_json_is_strict_json_with_an_undefined_threshold(tmp_path, capsys):
    run = _run_folder(tmp_path / "report")
    (run / "metrics.json").write_text('{"threshold": {"value": NaN}}')
    assert main(["evaluate", "--predictions", str(run / "predictions.csv"), "--json", "--bootstrap", "20"]) == 0

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert result["threshold"] is None


def test_evaluate_refuses_a_bootstrap_that_cannot_fit_in_memory(tmp_path, capsys):
    run = _run_folder(tmp_path / "report")
    assert main(["evaluate", "--predictions", str(run / "predictions.csv"), "--bootstrap", "100000000000"]) == 2
    one_line_error(capsys, "GB", "--bootstrap")


def test_commands_keep_tensorflow_start_up_lines_out_of_the_way(run_with_model, synth_data):
    import subprocess
    import sys

    image = str(next(synth_data.rglob("*.jpeg")))
    command = [sys.executable, "-m", "xraylib.cli", "predict", str(run_with_model / "model.keras"), image]
    quiet = subprocess.run(command, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert "cuInit" not in quiet.stderr and "oneDNN" not in quiet.stderr and "absl" not in quiet.stderr, quiet.stderr
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True)
    shown = re.search(r"^[IWEF]\d{4} |absl::InitializeLog", verbose.stderr, re.M)
    assert verbose.returncode == 0 and shown, "--verbose shows them"


def _finished_run_args(synth_data: Path, out: Path) -> list[str]:
    """A one-epoch smoke run's command writing to `out`."""
    args = [*TRAIN, "--data", str(synth_data), "--set", "image_size=32", "--set", "limit=40", "--out", str(out)]
    return args + ["--set", "epochs=1", "--set", "gradcam_images=2", "--set", "bootstrap=20"]


@pytest.fixture(scope="module")
def finished_run(synth_data, tmp_path_factory) -> Path:
    """One finished smoke run, trained once for the tests that copy it and break the copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_finished_run_args(synth_data, out)) == 0
    return out


def test_a_damaged_model_of_an_unfinished_run_is_one_line(finished_run, synth_data, tmp_path, capsys):
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    for name in ("metrics.json", "finished.json"):
        (out / name).unlink()  # as if killed after the model was saved
    (out / "model.keras").write_bytes(b"random bytes")
    capsys.readouterr()
    assert main(_finished_run_args(synth_data, out)) == 2
    one_line_error(capsys, "model.keras", "cannot be loaded")


def test_index_of_the_inner_image_folder_never_overwrites_the_metadata_above_it(synth_data, capsys):
    metadata = synth_data / "Chest_xray_Corona_Metadata.csv"
    before = digest(metadata)
    inner = synth_data / "Coronahack-Chest-XRay-Dataset" / "Coronahack-Chest-XRay-Dataset"
    assert main(["data", "index", str(inner), "--out", str(metadata)]) == 2
    one_line_error(capsys, "inputs")
    assert digest(metadata) == before


def test_gradcam_never_overwrites_inputs_or_a_runs_files(run_with_model, synth_data, tmp_path, capsys):
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("L", (40, 40), 90).save(inputs / "chest.png")
    before = digest(inputs / "chest.png")
    model = str(run_with_model / "model.keras")
    assert main(["predict", model, str(inputs / "chest.png"), "--gradcam", str(inputs)]) == 2
    one_line_error(capsys, "input image")
    assert main(["predict", model, str(inputs), "--gradcam", str(inputs)]) == 2
    one_line_error(capsys, "inside the input folder")
    assert digest(inputs / "chest.png") == before
    figures = run_with_model / "figures"
    figures.mkdir(exist_ok=True)
    (figures / "chest.png").write_bytes(b"a figure of the run")
    assert main(["predict", model, str(inputs), "--gradcam", str(figures)]) == 2
    one_line_error(capsys, "a run's file")
    assert (figures / "chest.png").read_bytes() == b"a figure of the run"


def test_a_run_killed_while_drawing_its_figures_is_completed_by_the_same_command(finished_run, synth_data, tmp_path):
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    args = _finished_run_args(synth_data, out)
    predictions = digest(out / "predictions.csv")
    (out / "finished.json").unlink()  # as if killed after metrics.json, while drawing the figures
    (out / "figures" / "gradcam.png").unlink()
    assert main(args) == 0
    assert (out / "figures" / "gradcam.png").is_file() and digest(out / "predictions.csv") == predictions
    assert main(args) == 2, "a finished run is not run again"


def test_evaluate_refuses_repeated_images_and_a_negative_seed(tmp_path, capsys):
    run = _run_folder(tmp_path / "report")
    lines = (run / "predictions.csv").read_text().splitlines()
    (tmp_path / "twice.csv").write_text("\n".join([*lines, *lines[1:]]) + "\n")
    assert main(["evaluate", "--predictions", str(tmp_path / "twice.csv")]) == 2
    one_line_error(capsys, "more than once")
    assert main(["evaluate", "--predictions", str(run / "predictions.csv"), "--seed", "-1"]) == 2
    one_line_error(capsys, "--seed")


def test_an_output_the_system_refuses_is_one_line(synth_data, capsys):
    assert main(["data", "index", str(synth_data), "--out", "/proc/xraylib-index.csv"]) == 2
    one_line_error(capsys, "/proc")
