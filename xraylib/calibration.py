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

A calibrated probability is a posterior at the prevalence of the images the map was fitted on (validation). Where
pneumonia is more or less common, Bayes' rule moves it (Saerens, Latinne & Decaestecker 2002, "Adjusting the
outputs of a classifier to new a priori probabilities", Neural Computation 14:21-41): the odds are multiplied by
[P / (1 - P)] / [pi / (1 - pi)], pi the validation prevalence and P the deployment one, i.e. `shift` = the log of
that ratio is added to the calibrated logit. The run setting `prevalence` gives P, or `estimate` estimates it from
the unlabelled test predictions by their EM procedure (an estimate outside EM_RANGE is not kept: EM runs to 0 or 1
when the classifier barely separates the classes); the shift is stored with the map, so every user of the run
applies the same one. The threshold is then chosen by the run's rule on the corrected validation probabilities: a
rank rule (youden, balanced, sensitivity:X) lands on the old threshold mapped through the same odds change and keeps
every decision, a fixed number (0.5) applies to the corrected probabilities, the Bayes decision at the new prevalence.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from xraylib.errors import InputError
from xraylib.logodds import EPS, keeps_order, logit, platt_fit, sigmoid

METHODS = ("none", "platt", "temperature")
PREVALENCES = "none, estimate or a number in (0, 1)"  # the run setting `prevalence`
EM_TOLERANCE, EM_ITERATIONS = 1e-6, 1000  # EM stops when the prevalence moves less than this, or after this many
# An EM estimate outside this range is not kept: EM runs toward 0 or 1 when the classifier barely separates the
# classes (with uninformative posteriors every iteration moves the prior the same way), not because pneumonia is rare.
EM_RANGE = (0.01, 0.99)


