"""The comparison of runs in a report folder (`xraylib report`): the run table, the leaderboard with CIs (and
mean ± SD over a backbone's runs), summary.md and the comparison figures, with the pairwise tests of `pairwise`. The
leaderboard and summary.md serve both tasks; the pairwise tests and figures compare binary runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import compare_plots, pairwise
from xraylib.backbones import BACKBONES
from xraylib.data import pneumonia_codes
from xraylib.errors import InputError
from xraylib.explain import localization_means
from xraylib.fileio import atomic_files, claim_dir, owned_dir, unclaimed_on_refusal, write_csv, write_text
from xraylib.metrics import METRICS
from xraylib.multiclass import SUMMARY_METRICS, THREE_CLASSES, class_codes, multiclass_metrics_ci
from xraylib.plot_style import format_interval
from xraylib.runs import (
    COMPARISON_CSV,
    LEADERBOARD_CSV,
    LEADERBOARD_MD,
    MEAN_PREDICTIONS,
    REFERENCE_CSV,
    RUNS_CSV,
    SUMMARY_MD,
    VALIDATION_NOTE,
    figure_path,
    has_validation,
    mean_probabilities,
    mean_validation,
    read_config,
    read_metrics,
    read_status,
    run_predictions,
    threshold_of,
    validation_columns,
)
from xraylib.runs import METRICS as METRICS_JSON
from xraylib.three_class import COLUMNS, RAW_COLUMNS

KINDS = ("bacterial", "viral")  # the pneumonia kinds whose sensitivity the leaderboard shows
ROC_TITLE = "Test ROC curves"
SPREAD_TITLE = "Test metrics of each run (seeds, folds) per backbone"
COMPARISON_FIGURES = ("roc_overlay", "metric_bars", "run_spread")
LEADERBOARD_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "accuracy")
VALIDATION_SHOWN = ("roc_auc", "sensitivity", "specificity", "accuracy")  # leaderboard.md's validation columns
THREE_CLASS_METRICS = SUMMARY_METRICS + tuple(f"roc_auc_{name}" for name in THREE_CLASSES)


def leaderboard_row(name: str, result: dict) -> dict:
    """One flat row for a leaderboard: backbone, then metric, metric_low, metric_high for every metric of a binary
    result (and its confusion counts), or of a three-class one: each summary metric, then each class's
    one-vs-rest ROC-AUC (roc_auc_normal, ...)."""
    three = "macro_roc_auc" in result
    entries = {metric: result[metric] for metric in (SUMMARY_METRICS if three else METRICS)}
    if three:
        entries.update({f"roc_auc_{label}": e["roc_auc"] for label, e in result["per_class"].items()})
    row: dict = {"backbone": name}
    for metric, entry in entries.items():
        row.update({metric: entry["value"], f"{metric}_low": entry["low"], f"{metric}_high": entry["high"]})
    if not three:
        row.update(result["confusion"])
    return row


def finished_runs(report_dir: str | Path) -> dict[str, Path]:
    """Run name -> run directory, for every run of a sweep that wrote its metrics."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise InputError(f"{report_dir} is not a directory")
    return {p.parent.name: p.parent for p in sorted(report_dir.glob(f"*/{METRICS_JSON}"))}


def report_task(report_dir: str | Path) -> str:
    """The task of a sweep's finished runs (binary or three_class); a folder mixing both is refused."""
    tasks = {name: read_config(run).task for name, run in finished_runs(report_dir).items()}
    if len(set(tasks.values())) > 1:
        three = ", ".join(name for name, task in tasks.items() if task == "three_class")
        raise InputError(f"{report_dir} mixes binary and three-class runs ({three}): give each task its own folder")
    return next(iter(tasks.values()), "binary")


def _binary_only(report_dir: str | Path, what: str) -> None:
    if report_task(report_dir) != "binary":
        raise InputError(f"{report_dir}: {what} compares binary runs; its runs are three-class (see the leaderboard)")


