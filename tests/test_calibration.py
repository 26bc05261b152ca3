"""xraylib.calibration: Platt and temperature fits on validation predictions, their guard, and their storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xraylib.calibration import Calibration, effect, fit_calibration, from_json, logit, sigmoid
from xraylib.errors import InputError
from xraylib.metrics import expected_calibration_error
from xraylib.runs import read_calibration


def _overconfident(n: int = 2000, sharpness: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from P = sigmoid(z), and a model reporting sigmoid(sharpness * z + 0.5): too sure, and biased."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.uniform(size=n) < sigmoid(z)).astype(int)
    return y, sigmoid(sharpness * z + 0.5), sigmoid(z)


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_an_overconfident_model_is_calibrated(method):
    y, p, _ = _overconfident()
    cal = fit_calibration(y, p, method)
    assert cal.applied and cal.method == method
    assert cal.slope == pytest.approx(1 / 3, abs=0.05)  # the fit undoes the sharpening
    if method == "temperature":
        assert cal.intercept == 0.0
    before, after = expected_calibration_error(y, p), expected_calibration_error(y, cal(p))
    assert after < before / 2
    # a held-out draw from the same model: calibration carries over
    y2, p2, _ = _overconfident(seed=1)
    assert expected_calibration_error(y2, cal(p2)) < expected_calibration_error(y2, p2) / 2


def test_platt_also_removes_a_bias_temperature_cannot():
    y, p, _ = _overconfident()
    platt, temperature = fit_calibration(y, p, "platt"), fit_calibration(y, p, "temperature")
    assert platt.intercept == pytest.approx(-0.5 / 3, abs=0.1)
    assert expected_calibration_error(y, platt(p)) < expected_calibration_error(y, temperature(p))


def test_calibration_keeps_the_order_and_its_threshold_inverts():
    y, p, _ = _overconfident(n=500)
    cal = fit_calibration(y, p, "platt")
    q = cal(p)
    assert np.all(np.diff(q[np.argsort(p)]) >= 0)
    assert roc_auc_score(y, q) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    for t in (0.05, 0.3, 0.5, 0.77, 0.99):
        raw = cal.raw_threshold(t)
        assert float(cal(np.array([raw]))[0]) == pytest.approx(t, abs=1e-9)
        assert np.array_equal(q >= t, p >= raw - 1e-12) or np.sum((q >= t) != (p >= raw)) <= 1  # float ties only
    assert cal.raw_threshold(0.0) == 0.0 and cal.raw_threshold(1.0) == 1.0


def test_validation_ece_never_rises():
    """The guard: a fit that would raise the validation ECE is not kept, so ECE after <= before on validation."""
    kept = dropped = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = 30
        p = rng.uniform(0.02, 0.98, n)
        y = (rng.uniform(size=n) < p).astype(int)  # already calibrated: a fit has little to gain
        cal = fit_calibration(y, p, "platt")
        assert expected_calibration_error(y, cal(p)) <= expected_calibration_error(y, p) + 1e-12
        if cal.applied:
            kept += 1
        else:
            dropped += 1
            assert cal.note.startswith("not kept: it raised the validation ECE")
            assert np.array_equal(cal(p), p)
    assert kept and dropped  # both branches were exercised


def test_identity_cases():
    y, p, _ = _overconfident(n=100)
    assert not fit_calibration(y, p, "none").applied
    one_class = fit_calibration(np.ones(20, int), np.linspace(0.1, 0.9, 20), "platt")
    assert not one_class.applied and "one class" in one_class.note
    anti = fit_calibration(y, 1 - p, "platt")  # a model that ranks backwards: a monotone map cannot fix it
    assert not anti.applied and "order" in anti.note
    with pytest.raises(InputError, match="calibration='isotonic'"):
        fit_calibration(y, p, "isotonic")


def test_logit_of_saturated_probabilities_is_finite():
    z = logit(np.array([0.0, 1.0, 0.5]))
    assert np.isfinite(z).all() and z[2] == 0.0 and z[0] < -15 and z[1] > 15  # float32's bounds, as an export's


def test_effect_reports_before_and_after():
    y, p, _ = _overconfident(n=400)
    cal = fit_calibration(y, p, "platt")
    out = effect(y, p, cal)
    assert set(out) == {"brier", "ece", "log_loss"}
    assert out["log_loss"]["after"] < out["log_loss"]["before"]
    assert out["ece"]["before"] == pytest.approx(expected_calibration_error(y, p))


def test_stored_in_metrics_json(tmp_path):
    cal = Calibration("platt", 0.4, -0.2, applied=True)
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.5}, "calibration": cal.to_json()}))
    assert read_calibration(tmp_path) == cal
    assert read_calibration(tmp_path / "elsewhere") == Calibration()  # no metrics.json: the identity
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.5}}))
    assert read_calibration(tmp_path) == Calibration()  # a run from before calibration
    with pytest.raises(InputError, match="calibration"):
        from_json({"method": "platt", "slope": -1, "intercept": 0, "applied": True}, "metrics.json")
    with pytest.raises(InputError, match="unreadable calibration"):
        from_json({"method": "platt"}, "metrics.json")


def test_temperature_on_class_probabilities_keeps_the_argmax_and_lowers_the_log_loss():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    logits = 4.0 * (rng.normal(size=(300, 3)) + 0.8 * np.eye(3)[y])  # overconfident
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cal = fit_calibration(y, probs, "temperature")
    assert cal.applied and 0 < cal.slope < 1  # a temperature above 1 softens them
    assert (cal(probs).argmax(axis=1) == probs.argmax(axis=1)).all()
    assert np.allclose(cal(probs).sum(axis=1), 1.0)
    scores = effect(y, probs, cal)
    assert scores["log_loss"]["after"] < scores["log_loss"]["before"]
    assert scores["ece"]["after"] <= scores["ece"]["before"]
    with pytest.raises(InputError, match="temperature or none"):
        fit_calibration(y, probs, "platt")


def test_cross_fitted_scores_methods_on_held_out_patients(tmp_path, capsys):
    """`evaluate --run R --calibrations`: each method fitted on four folds of validation patients and scored on the
    fifth; an overconfident model's held-out log loss and ECE fall with either fit; the test set is never read (the
    run here has none)."""
    import pandas as pd

    from xraylib.calibration import cross_fitted
    from xraylib.cli import main
    from xraylib.run_evaluation import format_calibrations

    y, p, _ = _overconfident(n=600)
    patients = np.arange(600) // 2
    scores = cross_fitted(y, p, patients, repeats=2)
    assert set(scores) == {"none", "platt", "temperature"}
    assert max(scores["platt"]["log_loss"], scores["temperature"]["log_loss"]) < scores["none"]["log_loss"] - 0.05
    assert scores["platt"]["ece"] < scores["none"]["ece"] / 2
    assert scores["none"]["ece"] == pytest.approx(expected_calibration_error(y, p), abs=0.02)  # ~ the whole set's
    frame = pd.DataFrame({"file": [f"{i}.jpeg" for i in range(600)], "patient": patients})
    frame = frame.assign(label=np.where(y == 1, "pneumonia", "normal"), p_pneumonia=p, p_uncalibrated=p)
    frame.to_csv(tmp_path / "val_predictions.csv", index=False)
    assert main(["evaluate", "--run", str(tmp_path), "--calibrations", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_validation_patients"] == 300 and result["used"] == "none"
    assert result["held_out"]["platt"]["ece"] < result["held_out"]["none"]["ece"]
    assert format_calibrations(result).splitlines()[-2].startswith("platt   ")
    assert main(["evaluate", "--run", str(tmp_path), "--calibrations", "--data", str(tmp_path)]) == 2
    frame.drop(columns="p_uncalibrated").to_csv(tmp_path / "val_predictions.csv", index=False)
    assert main(["evaluate", "--run", str(tmp_path), "--calibrations"]) == 2
    assert "p_uncalibrated" in capsys.readouterr().err
