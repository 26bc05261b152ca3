"""Probes on a frozen backbone's pooled features, measured before any training on the disease: how well a linear
model tells the non-Kermany training images (adults, figures from papers, nearly all pneumonia, absent from the test
set) from Kermany's, a shortcut the training set invites; and how well it tells the training images from the test
images, a shift between the two splits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib.config import RunConfig, settle_weights
from xraylib.errors import InputError
from xraylib.plot_style import format_interval

TOP = 5  # the most test-like training images a shift probe lists


def frozen_features(rows: pd.DataFrame, cfg: RunConfig) -> np.ndarray:
    """The pooled features of the backbone `cfg.backbone` (`cfg.weights`, `cfg.image_size`) for every row's image,
    cached on disk beside the images; random weights are drawn from `cfg.seed`."""
    import keras

    from xraylib.data import fingerprint
    from xraylib.features import trunk_outputs
    from xraylib.models import build_model, feature_model
    from xraylib.pipeline import cached_images

    if cfg.equalize == "site":
        raise InputError("setting equalize=site: a probe trains no model whose training images would set its table")
    images = cached_images(list(rows["path"]), cfg.image_size, cfg.cache_dir, key=fingerprint(rows))
    keras.utils.set_random_seed(cfg.seed)
    return trunk_outputs(feature_model(build_model(cfg)), images, cfg.batch_size, cfg.cache_dir)


def fold_count(y: np.ndarray, groups: np.ndarray, what: str, folds: int = 5) -> int:
    """`folds`, or fewer when either side of y has fewer patients; an InputError when it has one (`what`: y = 1)."""
    folds = min(folds, len(set(groups[y == 1])), len(set(groups[y == 0])))
    if folds < 2:
        raise InputError(f"{what}: {int(y.sum())} of {len(y)} images: the probe needs two patients on each side")
    return folds


def out_of_fold(features: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold P(y = 1) of every row from a standardised, class-balanced logistic regression on `features`,
    over patient-grouped folds stratified by y."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, features, y, groups=groups, cv=cv, method="predict_proba")[:, 1]


def _separation(y: np.ndarray, p: np.ndarray, groups: np.ndarray, cfg: RunConfig) -> dict:
    """ROC-AUC and balanced accuracy at 0.5 of out-of-fold scores, each with a patient-bootstrap 95 % CI."""
    from xraylib.metrics import binary_metrics_ci

    result = binary_metrics_ci(y, p, groups, threshold=0.5, n_boot=cfg.bootstrap, seed=cfg.seed)
    return {"roc_auc": result["roc_auc"], "balanced_accuracy": result["balanced_accuracy"]}


def _about(data: str | os.PathLike, cfg: RunConfig, probe: str, features: np.ndarray) -> dict:
    """What a probe's result was measured with."""
    from xraylib.leaderboard import weights_label

    return {
        "probe": probe,
        "backbone": cfg.backbone,
        "weights": weights_label(cfg.weights),
        "image_size": cfg.image_size,
        "data": str(Path(data).resolve()),
        "features": int(features.shape[1]),
        "seed": cfg.seed,
    }


def source_probe(data: str | os.PathLike, cfg: RunConfig, folds: int = 5) -> tuple[dict, pd.DataFrame]:
    """Out-of-fold P(other source) for every training image (patient-grouped, source-stratified folds) with its
    ROC-AUC and balanced accuracy (JSON-ready), and the scores: file, split, label, patient, source, p_other."""
    from xraylib.data import build_index

    cfg = settle_weights(cfg)
    index = build_index(data, missing="drop")
    rows = index[index["split"] == "train"].reset_index(drop=True)
    y, groups = (rows["source"] == "other").to_numpy(int), rows["patient"].to_numpy()
    folds = fold_count(y, groups, f"{data}: non-Kermany training images", folds)
    features = frozen_features(rows, cfg)
    p = out_of_fold(features, y, groups, folds, cfg.seed)
    result = {**_about(data, cfg, "source", features), "n_images": len(y), "n_other": int(y.sum()), "folds": folds}
    scores = rows[["file", "split", "label", "patient", "source"]].assign(p_other=p.round(6))
    return {**result, **_separation(y, p, groups, cfg)}, scores


