"""Two predictions files image by image: accuracy difference, discordant counts, McNemar, `evaluate --versus`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from xraylib import metrics as M
from xraylib.cli import main
from xraylib.errors import InputError
from xraylib.prediction_files import align_predictions, compare_files, tidy_predictions

LABEL = {0: "Normal", 1: "Pnemonia"}  # the study's spelling


def discordant(n: int, only_a: int, only_b: int, both_wrong: int = 0):
    """Labels and two sets of hard predictions: A alone right on `only_a` images, B alone on `only_b`."""
    y = np.arange(n) % 2
    a, b = y.copy(), y.copy()
    b[:only_a] = 1 - y[:only_a]
    a[only_a : only_a + only_b] = 1 - y[only_a : only_a + only_b]
    wrong = slice(only_a + only_b, only_a + only_b + both_wrong)
    a[wrong], b[wrong] = 1 - y[wrong], 1 - y[wrong]
    return y, a, b


def write_study(path, files, y, pred):
    """A predictions file in the study's format: Filename,real,Predictions."""
    frame = pd.DataFrame({"Filename": files, "real": [LABEL[v] for v in y], "Predictions": [LABEL[v] for v in pred]})
    frame.to_csv(path, index=False)
    return path


def write_suite(path, files, y, p, threshold=0.5):
    """A predictions.csv as a run writes it (file, patient, label, p_pneumonia, predicted)."""
    p = np.asarray(p, dtype=float)
    frame = pd.DataFrame(
        {
            "file": files,
            "patient": [f"kermany-person{i // 2}" for i in range(len(files))],
            "label": np.where(np.asarray(y) == 1, "pneumonia", "normal"),
            "p_pneumonia": p,
            "predicted": np.where(p >= threshold, "pneumonia", "normal"),
        }
    )
    frame.to_csv(path, index=False)
    return path


def names(n: int) -> list[str]:
    return [f"person{i // 2}_bacteria_{i}.jpeg" for i in range(n)]


