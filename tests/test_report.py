"""The comparison report of a sweep, built from run folders alone."""

import json

import numpy as np
import pandas as pd
import pytest

from xraylib import leaderboard, run_figures
from xraylib.config import resolve_config
from xraylib.errors import InputError
from xraylib.fileio import write_csv, write_json
from xraylib.run_evaluation import predictions_frame, run_metrics

N_PATIENTS = 60


def _fake_run(report_dir, backbone, skill, seed, name=None, validation=True):
    """A finished run folder (named `name`, else after its backbone) whose probabilities separate the classes with
    the given skill (on validation, a better one); without `validation`, a metrics.json from before it had them."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"kermany-person{i}" for i in range(N_PATIENTS)], 2)
    y = np.repeat(np.random.default_rng(0).integers(0, 2, N_PATIENTS), 2).astype(float)  # same test set for all
    p = np.clip(0.5 + skill * (y - 0.5) + rng.normal(0, 0.25, len(y)), 0, 1)
    rows = pd.DataFrame(
        {
            "file": [f"person{i // 2}_{i}.jpeg" for i in range(len(y))],
            "patient": patients,
            "label": np.where(y == 1, "pneumonia", "normal"),
            "subtype": np.where(y == 1, np.where(np.arange(len(y)) % 4 < 2, "bacteria", "virus"), "none"),
            "path": "",
        }
    )
    val_y = np.repeat(np.random.default_rng(1).integers(0, 2, N_PATIENTS // 2), 2).astype(float)
    val_p = np.clip(0.5 + (skill + 0.2) * (val_y - 0.5) + rng.normal(0, 0.25, len(val_y)), 0, 1)
    val_patients = np.repeat([f"kermany-person{N_PATIENTS + i}" for i in range(N_PATIENTS // 2)], 2)
    cfg = resolve_config(backbone, "demo", {"weights": "none", "seed": seed})
    run = report_dir / (name or backbone)
    write_json(run / "config.json", {"run": cfg.to_json()})
    write_csv(run / "predictions.csv", predictions_frame(rows, p, 0.5))
    held_out = (val_y, val_p, val_patients) if validation else None
    write_json(run / "metrics.json", run_metrics(cfg, y, p, patients, 0.5, rows["subtype"], held_out))
    write_json(run / "status.json", {"backbone": backbone, "status": "done", "seconds": 1.0})
    return run


@pytest.fixture
def report_dir(tmp_path):
    for i, (name, skill) in enumerate([("vgg16", 0.2), ("resnet34", 0.6), ("xception", 0.4)]):
        _fake_run(tmp_path, name, skill, seed=i)
    write_json(tmp_path / "vgg19" / "status.json", {"backbone": "vgg19", "status": "failed", "error": "Boom: x"})
    return tmp_path


def test_leaderboard_sorted_by_auc_with_cis(report_dir):
    board = leaderboard.leaderboard(report_dir)
    assert list(board["backbone"]) == ["resnet34", "xception", "vgg16"]
    assert (board["roc_auc_low"] <= board["roc_auc"]).all() and (board["roc_auc"] <= board["roc_auc_high"]).all()


def test_leaderboard_gives_sensitivity_by_pneumonia_kind_with_cis(report_dir):
    board = leaderboard.leaderboard(report_dir).set_index("backbone")
    frame = pd.read_csv(report_dir / "vgg16" / "predictions.csv")
    for kind, subtype in (("bacterial", "bacteria"), ("viral", "virus")):
        rows = frame[frame["subtype"] == subtype]
        assert board.loc["vgg16", f"sensitivity_{kind}"] == pytest.approx((rows["predicted"] == "pneumonia").mean())
        assert board.loc["vgg16", f"sensitivity_{kind}_low"] <= board.loc["vgg16", f"sensitivity_{kind}"]
    assert "sensitivity: bacterial / viral" in leaderboard.leaderboard_markdown(board.reset_index())


def test_build_report_writes_every_file(report_dir):
    summary = leaderboard.build_report(report_dir)
    for name in ("leaderboard.csv", "leaderboard.md", "comparison.csv", "summary.md"):
        assert (report_dir / name).stat().st_size > 0
    for name in ("roc_overlay", "metric_bars"):
        assert (report_dir / "figures" / f"{name}.png").stat().st_size > 1000
    assert "**resnet34**" in summary and "vgg19: Boom: x" in summary
    assert "0.9183 / 0.9162" in (report_dir / "leaderboard.md").read_text()  # the study's VGG16 beside ours
    pairs = pd.read_csv(report_dir / "comparison.csv")
    assert len(pairs) == 3


def test_study_comparison_and_recipe_difference(report_dir, tmp_path_factory):
    table = leaderboard.study_comparison(report_dir)
    assert table.loc["vgg16", "study accuracy"] == pytest.approx(0.9183)
    other = tmp_path_factory.mktemp("other")
    _fake_run(other, "vgg16", 0.6, seed=9)
    diff = leaderboard.recipe_difference(report_dir, other)
    assert list(diff.index) == ["vgg16"] and diff.loc["vgg16", "roc_auc difference"] < 0


def test_leaderboard_shows_gradcam_localisation_when_measured(report_dir):
    assert "Grad-CAM" not in leaderboard.leaderboard_markdown(leaderboard.leaderboard(report_dir))
    table = pd.DataFrame(
        {"file": ["a", "b"], "in_lungs": [0.5, 0.7], "lung_area": [0.3, 0.3], "peak_in_lungs": [1.0, 0.0]}
    )
    write_csv(report_dir / "resnet34" / "gradcam_in_masks.csv", table)
    board = leaderboard.leaderboard(report_dir)
    assert set(board["weights"]) == {"random"}, "the leaderboard says how each backbone started"
    markdown = leaderboard.leaderboard_markdown(board)
    assert "Grad-CAM in lungs: mass (area), peak" in markdown.splitlines()[0]
    resnet = next(line for line in markdown.splitlines() if line.startswith("| resnet34"))
    assert resnet.endswith("| 0.60 (0.30), 0.50 |")
    vgg = next(line for line in markdown.splitlines() if line.startswith("| vgg16"))
    assert vgg.endswith("] | |"), "a run without the measurement gets an empty last cell"


def test_leaderboard_of_once_and_twice_run_backbones(tmp_path):
    for seed in (0, 1):
        _fake_run(tmp_path, "resnet34", 0.6, seed, name=f"resnet34-seed{seed}")
    _fake_run(tmp_path, "vgg16", 0.2, seed=2)
    lines = leaderboard.leaderboard_markdown(leaderboard.leaderboard(tmp_path)).splitlines()
    resnet = next(line for line in lines if line.startswith("| resnet34"))
    vgg = next(line for line in lines if line.startswith("| vgg16"))
    assert "| 2 |" in resnet and " ± " in resnet, "mean ± SD over the two runs"
    assert "| 1 |" in vgg and " ± " not in vgg and "nan" not in vgg, "one run has no SD"


def test_leaderboard_and_report_show_validation_beside_test(report_dir, capsys):
    from xraylib.cli import main
    from xraylib.runs import VALIDATION_NOTE

    board = leaderboard.leaderboard(report_dir).set_index("backbone")
    validation = json.loads((report_dir / "vgg16" / "metrics.json").read_text())["validation"]
    for name in leaderboard.LEADERBOARD_METRICS:
        entry = validation[name]
        assert board.loc["vgg16", [f"val_{name}", f"val_{name}_low", f"val_{name}_high"]].tolist() == pytest.approx(
            [entry["value"], entry["low"], entry["high"]]
        )
        assert board.loc["vgg16", f"{name}_drop"] == pytest.approx(board.loc["vgg16", name] - entry["value"])
    assert main(["report", str(report_dir)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| backbone"))
    assert "| roc_auc | val. roc_auc (drop) | pr_auc |" in header
    for name in ("sensitivity", "specificity", "accuracy"):
        assert f"| {name} | val. {name} (drop) |" in header
    drop = board.loc["vgg16", "roc_auc_drop"]
    assert f"{board.loc['vgg16', 'val_roc_auc']:.3f} [" in printed and f"] ({drop:+.3f}) |" in printed
    assert VALIDATION_NOTE in printed and "val_specificity" in pd.read_csv(report_dir / "leaderboard.csv")


def test_runs_without_validation_metrics_leave_blanks(tmp_path):
    """Runs made before metrics.json had its validation entry: NaN in the leaderboard, n/a in its table, and no
    validation columns in leaderboard.md when no run has them."""
    _fake_run(tmp_path, "vgg16", 0.2, seed=0, validation=False)
    _fake_run(tmp_path, "resnet34", 0.6, seed=1)
    board = leaderboard.leaderboard(tmp_path).set_index("backbone")
    assert np.isnan(board.loc["vgg16", ["val_roc_auc", "val_roc_auc_low", "roc_auc_drop"]].astype(float)).all()
    assert not np.isnan(board.loc["resnet34", "val_roc_auc"])
    vgg = next(line for line in leaderboard.leaderboard_markdown(board.reset_index()).splitlines() if "vgg16" in line)
    assert vgg.count("n/a") == len(leaderboard.VALIDATION_SHOWN)
    old = json.loads((tmp_path / "vgg16" / "metrics.json").read_text())
    table = run_figures.validation_table(old)
    assert table["validation"].isna().all() and table["test"].notna().any()
    assert "predates them" in table.attrs["title"]
    (tmp_path / "resnet34" / "metrics.json").unlink()
    summary = leaderboard.build_report(tmp_path)
    assert "val. roc_auc" not in summary and "val_roc_auc" in pd.read_csv(tmp_path / "leaderboard.csv")


def test_an_unreadable_validation_entry_is_one_error_naming_its_file(tmp_path):
    run = _fake_run(tmp_path, "vgg16", 0.2, seed=0)
    metrics = json.loads((run / "metrics.json").read_text())
    write_json(run / "metrics.json", {**metrics, "validation": "0.99"})
    with pytest.raises(InputError, match=r"vgg16/metrics\.json: an unreadable validation entry"):
        leaderboard.build_report(tmp_path)


def test_validation_of_a_backbone_run_several_times_is_the_mean_of_its_runs(tmp_path):
    folders = [_fake_run(tmp_path, "resnet34", 0.6, seed, name=f"resnet34-seed{seed}") for seed in (0, 1)]
    row = leaderboard.leaderboard(tmp_path, n_boot=20).iloc[0]
    values = [json.loads((f / "metrics.json").read_text())["validation"] for f in folders]
    assert row["val_specificity"] == pytest.approx(np.mean([v["specificity"]["value"] for v in values]))
    assert row["specificity_drop"] == pytest.approx(row["specificity_mean"] - row["val_specificity"])
    assert np.isnan(row["val_specificity_low"]), "no CI for a mean over runs"


def test_report_of_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no finished run"):
        leaderboard.build_report(tmp_path)


def test_metrics_table_lists_both_thresholds(report_dir):
    result = json.loads((report_dir / "vgg16" / "metrics.json").read_text())
    table = run_figures.metrics_table(result)
    assert {"roc_auc", "sensitivity", "specificity"} <= set(table.index)
    assert {"value", "95% CI", "at 0.5"} <= set(table.columns)


def test_mean_predictions_average_only_what_every_run_has(tmp_path):
    folders = [_fake_run(tmp_path, "resnet34", 0.6, seed, name=f"resnet34-seed{seed}") for seed in (0, 1)]
    frame = pd.read_csv(folders[0] / "predictions.csv")
    write_csv(folders[0] / "predictions.csv", frame.assign(p_uncalibrated=frame["p_pneumonia"]))
    mean = leaderboard.mean_predictions(tmp_path)["resnet34"].set_index("file")
    assert "p_uncalibrated" not in mean.columns, "one run's uncalibrated probabilities are not the mean's"
    runs = [pd.read_csv(folder / "predictions.csv").set_index("file")["p_pneumonia"] for folder in folders]
    assert mean["p_pneumonia"].to_numpy() == pytest.approx(((runs[0] + runs[1]) / 2).loc[mean.index].to_numpy())


def test_a_comparison_notebook_that_cannot_run_is_printed_not_raised(report_dir, monkeypatch, capsys):
    import xraylib.notebook
    from xraylib.sweep import compare_notebook

    def dead_kernel(*args, **kwargs):
        raise RuntimeError("Kernel died before replying")

    monkeypatch.setattr(xraylib.notebook, "execute", dead_kernel)
    assert compare_notebook(report_dir) is False, "the sweep then builds the report itself"
    assert "did not run (RuntimeError: Kernel died before replying)" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"garbage,\x01\nnot,a,csv\n", b"\x00\xff\xfe"])
def test_a_corrupt_predictions_file_is_one_error_naming_it(tmp_path, content):
    for seed in (0, 1):
        _fake_run(tmp_path, "resnet34", 0.6, seed, name=f"resnet34-seed{seed}")
    (tmp_path / "resnet34-seed1" / "predictions.csv").write_bytes(content)
    with pytest.raises(InputError, match=r"resnet34-seed1/predictions\.csv (lacks|is unreadable)"):
        leaderboard.build_report(tmp_path)


def _reference(report_dir, path, keep=None):
    """A predictions file in the study's format on the report's test images (`keep` of them), all labelled
    pneumonia: hard labels, no probabilities."""
    frame = pd.read_csv(report_dir / "vgg16" / "predictions.csv").iloc[:keep]
    real = np.where(frame["label"] == "pneumonia", "Pnemonia", "Normal")
    pd.DataFrame({"Filename": "test/" + frame["file"], "real": real, "Predictions": "Pnemonia"}).to_csv(
        path, index=False
    )
    return path


def test_the_report_pairs_each_backbone_with_reference_predictions(report_dir, capsys):
    from xraylib.cli import main

    study = _reference(report_dir, report_dir.parent / "study.csv")
    assert main(["report", str(report_dir), "--versus", str(study)]) == 0
    assert "## Against reference predictions" in capsys.readouterr().out
    table = pd.read_csv(report_dir / "reference_comparison.csv").set_index("model_a")
    assert set(table.index) == {"vgg16", "resnet34", "xception"} and set(table["model_b"]) == {"study.csv"}
    frame = pd.read_csv(report_dir / "vgg16" / "predictions.csv")
    right = frame["predicted"] == frame["label"]
    row = table.loc["vgg16"]
    assert row["n_images"] == len(frame) and row["accuracy_a"] == pytest.approx(right.mean())
    assert row["accuracy_b"] == pytest.approx((frame["label"] == "pneumonia").mean())
    assert row["a_right_b_wrong"] == (right & (frame["label"] == "normal")).sum()
    assert row["accuracy_difference_low"] <= row["accuracy_difference"] <= row["accuracy_difference_high"]
    assert (table["mcnemar_p_holm"] >= table["mcnemar_p"]).all()


def test_a_reference_on_other_images_is_refused_before_the_report_is_written(report_dir, capsys):
    from xraylib.cli import main

    study = _reference(report_dir, report_dir.parent / "part.csv", keep=50)
    assert main(["report", str(report_dir), "--versus", str(study)]) == 2
    err = capsys.readouterr().err
    assert "part.csv are not on the same test images" in err and len(err.strip().splitlines()) == 1
    assert not (report_dir / "summary.md").exists()


@pytest.mark.parametrize(("value", "shown"), [("nan", "1 missing value"), ("3.5", "3.5 on line 3"), ("inf", "inf")])
def test_a_probability_that_is_not_in_0_1_is_one_error_naming_the_file_and_line(tmp_path, value, shown):
    run = _fake_run(tmp_path, "vgg16", 0.2, seed=0)
    frame = pd.read_csv(run / "predictions.csv", dtype=str)
    frame.loc[1, "p_pneumonia"] = value
    write_csv(run / "predictions.csv", frame)
    with pytest.raises(InputError, match=r"vgg16/predictions\.csv: column 'p_pneumonia' has") as info:
        leaderboard.build_report(tmp_path)
    assert shown in str(info.value)


def test_a_run_config_of_the_wrong_type_is_one_error_naming_the_file_and_key(tmp_path):
    run = _fake_run(tmp_path, "vgg16", 0.2, seed=0)
    config = json.loads((run / "config.json").read_text())
    write_json(run / "config.json", {"run": {**config["run"], "image_size": "abc"}})
    with pytest.raises(InputError, match=r"vgg16/config\.json: setting image_size='abc': expected int"):
        leaderboard.build_report(tmp_path)
