"""The one owned-output rule (a command writes only into a folder it created, or that holds its own earlier output),
killed attempts' temporary files removed by the next attempt, and OS errors while writing named by their path."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from xraylib.cli import main
from xraylib.fileio import atomic_path

sys.path.insert(0, str(Path(__file__).parent))
from test_faults import _run_folder, digest, one_line_error  # noqa: E402

TRAIN = ["train", "--backbone", "resnet34", "--preset", "smoke", "--set", "image_size=32", "--set", "limit=40"]
FULL = OSError(errno.ENOSPC, "No space left on device")


def _users_folder(folder: Path) -> dict[Path, str]:
    """A folder of the user's own files, named as a run's are; returns their digests."""
    folder.mkdir()
    (folder / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (folder / "metrics.json").write_text('{"mine": true}\n')
    (folder / "predictions.csv").write_text("file,p\nmine.jpeg,0.5\n")
    return {p: digest(p) for p in folder.iterdir()}


def test_train_refuses_a_folder_of_the_users_own_files(synth_data, tmp_path, capsys):
    before = _users_folder(tmp_path / "mine")
    assert main([*TRAIN, "--data", str(synth_data), "--out", str(tmp_path / "mine")]) == 2
    one_line_error(capsys, "history.csv", "did not write")
    assert {p: digest(p) for p in (tmp_path / "mine").iterdir() if p.name != ".lock"} == before


@pytest.mark.parametrize("verb", ["train", "sweep"])
def test_train_and_sweep_never_write_into_the_data(verb, synth_data, capsys):
    before = sorted(p.name for p in synth_data.iterdir())
    args = {"train": TRAIN, "sweep": ["sweep", "--backbones", "resnet34", "--preset", "smoke"]}[verb]
    for out in (synth_data, synth_data / "runs"):
        assert main([*args, "--data", str(synth_data), "--out", str(out)]) == 2
        one_line_error(capsys, "--out", "input")
    assert sorted(p.name for p in synth_data.iterdir()) == before


def test_evaluate_refuses_another_runs_folder(untrained_run, synth_data, tmp_path, capsys):
    other = _run_folder(tmp_path / "report")
    before = {p: digest(p) for p in other.iterdir()}
    args = ["evaluate", "--run", str(untrained_run), "--data", str(synth_data), "--out", str(other)]
    assert main(args) == 2
    one_line_error(capsys, str(other), "an xraylib run")
    assert {p: digest(p) for p in other.iterdir()} == before


def test_gradcam_refuses_a_folder_of_other_files_and_redoes_its_own(untrained_run, synth_data, tmp_path, capsys):
    image = next(synth_data.rglob("*.jpeg"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / f"{image.stem}.png").write_bytes(b"the user's own picture")
    model = str(untrained_run / "model.keras")
    assert main(["predict", model, str(image), "--gradcam", str(mine)]) == 2
    one_line_error(capsys, "--gradcam", f"{image.stem}.png")
    assert (mine / f"{image.stem}.png").read_bytes() == b"the user's own picture"
    cams = tmp_path / "cams"
    for _ in range(2):  # its own earlier output is redone
        assert main(["predict", model, str(image), "--gradcam", str(cams)]) == 0
    assert (cams / f"{image.stem}.png").is_file() and (cams / ".xraylib").read_text().strip() == "gradcam"


def test_the_rule_accepts_new_empty_and_own_folders_of_each_kind(untrained_run, tmp_path):
    from xraylib.fileio import claim_dir, owned_dir

    assert owned_dir(tmp_path / "new", "run") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    owned_dir(tmp_path / "empty", "evaluation")
    owned_dir(untrained_run, "run")  # a run written before markers: recognised by its config.json
    owned_dir(_run_folder(tmp_path / "sweep").parent, "sweep")  # by its runs
    claim_dir(tmp_path / "cams", "gradcam")
    owned_dir(tmp_path / "cams", "gradcam")
    with pytest.raises(ValueError, match="an xraylib run"):
        owned_dir(untrained_run, "gradcam")
    (tmp_path / "cams" / "x.png").write_bytes(b"png")
    with pytest.raises(ValueError, match="xraylib Grad-CAM images"):
        owned_dir(tmp_path / "cams", "run")


def _stale(folder: Path, name: str, pid: int | None = 999_999_999, as_dir: bool = False) -> Path:
    """A temporary entry for the output `name` as a killed writer (process `pid`, None: an earlier version) left."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / f".{name}.{f'{pid}-' if pid else ''}abcd1234.part"
    if as_dir:
        entry.mkdir()
        for i in range(15):
            (entry / f"{i}.jpeg").write_bytes(b"half")
    else:
        entry.write_bytes(b"half a file")
    return entry


