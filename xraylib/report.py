"""What runs and sweeps leave behind: a run's figures and tables, and the comparison of several runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import compare_plots, data_plots, gradcam_plots, plots, three_class
from xraylib.backbones import BACKBONES
from xraylib.config import RunConfig, load_config
from xraylib.errors import InputError
from xraylib.explain import localization_means
from xraylib.fileio import read_json, write_csv, write_text

RUN_FIGURES = ("training_curves", "confusion_matrix", "roc_pr", "reliability", "examples", "gradcam")
KINDS = ("bacterial", "viral")  # the pneumonia kinds whose sensitivity the leaderboard shows
ROC_TITLE = "Test ROC curves"
SPREAD_TITLE = "Test metrics of each run (seeds, folds) per backbone"
LEADERBOARD_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "accuracy")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path} is missing: the run has not finished")
    return read_json(path)


def run_config(run_dir: str | Path) -> RunConfig:
    """The resolved configuration of a run, read from its config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{path} is missing: not a run directory")
    return load_config(path)


def _labels(series: pd.Series) -> np.ndarray:
    return (series == "pneumonia").to_numpy(int)


def metrics_table(result: dict) -> pd.DataFrame:
    """metrics.json as a table: each metric at the chosen threshold and at 0.5, with 95 % CIs (three classes:
    `three_class.metrics_table`)."""
    if result.get("task") == "three_class":
        return three_class.metrics_table(result)
    rows = []
    for name, entry in result["at_threshold"].items():
        if not isinstance(entry, dict) or "value" not in entry:
            continue
        half = result["at_0.5"].get(name, {})
        rows.append(
            {
                "metric": name,
                "value": entry["value"],
                "95% CI": _interval(entry),
                "at 0.5": half.get("value"),
                "at 0.5, 95% CI": _interval(half),
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def calibration_table(result: dict) -> pd.DataFrame:
    """metrics.json's calibration: Brier score, ECE and log loss before and after it, on validation and test."""
    cal = result.get("calibration") or {}
    rows = [
        {"subset": subset, "metric": name, "before": entry["before"], "after": entry["after"]}
        for subset in ("validation", "test")
        for name, entry in cal.get(subset, {}).items()
    ]
    table = pd.DataFrame(rows, columns=["subset", "metric", "before", "after"]).set_index(["subset", "metric"])
    applied = f"slope {cal['slope']:.4g}, intercept {cal['intercept']:.4g}" if cal.get("applied") else "not applied"
    note = f": {cal['note']}" if cal.get("note") else ""
    table.attrs["title"] = f"calibration {cal.get('method', 'none')} ({applied}){note}"
    return table


def _interval(entry: dict) -> str:
    if entry.get("low") is None or entry.get("high") is None:
        return ""
    return f"{entry['low']:.3f}–{entry['high']:.3f}"


def subset_table(config: dict) -> pd.DataFrame:
    """Images, patients and classes of the train / val / test subsets of a run (from its config.json)."""
    return pd.DataFrame(config["subsets"]).T


def model_summary(model) -> pd.Series:
    """A compact summary of a built model: parameters, layers and the Grad-CAM layer."""
    from xraylib.explain import last_conv_layer

    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return pd.Series(
        {
            "parameters": f"{total:,}",
            "trainable parameters": f"{trainable:,}",
            "layers": len(model.layers),
            "input": str(tuple(model.inputs[0].shape)),
            "output": str(tuple(model.outputs[0].shape)),
            "Grad-CAM layer": last_conv_layer(model),
        }
    )


def run_figure(name: str, run_dir: str | Path, model=None, results: str | Path | None = None):
    """Draw one of RUN_FIGURES from a run's files, save it under figures/, and return it. `results`: a folder of
    the run's predictions.csv and metrics.json on other data (`xraylib evaluate --run`), which gets the figures."""
    run_dir = Path(run_dir)
    results = Path(results or run_dir)
    cfg = run_config(run_dir)
    path = results / "figures" / f"{name}.png"
    title = f"{cfg.backbone} ({cfg.preset})" + (f" on {results.name}" if results != run_dir else "")
    if name == "training_curves":
        history = pd.read_csv(run_dir / "history.csv")
        panels = plots.THREE_CLASS_PANELS if cfg.task == "three_class" else plots.TRAINING_PANELS
        return plots.plot_training_curves(history, monitor=cfg.monitor, title=title, path=path, panels=panels)
    if cfg.task == "three_class":
        return three_class.run_figure(name, results, cfg, title, model, run_dir)
    frame = pd.read_csv(results / "predictions.csv")
    result = _read_json(results / "metrics.json")
    threshold = result["threshold"]["value"]
    y, p = _labels(frame["label"]), frame["p_pneumonia"].to_numpy(float)
    if name == "confusion_matrix":
        title = f"{title}, threshold {threshold:.3f}"
        return plots.plot_confusion_matrix(y, _labels(frame["predicted"]), title=title, path=path)
    if name == "roc_pr":
        metrics = result["at_threshold"]
        return plots.plot_roc_pr(y, p, threshold, groups=frame["patient"], metrics=metrics, title=title, path=path)
    if name == "reliability":
        raw = frame["p_uncalibrated"].to_numpy(float) if "p_uncalibrated" in frame else None
        return plots.plot_reliability(y, p, title=title, path=path, p_uncalibrated=raw)
    if name == "examples":
        return plots.plot_examples(frame, seed=cfg.seed, threshold=threshold, title=title, path=path)
    if name == "gradcam":  # gradcam_images=0 asks for no Grad-CAM grid
        return gradcam_figure(run_dir, cfg, frame, threshold, model, path) if cfg.gradcam_images else None
    raise InputError(f"unknown figure {name!r} (known: {', '.join(RUN_FIGURES)})")


def gradcam_figure(run_dir: Path, cfg: RunConfig, frame: pd.DataFrame, threshold: float, model=None, path=None):
    """Grad-CAM heatmaps over test images (rows of `frame`) sampled across TP / TN / FP / FN."""
    from xraylib.calibration import read_calibration
    from xraylib.explain import gradcam
    from xraylib.images import load_gray
    from xraylib.models import load_model

    if model is None:
        model = load_model(run_dir / "model.keras")
    sample = plots.sample_outcomes(frame, cfg.gradcam_images, seed=cfg.seed)
    images = np.stack([load_gray(p, cfg.image_size) for p in sample["path"]]).astype(np.float32)
    raw_threshold = read_calibration(run_dir).raw_threshold(threshold)  # gradcam sees the model's own output
    heatmaps = gradcam(model, images[..., None], threshold=raw_threshold)
    titles = [
        f"true {t.title()} / pred {q.title()}\nP(pneumonia) = {pp:.2f}"
        for t, q, pp in zip(sample["label"], sample["predicted"], sample["p_pneumonia"], strict=True)
    ]
    errors = list(sample["label"] != sample["predicted"])
    title = f"Grad-CAM: {cfg.backbone} ({cfg.preset})"
    return gradcam_plots.plot_gradcam_grid(images, heatmaps, titles=titles, errors=errors, title=title, path=path)


def save_run_figures(run_dir: str | Path, model=None) -> dict:
    """Every figure of a run, saved under `run_dir/figures/` (the Grad-CAM grid unless gradcam_images=0)."""
    names = three_class.RUN_FIGURES if run_config(run_dir).task == "three_class" else RUN_FIGURES
    return {name: run_figure(name, run_dir, model=model) for name in names}


def finished_runs(report_dir: str | Path) -> dict[str, Path]:
    """Run name -> run directory, for every run of a sweep that wrote its metrics."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise InputError(f"{report_dir} is not a directory")
    runs = {p.parent.name: p.parent for p in sorted(report_dir.glob("*/metrics.json"))}
    return runs


def report_task(report_dir: str | Path) -> str:
    """The task of a sweep's finished runs (binary or three_class); a folder mixing both is refused."""
    tasks = {name: run_config(run).task for name, run in finished_runs(report_dir).items()}
    if len(set(tasks.values())) > 1:
        three = ", ".join(name for name, task in tasks.items() if task == "three_class")
        raise InputError(f"{report_dir} mixes binary and three-class runs ({three}): give each task its own folder")
    return next(iter(tasks.values()), "binary")


def _binary_only(report_dir: str | Path, what: str) -> None:
    if report_task(report_dir) != "binary":
        raise InputError(f"{report_dir}: {what} compares binary runs; its runs are three-class (see the leaderboard)")


def run_table(report_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: run, backbone, seed, fold, metrics with CIs, threshold, time; by ROC-AUC."""
    from xraylib.metrics import leaderboard_row

    _binary_only(report_dir, "the run table")
    rows = []
    for name, run in finished_runs(report_dir).items():
        result, cfg = _read_json(run / "metrics.json"), run_config(run)
        try:
            row = {"run": name, **leaderboard_row(cfg.backbone, result["at_threshold"])}
            row["threshold"] = result["threshold"]["value"]
        except (KeyError, TypeError):
            raise InputError(f"{run / 'metrics.json'} lacks the run's metrics: rerun the run, or remove it") from None
        row.update(kind_columns(result.get("sensitivity_by_kind", {})))
        row.update(seed=cfg.seed, fold=cfg.fold if cfg.folds else None, preset=result.get("preset", ""))
        row["weights"] = weights_label(cfg.weights)
        status = run / "status.json"
        row["seconds"] = read_json(status).get("seconds") if status.is_file() else None
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
    times, each image's mean P(pneumonia) over its runs, labelled at the mean of their thresholds."""
    runs, folders = run_table(report_dir), finished_runs(report_dir)
    out = {}
    for backbone, group in runs.groupby("backbone", sort=False):
        frames = [pd.read_csv(folders[name] / "predictions.csv") for name in group["run"]]
        if len(frames) == 1:
            out[backbone] = frames[0]
            continue
        first = frames[0].set_index("file")
        p = pd.concat([f.set_index("file")["p_pneumonia"] for f in frames], axis=1, join="inner")
        if len(p) != len(first) or any(len(f) != len(first) for f in frames):
            raise InputError(f"the runs of {backbone} are not on the same test images: rerun them on one dataset")
        mean, threshold = p.mean(axis=1), float(group["threshold"].mean())
        frame = first.loc[p.index].assign(
            p_pneumonia=mean, predicted=np.where(mean >= threshold, "pneumonia", "normal")
        )
        out[backbone] = frame.reset_index()[frames[0].columns]
    return out


def leaderboard(report_dir: str | Path, n_boot: int = 1000) -> pd.DataFrame:
    """One row per backbone, sorted by ROC-AUC: run once, its run's metrics with CIs; run several times (seeds,
    folds), the metrics of its mean predictions with patient-bootstrap CIs (`n_boot` resamples: test-set sampling
    variance) beside each metric's mean and SD across its runs (`m_mean`, `m_sd`: training variance)."""
    from xraylib.data import pneumonia_kind
    from xraylib.metrics import METRICS, evaluate, leaderboard_row, sensitivity_by_kind

    if report_task(report_dir) == "three_class":
        return three_class.leaderboard(finished_runs(report_dir), n_boot)
    runs = run_table(report_dir)
    if not repeated(runs):
        return runs
    rows = []
    for backbone, frame in mean_predictions(report_dir).items():
        group = runs[runs["backbone"] == backbone]
        y, threshold = _labels(frame["label"]), float(group["threshold"].mean())
        result = evaluate(y, frame["p_pneumonia"], frame["patient"], threshold, n_boot=n_boot)
        row = leaderboard_row(backbone, result)
        if "subtype" in frame:
            kinds = [pneumonia_kind(x) for x in frame["subtype"]]
            pred = frame["p_pneumonia"].to_numpy() >= threshold
            row.update(kind_columns(sensitivity_by_kind(y, pred, kinds, frame["patient"], n_boot)))
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_sd"] = group[metric].mean(), group[metric].std(ddof=1)
        row.update(runs=len(group), threshold=threshold, preset=group["preset"].iloc[0])
        row.update(weights=group["weights"].iloc[0], seconds=group["seconds"].sum())
        row.update(group.reindex(columns=["gradcam_in_lungs", "lung_area", "gradcam_peak_in_lungs"]).mean())
        rows.append(row)
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False).reset_index(drop=True)


def weights_label(weights: str) -> str:
    """How a run's backbone started: `imagenet` (Keras' download or cache), `imagenet (file)` (Keras' ImageNet
    file given by path or weights_dir), `random`, or the name of another weights file."""
    if Path(weights).name in {bb.weights_file for bb in BACKBONES.values() if bb.weights_file}:
        return "imagenet (file)"
    return {"imagenet": "imagenet", "none": "random"}.get(weights, Path(weights).name)


def failed_runs(report_dir: str | Path) -> dict[str, str]:
    """Backbone name -> error, for every run of a sweep whose status says it failed."""
    out = {}
    for status in sorted(Path(report_dir).glob("*/status.json")):
        data = read_json(status)
        if data.get("status") != "done":
            out[status.parent.name] = data.get("error") or data.get("status", "")
    return out


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table: value [low, high] per metric, beside the study's figures; on a synthetic
    set with masks, the share of Grad-CAM mass inside the lungs (and the lungs' share of the image) and the share of
    pneumonia images whose Grad-CAM peak lies inside them. A backbone run several times shows the metrics of its
    mean predictions [CI], then the mean ± SD over its runs, and the number of runs."""
    masks = "gradcam_in_lungs" in board and board["gradcam_in_lungs"].notna().any()
    runs = "runs" in board
    kinds = all(f"sensitivity_{k}" in board for k in KINDS)
    extra = " sensitivity: bacterial / viral |" * kinds + (" Grad-CAM in lungs: mass (area), peak |" if masks else "")
    lines = [
        "| backbone | weights | "
        + "runs | " * runs
        + " | ".join(LEADERBOARD_METRICS)
        + " | TN/FP/FN/TP | study acc. / wF1 |"
        + extra,
        "|---" * (len(LEADERBOARD_METRICS) + 4 + masks + runs + kinds) + "|",
    ]
    for _, row in board.iterrows():
        cells = [_cell(row, m) + (f" ({_spread(row, m)})" if runs else "") for m in LEADERBOARD_METRICS]
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


def _spread(row: pd.Series, metric: str) -> str:
    """`mean ± SD` of a metric over a backbone's runs."""
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    return "n/a" if pd.isna(mean) else f"{mean:.3f} ± {sd:.3f}"


def _cell(row: pd.Series, metric: str) -> str:
    value, low, high = row[metric], row[f"{metric}_low"], row[f"{metric}_high"]
    if pd.isna(value):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if not pd.isna(low) else f"{value:.3f}"


def comparison_table(report_dir: str | Path, n_boot: int = 1000) -> pd.DataFrame:
    """McNemar and paired-bootstrap ROC-AUC difference for every pair of backbones, on their `mean_predictions`
    (a backbone run several times: its runs' mean P(pneumonia), labelled at their mean threshold)."""
    from xraylib.metrics import compare

    frames = {name: _tidy(frame) for name, frame in mean_predictions(report_dir).items()}
    return compare(frames, n_boot=n_boot) if len(frames) > 1 else pd.DataFrame()


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """A predictions.csv frame in read_predictions' columns: file, patient, y_true, p, y_pred."""
    return pd.DataFrame(
        {
            "file": frame["file"],
            "patient": frame["patient"].astype(str),
            "y_true": _labels(frame["label"]),
            "p": frame["p_pneumonia"].astype(float),
            "y_pred": _labels(frame["predicted"]),
        }
    )


def build_report(report_dir: str | Path) -> str:
    """Write leaderboard.csv/.md, comparison.csv, comparison figures and summary.md; return the summary. Three-class
    runs: `three_class.build_report` (leaderboard and summary)."""
    report_dir = Path(report_dir)
    if report_task(report_dir) == "three_class":
        return three_class.build_report(report_dir, finished_runs(report_dir))
    board = leaderboard(report_dir)
    write_csv(report_dir / "leaderboard.csv", board)
    table = leaderboard_markdown(board)
    write_text(report_dir / "leaderboard.md", table + "\n")
    comparison = comparison_table(report_dir)
    if not comparison.empty:
        write_csv(report_dir / "comparison.csv", comparison)
    figures = report_dir / "figures"
    compare_plots.plot_roc_overlay(mean_predictions(report_dir), title=ROC_TITLE, path=figures / "roc_overlay.png")
    compare_plots.plot_metric_bars(board, title="Test metrics with 95 % CIs", path=figures / "metric_bars.png")
    runs = run_table(report_dir)
    write_csv(report_dir / "runs.csv", runs)
    compare_plots.plot_run_spread(runs, title=SPREAD_TITLE, path=figures / "run_spread.png")
    if repeated(runs):
        for name, frame in mean_predictions(report_dir).items():
            write_csv(report_dir / "mean_predictions" / f"{name}.csv", frame)
    summary = _summary(report_dir, board, comparison, table)
    write_text(report_dir / "summary.md", summary)
    return summary


def _summary(report_dir: Path, board: pd.DataFrame, comparison: pd.DataFrame, table: str) -> str:
    """summary.md: what was run, the leaderboard, significant differences and failures."""
    best = board.iloc[0]
    lines = [
        f"# Sweep report: {report_dir.name}",
        "",
        f"{len(board)} backbone(s), {int(board['runs'].sum()) if 'runs' in board else len(board)} finished run(s). "
        f"Best ROC-AUC: **{best['backbone']}** {_cell(best, 'roc_auc')}.",
        "Metrics on the test set at each run's validation-chosen threshold; 95 % CIs by patient bootstrap.",
    ]
    if "runs" in board:
        lines += [
            "A backbone run several times (seeds, folds): the metrics of its runs' mean predictions at their mean",
            "threshold, with the bootstrap CI (test sampling), then the mean ± SD over its runs (training variance).",
            "Pairwise comparisons use the mean predictions.",
        ]
    lines += [
        "",
        table,
        "",
    ]
    if not comparison.empty:
        lines += ["## Pairwise comparisons", "", comparison.round(4).to_markdown(index=False), ""]
    failures = failed_runs(report_dir)
    if failures:
        lines += ["## Failed runs", ""] + [f"- {name}: {error}" for name, error in failures.items()] + [""]
    return "\n".join(lines)


def data_figure(name: str, prepared, cfg: RunConfig, out_dir: str | Path):
    """The run's data figures: `class_distribution` of its index, or `augmentations` of one training image."""
    path = Path(out_dir) / "figures" / f"{name}.png"
    if name == "class_distribution":
        return data_plots.plot_class_distribution(prepared.index, path=path)
    if name == "augmentations":
        from xraylib.layers import augmentation

        image = prepared.images["train"][:1].astype(np.float32)
        layer = augmentation(cfg.seed)
        draws = [np.asarray(layer(image, training=True))[0, ..., 0] for _ in range(7)]
        title = "Training augmentation: zoom ±10 %, shift ±10 %, brightness × [0.5, 1.3]"
        return data_plots.plot_augmentations(image[0, ..., 0], draws, title=title, path=path)
    raise InputError(f"unknown figure {name!r} (known: class_distribution, augmentations)")


def dataset_figure(name: str, index: pd.DataFrame, out_dir: str | Path):
    """Dataset exploration: class_distribution, samples, image_sizes or images_per_patient of an index."""
    draw = {
        "class_distribution": data_plots.plot_class_distribution,
        "samples": data_plots.plot_samples,
        "image_sizes": data_plots.plot_image_sizes,
        "images_per_patient": data_plots.plot_images_per_patient,
    }
    if name not in draw:
        raise InputError(f"unknown figure {name!r} (known: {', '.join(draw)})")
    return draw[name](index, path=Path(out_dir) / f"{name}.png")


def comparison_figure(name: str, report_dir: str | Path):
    """Show one of the sweep's comparison figures (`roc_overlay`, `metric_bars`), redrawn from its runs."""
    report_dir = Path(report_dir)
    path = report_dir / "figures" / f"{name}.png"
    _binary_only(report_dir, f"the figure {name}")
    if name == "roc_overlay":
        return compare_plots.plot_roc_overlay(mean_predictions(report_dir), title=ROC_TITLE, path=path)
    if name == "metric_bars":
        return compare_plots.plot_metric_bars(leaderboard(report_dir), title="Test metrics with 95 % CIs", path=path)
    if name == "run_spread":
        return compare_plots.plot_run_spread(run_table(report_dir), title=SPREAD_TITLE, path=path)
    raise InputError(f"unknown figure {name!r} (known: roc_overlay, metric_bars, run_spread)")


def study_comparison(report_dir: str | Path) -> pd.DataFrame:
    """Our accuracy and F1 at 0.5 (the mean over a backbone's runs) beside the study's published accuracy and
    weighted F1, per backbone."""
    _binary_only(report_dir, "the study comparison")
    rows = []
    for run in finished_runs(report_dir).values():
        half, backbone = _read_json(run / "metrics.json")["at_0.5"], run_config(run).backbone
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