def run_table(report_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: run, backbone, seed, fold, metrics with CIs, threshold, time; by ROC-AUC."""
    _binary_only(report_dir, "the run table")
    rows = []
    for name, run in finished_runs(report_dir).items():
        result, cfg = read_metrics(run), read_config(run)
        try:
            row = {"run": name, **leaderboard_row(cfg.backbone, result["at_threshold"])}
            row["threshold"] = threshold_of(result, run / METRICS_JSON)
        except (KeyError, TypeError):
            raise InputError(f"{run / METRICS_JSON} lacks the run's metrics: rerun the run, or remove it") from None
        row.update(validation_columns(result, run / METRICS_JSON, LEADERBOARD_METRICS))
        row.update(kind_columns(result.get("sensitivity_by_kind", {})))
        row.update(seed=cfg.seed, fold=cfg.fold if cfg.folds else None, preset=result.get("preset", ""))
        row["weights"] = weights_label(cfg.weights)
        row["seconds"] = read_status(run).get("seconds")
        row.update(localization_means(run))
        rows.append(row)
    if not rows:
        raise InputError(f"{report_dir} holds no finished run (no */metrics.json)")
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False).reset_index(drop=True)


def kind_columns(by_kind: dict[str, dict]) -> dict[str, float]:
    """metrics.json's sensitivity_by_kind as leaderboard columns: sensitivity_bacterial, _low, _high, ..."""
    out = {}
    for kind, entry in by_kind.items():
        name = f"sensitivity_{kind}"
        out.update({name: entry["value"], f"{name}_low": entry["low"], f"{name}_high": entry["high"]})
    return out


def repeated(runs: pd.DataFrame) -> bool:
    """Whether some backbone was run more than once (several seeds or folds)."""
    return not runs["backbone"].is_unique


def mean_predictions(report_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Backbone -> its test predictions (predictions.csv columns): a backbone run once, its run's; run several
    times, each image's mean probabilities (calibrated and not) over its runs, labelled at the mean of their
    thresholds."""
    runs, folders = run_table(report_dir), finished_runs(report_dir)
    out = {}
    for backbone, group in runs.groupby("backbone", sort=False):
        frames = [run_predictions(folders[name]) for name in group["run"]]
        if len(frames) == 1:
            out[backbone] = frames[0]
            continue
        mean = mean_probabilities(frames, ["p_pneumonia", "p_uncalibrated"], backbone)
        threshold = float(group["threshold"].mean())
        mean["predicted"] = np.where(mean["p_pneumonia"] >= threshold, "pneumonia", "normal")
        out[backbone] = mean.reset_index()[[c for c in frames[0].columns if c == "file" or c in mean.columns]]
    return out


def leaderboard(report_dir: str | Path, n_boot: int = 1000) -> pd.DataFrame:
    """One row per backbone, sorted by ROC-AUC: run once, its run's metrics with CIs; run several times (seeds,
    folds), the metrics of its mean predictions with patient-bootstrap CIs (`n_boot` resamples: test-set sampling
    variance) beside each metric's mean and SD across its runs (`m_mean`, `m_sd`: training variance).
    Three-class runs: by macro ROC-AUC, the metrics of the argmax class (`_three_class_leaderboard`)."""
    from xraylib.data import pneumonia_kind
    from xraylib.metrics import binary_metrics_ci, sensitivity_by_kind

    if report_task(report_dir) == "three_class":
        return _three_class_leaderboard(finished_runs(report_dir), n_boot)
    runs = run_table(report_dir)
    if not repeated(runs):
        return runs
    rows = []
    for backbone, frame in mean_predictions(report_dir).items():
        group = runs[runs["backbone"] == backbone]
        y, threshold = pneumonia_codes(frame["label"]), float(group["threshold"].mean())
        result = binary_metrics_ci(y, frame["p_pneumonia"], frame["patient"], threshold, n_boot=n_boot)
        row = leaderboard_row(backbone, result)
        if "subtype" in frame:
            kinds = [pneumonia_kind(x) for x in frame["subtype"]]
            pred = frame["p_pneumonia"].to_numpy() >= threshold
            row.update(kind_columns(sensitivity_by_kind(y, pred, kinds, frame["patient"], n_boot)))
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = group[metric].mean(), group[metric].std(ddof=1)
        row.update(mean_validation(group, LEADERBOARD_METRICS))
        row.update(runs=len(group), threshold=threshold, preset=group["preset"].iloc[0])
        row.update(weights=group["weights"].iloc[0], seconds=group["seconds"].sum())
        row.update(group.reindex(columns=["gradcam_in_lungs", "lung_area", "gradcam_peak_in_lungs"]).mean())
        rows.append(row)
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False).reset_index(drop=True)


def _three_class_leaderboard(folders: dict[str, Path], n_boot: int = 1000) -> pd.DataFrame:
    """One row per backbone of three-class runs (name -> run folder), by macro ROC-AUC: run once, its run's
    metrics; run several times, the metrics of its runs' mean class probabilities (patient-bootstrap CIs). Beside
    them, each summary metric on validation and its drop to test (several runs: their means)."""
    by_backbone: dict[str, list[Path]] = {}
    for run in folders.values():
        by_backbone.setdefault(read_config(run).backbone, []).append(run)
    rows = []
    for backbone, group in by_backbone.items():
        if len(group) == 1:
            result = read_metrics(group[0])["test"]
        else:
            frame = mean_probabilities([run_predictions(f) for f in group], COLUMNS + RAW_COLUMNS, backbone)
            probs = frame[list(COLUMNS)].to_numpy(float)
            result = multiclass_metrics_ci(class_codes(frame["label"]), probs, frame["patient"], n_boot=n_boot)
        row = leaderboard_row(backbone, result)
        columns = [validation_columns(read_metrics(f), f / METRICS_JSON, SUMMARY_METRICS) for f in group]
        row.update(mean_validation(pd.DataFrame(columns), SUMMARY_METRICS))
        row.update(runs=len(group), preset=read_config(group[0]).preset)
        rows.append(row)
    return pd.DataFrame(rows).sort_values("macro_roc_auc", ascending=False).reset_index(drop=True)


def weights_label(weights: str) -> str:
    """How a run's backbone started: `imagenet` (Keras' download or cache), `imagenet (file)` (Keras' ImageNet
    file given by path or weights_dir), `random`, or the name of another weights file."""
    if Path(weights).name in {bb.weights_file for bb in BACKBONES.values() if bb.weights_file}:
        return "imagenet (file)"
    return {"imagenet": "imagenet", "none": "random"}.get(weights, Path(weights).name)


def failed_runs(report_dir: str | Path) -> dict[str, str]:
    """Backbone name -> error, for every run of a sweep whose status says it failed."""
    out = {}
    for run in sorted(path for path in Path(report_dir).iterdir() if path.is_dir()):
        status = read_status(run)
        if status and status.get("status") != "done":
            out[run.name] = status.get("error") or status.get("status", "")
    return out


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table: value [low, high] per metric, beside the study's figures; on a synthetic
    set with masks, the share of Grad-CAM mass inside the lungs (and the lungs' share of the image) and the share of
    pneumonia images whose Grad-CAM peak lies inside them. A backbone run several times shows the metrics of its
    mean predictions [CI], then the mean ± SD over its runs, and the number of runs. Beside ROC-AUC, sensitivity,
    specificity and accuracy, when some run recorded them, the validation metric and its drop (VALIDATION_NOTE; run
    several times: their means over the runs). Three-class runs: `_three_class_markdown`."""
    if "macro_roc_auc" in board:
        return _three_class_markdown(board)
    masks = "gradcam_in_lungs" in board and board["gradcam_in_lungs"].notna().any()
    runs = "runs" in board
    kinds = all(f"sensitivity_{k}" in board for k in KINDS)
    validation = VALIDATION_SHOWN if has_validation(board) else ()
    shown = [(m, v) for m in LEADERBOARD_METRICS for v in (False, True) if not v or m in validation]
    extra = " sensitivity: bacterial / viral |" * kinds + (" Grad-CAM in lungs: mass (area), peak |" if masks else "")
    lines = [
        "| backbone | weights | "
        + "runs | " * runs
        + " | ".join(f"val. {m} (drop)" if v else m for m, v in shown)
        + " | TN/FP/FN/TP | study acc. / wF1 |"
        + extra,
        "|---" * (len(shown) + 4 + masks + runs + kinds) + "|",
    ]
    for _, row in board.iterrows():
        cells = [
            _validation_cell(row, m) if v else _cell(row, m) + (f" ({_spread(row, m)})" if runs else "")
            for m, v in shown
        ]
        confusion = "/".join(str(int(row[k])) for k in ("tn", "fp", "fn", "tp"))
        study = BACKBONES[row["backbone"]].study_result if row["backbone"] in BACKBONES else None
        published = f"{study[0]:.4f} / {study[1]:.4f}" if study else ""
        line = (
            f"| {row['backbone']} | {row.get('weights', '')} | "
            + (f"{row['runs']} | " if runs else "")
            + " | ".join(cells)
        )
        line += f" | {confusion} | {published} |"
        if kinds:
            line += " " + " / ".join(_cell(row, f"sensitivity_{k}") for k in KINDS) + " |"
        if masks:
            measured = not pd.isna(row["gradcam_in_lungs"])
            peak = row.get("gradcam_peak_in_lungs", float("nan"))
            peak = "n/a" if pd.isna(peak) else f"{peak:.2f}"
            line += f" {row['gradcam_in_lungs']:.2f} ({row['lung_area']:.2f}), {peak} |" if measured else " |"
        lines.append(line)
    return "\n".join(lines)


