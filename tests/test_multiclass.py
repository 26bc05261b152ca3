"""Three-class metrics against scikit-learn, and their bootstrap intervals."""

import numpy as np
import pytest
from sklearn import metrics as skm

from xraylib.errors import InputError
from xraylib.multiclass import calibration_scores, class_codes, multiclass_metrics_ci


def _sample(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    groups = np.arange(n) // 2  # two images per patient
    return y, probs, groups


def test_point_estimates_equal_scikit_learn():
    y, probs, groups = _sample()
    pred = probs.argmax(axis=1)
    result = multiclass_metrics_ci(y, probs, groups, n_boot=0)
    assert result["macro_roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert result["macro_f1"]["value"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert result["balanced_accuracy"]["value"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert result["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred))
    assert result["log_loss"]["value"] == pytest.approx(skm.log_loss(y, probs))
    assert result["brier"]["value"] == pytest.approx(((probs - np.eye(3)[y]) ** 2).sum(axis=1).mean())
    for c, name in enumerate(("normal", "bacterial", "viral")):
        entry = result["per_class"][name]
        assert entry["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y == c, probs[:, c]))
        assert entry["recall"]["value"] == pytest.approx(skm.recall_score(y, pred, labels=[c], average="macro"))
        assert entry["n_images"] == 30
    assert result["confusion"]["counts"] == skm.confusion_matrix(y, pred).tolist()
    assert result["n_patients"] == 45 and result["bootstrap"]["unit"] == "patient"


def test_top_label_ece_by_hand():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.75, 0.05]])
    # confidences 0.9 (right), 0.5 (wrong), 0.8 (right), 0.75 (wrong): one image per bin
    assert calibration_scores(y, probs)["ece"] == pytest.approx((0.1 + 0.5 + 0.2 + 0.75) / 4)


def test_intervals_hold_the_estimate_and_rows_sum_to_100():
    y, probs, groups = _sample(seed=3)
    result = multiclass_metrics_ci(y, probs, groups, n_boot=200, seed=1)
    for name in ("macro_roc_auc", "macro_f1", "balanced_accuracy", "accuracy", "brier", "log_loss", "ece"):
        entry = result[name]
        assert entry["low"] <= entry["value"] <= entry["high"], name
        assert entry["low"] < entry["high"], name
    for entry in result["per_class"].values():
        assert entry["roc_auc"]["low"] <= entry["roc_auc"]["value"] <= entry["roc_auc"]["high"]
    cells = result["confusion"]["row_percent"]
    assert np.allclose(np.sum(cells["value"], axis=1), 100.0)
    assert (np.array(cells["low"]) <= np.array(cells["value"]) + 1e-9).all()
    assert (np.array(cells["value"]) <= np.array(cells["high"]) + 1e-9).all()


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_duplicated_patients():
    y, probs, _ = _sample(60, seed=5)
    y, probs = np.repeat(y, 4), np.repeat(probs, 4, axis=0)  # each patient's image four times
    by_patient = multiclass_metrics_ci(y, probs, np.repeat(np.arange(60), 4), n_boot=300)["accuracy"]
    by_image = multiclass_metrics_ci(y, probs, None, n_boot=300)["accuracy"]
    assert by_patient["high"] - by_patient["low"] > 1.5 * (by_image["high"] - by_image["low"])


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(InputError, match="unknown class 'covid'"):
        class_codes(["normal", "covid"])
    with pytest.raises(InputError, match="labels must be class codes"):
        multiclass_metrics_ci([0, 3], np.full((2, 3), 1 / 3), n_boot=0)
    assert class_codes(["Viral", "normal", "bacterial"]).tolist() == [2, 0, 1]
