"""A wheel is a complete install: built from the sources, installed outside any clone (`pip install --target`), and
run from a working directory without one: a sweep (the packaged training and comparison notebooks, executed by
papermill), train and predict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set=image_size=32", "--set=limit=40", "--set=batch_size=8", "--set=bootstrap=30", "--set=gradcam_images=2"]

pytestmark = [pytest.mark.wheel, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(the install folder, an empty working directory, the environment of a process that imports xraylib from the
    install and its dependencies from this interpreter's site-packages, never from the clone)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: the build's own folders stay out of the clone
    shutil.copytree(REPO / "xraylib", source / "xraylib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    dist, target = root / "dist", root / "site"
    offline = ["--no-deps", "--no-index", "--no-build-isolation"]
    subprocess.run([*pip, "wheel", *offline, "-w", str(dist), str(source)], check=True, capture_output=True)
    wheel = next(dist.glob("xraylib-*.whl"))
    subprocess.run([*pip, "install", *offline, "--target", str(target), str(wheel)], check=True, capture_output=True)
    work = root / "work"
    work.mkdir()
    return target, work, {**os.environ, "PYTHONPATH": str(target)}


def run(installed, *argv: str) -> subprocess.CompletedProcess:
    """The installed `xraylib` script with these arguments, in the working directory; it must succeed."""
    target, work, env = installed
    result = subprocess.run([str(target / "bin" / "xraylib"), *argv], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"xraylib {' '.join(argv)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def test_the_wheel_holds_the_notebooks_and_is_what_runs(installed):
    target, work, env = installed
    code = "import xraylib.runs as r; print(r.__file__); print(r.TRAIN_NOTEBOOK, r.COMPARE_NOTEBOOK, sep='\\n')"
    lines = subprocess.check_output([sys.executable, "-c", code], cwd=work, env=env, text=True).splitlines()
    assert all(line.startswith(str(target / "xraylib")) for line in lines), lines
    assert all(Path(line).is_file() for line in lines[1:]), "the notebooks are package data"


def test_sweep_from_a_working_directory_without_a_clone(installed, synth_data):
    target, work, _ = installed
    data = os.path.relpath(synth_data, work)
    run(installed, "sweep", "--data", data, "--backbones", "resnet34", "--preset", "smoke", *TINY, "--out", "sweep")
    status = json.loads((work / "sweep" / "resnet34" / "status.json").read_text())
    assert status["status"] == "done", status
    assert (work / "sweep" / "leaderboard.csv").is_file() and (work / "sweep" / "compare_backbones.html").is_file()
    assert not {"reports", "data"} & {p.name for p in target.iterdir()}, "nothing is written into the install"


def test_train_and_predict_from_a_working_directory_without_a_clone(installed, synth_data):
    _, work, _ = installed
    run(installed, "train", "--data", str(synth_data), "--backbone", "resnet34", "--preset", "smoke", *TINY, "--out=r")
    assert (work / "r" / "finished.json").is_file()
    images = synth_data / "Coronahack-Chest-XRay-Dataset" / "Coronahack-Chest-XRay-Dataset" / "test"
    run(installed, "predict", "r/model.keras", str(images), "--out", "predictions.csv")
    predictions = pd.read_csv(work / "predictions.csv")
    assert len(predictions) == len(list(images.glob("*.jp*g"))) and predictions["p_pneumonia"].between(0, 1).all()