def _three_class_markdown(board: pd.DataFrame) -> str:
    """The three-class leaderboard as a Markdown table: value [low, high] per metric; beside each summary metric,
    when some run recorded it, its value on validation and the drop (test minus validation)."""
    validation = SUMMARY_METRICS if has_validation(board) else ()
    shown = [(m, v) for m in THREE_CLASS_METRICS for v in (False, True) if not v or m in validation]
    header = " | ".join(f"val. {m} (drop)" if v else m for m, v in shown)
    lines = [f"| backbone | runs | {header} |", "|---" * (len(shown) + 2) + "|"]
    for _, row in board.iterrows():
        cells = [_validation_cell(row, m) if v else _cell(row, m) for m, v in shown]
        lines.append(f"| {row['backbone']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _validation_cell(row: pd.Series, metric: str) -> str:
    """`value [low, high] (drop)` of a metric on validation, the drop signed (test minus validation)."""
    drop = row[f"{metric}_drop"]
    return _cell(row, f"val_{metric}") + ("" if pd.isna(drop) else f" ({drop:+.3f})")


def _spread(row: pd.Series, metric: str) -> str:
    """`mean ± SD` of a metric over a backbone's runs (one run: no SD)."""
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f}" if pd.isna(sd) else f"{mean:.3f} ± {sd:.3f}"


