"""The source probe: how well a linear model on a frozen backbone's pooled features tells the non-Kermany training
images (adults, figures from papers, nearly all pneumonia, absent from the test set) from Kermany's: a shortcut
the training set invites, measured before any training on the disease."""

from __future__ import annotations

import os
from pathlib import Path

from xraylib.config import RunConfig
from xraylib.errors import InputError


def source_probe(data: str | os.PathLike, cfg: RunConfig, folds: int = 5) -> dict:
    """Out-of-fold P(other source) for every training image from a logistic regression on the frozen backbone's
    pooled features (`cfg.weights`; patient-grouped, source-stratified folds), and its ROC-AUC and balanced
    accuracy with patient-bootstrap 95 % CIs. JSON-ready."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from xraylib.data import build_index, fingerprint
    from xraylib.leaderboard import weights_label
    from xraylib.metrics import evaluate
    from xraylib.models import build_model, feature_model
    from xraylib.pipeline import cached_images, predict_in_batches

    index = build_index(data, missing="drop")
    rows = index[index["split"] == "train"].reset_index(drop=True)
    y = (rows["source"] == "other").to_numpy(int)
    groups = rows["patient"].to_numpy()
    folds = min(folds, len(set(groups[y == 1])))
    if folds < 2:
        raise InputError(f"{data}: the training split holds {int(y.sum())} non-Kermany image(s): the probe needs two")
    images = cached_images(list(rows["path"]), cfg.image_size, cfg.cache_dir, key=fingerprint(rows))
    features = predict_in_batches(feature_model(build_model(cfg)), images, cfg.batch_size)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    p = cross_val_predict(probe, features, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
    result = evaluate(y, p, groups, threshold=0.5, n_boot=cfg.bootstrap, seed=cfg.seed)
    return {
        "backbone": cfg.backbone,
        "weights": weights_label(cfg.weights),
        "image_size": cfg.image_size,
        "data": str(Path(data).resolve()),
        "n_images": int(len(y)),
        "n_other": int(y.sum()),
        "folds": folds,
        "features": int(features.shape[1]),
        "roc_auc": result["roc_auc"],
        "balanced_accuracy": result["balanced_accuracy"],
        "seed": cfg.seed,
    }


def format_probe(result: dict) -> str:
    """A readable summary of `source_probe`'s result."""
    auc, bal = result["roc_auc"], result["balanced_accuracy"]

    def interval(entry: dict) -> str:
        low = f" [{entry['low']:.3f}, {entry['high']:.3f}]" if entry["low"] is not None else ""
        return f"{entry['value']:.3f}{low}"

    return "\n".join(
        [
            f"source probe: {result['backbone']} ({result['weights']}, {result['image_size']} px), "
            f"{result['features']} pooled features",
            f"training images: {result['n_images']}, of them non-Kermany: {result['n_other']}; "
            f"{result['folds']} patient-grouped folds",
            f"ROC-AUC (Kermany vs other)  {interval(auc)}",
            f"balanced accuracy at 0.5    {interval(bal)}",
            "0.5 = the features cannot tell the sources apart; near 1 = a model could learn the source as a shortcut",
        ]
    )
