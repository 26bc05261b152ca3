"""A run's figures and tables, drawn from its folder (see `runs`); the comparison of runs (`xraylib report`) is in
`leaderboard`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import data_plots, gradcam_plots, multiclass_plots, plots, runs
from xraylib.config import RunConfig
from xraylib.data import pneumonia_codes
from xraylib.errors import InputError
from xraylib.multiclass import (
    CALIBRATION_METRICS,
    PER_CLASS_METRICS,
    SUMMARY_METRICS,
    THREE_CLASSES,
    TITLES,
    class_codes,
)
from xraylib.plot_style import format_ci
from xraylib.three_class import COLUMNS, RAW_COLUMNS

RUN_FIGURES = {  # a run's figures, by task
    "binary": ("training_curves", "confusion_matrix", "roc_pr", "reliability", "examples", "gradcam"),
    "three_class": ("training_curves", "confusion_matrix", "roc_ovr", "reliability", "examples", "gradcam"),
}


def metrics_table(result: dict) -> pd.DataFrame:
    """metrics.json as a table: each metric with its 95 % CI; binary runs at the chosen threshold and at 0.5,
    three-class runs each summary metric, then each class's one-vs-rest ROC-AUC, recall, precision and F1."""
    if result.get("task") == "three_class":
        return _three_class_metrics_table(result["test"])
    rows = []
    for name, entry in result["at_threshold"].items():
        if not isinstance(entry, dict) or "value" not in entry:
            continue
        half = result["at_0.5"].get(name, {})
        rows.append(
            {
                "metric": name,
                "value": entry["value"],
                "95% CI": format_ci(entry),
                "at 0.5": half.get("value"),
                "at 0.5, 95% CI": format_ci(half),
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def _three_class_metrics_table(test: dict) -> pd.DataFrame:
    rows = [(TITLES[name], test[name]) for name in SUMMARY_METRICS + CALIBRATION_METRICS]
    rows += [(f"{m}: {label}", entry[m]) for label, entry in test["per_class"].items() for m in PER_CLASS_METRICS]
    table = pd.DataFrame([{"metric": name, "value": e["value"], "95% CI": format_ci(e)} for name, e in rows])
    return table.set_index("metric")


def validation_table(result: dict) -> pd.DataFrame:
    """Validation beside test, at the run's threshold (three classes: the argmax): each metric with its 95 % CI on
    both, and the drop (test minus validation); the title says the images, patients and prevalence of each."""
    three = result.get("task") == "three_class"
    test = result["test"] if three else result["at_threshold"]
    validation = runs.validation_of(result, runs.METRICS)
    rows = [
        {
            "metric": name,
            "validation": validation.get(name, {}).get("value"),
            "validation 95% CI": format_ci(validation.get(name, {})),
            "test": entry["value"],
            "test 95% CI": format_ci(entry),
            "drop (test - validation)": validation.get("drop", {}).get(name),
        }
        for name, entry in test.items()
        if isinstance(entry, dict) and "value" in entry
    ]
    table = pd.DataFrame(rows).set_index("metric")
    if three:
        share, at = {name: e["n_images"] / test["n_images"] for name, e in test["per_class"].items()}, "argmax"
    else:
        share = (test["confusion"]["tp"] + test["confusion"]["fn"]) / test["n_images"]
        at = f"threshold {runs.threshold_of(result, runs.METRICS):.3f}"
    if not validation:
        title = "no validation metrics: this run's metrics.json predates them"
    else:
        title = _subset_title("validation", validation, validation["prevalence"])
    table.attrs["title"] = f"at the {at}: {title}; {_subset_title('test', test, share)}"
    return table


def _subset_title(subset: str, entry: dict, prevalence: float | dict[str, float]) -> str:
    """`subset: N images, P patients, pneumonia 62 %` (three classes: each class's share)."""
    shares = prevalence if isinstance(prevalence, dict) else {"pneumonia": prevalence}
    percent = ", ".join(f"{name} {100 * share:.0f} %" for name, share in shares.items())
    return f"{subset}: {entry['n_images']} images, {entry['n_patients']} patients, {percent}"


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
    """Draw one of the run's RUN_FIGURES (by its task) from its files, save it under figures/, and return it.
    `results`: a folder of the run's predictions.csv and metrics.json on other data (`xraylib evaluate --run`),
    which gets the figures. gradcam_images=0 asks for no Grad-CAM grid (None)."""
    run_dir = Path(run_dir)
    results = Path(results or run_dir)
    cfg = runs.read_config(run_dir)
    if name not in RUN_FIGURES[cfg.task]:
        raise InputError(f"unknown figure {name!r} of a {cfg.task} run (known: {', '.join(RUN_FIGURES[cfg.task])})")
    path = runs.figure_path(results, name)
    title = f"{cfg.backbone} ({cfg.preset})" + (f" on {results.name}" if results != run_dir else "")
    if name == "training_curves":
        history = runs.read_history(run_dir)
        panels = plots.THREE_CLASS_PANELS if cfg.task == "three_class" else plots.TRAINING_PANELS
        return plots.plot_training_curves(history, monitor=cfg.monitor, title=title, path=path, panels=panels)
    if name == "gradcam" and not cfg.gradcam_images:
        return None
    draw = _three_class_figure if cfg.task == "three_class" else _binary_figure
    return draw(name, runs.run_predictions(results), results, run_dir, cfg, title, path, model)


def _binary_figure(name, frame, results, run_dir, cfg, title, path, model):
    """One figure of a binary run from its predictions (`frame`) and the metrics.json in `results`."""
    result = runs.read_metrics(results)
    threshold = runs.threshold_of(result, results / runs.METRICS)
    y, p = pneumonia_codes(frame["label"]), frame["p_pneumonia"].to_numpy(float)
    if name == "confusion_matrix":
        title = f"{title}, threshold {threshold:.3f}"
        return plots.plot_confusion_matrix(y, pneumonia_codes(frame["predicted"]), title=title, path=path)
    if name == "roc_pr":
        metrics = result["at_threshold"]
        return plots.plot_roc_pr(y, p, threshold, groups=frame["patient"], metrics=metrics, title=title, path=path)
    if name == "reliability":
        raw = frame["p_uncalibrated"].to_numpy(float) if "p_uncalibrated" in frame else None
        return plots.plot_reliability(y, p, title=title, path=path, p_uncalibrated=raw)
    if name == "examples":
        return plots.plot_examples(frame, seed=cfg.seed, threshold=threshold, title=title, path=path)
    sample = plots.sample_outcomes(frame, cfg.gradcam_images, seed=cfg.seed)  # the Grad-CAM grid
    titles = [
        f"true {t.title()} / pred {q.title()}\nP(pneumonia) = {pp:.2f}"
        for t, q, pp in zip(sample["label"], sample["predicted"], sample["p_pneumonia"], strict=True)
    ]
    errors = list(sample["label"] != sample["predicted"])
    raw_threshold = runs.read_calibration(run_dir).raw_threshold(threshold)  # gradcam sees the model's own output
    title = f"Grad-CAM: {cfg.backbone} ({cfg.preset})"
    return _gradcam_grid(run_dir, cfg, sample, titles, errors, model, path, title, threshold=raw_threshold)


def _three_class_figure(name, frame, results, run_dir, cfg, title, path, model):
    """One figure of a three-class run from its predictions (`frame`) and the metrics.json in `results`."""
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
    sample = multiclass_plots.sample_cells(frame, cfg.gradcam_images, seed=cfg.seed)  # the Grad-CAM grid
    titles = [
        f"true {THREE_CLASSES[t].title()} / pred {THREE_CLASSES[q].title()}\np = {getattr(row, COLUMNS[q]):.2f}"
        for t, q, row in zip(sample["true_code"], sample["pred_code"], sample.itertuples(), strict=True)
    ]
    errors = list(sample["true_code"] != sample["pred_code"])
    title, classes = f"Grad-CAM of the predicted class: {cfg.backbone} ({cfg.preset})", sample["pred_code"].to_numpy()
    return _gradcam_grid(run_dir, cfg, sample, titles, errors, model, path, title, classes=classes)


def _gradcam_grid(run_dir: Path, cfg: RunConfig, sample: pd.DataFrame, titles, errors, model, path, title, **target):
    """Grad-CAM heatmaps over the `sample` of test images, towards `target` (`explain.gradcam`'s threshold of a
    binary model, or each image's class), as one grid."""
    from xraylib.explain import gradcam
    from xraylib.images import load_gray
    from xraylib.models import load_model

    if model is None:
        model = load_model(run_dir / runs.MODEL)
    images = np.stack([load_gray(p, cfg.image_size) for p in sample["path"]]).astype(np.float32)
    heatmaps = gradcam(model, images[..., None], **target)
    return gradcam_plots.plot_gradcam_grid(images, heatmaps, titles=titles, errors=errors, title=title, path=path)


def save_run_figures(run_dir: str | Path, model=None) -> dict:
    """Every figure of a run, saved under `run_dir/figures/` (the Grad-CAM grid unless gradcam_images=0)."""
    names = RUN_FIGURES[runs.read_config(run_dir).task]
    return {name: run_figure(name, run_dir, model=model) for name in names}


def data_figure(name: str, prepared, cfg: RunConfig, out_dir: str | Path):
    """The run's data figures: `class_distribution` of its index, or `augmentations` of one training image."""
    path = runs.figure_path(out_dir, name)
    if name == "class_distribution":
        return data_plots.plot_class_distribution(prepared.index, path=path)
    if name == "augmentations":
        from xraylib.layers import AUGMENTATION_TEXT, fit_site_tables
        from xraylib.models import grey_steps

        image = prepared.images["train"][:1].astype(np.float32)
        steps = grey_steps(cfg, augment=True)  # drawn as the model trains, even when this run does not augment
        fit_site_tables(steps, prepared.images["train"])
        used = "Training augmentation"
        if not cfg.augment:
            used = "The study's augmentation, not used by this run (augment=false)"
        before = []  # what the model does before it augments: the draws show what it trains on
        if cfg.noise:
            before.append(f"Gaussian noise σ {cfg.noise:g}")
        if cfg.equalize != "none":
            before.append(f"{cfg.equalize} equalization")
        if cfg.blur:
            before.append(f"Gaussian blur σ {cfg.blur:g} px")
        title = f"{used}: {AUGMENTATION_TEXT}" + (f", after {' then '.join(before)}" if before else "")
        shown, draws = image, [image] * 7
        for step in steps:
            draws = [step(draw, training=True) for draw in draws]
            if step.name in ("blur", "equalize"):  # the original is shown as the model sees it, without random draws
                shown = step(shown)
        draws = [np.asarray(draw, dtype=np.float32)[0, ..., 0] for draw in draws]  # float32 whatever the policy
        shown = np.asarray(shown, dtype=np.float32)[0, ..., 0]
        return data_plots.plot_augmentations(shown, draws, title=title, path=path)
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