def softmax(z) -> np.ndarray:
    """exp(z) / sum(exp(z)) along the last axis, without overflow."""
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """q = sigmoid(slope * logit(p) + intercept + shift); slope 1 and intercept 0 when method is "none" or the fit
    was not kept; `shift`: the log odds ratio of a prior-shift correction (`correct_prior`), 0 without one."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    applied: bool = False  # False: no fitted map (no calibration asked for, or the fit was not kept; see note)
    note: str = ""
    shift: float = 0.0

    def __call__(self, p) -> np.ndarray:
        """Calibrated probabilities for raw ones: P(pneumonia) (N,), or class probabilities (N, K) (NaN stays NaN)."""
        p = np.asarray(p, dtype=float)
        if not self.applied and not self.shift:
            return p
        if p.ndim == 2:
            return softmax(self.slope * np.log(np.clip(p, EPS, 1.0)))
        z = self.slope * logit(p) + self.intercept if self.applied else logit(p)
        return sigmoid(z + self.shift)

    def raw_threshold(self, threshold: float) -> float:
        """The raw probability whose calibrated value is `threshold` (for code that sees the model's own output)."""
        if (not self.applied and not self.shift) or threshold <= 0.0 or threshold >= 1.0:
            return float(threshold)
        z = logit(threshold) - self.shift
        return float(sigmoid((z - self.intercept) / self.slope if self.applied else z))

    def to_json(self) -> dict:
        return asdict(self)


def _log_loss(y: np.ndarray, q: np.ndarray) -> float:
    """Binary cross-entropy of labels `y` and P(pneumonia) `q` clipped to [EPS, 1 - EPS] (scikit-learn's log_loss,
    without its input checks: the temperature fit calls it dozens of times)."""
    q = np.clip(q, EPS, 1 - EPS)
    return float(-np.mean(np.where(y == 1, np.log(q), np.log1p(-q))))


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
    slope, intercept = platt_fit(y, z) if method == "platt" else (_fit_temperature(y, z), 0.0)
    if not keeps_order(slope, intercept):
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


def cross_fitted(y, raw, groups, folds: int = 5, repeats: int = 20, seed: int = 0) -> dict[str, dict[str, float]]:
    """How each method of METHODS calibrates patients it was not fitted on, read from validation alone: fitted on
    the validation images of all but one of `folds` patient-grouped, label-stratified folds, scored on the one left
    out, over `repeats` shuffles; per method the mean Brier score, ECE and log loss of the held-out images."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).astype(int).ravel()
    raw = np.asarray(raw, dtype=float).ravel()
    totals = {method: {"brier": 0.0, "ece": 0.0, "log_loss": 0.0} for method in METHODS}
    splits = [
        split
        for repeat in range(repeats)
        for split in StratifiedGroupKFold(folds, shuffle=True, random_state=seed + repeat).split(raw, y, groups)
    ]
    for fit, held_out in splits:
        for method, total in totals.items():
            scores = effect(y[held_out], raw[held_out], fit_calibration(y[fit], raw[fit], method))
            for name in total:
                total[name] += scores[name]["after"] / len(splits)
    return totals


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
            shift=float(entry.get("shift", 0.0)),  # runs made before the prior-shift correction have none
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: unreadable calibration entry ({type(exc).__name__}: {exc})") from None
    if cal.method not in METHODS or (cal.applied and not (cal.slope > 0 and math.isfinite(cal.intercept))):
        raise InputError(f"{source}: calibration {cal.method!r} slope {cal.slope} is not a monotone calibration")
    if not math.isfinite(cal.shift):
        raise InputError(f"{source}: calibration shift {cal.shift} is not a finite log odds ratio")
    return cal


# ---------------------------------------------------------------------------------------------- prior shift


def prevalence_rule(setting: str | float) -> str | float:
    """Parse the run setting `prevalence`: "none", "estimate", or the deployment prevalence P in (0, 1)."""
    text = str(setting).strip().lower()
    if text in ("none", "estimate"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:  # NaN too
        raise InputError(f"setting prevalence={setting!r}: expected {PREVALENCES}")
    return value


def prior_log_odds(from_prevalence: float, to_prevalence: float) -> float:
    """log([P / (1 - P)] / [pi / (1 - pi)]), pi = `from_prevalence`, P = `to_prevalence`: what Bayes' rule adds to
    a posterior's logit when the prevalence moves from pi to P."""
    return float(logit(to_prevalence) - logit(from_prevalence))


def shift_prior(p, from_prevalence: float, to_prevalence: float) -> np.ndarray:
    """Posteriors P(pneumonia | image) at prevalence `from_prevalence` re-weighted by Bayes' rule to `to_prevalence`."""
    return sigmoid(logit(p) + prior_log_odds(from_prevalence, to_prevalence))


def estimate_prevalence(
    p, train_prevalence: float, tol: float = EM_TOLERANCE, max_iter: int = EM_ITERATIONS
) -> tuple[float, int]:
    """(prevalence, iterations): the prevalence of unlabelled images whose posteriors at `train_prevalence` are `p`,
    by Saerens, Latinne & Decaestecker's EM (2002): prior <- mean of the posteriors re-weighted to the prior, until
    it moves less than `tol` (or `max_iter` times)."""
    p = np.asarray(p, dtype=float).ravel()
    prior = float(train_prevalence)
    for iteration in range(1, max_iter + 1):
        updated = float(np.clip(shift_prior(p, train_prevalence, prior).mean(), EPS, 1.0 - EPS))
        if abs(updated - prior) < tol:
            return updated, iteration
        prior = updated
    return prior, max_iter


def correct_prior(
    fitted: Calibration, setting: str | float, rule: str, val: tuple, test: tuple
) -> tuple[Calibration, float, dict]:
    """(map, threshold, metrics.json entry) of a run: `fitted` (on the validation (labels, raw probabilities) `val`)
    followed by the prior-shift correction that the run setting `prevalence` asks for (`setting`), and the threshold
    that `rule` chooses on the corrected validation probabilities (for `youden:acquisition`, `val` holds the
    validation images with their changed copies, `acquisition.with_changed_copies`). The entry ({} for none) holds
    the validation and target prevalences, EM's iterations (`estimate` reads the unlabelled test probabilities of
    `test`, (labels, raw probabilities); an estimate outside EM_RANGE is not applied), the threshold before and
    after, and Brier, ECE and log loss on test before and after."""
    from xraylib.metrics import choose_threshold

    (val_y, val_raw), (test_y, test_raw) = val, test
    target = prevalence_rule(setting)
    before = choose_threshold(val_y, fitted(val_raw), rule)
    if target == "none":
        return fitted, before, {}
    pi = float(np.mean(val_y))
    if not 0.0 < pi < 1.0:
        raise InputError(f"setting prevalence={setting}: the validation images hold one class, no prevalence to shift")
    estimated = target == "estimate"
    target, iterations = estimate_prevalence(fitted(test_raw), pi) if estimated else (target, 0)
    kept = EM_RANGE[0] <= target <= EM_RANGE[1] or not estimated
    shift = Calibration(shift=prior_log_odds(pi, target) if kept else 0.0)  # the correction alone, for its scores
    corrected = dataclasses.replace(fitted, shift=shift.shift)
    notes = [] if kept else [f"not kept: EM ran to {target:.3g}, outside {EM_RANGE}: the classes barely separate"]
    if not fitted.applied:
        notes.append("the calibration was not kept: the correction starts from the model's own probabilities")
    entry = {
        "setting": str(setting),
        "validation": pi,
        "target": target,
        "estimated": estimated,  # by EM on the unlabelled test predictions (their labels are not read)
        "em_iterations": iterations,
        "applied": kept,
        "threshold": {"rule": rule, "before": before, "after": choose_threshold(val_y, corrected(val_raw), rule)},
        "test": effect(test_y, fitted(test_raw), shift),
        "note": "; ".join(notes),
    }
    return corrected, entry["threshold"]["after"], entry