def shift_probe(data: str | os.PathLike, cfg: RunConfig, folds: int = 5) -> tuple[dict, pd.DataFrame]:
    """Out-of-fold P(test) for every image (patient-grouped, split-stratified folds) with its ROC-AUC and balanced
    accuracy, overall and within each label (a probe of its own on the normal images, another on the pneumonia
    images: where the shift lies, apart from the splits' different share of pneumonia), and the training images
    that look most like test images (JSON-ready); and the scores: file, split, label, patient, p_test,
    p_test_within_label. `cfg.exclude_sources` leaves those images out."""
    from xraylib.data import build_index

    cfg = settle_weights(cfg)
    rows = build_index(data, missing="drop")
    if cfg.exclude_sources != "none":
        rows = rows[rows["source"] != cfg.exclude_sources].reset_index(drop=True)
    y, groups = (rows["split"] == "test").to_numpy(int), rows["patient"].to_numpy()
    parts = {label: (rows["label"] == label).to_numpy() for label in ("normal", "pneumonia")}
    used = fold_count(y, groups, f"{data}: test images", folds)
    used_in = {k: fold_count(y[m], groups[m], f"{data}: {k} test images", folds) for k, m in parts.items()}
    features = frozen_features(rows, cfg)
    p = out_of_fold(features, y, groups, used, cfg.seed)
    result = {**_about(data, cfg, "train-test", features), "n_images": len(y), "n_test": int(y.sum()), "folds": used}
    result.update(_separation(y, p, groups, cfg), by_label={})
    within = np.full(len(y), np.nan)
    for label, m in parts.items():
        within[m] = out_of_fold(features[m], y[m], groups[m], used_in[label], cfg.seed)
        counts = {"n_images": int(m.sum()), "n_test": int(y[m].sum()), "folds": used_in[label]}
        result["by_label"][label] = {**counts, **_separation(y[m], within[m], groups[m], cfg)}
    scores = rows[["file", "split", "label", "patient"]].assign(p_test=p.round(6), p_test_within_label=within.round(6))
    top = scores[scores["split"] == "train"].nlargest(TOP, "p_test")
    result["most_test_like"] = top[["file", "label", "patient", "p_test"]].to_dict("records")
    return result, scores


PROBES: dict[str, Callable[..., tuple[dict, pd.DataFrame]]] = {"source": source_probe, "train-test": shift_probe}


def format_probe(result: dict) -> str:
    """A readable summary of `source_probe`'s or `shift_probe`'s result."""
    head = (
        f"{result['probe']} probe: {result['backbone']} ({result['weights']}, {result['image_size']} px), "
        f"{result['features']} pooled features"
    )
    if result["probe"] == "source":
        return "\n".join(
            [
                head,
                f"training images: {result['n_images']}, of them non-Kermany: {result['n_other']}; "
                f"{result['folds']} patient-grouped folds",
                f"ROC-AUC (Kermany vs other)  {format_interval(result['roc_auc'])}",
                f"balanced accuracy at 0.5    {format_interval(result['balanced_accuracy'])}",
                "0.5 = the features cannot tell the sources apart; near 1 = a model could learn the source as a "
                "shortcut",
            ]
        )
    lines = [
        head,
        f"images: {result['n_images']}, of them test: {result['n_test']}; {result['folds']} patient-grouped folds",
        f"ROC-AUC (train vs test)          {format_interval(result['roc_auc'])}",
        f"balanced accuracy at 0.5         {format_interval(result['balanced_accuracy'])}",
    ]
    for label, part in result["by_label"].items():
        auc = format_interval(part["roc_auc"])
        lines.append(f"  {label} images only ({part['n_test']} test of {part['n_images']}): ROC-AUC {auc}")
    lines.append("0.5 = the features cannot tell the splits apart; near 1 = the test images differ from the training")
    lines.append("most test-like training images (out-of-fold P(test)):")
    lines += [f"  {row['p_test']:.3f}  {row['file']} ({row['label']})" for row in result["most_test_like"]]
    return "\n".join(lines)
