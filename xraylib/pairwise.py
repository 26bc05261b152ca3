"""Backbones compared image by image on the same test images: the accuracy difference with a patient-bootstrap
95 % CI, McNemar's test and the paired ROC-AUC difference, their p-values Holm-adjusted over every pair; each
backbone against reference predictions files too (`xraylib report`'s comparison.csv and reference_comparison.csv)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from xraylib.data import pneumonia_codes
from xraylib.errors import InputError
from xraylib.metrics import holm, paired_comparison
from xraylib.prediction_files import align_predictions, tidy_predictions
from xraylib.runs import report_path

REFERENCE_NOTE = (
    "Each backbone (A) against each reference file (B) on the same test images, by file name: accuracy of the "
    "predicted labels and its difference with a patient-bootstrap 95 % CI, the discordant images (A right and B "
    "wrong, and the reverse) and McNemar's test (exact when they are fewer than 25)."
)


def compare(predictions: dict[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every pair of backbones on the same test images: the accuracy difference, McNemar's test and the paired
    ROC-AUC difference (`_paired_row`).

    Frames as tidy_predictions returns them (file, patient, y_true, p, y_pred). One row per pair; p-values
    also Holm-adjusted over all pairs.
    """
    if len(predictions) < 2:
        raise InputError("comparing needs the predictions of at least two backbones")
    rows = [
        {"model_a": name_a, "model_b": name_b, **_paired_row(align_predictions(a, b, name_a, name_b), n_boot, seed)}
        for (name_a, a), (name_b, b) in itertools.combinations(predictions.items(), 2)
    ]
    return _with_holm(pd.DataFrame(rows))


def _paired_row(both: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """One flat row of `metrics.paired_comparison` for two models' predictions aligned by `align_predictions`."""
    r = paired_comparison(
        both["y_true"], both["y_pred_a"], both["y_pred_b"], both["p_a"], both["p_b"], both["patient"], n_boot, seed
    )
    acc, test, auc = r["accuracy"], r["mcnemar"], r["roc_auc"]
    return {
        "n_images": r["n_images"],
        "accuracy_a": acc["accuracy_a"],
        "accuracy_b": acc["accuracy_b"],
        "accuracy_difference": acc["difference"],
        "accuracy_difference_low": acc["low"],
        "accuracy_difference_high": acc["high"],
        "a_right_b_wrong": test["b"],
        "a_wrong_b_right": test["c"],
        "mcnemar_statistic": test["statistic"],
        "mcnemar_method": test["method"],
        "mcnemar_p": test["p_value"],
        "auc_a": auc["auc_a"],
        "auc_b": auc["auc_b"],
        "auc_difference": auc["difference"],
        "auc_difference_low": auc["low"],
        "auc_difference_high": auc["high"],
        "auc_difference_p": auc["p_value"],
        "note": "" if auc["auc_a"] is not None else "no probabilities: AUC difference not computed",
    }


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """A table of `_paired_row`s with McNemar's and the AUC difference's p-values Holm-adjusted over its rows."""
    table.insert(table.columns.get_loc("mcnemar_p") + 1, "mcnemar_p_holm", holm(table["mcnemar_p"].tolist()))
    table.insert(
        table.columns.get_loc("auc_difference_p") + 1,
        "auc_difference_p_holm",
        holm(table["auc_difference_p"].astype(float).tolist()),
    )
    return table


def versus_references(frames: dict[str, pd.DataFrame], references: list, n_boot: int = 1000) -> pd.DataFrame:
    """Each backbone's predictions (name -> predictions.csv frame) against each reference predictions file (e.g. the
    study's `VGG19 results.csv`) image by image: one `_paired_row` per pair, model A the backbone, B the file."""
    files = {Path(path).name: tidy_predictions(report_path(path)) for path in references}
    rows = [
        {
            "model_a": backbone,
            "model_b": name,
            **_paired_row(align_predictions(_tidy(frame), other, backbone, name), n_boot),
        }
        for backbone, frame in frames.items()
        for name, other in files.items()
    ]
    return _with_holm(pd.DataFrame(rows)) if rows else pd.DataFrame()


def every_pair(frames: dict[str, pd.DataFrame], n_boot: int = 1000) -> pd.DataFrame:
    """`compare` of backbones' predictions.csv frames (name -> frame); empty for fewer than two."""
    tidy = {name: _tidy(frame) for name, frame in frames.items()}
    return compare(tidy, n_boot=n_boot) if len(tidy) > 1 else pd.DataFrame()


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """A predictions.csv frame in tidy_predictions' columns: file, patient, y_true, p, y_pred."""
    return pd.DataFrame(
        {
            "file": frame["file"],
            "patient": frame["patient"].astype(str),
            "y_true": pneumonia_codes(frame["label"]),
            "p": frame["p_pneumonia"].astype(float),
            "y_pred": pneumonia_codes(frame["predicted"]),
        }
    )
