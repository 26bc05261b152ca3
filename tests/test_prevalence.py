"""Honest under shift: the prior-shift correction after calibration (run setting `prevalence`), its EM estimate,
how the threshold rules behave under it, and threshold rules chosen on validation (`evaluate --thresholds`)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from xraylib.calibration import (
    EM_ITERATIONS,
    Calibration,
    correct_prior,
    estimate_prevalence,
    fit_calibration,
    from_json,
    logit,
    prior_log_odds,
    shift_prior,
    sigmoid,
)
from xraylib.cli import main
from xraylib.config import resolve_config
from xraylib.errors import InputError
from xraylib.metrics import binary_metrics, choose_threshold, expected_calibration_error, threshold_rules

VAL_PREVALENCE = 0.74  # about the training split's (3,875 pneumonia of 5,216 Kermany images)
TEST_PREVALENCES = (0.40, 0.625)  # a shifted one, and the real test set's (390 of 624)
EM_TOLERANCE = 0.03  # |EM estimate - true prevalence| on 4,000 images (measured: within 0.006 for these seeds)


def _scores(prevalence: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels at `prevalence` exactly and an overconfident, biased model's P(pneumonia): class-conditional scores
    N(+1, 1) and N(-1, 1), so the true posterior is logistic in the score and a prior shift moves only its intercept."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[: round(prevalence * n)] = 1
    score = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)
    return y, sigmoid(3.0 * score + 0.5)


def _shifted(test_prevalence: float, setting: str, rule: str = "youden"):
    """(fitted map, corrected map, threshold, entry, test labels, test raw probabilities) of a run calibrated on
    validation at VAL_PREVALENCE and tested at `test_prevalence`."""
    val, test = _scores(VAL_PREVALENCE, seed=1), _scores(test_prevalence, seed=2)
    fitted = fit_calibration(*val, "platt")
    assert fitted.applied
    corrected, threshold, entry = correct_prior(fitted, setting, rule, val, test)
    return fitted, corrected, threshold, entry, *test


def test_the_shift_is_bayes_rule():
    posterior = np.linspace(0.01, 0.99, 99)
    assert np.allclose(shift_prior(posterior, 0.3, 0.3), posterior)
    odds = posterior / (1 - posterior) * (0.6 / 0.4) / (0.3 / 0.7)
    assert np.allclose(shift_prior(posterior, 0.3, 0.6), odds / (1 + odds))
    assert prior_log_odds(0.74, 0.40) == pytest.approx(np.log(0.4 / 0.6) - np.log(0.74 / 0.26))


@pytest.mark.parametrize("test_prevalence", TEST_PREVALENCES)
@pytest.mark.parametrize("setting", ["known", "estimate"])
def test_the_correction_lowers_the_test_ece(test_prevalence, setting):
    fitted, corrected, _, entry, y, raw = _shifted(
        test_prevalence, str(test_prevalence) if setting == "known" else setting
    )
    before, after = expected_calibration_error(y, fitted(raw)), expected_calibration_error(y, corrected(raw))
    assert after < before / 2, (before, after)  # 0.40: 0.17 -> 0.01; 0.625: 0.06 -> 0.01
    assert entry["test"]["ece"] == {"before": pytest.approx(before), "after": pytest.approx(after)}
    assert entry["validation"] == VAL_PREVALENCE and entry["estimated"] == (setting == "estimate")
    assert corrected.shift == pytest.approx(prior_log_odds(VAL_PREVALENCE, entry["target"]))


@pytest.mark.parametrize("test_prevalence", (*TEST_PREVALENCES, VAL_PREVALENCE))
def test_em_estimates_the_test_prevalence(test_prevalence):
    _, _, _, entry, _, _ = _shifted(test_prevalence, "estimate")
    assert abs(entry["target"] - test_prevalence) < EM_TOLERANCE, entry["target"]
    assert 0 < entry["em_iterations"] < EM_ITERATIONS
    # the true posteriors of the scores at the validation prevalence: EM recovers the prevalence of their labels
    y, _ = _scores(test_prevalence, seed=3)
    score = np.random.default_rng(4).normal(np.where(y == 1, 1.0, -1.0), 1.0)
    estimate, iterations = estimate_prevalence(sigmoid(2 * score + logit(VAL_PREVALENCE)), VAL_PREVALENCE)
    assert abs(estimate - test_prevalence) < EM_TOLERANCE and iterations < EM_ITERATIONS


def test_an_estimate_at_the_edge_is_not_kept():
    """A classifier that barely separates the classes: EM runs the prior to 0, and the run keeps validation's."""
    rng = np.random.default_rng(0)
    val_y, test_y = ((rng.uniform(size=400) < prevalence).astype(int) for prevalence in (VAL_PREVALENCE, 0.625))
    fitted, val = Calibration("platt", 1.0, 0.0, applied=True), (val_y, np.clip(rng.normal(0.74, 0.1, 400), 0, 1))
    test_raw = np.clip(0.6 + rng.normal(0, 0.02, 400), 0, 1)  # about one number for every image, below 0.74
    corrected, threshold, entry = correct_prior(fitted, "estimate", "0.5", val, (test_y, test_raw))
    assert entry["target"] < 0.01 and not entry["applied"] and entry["note"].startswith("not kept: EM ran to")
    assert corrected.shift == 0.0 and entry["test"]["ece"]["before"] == entry["test"]["ece"]["after"]
    known, _, entry = correct_prior(fitted, "0.005", "0.5", val, (test_y, test_raw))
    assert entry["applied"] and known.shift < 0  # a prevalence that is given is applied, however small