def test_many_discordant_images_use_chi_square_and_the_accuracy_difference_has_a_ci():
    y, a, b = discordant(200, only_a=30, only_b=5, both_wrong=10)
    r = M.paired_comparison(y, a, b, np.full(200, np.nan), np.full(200, np.nan), np.arange(200) // 2, n_boot=500)
    test, acc = r["mcnemar"], r["accuracy"]
    assert (test["b"], test["c"], test["method"]) == (30, 5, "chi2 (cc)")
    assert test["statistic"] == pytest.approx((30 - 5 - 1) ** 2 / 35)
    assert test["p_value"] == pytest.approx(stats.chi2.sf((30 - 5 - 1) ** 2 / 35, 1))
    assert acc["accuracy_a"] == (200 - 5 - 10) / 200 and acc["accuracy_b"] == (200 - 30 - 10) / 200
    assert acc["difference"] == pytest.approx(25 / 200)
    assert 0 < acc["low"] < acc["difference"] < acc["high"]
    assert r["roc_auc"]["difference"] is None and (r["n_images"], r["n_patients"]) == (200, 100)
    assert r["bootstrap"] == {"resamples": 500, "seed": 0, "unit": "patient"}


def test_few_discordant_images_use_the_exact_binomial_test():
    y, a, b = discordant(100, only_a=6, only_b=1)
    r = M.paired_comparison(y, a, b, np.full(100, np.nan), np.full(100, np.nan), n_boot=0)
    assert (r["mcnemar"]["b"], r["mcnemar"]["c"], r["mcnemar"]["method"]) == (6, 1, "exact")
    assert r["mcnemar"]["p_value"] == pytest.approx(stats.binomtest(1, 7, 0.5).pvalue)
    assert r["accuracy"]["low"] is None and r["bootstrap"]["unit"] == "image"


def test_the_bootstrap_resamples_whole_patients_and_is_seeded():
    y, a, b = discordant(120, only_a=20, only_b=8)
    one = M.paired_accuracy_difference(y, a, b, np.arange(120) // 4, n_boot=300, seed=3)
    assert one == M.paired_accuracy_difference(y, a, b, np.arange(120) // 4, n_boot=300, seed=3)
    w = M.bootstrap_weights(np.arange(120) // 4, 120, 300, 3)
    gain = (a == y).astype(float) - (b == y)
    draws = (w @ gain) / w.sum(axis=1)
    assert (one["low"], one["high"]) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))


def test_files_pair_by_bare_file_name_whatever_the_order_and_folder(tmp_path):
    y, a, b = discordant(40, only_a=7, only_b=2)
    files = names(40)
    paths = [f"test/{f}" if i % 2 else f"C:\\data\\test\\{f}" for i, f in enumerate(files)]
    study = write_study(tmp_path / "study.csv", paths, y, b)
    order = np.random.default_rng(0).permutation(40)
    p = np.where(a == 1, 0.8, 0.2)
    ours = write_suite(tmp_path / "predictions.csv", [files[i] for i in order], y[order], p[order])
    both = align_predictions(tidy_predictions(ours), tidy_predictions(study))
    assert len(both) == 40 and set(both["file"]) == set(files)
    r = compare_files(ours, study, n_boot=100)
    assert (r["mcnemar"]["b"], r["mcnemar"]["c"]) == (7, 2)
    assert (r["format_a"], r["format_b"]) == ("suite", "study")
    assert r["accuracy"]["difference"] == pytest.approx(5 / 40)
    assert r["roc_auc"]["difference"] is None, "the study's file has no probabilities"
    other = write_suite(tmp_path / "other.csv", files, y, np.where(b == 1, 0.7, 0.4))
    r = compare_files(ours, other, n_boot=100)
    expected = skm.roc_auc_score(y, p) - skm.roc_auc_score(y, np.where(b == 1, 0.7, 0.4))
    assert r["roc_auc"]["difference"] == pytest.approx(expected) and r["roc_auc"]["low"] is not None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.iloc[:-1], "are not on the same test images (40 and 39 images, 39 shared"),
        (lambda f: f.assign(Filename=f["Filename"].str.replace("_0.jpeg", "_x.jpeg")), "is in one only"),
        (lambda f: f.assign(real=["Normal"] * len(f)), "disagree on the true label of 20 image(s)"),
        (lambda f: pd.concat([f, f.assign(Filename="other/" + f["Filename"]).iloc[:1]]), "more than once"),
    ],
)
def test_other_images_or_labels_are_refused_through_the_cli_in_one_line(tmp_path, capsys, change, message):
    y, a, b = discordant(40, only_a=7, only_b=2)
    first = write_study(tmp_path / "first.csv", names(40), y, a)
    second = tmp_path / "second.csv"
    change(pd.read_csv(first)).to_csv(second, index=False)
    assert main(["evaluate", "--predictions", str(first), "--versus", str(second), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert str(first) in err and str(second) in err


def test_versus_goes_with_a_predictions_file_only(tmp_path, capsys):
    y, a, _ = discordant(10, only_a=1, only_b=1)
    first = write_study(tmp_path / "first.csv", names(10), y, a)
    assert main(["evaluate", "--predictions", str(first), "--versus", str(first), "--data", str(tmp_path)]) == 2
    assert "without --run, --data or --out" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(first), "--versus", str(tmp_path / "absent.csv")]) == 2
    assert "absent.csv' does not exist" in capsys.readouterr().err
    with pytest.raises(InputError, match="must not be negative"):
        compare_files(first, first, n_boot=-1)


def test_the_studys_two_files_paired_on_its_624_test_images(shared_data, capsys):
    folder = shared_data / "reference-predictions"
    vgg19, own = folder / "VGG19 results.csv", folder / "Self-Define-Results.csv"
    args = ["evaluate", "--predictions", str(vgg19), "--versus", str(own), "--versus", str(vgg19), "--json"]
    assert main([*args, "--bootstrap", "200"]) == 0
    first, itself = json.loads(capsys.readouterr().out)["comparisons"]
    acc, test = first["accuracy"], first["mcnemar"]
    assert first["n_images"] == 624
    assert (acc["accuracy_a"], acc["accuracy_b"]) == (0.9455128205128205, 0.9342948717948718)  # as published
    assert test["b"] - test["c"] == round(624 * (0.9455128205128205 - 0.9342948717948718)) == 7
    assert (test["b"], test["c"], test["method"]) == (15, 8, "exact")
    assert test["p_value"] == pytest.approx(stats.binomtest(8, 23, 0.5).pvalue)
    assert acc["low"] < 0 < acc["high"], "the study's two models are not told apart on 624 images"
    assert itself["mcnemar"]["p_value"] == 1.0 and itself["accuracy"]["difference"] == 0
    assert main(["evaluate", "--predictions", str(vgg19), "--versus", str(own), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "b = 15 (A right, B wrong), c = 8 (A wrong, B right)" in printed and "paired images: 624" in printed
