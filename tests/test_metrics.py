"""Metrics: agreement with scikit-learn, patient-bootstrap CIs, thresholds, the study's figures, bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from xraylib import metrics as M
from xraylib import prediction_files as E
from xraylib.errors import InputError
from xraylib.pairwise import compare

REFERENCE = {
    "VGG19 results.csv": [
        "  accuracy                0.9455128205128205",
        "  weighted precision      0.9481871603103079",
        "  weighted recall         0.9455128205128205",
        "  weighted F1             0.9447232223222323",
        "  ROC-AUC on hard labels  0.9299145299145299",
    ],
    "Self-Define-Results.csv": [
        "  accuracy                0.9342948717948718",
        "  weighted precision      0.934370894759889",
        "  weighted recall         0.9342948717948718",
        "  weighted F1             0.9338947937308593",
        "  ROC-AUC on hard labels  0.9243589743589744",
    ],
}
# The study's README, as the study printed them: accuracy, weighted precision, weighted F1, ROC-AUC on hard labels.
STUDY_TABLE = {
    "VGG19 results.csv": ("0.9455128205128205", "0.9481871603103079", "0.9447232223222323", "0.9299145299145299"),
    "Self-Define-Results.csv": ("0.9342948717948718", "0.934370894759889", "0.9338947937308593", "0.9243589743589744"),
}


def synthetic(n: int, seed: int = 0, images_per_patient: int = 1, patient_effect: float = 0.0):
    """Labels, probabilities and patient keys; a strong patient effect makes a patient's images alike."""
    rng = np.random.default_rng(seed)
    n_patients = max(1, n // images_per_patient)
    patient = np.repeat(np.arange(n_patients), images_per_patient)[:n]
    patient = np.r_[patient, np.arange(n - len(patient)) + n_patients]
    y = rng.integers(0, 2, n_patients)[patient] if patient_effect else rng.integers(0, 2, n)
    shift = rng.normal(0, 1, n_patients)[patient] * patient_effect
    p = 1 / (1 + np.exp(-(1.6 * (2 * y - 1) + shift + rng.normal(0, 1, n))))
    return y, p, patient.astype(str)


def write_suite(path, y, p, threshold=0.5, patient=None):
    """A predictions.csv in the suite's format."""
    n = len(y)
    frame = pd.DataFrame(
        {
            "file": [f"person{i}_bacteria_{i}.jpeg" for i in range(n)],
            "patient": patient if patient is not None else [f"kermany-person{i}" for i in range(n)],
            "label": np.where(np.asarray(y) == 1, "pneumonia", "normal"),
            "p_pneumonia": p,
            "predicted": np.where(np.asarray(p) >= threshold, "pneumonia", "normal"),
        }
    )
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------- agreement with sklearn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_agree_with_sklearn(seed):
    y, p, _ = synthetic(300, seed)
    m = M.binary_metrics(y, p, 0.4)
    pred = (p >= 0.4).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))


def test_ece_matches_its_definition():
    y, p, _ = synthetic(500, 3)
    bins = np.minimum((p * 10).astype(int), 9)
    expected = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    assert M.expected_calibration_error(y, p) == pytest.approx(expected)
    assert M.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_vectorised_bootstrap_equals_sklearn_on_each_resample():
    """Each weighted resample gives exactly what sklearn gives on the rows that resample draws."""
    y, p, groups = synthetic(240, 4, images_per_patient=3)
    p = np.round(p, 2)  # ties
    pred = (p >= 0.5).astype(int)
    w = M.bootstrap_weights(groups, len(y), 6, seed=7)
    boot = M.weighted_metrics(y, p, pred, w)
    for i in range(len(w)):
        rows = np.repeat(np.arange(len(y)), w[i].astype(int))
        ref = M.binary_metrics(y[rows], p[rows], 0.5)
        for name in M.METRICS:
            assert boot[name][i] == pytest.approx(ref[name], abs=1e-12), name


def test_bootstrap_weights_resample_whole_patients():
    groups = np.repeat(["a", "b", "c", "d"], [1, 2, 3, 4])
    w = M.bootstrap_weights(groups, len(groups), 50, seed=0)
    for row in w:
        for g in "abcd":
            assert len(set(row[groups == g])) == 1  # a patient's images are drawn together
        assert row.reshape(-1)[[0, 1, 3, 6]].sum() == 4  # as many patients drawn as there are


# ------------------------------------------------------------------------------------- confidence intervals


