"""Log odds: the logit and the sigmoid with the clipping an exported model uses, and Platt's logistic fit of labels
to log odds. The calibration (`calibration`) and the balanced threshold rule (`metrics.choose_threshold`) build on
them."""

from __future__ import annotations

import math

import numpy as np

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


def platt_fit(y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the unpenalised logistic regression of labels `y` on log odds `z` (scikit-learn's)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, max_iter=1000).fit(np.asarray(z)[:, None], y)  # C=inf: no penalty
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def keeps_order(slope: float, intercept: float) -> bool:
    """Whether the map z -> slope * z + intercept of a fit is finite and increasing: it keeps the images' order."""
    return slope > 0 and math.isfinite(slope) and math.isfinite(intercept)