@pytest.mark.parametrize("rule", ["youden", "balanced", "sensitivity:0.95"])
def test_a_rank_rule_keeps_every_decision(rule):
    """Rank rules choose the old threshold mapped through the same odds change: no test decision moves. (The
    balanced rule's Platt refit moves its intercept by the same change.)"""
    fitted, corrected, threshold, entry, y, raw = _shifted(0.40, "0.4", rule)
    before, (val_y, val_raw) = entry["threshold"]["before"], _scores(VAL_PREVALENCE, seed=1)
    assert before == choose_threshold(val_y, fitted(val_raw), rule)
    assert threshold == entry["threshold"]["after"] != pytest.approx(before)
    fitted_again = 1e-4 if rule == "balanced" else 1e-9  # a refit, to scikit-learn's tolerance
    assert threshold == pytest.approx(float(sigmoid(logit(before) + corrected.shift)), abs=fitted_again)
    assert np.array_equal(fitted(raw) >= before, corrected(raw) >= threshold)


@pytest.mark.parametrize(("test_prevalence", "target"), [(0.40, 0.40), (0.625, 0.625), (0.40, 0.9)])
def test_a_fixed_threshold_is_the_bayes_decision_at_the_new_prevalence(test_prevalence, target):
    """0.5 applies to the corrected probabilities: a lower prevalence than validation's calls fewer images
    pneumonia (specificity up, sensitivity down), a higher one more."""
    fitted, corrected, threshold, entry, y, raw = _shifted(test_prevalence, str(target), "0.5")
    assert threshold == entry["threshold"]["before"] == entry["threshold"]["after"] == 0.5
    old, new = fitted(raw) >= 0.5, corrected(raw) >= 0.5
    m_old, m_new = binary_metrics(y, raw, y_pred=old), binary_metrics(y, raw, y_pred=new)
    if target < VAL_PREVALENCE:
        assert new.sum() < old.sum() and not (new & ~old).any()
        assert m_new["specificity"] > m_old["specificity"] and m_new["sensitivity"] < m_old["sensitivity"]
        assert m_new["accuracy"] > m_old["accuracy"]  # the right prior: the Bayes decision is the better one
    else:
        assert new.sum() > old.sum() and not (old & ~new).any()


def test_none_changes_nothing():
    val, test = _scores(VAL_PREVALENCE, 500, 1), _scores(0.4, 500, 2)
    fitted = fit_calibration(*val, "platt")
    assert correct_prior(fitted, "none", "youden", val, test) == (fitted, choose_threshold(val[0], fitted(val[1])), {})


def test_the_shift_is_stored_and_inverted():
    cal = Calibration("platt", 0.6, -0.3, applied=True, shift=-1.2)
    assert from_json(json.loads(json.dumps(cal.to_json()))) == cal
    old = {k: v for k, v in cal.to_json().items() if k != "shift"}  # a run from before the correction
    assert from_json(old).shift == 0.0
    for c in (cal, Calibration("platt", note="not kept", shift=0.7)):  # a shift without a kept fit too
        for t in (0.1, 0.5, 0.9):
            assert float(c(np.array([c.raw_threshold(t)]))[0]) == pytest.approx(t, abs=1e-9)
    assert np.allclose(cal(np.array([0.2, 0.7])), sigmoid(0.6 * logit([0.2, 0.7]) - 0.3 - 1.2))
    with pytest.raises(InputError, match="shift"):
        from_json({**cal.to_json(), "shift": float("inf")})


@pytest.mark.parametrize("value", ["0", "1", "-1", "abc", "nan", "1.5"])
def test_config_rejects_impossible_prevalences(value):
    with pytest.raises(InputError, match=r"^setting prevalence=.*expected none, estimate or a number in \(0, 1\)$"):
        resolve_config("resnet34", "smoke", {"prevalence": value})