def test_every_ci_contains_its_estimate_and_narrows_with_n():
    widths = {}
    for n in (150, 2400):
        y, p, groups = synthetic(n, 5, images_per_patient=3)
        r = M.binary_metrics_ci(y, p, groups, 0.5, n_boot=400, seed=1)
        for name in M.METRICS:
            e = r[name]
            assert e["low"] <= e["value"] <= e["high"], (n, name, e)
        widths[n] = {name: r[name]["high"] - r[name]["low"] for name in M.METRICS}
    for name in M.METRICS:
        assert widths[2400][name] < widths[150][name], name


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_clustered_images():
    y, p, groups = synthetic(600, 6, images_per_patient=10, patient_effect=2.0)
    by_patient = M.binary_metrics_ci(y, p, groups, 0.5, n_boot=500, seed=0)
    by_image = M.binary_metrics_ci(y, p, None, 0.5, n_boot=500, seed=0)
    assert by_patient["bootstrap"]["unit"] == "patient" and by_image["bootstrap"]["unit"] == "image"
    assert by_patient["n_patients"] == 60 and by_image["n_patients"] == 600
    for name in ("accuracy", "roc_auc", "sensitivity"):
        wide = by_patient[name]["high"] - by_patient[name]["low"]
        narrow = by_image[name]["high"] - by_image[name]["low"]
        assert wide > 1.5 * narrow, (name, wide, narrow)


def test_bootstrap_is_fast_and_seeded():
    y, p, groups = synthetic(624, 7, images_per_patient=2)
    start = time.perf_counter()
    a = M.binary_metrics_ci(y, p, groups, 0.5, n_boot=1000, seed=3)
    assert time.perf_counter() - start < 3.0
    assert a == M.binary_metrics_ci(y, p, groups, 0.5, n_boot=1000, seed=3)
    assert a != M.binary_metrics_ci(y, p, groups, 0.5, n_boot=1000, seed=4)


def test_evaluate_is_json_ready_and_undefined_metrics_are_none_with_a_note():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.3, 0.2])
    r = M.binary_metrics_ci(y, p, None, 0.9, n_boot=100)  # no positive prediction
    json.dumps(r, allow_nan=False)
    assert r["precision"]["value"] is None and r["sensitivity"]["value"] == 0.0
    assert any("precision is undefined" in note for note in r["notes"])
    one_class = M.binary_metrics_ci(np.ones(5), np.linspace(0.1, 0.9, 5), None, 0.5, n_boot=50)
    assert one_class["roc_auc"]["value"] is None and one_class["specificity"]["value"] is None
    assert any("undefined with one class" in note for note in one_class["notes"])


# ------------------------------------------------------------------------------------- thresholds


def test_choose_threshold_rules():
    y, p, _ = synthetic(400, 8)
    t = M.choose_threshold(y, p, "youden")
    fpr, tpr, thr = skm.roc_curve(y, p)
    assert (p >= t).sum() > 0
    j = lambda t: ((p >= t) & (y == 1)).sum() / y.sum() - ((p >= t) & (y == 0)).sum() / (1 - y).sum()  # noqa: E731
    assert j(t) == pytest.approx(np.max(tpr - fpr))
    s = M.choose_threshold(y, p, "sensitivity:0.95")
    assert M.binary_metrics(y, p, s)["sensitivity"] >= 0.95
    assert M.binary_metrics(y, p, np.nextafter(s, 1))["sensitivity"] < 0.95  # the highest such threshold
    assert M.choose_threshold(y, p, "0.3") == 0.3
    with pytest.raises(InputError, match="threshold"):
        M.choose_threshold(y, p, "median")
    with pytest.raises(InputError, match="both classes"):
        M.choose_threshold(np.zeros(10), p[:10], "youden")


def test_a_threshold_fixed_by_few_validation_images_has_a_wide_interval():
    """The interval is the rule re-run on patient resamples of validation: overlapping classes in few images leave
    the threshold loose, many images pin it; a fixed threshold is its own interval."""
    rng = np.random.default_rng(3)

    def validation(n):
        y = rng.integers(0, 2, n)
        return y, 1 / (1 + np.exp(-(2.0 * y - 1.0 + rng.normal(0, 1.2, n))))

    few, many = validation(60), validation(6000)
    loose, firm = M.threshold_interval(*few, n_boot=300), M.threshold_interval(*many, n_boot=300)
    for (y, p), chosen in ((few, loose), (many, firm)):
        assert chosen["value"] == M.choose_threshold(y, p)
        assert chosen["low"] < chosen["value"] < chosen["high"]
    assert loose["high"] - loose["low"] > 3 * (firm["high"] - firm["low"])
    assert M.threshold_interval(*few, rule="0.4") == {"value": 0.4, "low": 0.4, "high": 0.4}
    assert M.threshold_interval(*few, n_boot=0)["low"] is None


