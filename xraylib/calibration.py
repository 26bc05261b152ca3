"""Calibrated probabilities: Platt scaling or a temperature, fitted on a run's validation predictions.

A calibration is a monotone map of P(pneumonia), q = sigmoid(slope * logit(p) + intercept), so it changes what a
probability means but never the order of the images: ROC-AUC is unchanged, and a threshold chosen on the
calibrated validation probabilities splits them exactly as its preimage splits the raw ones. Platt scaling fits
slope and intercept by logistic regression on the logits (scikit-learn); temperature scaling fits one temperature
T (slope 1/T, intercept 0) by minimising the log loss (scipy). The fit never sees the test set. It is kept only
when it does not raise the validation ECE (otherwise the run stays uncalibrated and says why).

The three-class task's softmax probabilities (N, 3) take temperature scaling only: q = softmax(log(p) / T), the
temperature on the log-probabilities (the logits up to a constant per image), which keeps each image's argmax;
it is kept only if it raises neither the validation log loss nor the top-label ECE. The run's
metrics.json stores it under "calibration", and everything that uses the run's model (`xraylib predict`,
`evaluate --run`, the prediction page, `xraylib export`) applies it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from xraylib.errors import InputError

METHODS = ("none", "platt", "temperature")
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before the logit (float32 sigmoids reach 0 and 1)


def logit(p) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to float32's [EPS, 1 - EPS] (the bounds an exported model clips to)."""
    low, high = np.float32(EPS), np.float32(1.0 - EPS)
    p = np.clip(np.asarray(p, dtype=float), float(low), float(high))
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow."""
    z = np.asarray(z, dtype=float)
    return np.exp(-np.logaddexp(0.0, -z))


def softmax(z) -> np.ndarray:
    """exp(z) / sum(exp(z)) along the last axis, without overflow."""
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """q = sigmoid(slope * logit(p) + intercept); the identity when method is "none" or the fit was not kept."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    applied: bool = False  # False: the identity (no calibration asked for, or the fit was not kept; see note)
    note: str = ""

    def __call__(self, p) -> np.ndarray:
        """Calibrated probabilities for raw ones: P(pneumonia) (N,), or class probabilities (N, K) (NaN stays NaN)."""
        p = np.asarray(p, dtype=float)
        if not self.applied:
            return p
        if p.ndim == 2:
            return softmax(self.slope * np.log(np.clip(p, EPS, 1.0)))
        return sigmoid(self.slope * logit(p) + self.intercept)

    def raw_threshold(self, threshold: float) -> float:
        """The raw probability whose calibrated value is `threshold` (for code that sees the model's own output)."""
        if not self.applied or threshold <= 0.0 or threshold >= 1.0:
            return float(threshold)
        return float(sigmoid((logit(threshold) - self.intercept) / self.slope))

    def to_json(self) -> dict:
        return asdict(self)


def _log_loss(y: np.ndarray, q: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, np.clip(q, EPS, 1 - EPS), labels=[0, 1]))


def _fit_platt(y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, max_iter=1000).fit(z[:, None], y)  # C=inf: no penalty
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _fit_temperature(y: np.ndarray, z: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        return _log_loss(y, sigmoid(z / math.exp(log_t)))

    best = minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-6})
    return 1.0 / math.exp(float(best.x))


def fit_calibration(y, p, method: str = "platt") -> Calibration:
    """Fit `method` (platt | temperature | none) to validation labels `y` and raw probabilities `p`."""
    from xraylib.metrics import expected_calibration_error

    if method not in METHODS:
        raise InputError(f"setting calibration={method!r}: expected one of {', '.join(METHODS)}")
    if method == "none":
        return Calibration()
    if np.ndim(p) == 2:
        return _fit_softmax_temperature(np.asarray(y).astype(int).ravel(), np.asarray(p, dtype=float), method)
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if not 0 < y.sum() < len(y):
        return Calibration(method, note="not fitted: the validation predictions hold one class only")
    z = logit(p)
    slope, intercept = _fit_platt(y, z) if method == "platt" else (_fit_temperature(y, z), 0.0)
    if not slope > 0 or not math.isfinite(slope) or not math.isfinite(intercept):
        note = f"not kept: the fitted slope {slope:.3g} would not keep the images' order"
        return Calibration(method, note=note)
    fitted = Calibration(method, slope, intercept, applied=True)
    before, after = expected_calibration_error(y, p), expected_calibration_error(y, fitted(p))
    if after > before:
        note = f"not kept: it raised the validation ECE from {before:.4f} to {after:.4f}"
        return Calibration(method, note=note)
    return fitted


def _fit_softmax_temperature(y: np.ndarray, p: np.ndarray, method: str) -> Calibration:
    """A temperature for class probabilities (N, K), fitted by minimising the validation log loss."""
    from scipy.optimize import minimize_scalar

    from xraylib.multiclass import calibration_scores

    if method != "temperature":
        raise InputError(f"calibration={method}: class probabilities take temperature or none")
    if len(set(y)) < 2:
        return Calibration(method, note="not fitted: the validation predictions hold one class only")
    log_p = np.log(np.clip(p, EPS, 1.0))

    def loss(log_t: float) -> float:
        q = softmax(log_p / math.exp(log_t))
        return float(-np.log(np.clip(q[np.arange(len(y)), y], EPS, 1.0)).mean())

    best = minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-6})
    fitted = Calibration(method, 1.0 / math.exp(float(best.x)), 0.0, applied=True)
    before, after = calibration_scores(y, p), calibration_scores(y, fitted(p))
    for name in ("log_loss", "ece"):
        if after[name] > before[name]:
            note = f"not kept: it raised the validation {name} from {before[name]:.4f} to {after[name]:.4f}"
            return Calibration(method, note=note)
    return fitted


def effect(y, raw, calibration: Calibration) -> dict:
    """Brier score, ECE and log loss of `raw` probabilities before and after `calibration` ({name: {before, after}});
    for class probabilities (N, K): the multiclass Brier score, top-label ECE and log loss."""
    from sklearn.metrics import brier_score_loss

    from xraylib.metrics import expected_calibration_error

    if np.ndim(raw) == 2:
        from xraylib.multiclass import calibration_scores

        before, after = calibration_scores(y, raw), calibration_scores(y, calibration(raw))
        return {name: {"before": before[name], "after": after[name]} for name in ("brier", "ece", "log_loss")}
    y = np.asarray(y).astype(int).ravel()
    raw = np.asarray(raw, dtype=float).ravel()
    out = {}
    for name, score in (
        ("brier", lambda q: float(brier_score_loss(y, q, labels=[0, 1]))),
        ("ece", lambda q: expected_calibration_error(y, q)),
        ("log_loss", lambda q: _log_loss(y, q)),
    ):
        out[name] = {"before": score(raw), "after": score(calibration(raw))}
    return out


def from_json(entry: dict | None, source: str | os.PathLike = "metrics.json") -> Calibration:
    """A Calibration from its metrics.json entry (None or missing: the identity); a broken entry is an InputError."""
    if not entry:
        return Calibration()
    try:
        cal = Calibration(
            method=str(entry["method"]),
            slope=float(entry["slope"]),
            intercept=float(entry["intercept"]),
            applied=bool(entry["applied"]),
            note=str(entry.get("note", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: unreadable calibration entry ({type(exc).__name__}: {exc})") from None
    if cal.method not in METHODS or (cal.applied and not (cal.slope > 0 and math.isfinite(cal.intercept))):
        raise InputError(f"{source}: calibration {cal.method!r} slope {cal.slope} is not a monotone calibration")
    return cal