def test_config_accepts_prevalences_and_refuses_what_cannot_be_corrected():
    for value in ("none", "estimate", "0.4", "0.625"):
        assert resolve_config("resnet34", "smoke", {"prevalence": value}).prevalence == value
    with pytest.raises(InputError, match="needs calibration=platt or temperature"):
        resolve_config("resnet34", "smoke", {"prevalence": "0.4", "calibration": "none"})
    with pytest.raises(InputError, match="binary-only"):
        resolve_config("resnet34", "smoke", {"prevalence": "estimate", "task": "three_class"})


def test_the_exported_model_applies_the_shift(untrained_run):
    from xraylib.export import serving_model
    from xraylib.models import load_model

    model = load_model(untrained_run / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    raw = np.asarray(serving_model(model)(images)["p_pneumonia"])
    for cal in (Calibration("platt", 0.7, 0.2, applied=True, shift=-0.9), Calibration("platt", shift=0.8)):
        exported = np.asarray(serving_model(model, calibration=cal)(images)["p_pneumonia"])
        assert np.allclose(exported, cal(raw), atol=1e-5)


# ---------------------------------------------------------------------------------------------- threshold rules


def _write_predictions(path, y: np.ndarray, p: np.ndarray) -> None:
    labels = np.where(y == 1, "pneumonia", "normal")
    frame = pd.DataFrame(
        {"file": [f"person{i}_bacteria_{i}.jpeg" for i in range(len(y))], "patient": np.arange(len(y)) // 2}
    )
    frame = frame.assign(label=labels, p_pneumonia=p, predicted=np.where(p >= 0.5, "pneumonia", "normal"))
    frame.to_csv(path, index=False)


def test_threshold_rules_are_chosen_on_validation_not_test(tmp_path, capsys):
    """Validation separates at 0.3, test at 0.7: a rule chosen on the test set would land near 0.7."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    val_p = np.where(y == 1, rng.uniform(0.3, 1.0, 200), rng.uniform(0.0, 0.3, 200))
    test_p = np.where(y == 1, rng.uniform(0.7, 1.0, 200), rng.uniform(0.0, 0.7, 200))
    _write_predictions(tmp_path / "val_predictions.csv", y, val_p)
    _write_predictions(tmp_path / "predictions.csv", y, test_p)
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds", "--json", "--bootstrap", "50"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["rule"]: row for row in result["rules"]}
    assert list(rows) == ["youden", "balanced", "sensitivity:0.95", "0.5"]
    for rule, row in rows.items():
        assert row["threshold"] == choose_threshold(y, val_p, rule) == row["threshold_interval"]["value"]
        assert row["threshold_interval"]["low"] <= row["threshold"] <= row["threshold_interval"]["high"]
        on_test = binary_metrics(y, test_p, row["threshold"])
        for name in ("sensitivity", "specificity", "accuracy"):
            assert row["test"][name]["value"] == pytest.approx(on_test[name])
            assert row["test"][name]["low"] <= row["test"][name]["value"] <= row["test"][name]["high"]
        assert row["validation"]["sensitivity"] == pytest.approx(
            binary_metrics(y, val_p, row["threshold"])["sensitivity"]
        )
    assert rows["youden"]["threshold"] < 0.31 and choose_threshold(y, test_p) > 0.69
    assert rows["youden"]["validation"] == {"sensitivity": 1.0, "specificity": 1.0}
    assert (
        rows["youden"]["test"]["sensitivity"]["value"] == 1.0 and rows["youden"]["test"]["specificity"]["value"] < 0.5
    )
    assert result["bootstrap"] == {"resamples": 50, "seed": 0, "unit": "patient"}
    assert threshold_rules((y, val_p), (y, test_p), n_boot=0)[-1]["threshold"] == 0.5
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds", "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    [line] = [line for line in text.splitlines() if line.startswith("youden")]
    assert "chosen on its 200 validation images" in text
    youden = rows["youden"]["threshold_interval"]
    assert f"{youden['value']:.4f} [{youden['low']:.4f}, {youden['high']:.4f}]" in line
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds", "--data", str(tmp_path)]) == 2
    (tmp_path / "val_predictions.csv").unlink()
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds"]) == 2
    assert "val_predictions.csv" in capsys.readouterr().err


def test_threshold_rules_after_a_prior_shift(tmp_path, capsys):
    """`evaluate --thresholds --prevalence P|estimate`: the run's own calibration map, shifted to P by
    Bayes' rule, then the rules chosen on the corrected validation probabilities: rank rules keep every test
    decision, the fixed 0.5 becomes the Bayes decision at P (fewer false positives at a lower prevalence)."""
    (val_y, val_raw), (test_y, test_raw) = _scores(VAL_PREVALENCE, n=600, seed=1), _scores(0.40, n=600, seed=2)
    fitted = fit_calibration(val_y, val_raw, "platt")
    for name, y, raw in (("val_predictions.csv", val_y, val_raw), ("predictions.csv", test_y, test_raw)):
        _write_predictions(tmp_path / name, y, fitted(raw))
        pd.read_csv(tmp_path / name).assign(p_uncalibrated=raw).to_csv(tmp_path / name, index=False)
    (tmp_path / "metrics.json").write_text(json.dumps({"calibration": fitted.to_json()}))

    def rules(*prevalence: str) -> dict:
        args = ["evaluate", "--run", str(tmp_path), "--thresholds", "--json", "--bootstrap", "0"]
        assert main(args + ["--prevalence", *prevalence] * bool(prevalence)) == 0
        return json.loads(capsys.readouterr().out)

    plain, shifted, estimated = rules(), rules("0.4"), rules("estimate")
    assert plain["prevalence"] == {}
    entry = shifted["prevalence"]
    assert entry["target"] == 0.4 and entry["validation"] == pytest.approx(VAL_PREVALENCE, abs=0.01)
    assert entry["test"]["ece"]["after"] < entry["test"]["ece"]["before"]
    corrected = dataclasses.replace(fitted, shift=prior_log_odds(float(np.mean(val_y)), 0.4))(test_raw)
    bayes = binary_metrics(test_y, corrected, 0.5)
    plain, shifted = ({row["rule"]: row["test"] for row in result["rules"]} for result in (plain, shifted))
    for name in ("sensitivity", "specificity"):
        for rule in ("youden", "balanced", "sensitivity:0.95"):  # the same decisions
            assert shifted[rule][name]["value"] == pytest.approx(plain[rule][name]["value"])
        assert shifted["0.5"][name]["value"] == pytest.approx(bayes[name])
    assert shifted["0.5"]["specificity"]["value"] > plain["0.5"]["specificity"]["value"]
    assert estimated["prevalence"]["estimated"] and abs(estimated["prevalence"]["target"] - 0.4) < 0.05
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds", "--prevalence", "0.4", "--bootstrap", "0"]) == 0
    assert "to 0.4000 (given): test ECE" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds", "--prevalence", "1.5"]) == 2
    assert "prevalence" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(tmp_path / "predictions.csv"), "--prevalence", "0.4"]) == 2
    assert "--prevalence goes with" in capsys.readouterr().err
    _write_predictions(tmp_path / "predictions.csv", test_y, fitted(test_raw))  # no p_uncalibrated
    assert main(["evaluate", "--run", str(tmp_path), "--thresholds", "--prevalence", "0.4"]) == 2
    assert "p_uncalibrated" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- end to end


def test_a_run_with_an_estimated_prevalence(synth_data, tmp_path):
    """`--set prevalence=estimate`: metrics.json records the correction, every file of the run and `predict` give
    the corrected probabilities, and the threshold is the one chosen on the corrected validation ones."""
    from xraylib.predict import predict_files
    from xraylib.runs import read_calibration

    out = tmp_path / "run"
    settings = {"image_size": "32", "limit": "40", "batch_size": "6", "bootstrap": "30", "gradcam_images": "4"}
    settings.update(epochs="1", prevalence="estimate")
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    command = ["train", "--data", str(synth_data), "--backbone", "resnet34", "--preset", "smoke", "--out", str(out)]
    assert main([*command, *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cal, entry = metrics["calibration"], metrics["calibration"]["prevalence"]
    val, test = pd.read_csv(out / "val_predictions.csv"), pd.read_csv(out / "predictions.csv")
    assert entry["setting"] == "estimate" and entry["estimated"] and entry["em_iterations"] >= 1
    assert entry["validation"] == pytest.approx((val["label"] == "pneumonia").mean())
    shift = prior_log_odds(entry["validation"], entry["target"]) if entry["applied"] else 0.0  # see EM_RANGE
    assert 0 < entry["target"] < 1 and cal["shift"] == pytest.approx(shift)
    assert {"before", "after"} <= set(entry["test"]["ece"]) and {"before", "after"} <= set(entry["threshold"])
    assert metrics["threshold"]["value"] == entry["threshold"]["after"]
    stored = read_calibration(out)
    for frame in (val, test):
        assert np.allclose(frame["p_pneumonia"], stored(frame["p_uncalibrated"]), atol=1e-9)
    y_val = (val["label"] == "pneumonia").to_numpy(int)
    assert metrics["threshold"]["value"] == pytest.approx(choose_threshold(y_val, val["p_pneumonia"]), abs=1e-9)
    table = predict_files(out / "model.keras", list(test["path"]))
    assert np.allclose(table["p_pneumonia"], test["p_pneumonia"], atol=1e-5)
    metrics["calibration"]["shift"] = cal["shift"] + 0.9  # whatever shift the run stores is the one predict applies
    (out / "metrics.json").write_text(json.dumps(metrics))
    table = predict_files(out / "model.keras", list(test["path"]))
    assert np.allclose(table["p_pneumonia"], sigmoid(logit(test["p_pneumonia"]) + 0.9), atol=1e-5)