def test_balanced_threshold_is_the_calibrated_prevalence_and_steadier_than_youden():
    """On validation images the model nearly separates, Youden's J is flat and its argmax lands anywhere in it; the
    balanced rule comes from Platt's fit to every image: on calibrated probabilities it is the prevalence, it cuts
    the raw probabilities at the same image, and it moves less over resamples of the images."""
    from xraylib.calibration import fit_calibration, logit

    rng = np.random.default_rng(5)
    y = (rng.random(800) < 0.74).astype(int)
    raw = 1 / (1 + np.exp(-3.0 * (rng.normal(0, 1.0, 800) + 3.0 * y - 1.5)))  # logits: the likelihood ratio
    calibration = fit_calibration(y, raw, "platt")
    assert calibration.applied
    on_calibrated = M.choose_threshold(y, calibration(raw), "balanced")
    assert on_calibrated == pytest.approx(y.mean(), abs=2e-3)
    assert calibration(M.choose_threshold(y, raw, "balanced")) == pytest.approx(on_calibrated, abs=2e-3)
    assert M.threshold_rule("Balanced") == ("balanced", pytest.approx(float("nan"), nan_ok=True))
    width = {}
    for rule in ("youden", "balanced"):
        chosen = M.threshold_interval(y, raw, rule=rule, n_boot=300)
        width[rule] = float(logit(chosen["high"]) - logit(chosen["low"]))
    assert width["balanced"] < 0.7 * width["youden"], width


# ------------------------------------------------------------------------------------- the study's files


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_files_reproduce_the_published_figures_to_the_last_digit(shared_data, name):
    path = shared_data / "reference-predictions" / name
    result = E.evaluate_file(path, n_boot=200, seed=0)
    report = E.format_report(result).splitlines()
    for line in REFERENCE[name]:
        assert line in report
    figures = result["study_figures"]
    printed = tuple(repr(figures[k]) for k in ("accuracy", "weighted_precision", "weighted_f1", "roc_auc_hard_labels"))
    assert printed == STUDY_TABLE[name]
    assert result["format"] == "study" and result["n_images"] == 624
    assert result["n_pneumonia"] == 390 and result["n_normal"] == 234
    assert result["at_threshold"]["roc_auc"]["value"] is None  # hard labels: no probability AUC
    json.dumps(result, allow_nan=False)


def test_confusion_counts_of_reference_files_match_the_published_ones(shared_data):
    counts = {"VGG19 results.csv": (203, 31, 3, 387), "Self-Define-Results.csv": (207, 27, 14, 376)}
    for name, expected in counts.items():
        frame = E.tidy_predictions(shared_data / "reference-predictions" / name)
        m = M.binary_metrics(frame["y_true"], frame["p"], y_pred=frame["y_pred"])
        assert (m["tn"], m["fp"], m["fn"], m["tp"]) == expected


def test_other_study_format_files_with_covid_labels(tmp_path):
    """Files in the study's format reproduce sklearn's figures; 'Covid' means pneumonia."""
    rng = np.random.default_rng(9)
    real = rng.choice(["Normal", "Covid", "Pnemonia"], 80)
    pred = np.where(rng.random(80) < 0.8, real, rng.choice(["Normal", "Covid"], 80))
    path = tmp_path / "other results.csv"
    pd.DataFrame({"Filename": [f"IM-{i:04d}-0001.jpeg" for i in range(80)], "real": real, "Predictions": pred}).to_csv(
        path, index=False
    )
    r = E.evaluate_file(path, n_boot=50)
    y, yp = (real != "Normal").astype(int), (pred != "Normal").astype(int)
    assert r["study_figures"]["weighted_f1"] == skm.f1_score(y, yp, average="weighted")
    assert r["study_figures"]["roc_auc_hard_labels"] == skm.roc_auc_score(y, yp)
    assert f"  weighted F1             {skm.f1_score(y, yp, average='weighted')!r}" in E.format_report(r)


