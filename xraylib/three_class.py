"""The three-class task (Normal / Bacterial / Viral): a run's predictions and metrics.json, reading, scoring and
printing any three-class predictions file, and a sweep's three-class leaderboard.

predictions.csv of a three-class run: file, patient, label (normal | bacterial | viral), p_normal, p_bacterial,
p_viral (calibrated when the run calibrates, then also p_uncalibrated_normal, ...), predicted (the argmax class),
subtype, path. Its metrics come from `xraylib.multiclass`.
"""

from __future__ import annotations

import math
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
from xraylib.plot_style import REPORT_DIGITS, format_ci, format_interval

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


# ---------------------------------------------------------------------------------------------- a run's figures

RUN_FIGURES = ("training_curves", "confusion_matrix", "roc_ovr", "reliability", "examples", "gradcam")


def run_figure(name: str, results: Path, cfg: RunConfig, title: str, model=None, run_dir: Path | None = None):
    """One three-class figure (RUN_FIGURES but the training curves, which both tasks share) from the
    predictions.csv and metrics.json in `results`, saved under its figures/."""
    from xraylib import multiclass_plots, plots

    path = runs.figure_path(results, name)
    frame = runs.run_predictions(results)
    y, probs = class_codes(frame["label"]), frame[COLUMNS].to_numpy(float)
    if name == "confusion_matrix":
        pred = class_codes(frame["predicted"])
        return plots.plot_confusion_matrix(y, pred, title=f"{title}, argmax", path=path, classes=THREE_CLASSES)
    if name == "roc_ovr":
        result = runs.read_metrics(results)["test"]
        return multiclass_plots.plot_ovr_roc(y, probs, result, title=title, path=path)
    if name == "reliability":
        raw = frame[RAW_COLUMNS].to_numpy(float) if set(RAW_COLUMNS) <= set(frame) else None
        return multiclass_plots.plot_top_label_reliability(y, probs, raw, title=title, path=path)
    if name == "examples":
        return multiclass_plots.plot_three_class_examples(frame, seed=cfg.seed, title=title, path=path)
    if name == "gradcam":  # gradcam_images=0 asks for no Grad-CAM grid
        return gradcam_figure(run_dir or results, cfg, frame, model, path) if cfg.gradcam_images else None
    raise InputError(f"unknown figure {name!r} of a three-class run (known: {', '.join(RUN_FIGURES)})")


def gradcam_figure(run_dir: Path, cfg: RunConfig, frame: pd.DataFrame, model=None, path=None):
    """Grad-CAM of each image's predicted class over test images sampled across the (true, predicted) cells."""
    from xraylib.explain import gradcam
    from xraylib.gradcam_plots import plot_gradcam_grid
    from xraylib.images import load_gray
    from xraylib.models import load_model
    from xraylib.multiclass_plots import sample_cells

    if model is None:
        model = load_model(run_dir / runs.MODEL)
    sample = sample_cells(frame, cfg.gradcam_images, seed=cfg.seed)
    images = np.stack([load_gray(p, cfg.image_size) for p in sample["path"]]).astype(np.float32)
    heatmaps = gradcam(model, images[..., None], classes=sample["pred_code"].to_numpy())
    titles = [
        f"true {THREE_CLASSES[t].title()} / pred {THREE_CLASSES[q].title()}\np = {getattr(row, COLUMNS[q]):.2f}"
        for t, q, row in zip(sample["true_code"], sample["pred_code"], sample.itertuples(), strict=True)
    ]
    errors = list(sample["true_code"] != sample["pred_code"])
    title = f"Grad-CAM of the predicted class: {cfg.backbone} ({cfg.preset})"
    return plot_gradcam_grid(images, heatmaps, titles=titles, errors=errors, title=title, path=path)


def metrics_table(result: dict) -> pd.DataFrame:
    """A three-class metrics.json as a table: each summary metric, then each class's one-vs-rest ROC-AUC, recall,
    precision and F1, with 95 % CIs."""
    test = result["test"]
    rows = [(TITLES[name], test[name]) for name in SUMMARY_METRICS + CALIBRATION_METRICS]
    rows += [(f"{m}: {label}", entry[m]) for label, entry in test["per_class"].items() for m in PER_CLASS_METRICS]
    table = pd.DataFrame([{"metric": name, "value": e["value"], "95% CI": format_ci(e)} for name, e in rows])
    return table.set_index("metric")


# ---------------------------------------------------------------------------------------------- a sweep's runs

