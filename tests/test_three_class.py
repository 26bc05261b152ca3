"""The three-class task end to end on a synthetic set: one tiny run, its files and figures, and what reads them."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from xraylib.errors import InputError
from xraylib.run_figures import RUN_FIGURES
from xraylib.runs import read_config, read_threshold
from xraylib.three_class import COLUMNS, RAW_COLUMNS

CLASSES = ["normal", "bacterial", "viral"]


@pytest.fixture(scope="module")
def three_class_run(synth_data, tmp_path_factory):
    """A finished three-class run: untrained-looking ResNet-34 (smoke preset, 32 px, one epoch)."""
    from xraylib.config import resolve_config
    from xraylib.train import train

    cfg = resolve_config("resnet34", "smoke", {"task": "three_class", "image_size": "32", "verbose": "0"})
    return train(synth_data, cfg, tmp_path_factory.mktemp("three") / "resnet34")


def test_run_writes_three_class_predictions_metrics_and_figures(three_class_run, synth_data):
    from xraylib.data import build_index

    frame = pd.read_csv(three_class_run / "predictions.csv")
    assert {"file", "patient", "label", "predicted", "path", *COLUMNS, *RAW_COLUMNS} <= set(frame.columns)
    assert np.allclose(frame[COLUMNS].sum(axis=1), 1.0)
    assert (frame["predicted"] == np.asarray(CLASSES)[frame[COLUMNS].to_numpy().argmax(axis=1)]).all()
    assert set(frame["label"]) == set(CLASSES)
    assert set(pd.read_csv(three_class_run / "val_predictions.csv")["label"]) <= set(CLASSES)
    result = json.loads((three_class_run / "metrics.json").read_text())
    assert result["task"] == "three_class" and result["classes"] == CLASSES
    assert result["threshold"]["rule"] == "argmax" and read_threshold(three_class_run) is None, "no threshold"
    test = result["test"]
    for name in ("macro_roc_auc", "macro_f1", "balanced_accuracy", "accuracy", "brier", "log_loss", "ece"):
        assert set(test[name]) == {"value", "low", "high"}, name
    assert set(test["per_class"]) == set(CLASSES)
    counts = np.array(test["confusion"]["counts"])
    assert counts.shape == (3, 3) and counts.sum() == len(frame) == result["n_test_images"]
    assert np.allclose(np.sum(test["confusion"]["row_percent"]["value"], axis=1), 100.0)
    assert result["calibration"]["method"] == "temperature"
    assert set(result["calibration"]["test"]) == {"brier", "ece", "log_loss"}
    for name in RUN_FIGURES["three_class"]:
        assert (three_class_run / "figures" / f"{name}.png").stat().st_size > 10_000, name
    index = build_index(synth_data)
    ards = int(((index["label"] == "pneumonia") & (index["subtype"] == "ards")).sum())
    config = json.loads((three_class_run / "config.json").read_text())
    assert config["left_out"]["images"] == ards
    assert "bacterial" in config["subsets"]["train"] and "viral" in config["subsets"]["test"]


def test_evaluate_reads_a_three_class_predictions_file(three_class_run, capsys):
    from xraylib.cli import main
    from xraylib.prediction_files import evaluate_file

    path = three_class_run / "predictions.csv"
    result = evaluate_file(path, n_boot=50)
    stored = json.loads((three_class_run / "metrics.json").read_text())["test"]
    assert result["format"] == "three_class"
    assert result["macro_roc_auc"]["value"] == pytest.approx(stored["macro_roc_auc"]["value"])
    assert result["confusion"]["counts"] == stored["confusion"]["counts"]
    assert main(["evaluate", "--predictions", str(path), "--bootstrap", "50", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["per_class"]["viral"]["roc_auc"]["value"] == pytest.approx(
        stored["per_class"]["viral"]["roc_auc"]["value"]
    )
    assert main(["evaluate", "--predictions", str(path), "--bootstrap", "20"]) == 0
    assert "macro one-vs-rest ROC-AUC" in capsys.readouterr().out


def test_a_broken_three_class_file_is_refused_in_one_line(three_class_run, tmp_path):
    from xraylib.prediction_files import evaluate_file

    frame = pd.read_csv(three_class_run / "predictions.csv")
    frame.loc[3, "p_viral"] = 0.9  # the row no longer sums to 1
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="line 5"):
        evaluate_file(tmp_path / "bad.csv", n_boot=0)


def test_predict_gives_one_probability_per_class(three_class_run, synth_data):
    from xraylib.predict import format_predictions, predict_files

    images = sorted(
        (synth_data / "Coronahack-Chest-XRay-Dataset" / "Coronahack-Chest-XRay-Dataset" / "test").iterdir()
    )[:3]
    table = predict_files(three_class_run / "model.keras", images)
    assert np.allclose(table[COLUMNS].sum(axis=1), 1.0, atol=1e-5)
    assert set(table["predicted"]) <= set(CLASSES)
    assert "the predicted class is the argmax" in format_predictions(table)
    with pytest.raises(InputError, match="three-class run"):
        predict_files(three_class_run / "model.keras", images, threshold=0.3)


def test_export_and_app_refuse_a_three_class_run(three_class_run):
    from xraylib.app import check_run
    from xraylib.export import run_folder

    for refuse in (run_folder, check_run):
        with pytest.raises(InputError, match="is a three-class run"):
            refuse(three_class_run)


def test_report_of_three_class_runs_and_a_mixed_folder(three_class_run, untrained_run, tmp_path):
    from xraylib.leaderboard import build_report, leaderboard

    shutil.copytree(three_class_run, tmp_path / "resnet34", ignore=shutil.ignore_patterns("*.keras", "tensorboard"))
    summary = build_report(tmp_path)
    assert "three classes" in summary and (tmp_path / "leaderboard.md").is_file()
    board = leaderboard(tmp_path)
    assert list(board["backbone"]) == ["resnet34"] and {"macro_roc_auc", "roc_auc_viral_high"} <= set(board)
    shutil.copytree(tmp_path / "resnet34", tmp_path / "resnet34-seed1")  # the same backbone run twice
    pooled = leaderboard(tmp_path, n_boot=20)
    assert pooled["runs"].tolist() == [2]
    assert pooled["macro_roc_auc"].iloc[0] == pytest.approx(board["macro_roc_auc"].iloc[0])  # mean of equal runs
    shutil.copytree(untrained_run, tmp_path / "binary")
    with pytest.raises(InputError, match="mixes binary and three-class runs"):
        build_report(tmp_path)


def test_three_class_validation_beside_test(three_class_run, tmp_path):
    """The validation entry of a three-class run: its calibrated validation probabilities scored as the test's,
    each class's share, the drop (test minus validation), in the notebook's table and the leaderboard."""
    from xraylib import run_figures
    from xraylib.leaderboard import build_report, leaderboard
    from xraylib.multiclass import multiclass_metrics_ci

    result = json.loads((three_class_run / "metrics.json").read_text())
    entry, test = result["validation"], result["test"]
    val = pd.read_csv(three_class_run / "val_predictions.csv")
    codes = val["label"].map(CLASSES.index).to_numpy()
    cfg = read_config(three_class_run)
    again = multiclass_metrics_ci(
        codes, val[COLUMNS].to_numpy(float), val["patient"], n_boot=cfg.bootstrap, seed=cfg.seed
    )
    assert entry["bootstrap"] == again["bootstrap"] and entry["n_images"] == len(val)
    assert entry["prevalence"] == pytest.approx({c: float(np.mean(val["label"] == c)) for c in CLASSES})
    for name in ("macro_roc_auc", "macro_f1", "balanced_accuracy", "accuracy", "brier", "log_loss", "ece"):
        assert entry[name] == pytest.approx(again[name]), name
        if entry[name]["value"] is not None and test[name]["value"] is not None:
            assert entry["drop"][name] == pytest.approx(test[name]["value"] - entry[name]["value"]), name
    table = run_figures.validation_table(result)
    assert table.loc["accuracy", "drop (test - validation)"] == entry["drop"]["accuracy"]
    assert table.attrs["title"].startswith(f"at the argmax: validation: {len(val)} images")
    shutil.copytree(three_class_run, tmp_path / "resnet34", ignore=shutil.ignore_patterns("*.keras", "tensorboard"))
    summary = build_report(tmp_path)
    assert "| macro_roc_auc | val. macro_roc_auc (drop) | macro_f1 |" in summary
    assert leaderboard(tmp_path)["val_accuracy"].iloc[0] == pytest.approx(entry["accuracy"]["value"])


def test_evaluate_run_scores_a_three_class_run_on_other_data(three_class_run, synth_data, tmp_path):
    from xraylib.run_evaluation import evaluate_on

    result = evaluate_on(three_class_run, synth_data, tmp_path / "external", n_boot=20)
    assert result["format"] == "three_class" and result["left_out"] >= 0
    assert result["n_images"] == len(pd.read_csv(tmp_path / "external" / "predictions.csv"))
    stored = json.loads((tmp_path / "external" / "metrics.json").read_text())
    assert stored["task"] == "three_class" and stored["run"] == str(three_class_run.resolve())
    for name in RUN_FIGURES["three_class"][1:]:
        assert (tmp_path / "external" / "figures" / f"{name}.png").is_file(), name