def _cell(row: pd.Series, metric: str) -> str:
    """`value [low, high]` of a leaderboard row's metric, `n/a` without a value."""
    if pd.isna(row[metric]):
        return "n/a"
    return format_interval({"value": row[metric], "low": row[f"{metric}_low"], "high": row[f"{metric}_high"]})


def reference_table(report_dir: str | Path, references: list, n_boot: int = 1000) -> pd.DataFrame:
    """Each backbone of a report (its `mean_predictions`) against each reference predictions file (e.g. the study's
    `VGG19 results.csv`) image by image (`pairwise.versus_references`)."""
    _binary_only(report_dir, "the comparison with reference predictions")
    return pairwise.versus_references(mean_predictions(report_dir), references, n_boot)


def comparison_table(report_dir: str | Path, n_boot: int = 1000) -> pd.DataFrame:
    """McNemar and paired-bootstrap ROC-AUC difference for every pair of backbones, on their `mean_predictions`
    (a backbone run several times: its runs' mean P(pneumonia), labelled at their mean threshold)."""
    return pairwise.every_pair(mean_predictions(report_dir), n_boot)


def build_report(report_dir: str | Path, references: list = ()) -> str:
    """Write leaderboard.csv/.md, comparison.csv, comparison figures and summary.md; return the summary. With
    `references` (predictions files such as the study's), also each backbone against each file, in
    reference_comparison.csv and the summary. Three-class runs: the leaderboard and summary.md. The files are moved
    into place together once all are written (`fileio.atomic_files`)."""
    report_dir = Path(report_dir)
    versus = reference_table(report_dir, list(references)) if references else pd.DataFrame()
    task = report_task(report_dir)
    with unclaimed_on_refusal(owned_dir(report_dir, "sweep", "REPORT_DIR")):
        claim_dir(report_dir, "sweep")
        with atomic_files(report_dir) as into:
            return _write_report(report_dir, task, versus, into)


def _write_report(report_dir: Path, task: str, versus: pd.DataFrame, into: Path) -> str:
    """`build_report`'s files of a sweep, written into `into`; returns the summary."""
    board = leaderboard(report_dir)
    write_csv(into / LEADERBOARD_CSV, board)
    table = leaderboard_markdown(board)
    write_text(into / LEADERBOARD_MD, table + "\n")
    if task == "three_class":
        summary = "\n".join([*_summary_head(report_dir, task, board), "", table, ""])
        write_text(into / SUMMARY_MD, summary)
        return summary
    comparison = comparison_table(report_dir)
    if not comparison.empty:
        write_csv(into / COMPARISON_CSV, comparison)
    runs = run_table(report_dir)
    write_csv(into / RUNS_CSV, runs)
    for name in COMPARISON_FIGURES:
        comparison_figure(name, report_dir, board, into)
    if repeated(runs):
        for name, frame in mean_predictions(report_dir).items():
            write_csv(into / MEAN_PREDICTIONS / f"{name}.csv", frame)
    if not versus.empty:
        write_csv(into / REFERENCE_CSV, versus)
    summary = _summary(report_dir, board, comparison, table, versus)
    write_text(into / SUMMARY_MD, summary)
    return summary