def test_a_killed_writes_temporary_files_are_removed_by_the_next_write_and_a_live_ones_kept(tmp_path):
    stale = [_stale(tmp_path, "a.csv"), _stale(tmp_path, "a.csv", None)]
    live = _stale(tmp_path, "a.csv", os.getppid())  # a running process's write
    other = _stale(tmp_path, "b.csv")  # another output's: not this write's to remove
    with atomic_path(tmp_path / "a.csv") as tmp:
        tmp.write_text("done\n")
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists() and (tmp_path / "a.csv").read_text() == "done\n"


def test_synth_removes_the_folder_a_killed_attempt_left(tmp_path, capsys):
    stale = _stale(tmp_path, "synth", as_dir=True)
    assert main(["data", "synth", str(tmp_path / "synth"), "--train", "20", "--test", "4"]) == 0
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_a_rerun_report_removes_what_killed_attempts_left_in_the_sweep(tmp_path, capsys):
    run = _run_folder(tmp_path / "report")
    stale = [_stale(tmp_path / "report" / "figures", "roc_overlay.png"), _stale(run / "figures", "roc.png")]
    stale.append(_stale(tmp_path / "report", "report", as_dir=True))  # a killed report's staging folder
    assert main(["report", str(tmp_path / "report")]) == 0
    assert not any(p.exists() for p in stale)
    assert main(["report", str(tmp_path / "report")]) == 0, "its own earlier report is redone"


def _full_disk(monkeypatch, owner, name: str) -> None:
    def refuse(*args, **kwargs):
        raise FULL

    monkeypatch.setattr(owner, name, refuse)


