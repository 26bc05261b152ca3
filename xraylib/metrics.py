"""Predictions, metrics with patient-bootstrap confidence intervals, thresholds and paired comparisons.

Point estimates come from scikit-learn. The bootstrap resamples patients (groups), not images, and is vectorised:
each resample is a vector of image weights (how often its patient was drawn), and every metric is computed as the
sample-weighted version scikit-learn would give on the resampled rows (the tests check exactly that).
Every dict returned here is plain JSON-ready data: undefined values are `None`, explained in `notes`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from xraylib.errors import InputError
from xraylib.logodds import keeps_order, logit, platt_fit, sigmoid

# Metric names in report order; the first group depends on the threshold, the second on probabilities only.
THRESHOLD_METRICS = (
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "npv",
    "f1",
    "balanced_accuracy",
)
PROBABILITY_METRICS = ("roc_auc", "pr_auc", "brier", "ece")
METRICS = THRESHOLD_METRICS + PROBABILITY_METRICS
TITLES = {
    "accuracy": "accuracy",
    "sensitivity": "sensitivity (recall)",
    "specificity": "specificity",
    "precision": "precision (PPV)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "brier": "Brier score",
    "ece": "ECE (10 bins)",
}
STUDY_FIGURES = ("accuracy", "weighted_precision", "weighted_recall", "weighted_f1", "roc_auc_hard_labels")
STUDY_TITLES = {
    "accuracy": "accuracy",
    "weighted_precision": "weighted precision",
    "weighted_recall": "weighted recall",
    "weighted_f1": "weighted F1",
    "roc_auc_hard_labels": "ROC-AUC on hard labels",
}
LABEL_VALUES = {"normal": 0, "pneumonia": 1, "pnemonia": 1, "covid": 1, "covid-19": 1}
ECE_BINS = 10
THRESHOLD_RULES = ("youden", "balanced", "sensitivity:0.95", "0.5")  # the rules `threshold_rules` compares
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------- point metrics


def _as_arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise InputError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        raise InputError("no predictions to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise InputError("labels must be 0 (normal) or 1 (pneumonia)")
    return y, p


def reliability_bins(y, p, n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of p: (images, sum of p, pneumonia images): what reliability diagrams and ECE use."""
    y, p = _as_arrays(y, p)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    return count, np.bincount(bins, weights=p, minlength=n_bins), np.bincount(bins, weights=y, minlength=n_bins)


def expected_calibration_error(y, p, n_bins: int = ECE_BINS) -> float:
    """ECE: bin-size-weighted mean |observed rate - mean probability| over equal-width bins of p."""
    count, p_sum, positives = reliability_bins(y, p, n_bins)
    return float(np.abs(positives - p_sum).sum() / count.sum())