LEADERBOARD_METRICS = SUMMARY_METRICS + tuple(f"roc_auc_{name}" for name in THREE_CLASSES)


def _mean_frame(frames: list[pd.DataFrame], name: str) -> pd.DataFrame:
    """One predictions table of several runs on the same test images: their mean class probabilities (calibrated
    and not)."""
    mean = runs.mean_probabilities(frames, COLUMNS + RAW_COLUMNS, name)
    predicted = mean[list(COLUMNS)].to_numpy().argmax(axis=1)
    return mean.assign(predicted=np.asarray(THREE_CLASSES)[predicted]).reset_index()


def leaderboard(folders: dict[str, Path], n_boot: int = 1000) -> pd.DataFrame:
    """One row per backbone of three-class runs (name -> run folder), by macro ROC-AUC: run once, its run's
    metrics; run several times, the metrics of its runs' mean class probabilities (patient-bootstrap CIs). Beside
    them, each summary metric on validation and its drop to test (`runs.validation_columns`; several runs: their
    means)."""
    from xraylib.multiclass import leaderboard_row

    by_backbone: dict[str, list[Path]] = {}
    for run in folders.values():
        by_backbone.setdefault(runs.read_config(run).backbone, []).append(run)
    rows = []
    for backbone, group in by_backbone.items():
        if len(group) == 1:
            result = runs.read_metrics(group[0])["test"]
        else:
            frame = _mean_frame([runs.run_predictions(f) for f in group], backbone)
            y, probs = class_codes(frame["label"]), frame[COLUMNS].to_numpy(float)
            result = multiclass_metrics_ci(y, probs, frame["patient"], n_boot=n_boot)
        row = leaderboard_row(backbone, result)
        columns = [runs.validation_columns(runs.read_metrics(f), f / runs.METRICS, SUMMARY_METRICS) for f in group]
        row.update(runs.mean_validation(pd.DataFrame(columns), SUMMARY_METRICS))
        row.update(runs=len(group), preset=runs.read_config(group[0]).preset)
        rows.append(row)
    return pd.DataFrame(rows).sort_values("macro_roc_auc", ascending=False).reset_index(drop=True)


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """The three-class leaderboard as a Markdown table: value [low, high] per metric; beside each summary metric,
    when some run recorded it, its value on validation and the drop (test minus validation)."""
    validation = runs.has_validation(board)
    shown = [
        (m, v) for m in LEADERBOARD_METRICS for v in (False, True) if not v or (validation and m in SUMMARY_METRICS)
    ]
    header = " | ".join(f"val. {m} (drop)" if v else m for m, v in shown)
    lines = [f"| backbone | runs | {header} |", "|---" * (len(shown) + 2) + "|"]
    for _, row in board.iterrows():
        cells = [_board_cell(row, f"val_{m}", row[f"{m}_drop"]) if v else _board_cell(row, m) for m, v in shown]
        lines.append(f"| {row['backbone']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _board_cell(row: pd.Series, column: str, drop: float = math.nan) -> str:
    """A leaderboard cell, `value [low, high]`, then the signed drop when one is given."""
    entry = {key: row[f"{column}{end}"] for key, end in (("value", ""), ("low", "_low"), ("high", "_high"))}
    cell = format_interval(entry)
    return cell if pd.isna(drop) else f"{cell} ({drop:+.3f})"


def build_report(report_dir: Path, folders: dict[str, Path], into: Path) -> str:
    """leaderboard.csv/.md and summary.md of a sweep of three-class runs, written into `into`; returns the summary."""
    from xraylib.fileio import write_text

    board = leaderboard(folders)
    write_csv(into / runs.LEADERBOARD_CSV, board)
    table = leaderboard_markdown(board)
    write_text(into / runs.LEADERBOARD_MD, table + "\n")
    best = board.iloc[0]
    summary = "\n".join(
        [
            f"# Sweep report: {report_dir.name} (three classes: normal, bacterial, viral)",
            "",
            f"{len(board)} backbone(s), {int(board['runs'].sum())} finished run(s). Best macro ROC-AUC: "
            f"**{best['backbone']}** {best['macro_roc_auc']:.3f}.",
            "Test metrics of the argmax class; one-vs-rest ROC-AUCs; 95 % CIs by patient bootstrap.",
            *[f"{runs.VALIDATION_NOTE} (a backbone run several times: their means over its runs)."]
            * runs.has_validation(board),
            "",
            table,
            "",
        ]
    )
    write_text(into / runs.SUMMARY_MD, summary)
    return summary
