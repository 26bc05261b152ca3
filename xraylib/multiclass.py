"""Metrics of the three-class task (normal, bacterial, viral), each with a patient-bootstrap confidence interval.

One-vs-rest ROC-AUC per class and their macro mean, macro F1, balanced accuracy, accuracy, the confusion matrix
(counts, and row percentages with CIs) and the calibration of the probabilities (multiclass Brier score, log loss,
top-label ECE). The prediction is the argmax class. Conventions are those of `xraylib.metrics`: point estimates
equal scikit-learn's, the bootstrap reuses `metrics.bootstrap_weights` (image weights per patient resample) and
computes every metric weighted and vectorised; the output is JSON-ready, undefined values `None`, see `notes`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xraylib.data import CLASSES
from xraylib.errors import InputError
from xraylib.metrics import (
    ECE_BINS,
    bootstrap_interval,
    bootstrap_weights,
    group_codes,
    safe_ratio,
    weighted_auc,
)

THREE_CLASSES = CLASSES["three_class"]
SUMMARY_METRICS = ("macro_roc_auc", "macro_f1", "balanced_accuracy", "accuracy")
CALIBRATION_METRICS = ("brier", "log_loss", "ece")
PER_CLASS_METRICS = ("roc_auc", "recall", "precision", "f1")
TITLES = {
    "macro_roc_auc": "macro one-vs-rest ROC-AUC",
    "macro_f1": "macro F1",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "brier": "Brier score (multiclass)",
    "log_loss": "log loss",
    "ece": "top-label ECE (10 bins)",
}
EPS = 1e-7  # probabilities are clipped to [EPS, 1] before the log


def probability_columns(classes=THREE_CLASSES) -> list[str]:
    """predictions.csv's probability columns: p_normal, p_bacterial, p_viral."""
    return [f"p_{name}" for name in classes]


def class_codes(names, classes=THREE_CLASSES, where: str = "labels") -> np.ndarray:
    """Class names -> their position in `classes` (case-insensitive); an unknown name is an InputError."""
    lookup = {name: i for i, name in enumerate(classes)}
    names = pd.Series(np.asarray(names, dtype=object).ravel()).astype(str).str.strip().str.lower()
    unknown = sorted(set(names) - set(lookup))
    if unknown:
        raise InputError(f"{where}: unknown class {unknown[0]!r} (expected {', '.join(classes)})")
    return names.map(lookup).to_numpy(np.int64)


def _as_arrays(y, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] < 3:
        raise InputError(f"class probabilities of shape {probs.shape}: expected (N, classes)")
    if len(y) != len(probs):
        raise InputError(f"{len(y)} labels but {len(probs)} rows of probabilities")
    if len(y) == 0:
        raise InputError("no predictions to evaluate")
    if not ((y >= 0) & (y < probs.shape[1])).all():
        raise InputError(f"labels must be class codes 0..{probs.shape[1] - 1}")
    if not np.isfinite(probs).all():
        raise InputError("class probabilities must be finite numbers")
    return y, probs


