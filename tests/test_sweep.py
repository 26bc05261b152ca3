"""The papermill sweep end to end: executed notebooks, a failing backbone, resume, the report, the notebooks."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import papermill
import pytest

from xraylib.cli import main
from xraylib.notebook import execute
from xraylib.runs import NOTEBOOKS

# TensorFlow's C++ log lines (`I0000 00:00:... port.cc:153] oneDNN ...`), absl's preamble, CUDA probes, retracing
TF_NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d|absl::InitializeLog|cuInit|cuda drivers|oneDNN|retracing", re.M)

TINY = ["--set=image_size=32", "--set=limit=40", "--set=batch_size=8", "--set=bootstrap=30", "--set=gradcam_images=4"]


@pytest.fixture(scope="module")
def swept(synth_data, tmp_path_factory):
    """A sweep of resnet34 (trains) and inceptionv3 (its image size is impossible, so it fails), given as `make demo`
    gives it: every path relative to the caller's working directory (--data, --out, $XRAYLIB_WEIGHTS_DIR, and here
    the starting weights and the cache folder), which is not the kernels' (their run folders)."""
    from xraylib.config import resolve_config
    from xraylib.models import build_model

    caller = tmp_path_factory.mktemp("sweep")
    (caller / "weights").mkdir()
    start = caller / "weights" / "start.weights.h5"
    overrides = dict(s.split("=", 1) for s in (t.removeprefix("--set=") for t in TINY))
    build_model(resolve_config("resnet34", "smoke", overrides)).save_weights(start)
    relative = ["--data", os.path.relpath(synth_data, caller), "--set=weights=weights/start.weights.h5"]
    args = ["sweep", "--backbones", "resnet34,inceptionv3", "--preset", "smoke"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(caller)
        patch.setenv("XRAYLIB_WEIGHTS_DIR", "weights")
        code = main([*args, *relative, "--set=cache_dir=cache", *TINY, "--out", "report"])
    args += ["--data", str(synth_data), f"--set=weights={start}"]
    return caller / "report", code, args


def test_relative_paths_mean_the_callers_folders(swept):
    out, _, _ = swept
    caller = out.parent
    config = json.loads((out / "resnet34" / "config.json").read_text())
    assert config["data"]["dir"] == str(Path(config["data"]["dir"]).resolve()) and Path(config["data"]["dir"]).is_dir()
    assert config["run"]["weights_dir"] == str(caller / "weights"), "$XRAYLIB_WEIGHTS_DIR, absolute"
    assert config["run"]["weights"] == str(caller / "weights" / "start.weights.h5"), "the starting weights, loaded"
    assert config["run"]["cache_dir"] == str(caller / "cache") and list((caller / "cache").glob("*.npy"))
    assert not (out / "resnet34" / "cache").exists() and not (out / "resnet34" / "weights").exists()


def test_sweep_runs_the_notebook_and_reports(swept):
    out, code, _ = swept
    assert code == 1, "one backbone failed, so the exit status counts one failure"
    run = out / "resnet34"
    notebook = json.loads((run / "resnet34.ipynb").read_text())
    assert any(c.get("outputs") for c in notebook["cells"]), "the executed notebook holds its outputs"
    assert "papermill" in notebook["metadata"]
    shown = next(c for c in notebook["cells"] if "validation_table" in "".join(c["source"]))
    assert "drop (test - validation)" in json.dumps(shown["outputs"]), "the notebook shows validation beside test"
    for name in ("config.json", "history.csv", "model.keras", "predictions.csv", "metrics.json", "resnet34.log"):
        assert (run / name).is_file(), name
    assert (run / "finished.json").is_file(), "the notebook marks its run complete, as `xraylib train` does"
    assert len(list((run / "figures").glob("*.png"))) >= 8
    for name in ("leaderboard.csv", "leaderboard.md", "summary.md", "figures/roc_overlay.png"):
        assert (out / name).is_file(), name


def assert_reads_as_a_report(path):
    """Every figure cell of an executed notebook shows an image; no stream output carries TensorFlow's logs."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    figures = [c for c in cells if "_figure(" in "".join(c["source"])]
    assert figures, f"{path.name}: no figure cell found"
    for cell in figures:
        kinds = [set(o.get("data", {})) for o in cell["outputs"]]
        assert any("image/png" in k for k in kinds), f"{path.name}: no image from {''.join(cell['source'])!r}"
    streams = "".join("".join(o.get("text", "")) for c in cells for o in c["outputs"] if o["output_type"] == "stream")
    noise = TF_NOISE.findall(streams)
    assert not noise, f"{path.name}: TensorFlow log lines in the notebook: {noise[:3]}"
    assert path.with_suffix(".html").stat().st_size > 10_000, "the notebook's HTML page"


def test_executed_notebooks_show_every_figure_and_no_tensorflow_logs(swept):
    out, _, _ = swept
    assert_reads_as_a_report(out / "resnet34" / "resnet34.ipynb")
    assert_reads_as_a_report(out / "compare_backbones.ipynb")
    html = (out / "resnet34" / "resnet34.html").read_text()
    assert html.count("data:image/png;base64") >= 8, "the HTML page embeds the figures"
    index = (out / "index.html").read_text()
    for link in ("resnet34/resnet34.html", "compare_backbones.html", "inceptionv3"):
        assert link in index, link


def test_failed_backbone_is_recorded_and_the_others_finish(swept):
    out, _, _ = swept
    status = json.loads((out / "inceptionv3" / "status.json").read_text())
    assert status["status"] == "failed" and "image_size" in status["error"]
    assert json.loads((out / "resnet34" / "status.json").read_text())["status"] == "done"
    assert "inceptionv3" in (out / "summary.md").read_text()


def test_resume_skips_finished_backbones(swept, capsys):
    out, _, args = swept
    notebook = out / "resnet34" / "resnet34.ipynb"
    before = notebook.stat().st_mtime_ns
    assert main([*args, *TINY, "--out", str(out)]) == 2, "without --resume an existing report is refused"
    assert main([*args, *TINY, "--out", str(out), "--resume"]) == 1
    assert notebook.stat().st_mtime_ns == before
    assert "resnet34: finished earlier, skipped" in capsys.readouterr().out


def test_a_metadata_file_without_its_label_column_is_refused_before_any_folder(synth_data, tmp_path, capsys):
    data = Path(shutil.copytree(synth_data, tmp_path / "coronahack", ignore=shutil.ignore_patterns("*.jpeg", "*.png")))
    metadata = data / "Chest_xray_Corona_Metadata.csv"
    pd.read_csv(metadata).drop(columns="Label").to_csv(metadata, index=False)
    out = tmp_path / "report"
    argv = ["sweep", "--data", str(data), "--backbones", "resnet34", "--preset", "smoke", *TINY, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Label" in err and "\n" not in err
    assert not out.exists()


def test_a_setting_impossible_for_every_backbone_is_refused_before_any_folder(synth_data, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["sweep", "--data", str(synth_data), "--backbones", "resnet34,vgg16", "--preset", "smoke", *TINY]
    assert main([*argv, "--set=epochs=0", "--out", str(out)]) == 2
    assert "epochs=0" in capsys.readouterr().err and not out.exists()


def test_a_corrupt_image_fails_every_run_with_one_line_and_status_2(synth_data, tmp_path, capsys):
    data = Path(shutil.copytree(synth_data, tmp_path / "coronahack"))
    victim = sorted(data.rglob("test/*.jpeg"))[0]  # a test image: every run reads them all, whatever its limit
    victim.write_text("not an image")
    out = tmp_path / "report"
    argv = ["sweep", "--data", str(data), "--backbones", "resnet34", "--preset", "smoke", *TINY]
    assert main([*argv, "--set=weights=none", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xraylib: error: every run failed: ") and victim.name in err and "\n" not in err


def test_sweep_interrupted_mid_backbone_resumes_that_backbone(synth_data, tmp_path):
    """Ctrl-C during a backbone's training, then `--resume`: it resumes that backbone from its last epoch's
    snapshot (a finished backbone's skip is `test_resume_skips_finished_backbones`'s)."""
    out = tmp_path / "report"
    verb = ["sweep", "--data", str(synth_data), "--backbones", "resnet34", "--preset", "smoke"]
    command = [
        sys.executable,
        "-m",
        "xraylib.cli",
        *verb,
        *TINY,
        "--set=epochs=6",
        "--set=early_stopping=0",
        "--out",
        str(out),
    ]
    # a shell's background job ignores SIGINT and its children inherit that: give the sweep Ctrl-C's default back
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    history, deadline = out / "resnet34" / "history.csv", time.time() + 600
    committed = out / "resnet34" / "backup" / "state" / "state.json"  # an epoch's snapshot: something to resume
    while time.time() < deadline and proc.poll() is None:
        if committed.is_file():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=120) == 130
    assert json.loads((out / "resnet34" / "status.json").read_text())["status"] == "interrupted"
    assert len(pd.read_csv(history)) < 6, "the sweep was not interrupted during resnet34's training"
    assert main([*command[3:], "--resume"]) == 0  # resumed in this process: TensorFlow is imported already
    assert json.loads((out / "resnet34" / "status.json").read_text())["status"] == "done"
    assert list(pd.read_csv(history)["epoch"]) == list(range(6))
    assert "resuming at epoch" in (out / "resnet34" / "resnet34.ipynb").read_text()


def test_report_verb_rebuilds_from_finished_runs(swept, capsys):
    out, _, _ = swept
    (out / "leaderboard.csv").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "leaderboard.csv").is_file() and "resnet34" in capsys.readouterr().out


def test_explore_and_compare_notebooks_execute(swept, synth_data, tmp_path, monkeypatch):
    out, _, _ = swept
    monkeypatch.chdir(tmp_path)  # the notebooks must not depend on the working directory
    parameters = {"data_dir": str(synth_data), "out_dir": str(tmp_path / "explore")}
    execute(NOTEBOOKS / "explore_dataset.ipynb", tmp_path / "explore.ipynb", parameters, cwd=tmp_path)
    assert len(list((tmp_path / "explore").glob("*.png"))) == 4
    assert_reads_as_a_report(tmp_path / "explore.ipynb")
    execute(NOTEBOOKS / "compare_backbones.ipynb", tmp_path / "compare.ipynb", {"report_dir": str(out)}, cwd=tmp_path)
    assert_reads_as_a_report(tmp_path / "compare.ipynb")


def test_a_notebook_that_fails_is_recorded_with_its_partial_notebook(synth_data, tmp_path):
    from xraylib.sweep import run_backbone

    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not weights")
    overrides = dict(s.split("=", 1) for s in (t.removeprefix("--set=") for t in TINY))
    status = run_backbone(synth_data, "resnet34", "smoke", {**overrides, "weights": str(garbage)}, tmp_path / "run")
    assert status["status"] == "failed" and status["error"]
    notebook = json.loads((tmp_path / "run" / "run.ipynb").read_text())
    assert any(c.get("outputs") for c in notebook["cells"]), "the partial notebook is kept"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
    assert not (tmp_path / "run" / "finished.json").exists()


def test_training_notebook_runs_as_is_from_any_directory(synth_data, tmp_path, monkeypatch):
    """As a user in JupyterLab would: the default data (the demo set) and run folder, both under the working
    directory (here data/demo is the synthetic test set, not written again), never beside the installed package."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(synth_data)
    overrides = {"epochs": 1, "limit": 24, "image_size": 32, "bootstrap": 20, "gradcam_images": 2, "weights": "none"}
    papermill.execute_notebook(
        str(NOTEBOOKS / "train_backbone.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={"overrides": overrides},
        progress_bar=False,
    )
    run = tmp_path / "reports" / "notebook" / "resnet34"
    assert json.loads((run / "config.json").read_text())["data"]["dir"] == str(synth_data.resolve())
    assert (run / "metrics.json").is_file() and (run / "finished.json").is_file()
    assert len(list((run / "figures").glob("*.png"))) == 8