def _summary(report_dir: Path, board: pd.DataFrame, comparison: pd.DataFrame, table: str, versus: pd.DataFrame) -> str:
    """summary.md of a binary sweep: what was run, the leaderboard, significant differences, reference predictions
    and failures."""
    lines = [*_summary_head(report_dir, "binary", board), "", table, ""]
    if not comparison.empty:
        lines += ["## Pairwise comparisons", "", comparison.round(4).to_markdown(index=False), ""]
    if not versus.empty:
        table = versus.round(4).to_markdown(index=False)
        lines += ["## Against reference predictions", "", pairwise.REFERENCE_NOTE, "", table, ""]
    failures = failed_runs(report_dir)
    if failures:
        lines += ["## Failed runs", ""] + [f"- {name}: {error}" for name, error in failures.items()] + [""]
    return "\n".join(lines)


def _summary_head(report_dir: Path, task: str, board: pd.DataFrame) -> list[str]:
    """summary.md's title and the lines that say what its leaderboard shows."""
    best, n_runs = board.iloc[0], int(board["runs"].sum()) if "runs" in board else len(board)
    if task == "three_class":
        lines = [
            f"# Sweep report: {report_dir.name} (three classes: normal, bacterial, viral)",
            "",
            f"{len(board)} backbone(s), {n_runs} finished run(s). Best macro ROC-AUC: "
            f"**{best['backbone']}** {best['macro_roc_auc']:.3f}.",
            "Test metrics of the argmax class; one-vs-rest ROC-AUCs; 95 % CIs by patient bootstrap.",
        ]
    else:
        lines = [
            f"# Sweep report: {report_dir.name}",
            "",
            f"{len(board)} backbone(s), {n_runs} finished run(s). "
            f"Best ROC-AUC: **{best['backbone']}** {_cell(best, 'roc_auc')}.",
            "Metrics on the test set at each run's validation-chosen threshold; 95 % CIs by patient bootstrap.",
        ]
    if "runs" in board and task == "binary":
        lines += [
            "A backbone run several times (seeds, folds): the metrics of its runs' mean predictions at their mean",
            "threshold, with the bootstrap CI (test sampling), then the mean ± SD over its runs (training variance).",
            "Pairwise comparisons use the mean predictions.",
        ]
    if has_validation(board):
        several = " (a backbone run several times: their means over its runs)" if "runs" in board else ""
        lines.append(f"{VALIDATION_NOTE}{several}.")
    return lines


def comparison_figure(
    name: str, report_dir: str | Path, board: pd.DataFrame | None = None, into: str | Path | None = None
):
    """Draw one of COMPARISON_FIGURES from the report's runs (`board`: its leaderboard, when already made), save it
    under INTO/figures/ (default REPORT_DIR/figures/) and return it."""
    path = figure_path(into or report_dir, name)
    _binary_only(report_dir, f"the figure {name}")
    if name == "roc_overlay":
        return compare_plots.plot_roc_overlay(mean_predictions(report_dir), title=ROC_TITLE, path=path)
    if name == "metric_bars":
        board = leaderboard(report_dir) if board is None else board
        return compare_plots.plot_metric_bars(board, title="Test metrics with 95 % CIs", path=path)
    if name == "run_spread":
        return compare_plots.plot_run_spread(run_table(report_dir), title=SPREAD_TITLE, path=path)
    raise InputError(f"unknown figure {name!r} (known: {', '.join(COMPARISON_FIGURES)})")


def study_comparison(report_dir: str | Path) -> pd.DataFrame:
    """Our accuracy and F1 at 0.5 (the mean over a backbone's runs) beside the study's published accuracy and
    weighted F1, per backbone."""
    _binary_only(report_dir, "the study comparison")
    rows = []
    for run in finished_runs(report_dir).values():
        half, backbone = read_metrics(run)["at_0.5"], read_config(run).backbone
        rows.append(
            {
                "backbone": backbone,
                "accuracy at 0.5": half["accuracy"]["value"],
                "F1 at 0.5": half["f1"]["value"],
                "ROC-AUC": half["roc_auc"]["value"],
            }
        )
    table = pd.DataFrame(rows).groupby("backbone", sort=False).mean()
    study = [
        BACKBONES[b].study_result if b in BACKBONES and BACKBONES[b].study_result else (None, None) for b in table.index
    ]
    table["study accuracy"], table["study weighted F1"] = [s[0] for s in study], [s[1] for s in study]
    return table


def recipe_difference(report_dir: str | Path, other_dir: str | Path) -> pd.DataFrame:
    """Per backbone run in both sweeps: each leaderboard metric of `report_dir` minus that of `other_dir`."""
    mine, other = leaderboard(report_dir).set_index("backbone"), leaderboard(other_dir).set_index("backbone")
    shared = mine.index.intersection(other.index)
    metrics = list(LEADERBOARD_METRICS)
    return (mine.loc[shared, metrics] - other.loc[shared, metrics]).add_suffix(" difference")