def _onehot(codes: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[codes]


def weighted_multiclass(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of image weights w (B, n): (B,) summaries, (B, K) per class, (B, K, K) confusion;
    NaN where a resample leaves a metric undefined."""
    k = probs.shape[1]
    truth, guess = _onehot(y, k), _onehot(pred, k)
    counts = (w @ (truth[:, :, None] * guess[:, None, :]).reshape(len(y), k * k)).reshape(len(w), k, k)
    rows, cols, diag = counts.sum(axis=2), counts.sum(axis=1), np.diagonal(counts, axis1=1, axis2=2)
    total = rows.sum(axis=1)
    recall, precision, f1 = safe_ratio(diag, rows), safe_ratio(diag, cols), safe_ratio(2 * diag, rows + cols)
    auc = np.stack([weighted_auc(truth[:, c], probs[:, c], w) for c in range(k)], axis=1)
    confidence = probs.max(axis=1)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gaps = np.zeros((len(y), ECE_BINS))
    gaps[np.arange(len(y)), bins] = (pred == y) - confidence
    picked = np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1.0))
    return {
        "macro_roc_auc": auc.mean(axis=1),
        "macro_f1": f1.mean(axis=1),
        "balanced_accuracy": recall.mean(axis=1),
        "accuracy": safe_ratio(diag.sum(axis=1), total),
        "brier": safe_ratio(w @ ((probs - truth) ** 2).sum(axis=1), total),
        "log_loss": safe_ratio(w @ -picked, total),
        "ece": safe_ratio(np.abs(w @ gaps).sum(axis=1), total),
        "roc_auc": auc,
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "counts": counts,
        "row_percent": 100 * safe_ratio(counts, rows[:, :, None]),
    }


def calibration_scores(y, probs) -> dict[str, float]:
    """Multiclass Brier score (sum over classes, mean over images), log loss and top-label ECE."""
    y, probs = _as_arrays(y, probs)
    point = weighted_multiclass(y, probs, probs.argmax(axis=1), np.ones((1, len(y))))
    return {name: float(point[name][0]) for name in CALIBRATION_METRICS}


def multiclass_metrics_ci(
    y, probs, groups=None, classes=THREE_CLASSES, n_boot: int = 1000, seed: int = 0, chunk: int = 250
) -> dict:
    """Every three-class metric of the argmax predictions, each {value, low, high}: 95 % CI from a bootstrap
    resampling patients (`groups`; None = images). Confusion cells: counts, and row percentages with CIs."""
    y, probs = _as_arrays(y, probs)
    if probs.shape[1] != len(classes):
        raise InputError(f"{probs.shape[1]} probability columns for {len(classes)} classes")
    pred = probs.argmax(axis=1)
    codes = group_codes(groups, len(y))
    point = {k: v[0] for k, v in weighted_multiclass(y, probs, pred, np.ones((1, len(y)))).items()}
    if n_boot > 0:
        w = bootstrap_weights(codes, len(y), n_boot, seed)
        parts = [weighted_multiclass(y, probs, pred, w[i : i + chunk]) for i in range(0, n_boot, chunk)]
        boot = {k: np.concatenate([part[k] for part in parts]) for k in point}
    else:
        boot = {k: np.full((1, *np.shape(v)), np.nan) for k, v in point.items()}
    notes: list[str] = []
    result: dict = {"classes": list(classes), "prediction": "argmax"}
    for name in SUMMARY_METRICS + CALIBRATION_METRICS:
        result[name] = bootstrap_interval(point[name], boot[name], n_boot, name, notes)
    result["per_class"] = {
        label: {
            **{
                m: bootstrap_interval(point[m][c], boot[m][:, c], n_boot, f"{m} of {label}", notes)
                for m in PER_CLASS_METRICS
            },
            "n_images": int((y == c).sum()),
        }
        for c, label in enumerate(classes)
    }
    k = len(classes)
    cells = [
        [
            bootstrap_interval(point["row_percent"][i, j], boot["row_percent"][:, i, j], n_boot, "row_percent", notes)
            for j in range(k)
        ]
        for i in range(k)
    ]
    result["confusion"] = {
        "rows": "true class",
        "columns": "predicted class",
        "counts": point["counts"].astype(int).tolist(),
        "row_percent": {key: [[cell[key] for cell in row] for row in cells] for key in ("value", "low", "high")},
    }
    absent = [label for c, label in enumerate(classes) if not (y == c).any()]
    if absent:
        notes.append(f"no test image of {', '.join(absent)}: its ROC-AUC, recall and the macro means are undefined")
    result["n_images"] = int(len(y))
    result["n_patients"] = int(codes.max()) + 1
    result["bootstrap"] = {
        "resamples": int(n_boot),
        "seed": int(seed),
        "unit": "image" if groups is None else "patient",
    }
    result["notes"] = list(dict.fromkeys(notes))
    return result
