"""The three-class task (Normal / Bacterial / Viral), what makes it differ from the binary one: a run's
predictions and metrics.json, and reading, scoring and printing any three-class predictions file. Its figures are
drawn by `run_figures`, its leaderboard and summary by `leaderboard`, as the binary task's.

predictions.csv of a three-class run: file, patient, label (normal | bacterial | viral), p_normal, p_bacterial,
p_viral (calibrated when the run calibrates, then also p_uncalibrated_normal, ...), predicted (the argmax class),
subtype, path. Its metrics come from `xraylib.multiclass`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import runs
from xraylib.config import RunConfig
from xraylib.errors import InputError, check_memory
from xraylib.fileio import write_csv, write_json
from xraylib.multiclass import (
    CALIBRATION_METRICS,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    THREE_CLASSES,
    TITLES,
    class_codes,
    multiclass_metrics_ci,
    probability_columns,
)
from xraylib.plot_style import REPORT_DIGITS, format_interval

COLUMNS = probability_columns(THREE_CLASSES)
RAW_COLUMNS = [f"p_uncalibrated_{name}" for name in THREE_CLASSES]


def is_three_class(columns) -> bool:
    """Whether a predictions table holds one probability per class of the three-class task."""
    return set(COLUMNS) <= set(columns)


def predictions_frame(rows: pd.DataFrame, probs: np.ndarray, raw: np.ndarray | None = None) -> pd.DataFrame:
    """A three-class predictions.csv table for index `rows` and their class probabilities (N, 3); with `raw`,
    the model's uncalibrated probabilities too."""
    from xraylib.prepare import class_names

    probs = np.asarray(probs, dtype=float)
    frame = pd.DataFrame({"file": rows["file"], "patient": rows["patient"], "label": class_names(rows, "three_class")})
    for c, column in enumerate(COLUMNS):
        frame[column] = probs[:, c]
    frame["predicted"] = np.asarray(THREE_CLASSES)[probs.argmax(axis=1)]
    frame["subtype"], frame["path"] = rows["subtype"], rows["path"]
    if raw is not None:
        for c, column in enumerate(RAW_COLUMNS):
            frame[column] = np.asarray(raw, dtype=float)[:, c]
    return frame.reset_index(drop=True)


def _schema(cfg: RunConfig, result: dict) -> dict:
    """metrics.json of a three-class run around `multiclass_metrics_ci`'s result of its test set."""
    return {
        **runs.metrics_header(cfg, None),
        "task": "three_class",
        "classes": list(THREE_CLASSES),
        "n_test_images": result["n_images"],
        "n_test_patients": result["n_patients"],
        "test": result,
    }