def test_suite_file_reports_run_threshold_and_half(tmp_path):
    y, p, _ = synthetic(200, 10)
    path = write_suite(tmp_path / "predictions.csv", y, p, threshold=0.37)
    frame = E.tidy_predictions(path)
    assert list(frame.columns) == ["file", "patient", "y_true", "p", "y_pred"]
    r = E.evaluate_file(path, n_boot=100)
    assert r["format"] == "suite"
    assert r["threshold"] == pytest.approx(p[p >= 0.37].min())
    assert r["at_threshold"]["sensitivity"]["value"] == pytest.approx(M.binary_metrics(y, p, 0.37)["sensitivity"])
    assert r["at_0.5"]["accuracy"]["value"] == pytest.approx(M.binary_metrics(y, p, 0.5)["accuracy"])
    text = E.format_report(r)
    assert "threshold 0.5" in text and "ROC-AUC" in text
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.37}}))
    assert E.evaluate_file(path, n_boot=0)["threshold"] == 0.37


def test_cli_evaluate_prints_json(tmp_path, capsys):
    from xraylib.cli import main

    y, p, _ = synthetic(60, 11)
    path = write_suite(tmp_path / "predictions.csv", y, p)
    assert main(["evaluate", "--predictions", str(path), "--json", "--bootstrap", "50"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["at_threshold"]["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p))


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,label,predicted\na.jpeg,normal,normal\n", "missing column.*p_pneumonia"),
        ("Filename,real\na.jpeg,Normal\n", "missing column.*Predictions"),
        ("file,label,p_pneumonia\na.jpeg,cat,0.2\nb.jpeg,normal,0.1\n", "unknown label.*'cat'"),
        ("Filename,real,Predictions\na.jpeg,Normal,Dog\nb.jpeg,Pnemonia,Normal\n", "'Predictions'.*unknown.*'dog'"),
        (
            "file,label,p_pneumonia\na.jpeg,normal,1.2\nb.jpeg,pneumonia,0.4\n",
            "outside \\[0, 1\\] \\(e.g. 1.2 on line 2\\)",
        ),
        ("file,label,p_pneumonia\na.jpeg,normal,-0.1\nb.jpeg,pneumonia,0.4\n", "outside \\[0, 1\\]"),
        ("file,label,p_pneumonia\na.jpeg,normal,\nb.jpeg,pneumonia,0.4\n", "'p_pneumonia'.*missing value.*line 2"),
        ("file,label,p_pneumonia\na.jpeg,normal,NaN\nb.jpeg,pneumonia,0.4\n", "'p_pneumonia'.*missing value"),
        ("file,label,p_pneumonia\na.jpeg,normal,high\nb.jpeg,pneumonia,0.4\n", "non-numeric value 'high'"),
        ("file,label,p_pneumonia\na.jpeg,,0.2\nb.jpeg,pneumonia,0.4\n", "'label'.*empty"),
        ("file,label,p_pneumonia\na.jpeg,normal,0.2\n ,pneumonia,0.4\n", "'file'.*empty.*line 3"),
        ("Filename,real,Predictions\n,Normal,Normal\nb.jpeg,Pnemonia,Normal\n", "'Filename'.*empty.*line 2"),
        ("file,label,p_pneumonia\na.jpeg,pneumonia,0.2\nb.jpeg,pneumonia,0.4\n", "AUC is undefined with one class"),
        ("Filename,real,Predictions\na.jpeg,Normal,Normal\nb.jpeg,Normal,Pnemonia\n", "AUC is undefined with one"),
        ("file,label,p_pneumonia\n", "no prediction rows"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        E.evaluate_file(path, n_boot=10)
    assert "\n" not in str(info.value)


def test_missing_file_and_cli_exit_code(tmp_path, capsys):
    from xraylib.cli import main

    with pytest.raises(InputError, match="does not exist"):
        E.tidy_predictions(tmp_path / "nope.csv")
    (tmp_path / "one.csv").write_text("file,label,p_pneumonia\na.jpeg,normal,0.2\n")
    assert main(["evaluate", "--predictions", str(tmp_path / "one.csv")]) == 2
    assert "AUC is undefined with one class" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- comparisons


def test_mcnemar_exact_and_chi2():
    y = np.ones(100, dtype=int)
    a = np.r_[np.ones(10), np.zeros(2), np.ones(88)]  # A right, B wrong on 10; A wrong, B right on 2
    b = np.r_[np.zeros(10), np.ones(2), np.ones(88)]
    r = M.mcnemar(y, a, b)
    assert (r["b"], r["c"], r["method"]) == (10, 2, "exact")
    from scipy import stats

    assert r["p_value"] == pytest.approx(stats.binomtest(2, 12, 0.5).pvalue)
    a = np.r_[np.ones(40), np.zeros(20), np.ones(40)]
    b = np.r_[np.zeros(40), np.ones(20), np.ones(40)]
    r = M.mcnemar(y, a, b)
    assert r["method"].startswith("chi2") and r["statistic"] == pytest.approx((20 - 1) ** 2 / 60)
    assert r["p_value"] == pytest.approx(stats.chi2.sf((20 - 1) ** 2 / 60, 1))
    assert M.mcnemar(y, a, a)["p_value"] == 1.0


def test_paired_auc_difference():
    y, p, groups = synthetic(400, 12, images_per_patient=2)
    rng = np.random.default_rng(0)
    worse = np.clip(p + rng.normal(0, 0.35, len(p)), 0, 1)
    r = M.paired_auc_difference(y, p, worse, groups, n_boot=500)
    assert r["difference"] == pytest.approx(skm.roc_auc_score(y, p) - skm.roc_auc_score(y, worse))
    assert r["low"] <= r["difference"] <= r["high"] and r["low"] > 0 and r["p_value"] < 0.01
    same = M.paired_auc_difference(y, p, p, groups, n_boot=200)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_one_ci_rule_everywhere_no_ci_from_too_few_defined_resamples():
    few = {"value": 0.5, "low": None, "high": None}
    assert M.bootstrap_interval(0.5, np.r_[np.full(40, np.nan), np.arange(10.0)], 50, "x") == {
        **few,
        "notes": ["x: no CI, undefined in 40 of 50 resamples"],
    }
    notes: list[str] = []
    partial = M.bootstrap_interval(0.5, np.r_[np.nan, np.linspace(0, 1, 19)], 20, "x", notes)
    assert partial["low"] == pytest.approx(0.025) and "notes" not in partial
    assert notes == ["x: CI from 19 of 20 resamples (others had it undefined)"]
    assert M.bootstrap_interval(0.5, np.ones(5), 5, "x")["notes"] == ["x: no CI from 5 resamples (10 needed)"]
    # sensitivity by kind and the paired AUC difference follow the same rule
    y = np.r_[0, 0, np.ones(28, int)]
    by_kind = M.sensitivity_by_kind(y, y, np.where(y == 1, "viral", ""), n_boot=5)["viral"]
    assert by_kind["low"] is None and by_kind["notes"] and by_kind["n_images"] == 28
    p = np.linspace(0, 1, 30)
    auc = M.paired_auc_difference(y, p, p[::-1], n_boot=200)  # resamples without a normal image have no AUC
    assert auc["low"] is not None and "CI from" in auc["notes"][0] and auc["p_value"] is not None


def test_compare_returns_a_tidy_table_of_every_pair(tmp_path):
    y, p, _ = synthetic(150, 13)
    rng = np.random.default_rng(1)
    frames = {}
    for i, name in enumerate(("vgg16", "vgg19", "xception")):
        q = np.clip(p + rng.normal(0, 0.1 * i, len(p)), 0, 1)
        frames[name] = E.tidy_predictions(write_suite(tmp_path / f"{name}.csv", y, q))
    table = compare(frames, n_boot=200)
    assert len(table) == 3 and set(table["model_a"]) | set(table["model_b"]) == set(frames)
    for column in ("mcnemar_p", "mcnemar_p_holm", "auc_difference", "auc_difference_low", "auc_difference_p"):
        assert table[column].notna().all(), column
    assert (table["mcnemar_p_holm"] >= table["mcnemar_p"]).all()
    with pytest.raises(InputError, match="more than once"):
        compare({"a": frames["vgg16"], "b": pd.concat([frames["vgg19"], frames["vgg19"].iloc[:1]])})
    shuffled = frames["vgg19"].iloc[:-1]
    with pytest.raises(InputError, match="same test images"):
        compare({"a": frames["vgg16"], "b": shuffled})


def test_compare_the_study_files_mcnemar_only(shared_data):
    folder = shared_data / "reference-predictions"
    frames = {
        n: E.tidy_predictions(folder / f)
        for n, f in (("vgg19", "VGG19 results.csv"), ("own", "Self-Define-Results.csv"))
    }
    table = compare(frames, n_boot=50)
    assert (table.loc[0, "a_right_b_wrong"], table.loc[0, "a_wrong_b_right"]) == (15, 8)
    assert 0 < table.loc[0, "mcnemar_p"] < 1 and pd.isna(table.loc[0, "auc_difference"])
    assert "no probabilities" in table.loc[0, "note"]