def binary_metrics(y, p, threshold: float = 0.5, y_pred=None) -> dict:
    """Every metric as a plain float (NaN when undefined) plus confusion counts; y_pred overrides the threshold."""
    y, p = _as_arrays(y, p)
    pred = (p >= threshold).astype(np.int64) if y_pred is None else np.asarray(y_pred).astype(np.int64).ravel()
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    nan = float("nan")
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "sensitivity": skm.recall_score(y, pred, pos_label=1, zero_division=nan),
        "specificity": skm.recall_score(y, pred, pos_label=0, zero_division=nan),
        "precision": skm.precision_score(y, pred, pos_label=1, zero_division=nan),
        "npv": skm.precision_score(y, pred, pos_label=0, zero_division=nan),
        "f1": skm.f1_score(y, pred, pos_label=1, zero_division=nan),
        "balanced_accuracy": nan,
    }
    if tp + fn and tn + fp:
        out["balanced_accuracy"] = skm.balanced_accuracy_score(y, pred)
    two_classes = 0 < y.sum() < len(y)
    has_p = not np.isnan(p).any()
    out["roc_auc"] = skm.roc_auc_score(y, p) if two_classes and has_p else nan
    out["pr_auc"] = skm.average_precision_score(y, p) if two_classes and has_p else nan
    out["brier"] = skm.brier_score_loss(y, p, labels=[0, 1]) if has_p else nan
    out["ece"] = expected_calibration_error(y, p) if has_p else nan
    out = {k: float(v) for k, v in out.items()}
    out.update(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
    return out


def study_figures(y_true, y_pred) -> dict[str, float]:
    """The study's own figures from hard labels: accuracy, weighted precision/recall/F1, ROC-AUC on 0/1 labels."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    out = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "weighted_precision": skm.precision_score(y_true, y_pred, average="weighted", zero_division=0),
        "weighted_recall": skm.recall_score(y_true, y_pred, average="weighted", zero_division=0),
        "weighted_f1": skm.f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "roc_auc_hard_labels": skm.roc_auc_score(y_true, y_pred) if 0 < y_true.sum() < len(y_true) else np.nan,
    }
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- thresholds


ACQUISITION_RULE = "youden:acquisition"  # Youden's J over validation and its acquisition-changed copies


def threshold_rule(text: str) -> tuple[str, float]:
    """Parse the `threshold` setting: ("youden", nan) | ("balanced", nan) | ("sensitivity", target) | ("fixed",
    value). The rule youden:acquisition is ("youden", nan) here: the caller pools the images it is chosen on
    (`over_changed_copies`)."""
    text = str(text).strip().lower()
    if text in ("youden", ACQUISITION_RULE):
        return "youden", float("nan")
    if text == "balanced":
        return "balanced", float("nan")
    name, _, number = text.partition(":")
    try:
        if name == "sensitivity" and 0.0 < float(number) < 1.0:
            return "sensitivity", float(number)
        if not number and 0.0 < float(name) < 1.0:
            return "fixed", float(name)
    except ValueError:
        pass
    raise InputError(
        f"setting threshold={text!r}: expected youden, balanced, {ACQUISITION_RULE}, sensitivity:0.95 or a number "
        "in (0, 1)"
    )


def over_changed_copies(rule: str) -> bool:
    """Whether the threshold `rule` is chosen on the validation images together with their copies through the
    acquisition changes (`xraylib.acquisition.with_changed_copies`), not on the validation images alone."""
    return str(rule).strip().lower() == ACQUISITION_RULE


def choose_threshold(y, p, rule: str = "youden") -> float:
    """A decision threshold (predict pneumonia when p >= t) from VALIDATION predictions.

    youden: maximises sensitivity + specificity - 1; balanced: where the posterior odds equal the prior odds
    (`balanced_threshold`), the point Youden's argmax estimates; sensitivity:0.95: the highest threshold
    whose sensitivity reaches the target (so the best specificity there); a number: that fixed threshold.
    """
    kind, value = threshold_rule(rule)
    if kind == "fixed":
        return float(value)
    y, p = _as_arrays(y, p)
    if np.isnan(p).any():
        raise InputError("choosing a threshold needs probabilities, not hard labels")
    if not 0 < y.sum() < len(y):
        raise InputError(f"threshold rule {rule!r} needs both classes in the validation predictions")
    if kind == "balanced":
        return balanced_threshold(y, p)
    fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # the first point (threshold +inf) predicts nothing
    best = tpr - fpr if kind == "youden" else (tpr >= value - 1e-12).astype(float)
    i = int(np.argmax(best))  # the first (highest) threshold reaching the best value
    return float(min(thresholds[i], 1.0))


def balanced_threshold(y, p) -> float:
    """The probability at which the posterior odds equal the prior odds of labels `y`, by Platt's fit of `y` to
    the probabilities `p`: the Bayes threshold for balanced accuracy, the point Youden's J reaches its maximum in
    the population. On probabilities Platt-calibrated on the same images it is their prevalence; unlike the argmax
    of Youden's J on images the model separates almost perfectly, it moves little when the images are resampled
    (`reports/real-summary/README.md`, #29). The prevalence itself when the fit would not keep the images' order."""
    y = np.asarray(y).astype(int).ravel()
    prevalence = float(np.mean(y))
    slope, intercept = platt_fit(y, logit(p))
    if not keeps_order(slope, intercept):
        return prevalence
    return float(sigmoid((logit(prevalence)[()] - intercept) / slope))


def threshold_interval(y, p, groups=None, rule: str = "youden", n_boot: int = 1000, seed: int = 0) -> dict:
    """The threshold `rule` chooses on the VALIDATION (labels, probabilities) and its 95 % interval over patient
    (`groups`) resamples of them, {value, low, high}: how firmly the validation images fix it (a fixed rule's
    interval is the number itself)."""
    value = choose_threshold(y, p, rule)
    if threshold_rule(rule)[0] == "fixed":
        return {"value": value, "low": value, "high": value}
    y, p = _as_arrays(y, p)
    counts = bootstrap_weights(groups, len(y), n_boot, seed).astype(np.int64)
    draws = np.full(n_boot, np.nan)
    for i, count in enumerate(counts):
        index = np.repeat(np.arange(len(y)), count)
        if 0 < y[index].sum() < len(index):  # a resample with one class has no threshold
            draws[i] = choose_threshold(y[index], p[index], rule)
    return bootstrap_interval(value, draws, n_boot, "threshold")


def threshold_rules(
    val, test, groups=None, rules=THRESHOLD_RULES, n_boot: int = 1000, seed: int = 0, val_groups=None
) -> list[dict]:
    """Each threshold rule chosen on the VALIDATION (labels, probabilities) `val` and applied to the test ones
    `test`: per rule its threshold with its interval over resamples of the validation `val_groups`
    (`threshold_interval`), the validation sensitivity and specificity, and the test sensitivity, specificity and
    accuracy, each {value, low, high} (95 % CI from a bootstrap of the test `groups`)."""
    out = []
    for rule in rules:
        chosen = threshold_interval(*val, val_groups, rule, n_boot, seed)
        threshold = chosen["value"]
        on_val, on_test = binary_metrics(*val, threshold), binary_metrics_ci(*test, groups, threshold, n_boot, seed)
        out.append(
            {
                "rule": rule,
                "threshold": threshold,
                "threshold_interval": chosen,
                "validation": {name: json_float(on_val[name]) for name in ("sensitivity", "specificity")},
                "test": {name: on_test[name] for name in ("sensitivity", "specificity", "accuracy")},
            }
        )
    return out


# ---------------------------------------------------------------------------------------------- bootstrap


def group_codes(groups, n: int) -> np.ndarray:
    """Integer group codes; None means every image is its own group (an image bootstrap)."""
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups, dtype=object).ravel()
    if len(groups) != n:
        raise InputError(f"{n} predictions but {len(groups)} patient keys")
    return pd.factorize(pd.Series(groups).astype(str))[0]


def bootstrap_weights(groups, n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) image weights: how often each image's patient was drawn in each patient resample."""
    codes = group_codes(groups, n)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    offsets = (np.arange(n_boot) * n_groups)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_groups).reshape(n_boot, n_groups)
    return counts[:, codes].astype(float)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC-AUC for each row of weights w (B, n), ties counted half (= sklearn's with sample_weight)."""
    order = np.argsort(p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    pos = np.add.reduceat(ws * ys, starts, axis=1)
    neg = np.add.reduceat(ws * (1 - ys), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    return safe_ratio((pos * (below + 0.5 * neg)).sum(axis=1), n_pos * n_neg)


def weighted_average_precision(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision for each row of weights w (B, n) (= sklearn's with sample_weight)."""
    order = np.argsort(-p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    tp = np.cumsum(np.add.reduceat(ws * ys, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(ws * (1 - ys), starts, axis=1), axis=1)
    n_pos = tp[:, -1:]
    precision = safe_ratio(tp, tp + fp)
    recall = safe_ratio(tp, np.broadcast_to(n_pos, tp.shape))
    gain = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    ap = np.nansum(gain * np.nan_to_num(precision), axis=1)
    return np.where(n_pos[:, 0] > 0, ap, np.nan)


def weighted_metrics(y: np.ndarray, p: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of image weights w (B, n); NaN where a resample leaves it undefined."""
    y, pred = y.astype(float), pred.astype(float)
    tp, fp = w @ (y * pred), w @ ((1 - y) * pred)
    fn, tn = w @ (y * (1 - pred)), w @ ((1 - y) * (1 - pred))
    n = tp + fp + fn + tn
    sens, spec = safe_ratio(tp, tp + fn), safe_ratio(tn, tn + fp)
    out = {
        "accuracy": safe_ratio(tp + tn, n),
        "sensitivity": sens,
        "specificity": spec,
        "precision": safe_ratio(tp, tp + fp),
        "npv": safe_ratio(tn, tn + fn),
        "f1": safe_ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sens + spec) / 2,
    }
    if np.isnan(p).any():
        out.update({k: np.full(len(w), np.nan) for k in PROBABILITY_METRICS})
        return out
    out["roc_auc"] = weighted_auc(y, p, w)
    out["pr_auc"] = weighted_average_precision(y, p, w)
    out["brier"] = safe_ratio(w @ (p - y) ** 2, n)
    bins = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    onehot = np.zeros((len(p), ECE_BINS))
    onehot[np.arange(len(p)), bins] = y - p
    out["ece"] = safe_ratio(np.abs(w @ onehot).sum(axis=1), n)
    return out


def bootstrap_metrics(y, p, pred, groups=None, n_boot: int = 1000, seed: int = 0, chunk: int = 250) -> dict:
    """Bootstrap distributions {metric: (n_boot,) array} from patient (group) resamples."""
    y, p = _as_arrays(y, p)
    pred = np.asarray(pred).astype(np.int64).ravel()
    w = bootstrap_weights(groups, len(y), n_boot, seed)
    parts = [weighted_metrics(y, p, pred, w[i : i + chunk]) for i in range(0, n_boot, chunk)]
    return {k: np.concatenate([part[k] for part in parts]) for k in METRICS}


def json_float(value) -> float | None:
    """A JSON-ready float: None for NaN/inf."""
    value = float(value)
    return value if math.isfinite(value) else None


def bootstrap_interval(value: float, draws, n_boot: int, name: str, notes: list[str] | None = None) -> dict:
    """{value, low, high}: the 95 % percentile interval of the finite bootstrap `draws` of `value`, when enough of
    them are (half the `n_boot` resamples, and 10); else no CI. Why (and a CI from fewer resamples) is noted under
    `name` in `notes`, or, without a list, in the interval's own `notes`. JSON-ready: None for undefined."""
    own = [] if notes is None else notes
    low = high = float("nan")
    if n_boot > 0 and math.isfinite(value):
        finite = draws[np.isfinite(draws)]
        if len(finite) >= max(10, n_boot // 2):
            low, high = np.quantile(finite, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
            if len(finite) < n_boot:
                own.append(f"{name}: CI from {len(finite)} of {n_boot} resamples (others had it undefined)")
        elif len(finite) == n_boot:
            own.append(f"{name}: no CI from {n_boot} resamples (10 needed)")
        else:
            own.append(f"{name}: no CI, undefined in {n_boot - len(finite)} of {n_boot} resamples")
    interval = {"value": json_float(value), "low": json_float(low), "high": json_float(high)}
    return {**interval, "notes": own} if own and notes is None else interval


def binary_metrics_ci(
    y, p, groups=None, threshold: float | None = 0.5, n_boot: int = 1000, seed: int = 0, y_pred=None
) -> dict:
    """Every metric at `threshold` (or at given hard predictions y_pred), each {value, low, high}: 95 % CI from
    a bootstrap resampling patients (`groups`; None = images). JSON-ready: undefined values are None, see notes.
    """
    y, p = _as_arrays(y, p)
    if y_pred is None:
        if threshold is None or np.isnan(p).any():
            raise InputError("binary_metrics_ci needs probabilities and a threshold, or hard predictions y_pred")
        pred = (p >= threshold).astype(np.int64)
    else:
        pred = np.asarray(y_pred).astype(np.int64).ravel()
        if pred.shape != y.shape:
            raise InputError(f"{len(y)} labels but {len(pred)} predictions")
    point = binary_metrics(y, p, y_pred=pred)
    codes = group_codes(groups, len(y))
    notes: list[str] = []
    result: dict = {}
    boot = bootstrap_metrics(y, p, pred, codes, n_boot, seed) if n_boot > 0 else {}
    for name in METRICS:
        result[name] = bootstrap_interval(point[name], boot.get(name), n_boot, name, notes)
    if np.isnan(p).any():
        notes.append("ROC-AUC, PR-AUC, Brier and ECE need probabilities: these predictions are hard labels")
    elif not 0 < y.sum() < len(y):
        notes.append("ROC-AUC and PR-AUC are undefined with one class")
    if not 0 < y.sum() < len(y):
        notes.append(f"only one class ({'pneumonia' if y[0] else 'normal'}) among the labels")
    if point["tp"] + point["fp"] == 0:
        notes.append("precision is undefined: no positive (pneumonia) predictions")
    if point["tn"] + point["fn"] == 0:
        notes.append("NPV is undefined: no negative (normal) predictions")
    result["confusion"] = {k: point[k] for k in ("tn", "fp", "fn", "tp")}
    result["threshold"] = None if y_pred is not None or threshold is None else float(threshold)
    result["n_images"] = int(len(y))
    result["n_patients"] = int(codes.max()) + 1
    result["bootstrap"] = {
        "resamples": int(n_boot),
        "seed": int(seed),
        "unit": "patient" if groups is not None else "image",
    }
    result["notes"] = list(dict.fromkeys(notes))
    return result


def sensitivity_by_kind(y, pred, kinds, groups=None, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Sensitivity among the pneumonia images of each kind (`kinds`: e.g. bacterial, viral; "" is left out), each
    {value, low, high, n_images}: 95 % CI from a bootstrap resampling patients (`bootstrap_interval`)."""
    y, pred = np.asarray(y).astype(int).ravel(), np.asarray(pred).astype(int).ravel()
    kinds = np.asarray(kinds, dtype=object).ravel()
    codes = group_codes(groups, len(y))
    out = {}
    for kind in sorted({k for k in kinds[y == 1] if k}):
        chosen = (y == 1) & (kinds == kind)
        hit = pred[chosen].astype(float)
        draws = None
        if n_boot > 0:
            w = bootstrap_weights(codes[chosen], int(chosen.sum()), n_boot, seed)
            draws = safe_ratio(w @ hit, w.sum(axis=1))
        out[kind] = {**bootstrap_interval(hit.mean(), draws, n_boot, kind), "n_images": int(chosen.sum())}
    return out


# ---------------------------------------------------------------------------------------------- predictions files


def infer_threshold(frame: pd.DataFrame) -> float | None:
    """The threshold behind hard predictions (columns p, y_pred): the lowest p predicted pneumonia, if no lower p is."""
    p, pred = frame["p"].to_numpy(dtype=float), frame["y_pred"].to_numpy().astype(int)
    if np.isnan(p).any() or not pred.any() or (p[pred == 0] >= p[pred == 1].min()).any():
        return None
    return float(p[pred == 1].min())


# ---------------------------------------------------------------------------------------------- comparisons


def mcnemar(y, pred_a, pred_b) -> dict:
    """McNemar's test of two classifiers on the same images: exact binomial when b + c < 25, else chi-square
    with continuity correction. b = A right & B wrong, c = A wrong & B right."""
    from scipy import stats

    y = np.asarray(y).astype(np.int64)
    right_a = np.asarray(pred_a).astype(np.int64) == y
    right_b = np.asarray(pred_b).astype(np.int64) == y
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    if b + c == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": "no discordant pairs"}
    if b + c < 25:
        p_value = stats.binomtest(min(b, c), b + c, 0.5).pvalue
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": float(p_value), "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    p_value = stats.chi2.sf(statistic, df=1)
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": float(p_value), "method": "chi2 (cc)"}


def paired_auc_difference(y, p_a, p_b, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """ROC-AUC(A) - ROC-AUC(B) on the same images with a paired patient-bootstrap 95 % CI and two-sided p-value
    (both None, and `notes` say why, when too few resamples have both AUCs: `bootstrap_interval`)."""
    y, p_a = _as_arrays(y, p_a)
    _, p_b = _as_arrays(y, p_b)
    none = {"auc_a": None, "auc_b": None, "difference": None, "low": None, "high": None, "p_value": None}
    if np.isnan(p_a).any() or np.isnan(p_b).any() or not 0 < y.sum() < len(y):
        return none
    auc_a, auc_b = skm.roc_auc_score(y, p_a), skm.roc_auc_score(y, p_b)
    diff = auc_a - auc_b
    out = dict(none, auc_a=float(auc_a), auc_b=float(auc_b), difference=float(diff))
    if n_boot <= 0:
        return out
    w = bootstrap_weights(group_codes(groups, len(y)), len(y), n_boot, seed)
    draws = weighted_auc(y, p_a, w) - weighted_auc(y, p_b, w)
    ci = bootstrap_interval(diff, draws, n_boot, "ROC-AUC difference")
    del ci["value"]  # `difference` holds it
    out.update(ci)
    if ci["low"] is not None:
        # p-value: how often the bootstrap distribution, shifted to the null (difference 0), is as extreme as observed
        draws = draws[np.isfinite(draws)]
        extreme = np.abs(draws - diff) >= abs(diff) - 1e-12
        out["p_value"] = float(min(1.0, (1 + extreme.sum()) / (1 + len(draws))))
    return out


def paired_accuracy_difference(y, pred_a, pred_b, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy(A) - accuracy(B) of hard labels on the same images, with a paired patient-bootstrap 95 % CI."""
    y, pred_a = _as_arrays(y, pred_a)
    _, pred_b = _as_arrays(y, pred_b)
    gain = (pred_a == y).astype(float) - (pred_b == y).astype(float)  # +1: only A right, -1: only B right
    out = {
        "accuracy_a": float((pred_a == y).mean()),
        "accuracy_b": float((pred_b == y).mean()),
        "difference": float(gain.mean()),
        "low": None,
        "high": None,
    }
    if n_boot > 0:
        w = bootstrap_weights(groups, len(y), n_boot, seed)
        ci = bootstrap_interval(gain.mean(), safe_ratio(w @ gain, w.sum(axis=1)), n_boot, "accuracy difference")
        del ci["value"]  # `difference` holds it
        out.update(ci)
    return out


def paired_comparison(y, pred_a, pred_b, p_a, p_b, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Two classifiers on the same images: the accuracy difference and McNemar's test of their hard labels, and the
    ROC-AUC difference when both give probabilities (else None); CIs by paired patient bootstrap. JSON-ready."""
    accuracy = paired_accuracy_difference(y, pred_a, pred_b, groups, n_boot, seed)  # checks the shapes first
    y = np.asarray(y).astype(np.int64).ravel()
    return {
        "n_images": int(len(y)),
        "n_patients": int(group_codes(groups, len(y)).max()) + 1,
        "accuracy": accuracy,
        "mcnemar": mcnemar(y, pred_a, pred_b),
        "roc_auc": paired_auc_difference(y, p_a, p_b, groups, n_boot, seed),
        "bootstrap": {
            "resamples": int(n_boot),
            "seed": int(seed),
            "unit": "patient" if groups is not None else "image",
        },
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