def run_metrics(
    cfg: RunConfig,
    y: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict:
    """A three-class run's metrics.json (without its calibration entry); with the `validation` images' (class
    codes, calibrated probabilities, patients), their metrics and the drop to test."""
    result = _schema(cfg, multiclass_metrics_ci(y, probs, groups, n_boot=cfg.bootstrap, seed=cfg.seed))
    if validation is not None:
        val_y, val_probs, val_groups = validation
        entry = multiclass_metrics_ci(val_y, val_probs, val_groups, n_boot=cfg.bootstrap, seed=cfg.seed)
        prevalence = {name: float(np.mean(val_y == c)) for c, name in enumerate(THREE_CLASSES)}
        result["validation"] = runs.validation_entry(entry, result["test"], prevalence)
    return result


def evaluate_run(prepared, cfg: RunConfig, out: str | Path, val_raw: np.ndarray, test_raw: np.ndarray) -> dict:
    """From the model's class probabilities of the validation and test images: fit the temperature on validation,
    write predictions.csv, val_predictions.csv and metrics.json of a three-class run."""
    from xraylib.calibration import effect, fit_calibration

    out = Path(out)
    val_y = prepared.labels["val"].astype(int)
    calibration = fit_calibration(val_y, val_raw, cfg.calibration)
    test_p = calibration(test_raw)
    raw = cfg.calibration != "none"
    test_rows = prepared.rows("test")
    write_csv(out / runs.PREDICTIONS, predictions_frame(test_rows, test_p, test_raw if raw else None))
    val_p = calibration(val_raw)
    val_frame = predictions_frame(prepared.rows("val"), val_p, val_raw if raw else None)
    write_csv(out / runs.VAL_PREDICTIONS, val_frame)
    test_y = prepared.labels["test"].astype(int)
    validation = (val_y, val_p, val_frame["patient"].to_numpy())
    result = run_metrics(cfg, test_y, test_p, test_rows["patient"].to_numpy(), validation)
    result["calibration"] = {
        **calibration.to_json(),
        "fitted_on": "validation",
        "n_images": len(val_raw),
        "validation": effect(val_y, val_raw, calibration),
        "test": effect(test_y, test_raw, calibration),
    }
    write_json(out / runs.METRICS, result)
    return result


def labelled(index: pd.DataFrame, data) -> pd.DataFrame:
    """The rows of an index whose three-class label is known (normal, bacterial, viral); none is an InputError."""
    from xraylib.prepare import class_names

    kept = index[class_names(index, "three_class") != ""]
    if kept.empty:
        raise InputError(f"--data {data}: no image whose class is normal, bacterial or viral")
    kept.attrs.update(index.attrs, left_out=len(index) - len(kept))
    return kept.reset_index(drop=True)


def score_run(run_dir: Path, cfg: RunConfig, data, index: pd.DataFrame, table: pd.DataFrame, out, n_boot, seed):
    """`evaluate --run` of a three-class run: its predictions of `index`'s images (`table` from `predict_files`)
    written as predictions.csv and scored into metrics.json (a run's schema), in `out`."""
    write_csv(out / runs.PREDICTIONS, predictions_frame(index, table[COLUMNS].to_numpy(float)))
    result = evaluate_file(out / runs.PREDICTIONS, n_boot, seed)
    where = {"run": str(Path(run_dir).resolve()), "data": str(Path(data).resolve()), "layout": index.attrs["layout"]}
    result.update(where, left_out=index.attrs.get("left_out", 0))
    write_json(out / runs.METRICS, {**_schema(cfg, result), **where})
    return result


def class_predictions(path: str | Path) -> pd.DataFrame:
    """A three-class predictions file as a frame with y_true (class code) and the probability columns; rows
    whose probabilities are missing, outside [0, 1] or do not sum to 1 are refused with their line."""
    from xraylib.data import patient_key

    path = Path(path)
    raw = pd.read_csv(path, dtype={"file": str, "patient": str, "label": str})
    missing = [c for c in ("file", "label") if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} beside {', '.join(COLUMNS)}")
    if raw.empty:
        raise InputError(f"{path}: no prediction rows")
    probs = raw[COLUMNS].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (np.abs(probs.sum(axis=1) - 1) > 1e-3)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise InputError(f"{path}: line {line}: {', '.join(COLUMNS)} must be probabilities that sum to 1")
    frame = raw.copy()
    frame["y_true"] = class_codes(raw["label"], where=f"{path}: column 'label'")
    if "patient" not in raw or raw["patient"].isna().any():
        frame["patient"] = raw["file"].astype(str).map(patient_key)
    frame.attrs["source"] = str(path)
    return frame


def evaluate_file(path: str | Path, n_boot: int = 1000, seed: int = 0) -> dict:
    """Every three-class metric of a predictions file, with patient-bootstrap CIs; JSON-ready."""
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    frame = class_predictions(path)
    check_memory(16 * 9 * n_boot * len(frame), f"--bootstrap {n_boot} over {len(frame)} images", "use fewer resamples")
    y = frame["y_true"].to_numpy()
    counts = {name: int((y == c).sum()) for c, name in enumerate(THREE_CLASSES)}
    result = {"file": str(path), "format": "three_class", "n_images": int(len(frame)), "n_by_class": counts}
    result.update(multiclass_metrics_ci(y, frame[COLUMNS].to_numpy(float), frame["patient"], n_boot=n_boot, seed=seed))
    return result


def format_report(result: dict) -> str:
    """A readable report of a three-class evaluation: summary metrics, per class, the confusion matrix."""
    boot = result["bootstrap"]
    counts = ", ".join(f"{name} {n}" for name, n in result["n_by_class"].items())
    lines = [f"run: {result['run']} on {result['data']}"] if "run" in result else []
    lines += [
        f"predictions: {result['file']} (three classes: the predicted class is the argmax)",
        f"images: {result['n_images']} ({counts}), patients: {result['n_patients']}",
    ]
    if boot["resamples"]:
        lines.append(f"95 % CIs: bootstrap over {boot['unit']}s, {boot['resamples']} resamples, seed {boot['seed']}")
    lines.append("")
    lines += [
        f"{TITLES[name]:<30}{format_interval(result[name], REPORT_DIGITS)}"
        for name in SUMMARY_METRICS + CALIBRATION_METRICS
    ]
    lines.append("")
    lines.append(f"{'class':<12}" + "".join(f"{m:<26}" for m in PER_CLASS_METRICS).rstrip())
    for name, entry in result["per_class"].items():
        lines.append(f"{name:<12}" + "".join(f"{format_interval(entry[m]):<26}" for m in PER_CLASS_METRICS).rstrip())
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted; count, row % [95 % CI])")
    matrix, percent = result["confusion"]["counts"], result["confusion"]["row_percent"]
    lines.append(f"{'':<12}" + "".join(f"{name:<26}" for name in result["classes"]).rstrip())
    for i, name in enumerate(result["classes"]):
        cells = []
        for j in range(len(result["classes"])):
            entry = {key: percent[key][i][j] for key in ("value", "low", "high")}
            cells.append(f"{matrix[i][j]:>4}  {format_interval(entry, 1)}")
        lines.append(f"{name:<12}" + "".join(f"{c:<26}" for c in cells).rstrip())
    if result["notes"]:
        lines += ["", "notes:", *[f"  - {n}" for n in result["notes"]]]
    return "\n".join(lines)
