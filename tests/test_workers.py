"""Repeated runs on a real local Ray cluster: 2 seeds on 2 workers, a killed worker, --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from xraylib.cli import main
from xraylib.sweep import plan_runs

TINY = ["--set=image_size=32", "--set=limit=40", "--set=batch_size=8", "--set=bootstrap=30", "--set=gradcam_images=0"]
RUNS = ["vgg16-seed0", "vgg16-seed1"]


def test_plan_names_one_run_per_backbone_seed_and_fold():
    runs = plan_runs(["vgg16", "resnet34"], seeds=[0, 7], folds=3)
    assert len(runs) == 12 and len({r.name for r in runs}) == 12
    assert runs[0].name == "vgg16-seed0-fold0" and runs[0].settings == {"seed": 0, "folds": 3, "fold": 0}
    assert runs[-1].name == "resnet34-seed7-fold2" and runs[-1].backbone == "resnet34"
    assert [r.name for r in plan_runs(["vgg16"])] == ["vgg16"], "no seeds, no folds: the folder is the backbone"


def _status(folder) -> dict:
    path = folder / "status.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # being replaced this instant
        return {}


@pytest.fixture(scope="module")
def killed_then_resumed(synth_data, tmp_path_factory):
    """A sweep of 2 seeds with --jobs 2 whose first running worker is SIGKILLed, then the same sweep with --resume
    and --jobs 1, which must not start Ray (it runs the killed run again in this process's own loop)."""
    import xraylib.workers

    def refuse(*args, **kwargs):
        raise AssertionError("--jobs 1 started Ray")

    out = tmp_path_factory.mktemp("ray") / "report"
    args = ["sweep", "--data", str(synth_data), "--backbones", "vgg16", "--preset", "smoke"]
    args += ["--seeds", "0,1", "--jobs", "2", *TINY, "--out", str(out)]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "xraylib.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.5)
        for name in RUNS:
            status = _status(out / name)
            if status.get("status") == "running" and status.get("pid"):
                victim = name
                os.kill(status["pid"], signal.SIGKILL)  # the Ray worker executing this run's notebook
                break
    first_output, first_errors = sweep.communicate(timeout=600)
    first = {"code": sweep.returncode, "victim": victim, "status": _status(out / str(victim)), "out": first_output}
    first["err"] = first_errors
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xraylib.workers, "start_ray", refuse)
        resumed = main([*args, "--jobs", "1", "--resume"])  # the last --jobs counts
    return out, first, resumed


def test_a_killed_worker_fails_its_run_and_the_others_finish(killed_then_resumed):
    _, first, _ = killed_then_resumed
    assert first["victim"] is not None, "no run was seen running"
    assert first["code"] == 1, first["out"][-2000:]
    assert "xraylib: 1 of 2 runs failed: " + first["victim"] + "; " in first["err"]
    assert first["status"]["status"] == "failed" and "Ray worker" in first["status"]["error"]


def test_resume_reruns_the_killed_run_and_reports_mean_and_sd(killed_then_resumed):
    out, first, resumed = killed_then_resumed
    assert resumed == 0
    assert _status(out / first["victim"])["pid"] == os.getpid(), "--jobs 1: the rerun ran in this process"
    for name in RUNS:
        assert _status(out / name)["status"] == "done", name
        assert json.loads((out / name / "config.json").read_text())["run"]["seed"] == int(name[-1])
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["run"]) == RUNS
    board = pd.read_csv(out / "leaderboard.csv").set_index("backbone")
    assert list(board.index) == ["vgg16"] and (board["runs"] == 2).all()
    for backbone, group in runs.groupby("backbone"):
        assert board.loc[backbone, "roc_auc_mean"] == pytest.approx(group["roc_auc"].mean())
        assert board.loc[backbone, "roc_auc_sd"] == pytest.approx(group["roc_auc"].std(ddof=1))
    mean = pd.read_csv(out / "mean_predictions" / "vgg16.csv").set_index("file")
    seeds = [pd.read_csv(out / f"vgg16-seed{s}" / "predictions.csv").set_index("file") for s in (0, 1)]
    for column in ("p_pneumonia", "p_uncalibrated"):  # both averaged: none is one run's alone
        expected = ((seeds[0][column] + seeds[1][column]) / 2).loc[mean.index]
        assert mean[column].to_numpy() == pytest.approx(expected.to_numpy()), column
    assert "± " in (out / "leaderboard.md").read_text()
    assert (out / "figures" / "run_spread.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0,x"], "--seeds '0,x': expected integers"),
        (["--seeds", "1,1"], "distinct seeds"),
        (["--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--folds", "1"], "folds=1: needs 2 to"),
        (["--folds", "3", "--set", "fold=1"], "--folds and --set"),
        (["--seeds", "0,1", "--set", "seed=3"], "--seeds and --set seed"),
    ],
)
def test_bad_repeat_options_are_one_line_errors(synth_data, tmp_path, extra, message, capsys):
    args = ["sweep", "--data", str(synth_data), "--backbones", "resnet34", "--out", str(tmp_path / "r"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "resnet34").exists(), "nothing started"


def test_each_run_gets_its_own_gpu_where_the_cluster_has_gpus(tmp_path):
    import ray

    from xraylib.workers import on_ray

    def _report_device(folder) -> dict:  # nested, so Ray ships it by value: workers cannot import this test module
        """A stand-in run: which GPU Ray gave this worker, and which process it ran in."""
        time.sleep(1.0)  # long enough for both tasks to be in flight together
        return {"status": "done", "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)  # 2 declared GPUs, none real
    try:
        tasks = [(tmp_path / "a",), (tmp_path / "b",)]
        results = dict(on_ray(_report_device, tasks, set(), jobs=2, address=None))
    finally:
        ray.shutdown()
    assert set(results) == {tmp_path / "a", tmp_path / "b"}
    assert sorted(r.get("gpu", "") for r in results.values()) == ["0", "1"], results  # one GPU each
    assert len({r["pid"] for r in results.values()}) == 2, "two worker processes"


@pytest.mark.parametrize("address", ["ray://127.0.0.1:9", "127.0.0.1:9"])
def test_an_address_where_nothing_listens_is_one_line_at_once(tmp_path, address, capsys):
    import time

    (tmp_path / "data").mkdir()
    args = ["sweep", "--data", str(tmp_path / "data"), "--backbones", "resnet34", "--out", str(tmp_path / "r")]
    started = time.perf_counter()
    assert main([*args, "--address", address]) == 2
    assert time.perf_counter() - started < 10, "Ray waits about 33 s before failing"
    err = capsys.readouterr().err.strip()
    assert err == f"xraylib: error: --address {address}: no Ray cluster answers at 127.0.0.1:9 (Connection refused)"