def _no_temps(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*.part*")], "a temporary entry is left"


def test_a_full_disk_under_index_and_predict_names_the_output(untrained_run, synth_data, tmp_path, capsys, monkeypatch):
    import pandas as pd

    _full_disk(monkeypatch, pd.DataFrame, "to_csv")
    assert main(["data", "index", str(synth_data), "--out", str(tmp_path / "index.csv")]) == 2
    one_line_error(capsys, "No space left on device", str(tmp_path / "index.csv"))
    image = str(next(synth_data.rglob("*.jpeg")))
    assert main(["predict", str(untrained_run / "model.keras"), image, "--out", str(tmp_path / "p.csv")]) == 2
    one_line_error(capsys, "No space left on device", str(tmp_path / "p.csv"))
    _no_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_under_gradcam_names_the_image(untrained_run, synth_data, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    _full_disk(monkeypatch, Figure, "savefig")
    image = next(synth_data.rglob("*.jpeg"))
    assert main(["predict", str(untrained_run / "model.keras"), str(image), "--gradcam", str(tmp_path / "c")]) == 2
    one_line_error(capsys, "No space left on device", str(tmp_path / "c" / f"{image.stem}.png"))
    _no_temps(tmp_path)


def test_a_full_disk_under_synth_names_the_folder_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from PIL import Image

    _full_disk(monkeypatch, Image.Image, "save")
    assert main(["data", "synth", str(tmp_path / "synth"), "--train", "20", "--test", "4"]) == 2
    one_line_error(capsys, "No space left on device", str(tmp_path / "synth"))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_report_leaves_the_report_as_it_was(tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    _run_folder(tmp_path / "report")
    before = sorted(p.name for p in (tmp_path / "report").iterdir())
    _full_disk(monkeypatch, Figure, "savefig")
    assert main(["report", str(tmp_path / "report")]) == 2
    one_line_error(capsys, "No space left on device", str(tmp_path / "report" / "figures"))
    assert sorted(p.name for p in (tmp_path / "report").iterdir() if p.name != ".xraylib") == before
    _no_temps(tmp_path)


def test_a_report_file_that_is_a_folder_is_named(tmp_path, capsys):
    _run_folder(tmp_path / "report")
    (tmp_path / "report" / "leaderboard.csv").mkdir()
    assert main(["report", str(tmp_path / "report")]) == 2
    err = one_line_error(capsys, str(tmp_path / "report" / "leaderboard.csv"))
    assert ".part" not in err
    assert not (tmp_path / "report" / "summary.md").exists(), "nothing of the report is written"


def _h5py_full(self, path, *args, **kwargs):
    """What h5py raises on a full disk, once it has written part of the file."""
    Path(path).write_bytes(b"\x89HDF half")
    raise OSError(
        "Can't synchronously write data (file write failed: time = now\n, filename = "
        f"'{path}', errno = 28, error message = 'No space left on device')"
    )


def test_weights_on_a_full_disk_are_one_line_and_no_half_file(tmp_path, monkeypatch):
    import keras

    from xraylib.checkpoint import save_weights

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    save_weights(model, tmp_path / "best.weights.h5")
    kept = digest(tmp_path / "best.weights.h5")
    monkeypatch.setattr(keras.Model, "save_weights", _h5py_full)
    with pytest.raises(OSError) as caught:
        save_weights(model, tmp_path / "best.weights.h5")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "best.weights.h5")
    assert digest(tmp_path / "best.weights.h5") == kept, "the previous checkpoint is kept whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.weights.h5"]


def test_train_on_a_full_disk_stops_in_one_line_without_a_half_checkpoint(synth_data, tmp_path, capsys, monkeypatch):
    import keras

    monkeypatch.setattr(keras.Model, "save_weights", _h5py_full)
    out = tmp_path / "run"
    assert main([*TRAIN, "--data", str(synth_data), "--set", "epochs=1", "--out", str(out)]) == 2
    one_line_error(capsys, "No space left on device", str(out / "best.weights.h5"))
    assert not (out / "best.weights.h5").exists()
    _no_temps(out)
    assert json.loads((out / "config.json").read_text())["run"]["epochs"] == 1


def test_an_output_file_of_the_users_is_never_overwritten(synth_data, untrained_run, tmp_path, capsys):
    """`data index --out`, `predict --out` (and `probe --out`, the same check) replace only an earlier output of
    the same command (a CSV starting with its columns); any other existing file is refused, untouched."""
    mine = tmp_path / "mine.csv"
    mine.write_text("precious\n")
    image = str(next((synth_data / "Coronahack-Chest-XRay-Dataset").rglob("*.jpeg")))
    for argv in (
        ["data", "index", str(synth_data), "--out", str(mine)],
        ["predict", str(untrained_run / "model.keras"), image, "--out", str(mine)],
    ):
        assert main(argv) == 2
        one_line_error(capsys, str(mine), "not an earlier output")
        assert mine.read_text() == "precious\n"
    ours = tmp_path / "index.csv"
    for _ in range(2):  # the second run replaces the first's file
        assert main(["data", "index", str(synth_data), "--out", str(ours)]) == 0
    assert ours.read_text().startswith("path,file,")


def test_argument_errors_are_one_line(capsys):
    for argv in (["data", "index", "x", "--missing", "maybe"], ["export", "x", "--format", "pickle"], ["bogus"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        one_line_error(capsys, "error:", "--help")


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys):
    """Data refused before any training: the --out folder that `train` created for the run is removed again, and a
    folder that existed before (the user's, empty) stays, as empty as it was (no marker, no lock)."""
    (tmp_path / "not-a-dataset").mkdir()
    for out, existed in ((tmp_path / "new-run", False), (tmp_path / "empty", True)):
        if existed:
            out.mkdir()
        assert main([*TRAIN, "--data", str(tmp_path / "not-a-dataset"), "--out", str(out)]) == 2
        one_line_error(capsys, "not-a-dataset")
        assert out.exists() == existed
        assert not existed or list(out.iterdir()) == []


def test_a_refused_report_leaves_the_users_empty_folder_empty(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    one_line_error(capsys, str(empty))
    assert list(empty.iterdir()) == []
