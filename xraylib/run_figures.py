"""A run's figures and tables, drawn from its folder (see `runs`); the comparison of runs (`xraylib report`) is in
`leaderboard`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import data_plots, gradcam_plots, plots, runs, three_class
from xraylib.config import RunConfig
from xraylib.data import pneumonia_codes
from xraylib.errors import InputError
from xraylib.plot_style import format_ci

RUN_FIGURES = ("training_curves", "confusion_matrix", "roc_pr", "reliability", "examples", "gradcam")


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
                "95% CI": format_ci(entry),
                "at 0.5": half.get("value"),
                "at 0.5, 95% CI": format_ci(half),
            }
        )
    return pd.DataFrame(rows).set_index("metric")


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
    """Draw one of RUN_FIGURES from a run's files, save it under figures/, and return it. `results`: a folder of
    the run's predictions.csv and metrics.json on other data (`xraylib evaluate --run`), which gets the figures."""
    run_dir = Path(run_dir)
    results = Path(results or run_dir)
    cfg = runs.read_config(run_dir)
    path = runs.figure_path(results, name)
    title = f"{cfg.backbone} ({cfg.preset})" + (f" on {results.name}" if results != run_dir else "")
    if name == "training_curves":
        history = runs.read_history(run_dir)
        panels = plots.THREE_CLASS_PANELS if cfg.task == "three_class" else plots.TRAINING_PANELS
        return plots.plot_training_curves(history, monitor=cfg.monitor, title=title, path=path, panels=panels)
    if cfg.task == "three_class":
        return three_class.run_figure(name, results, cfg, title, model, run_dir)
    frame = runs.run_predictions(results)
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
    if name == "gradcam":  # gradcam_images=0 asks for no Grad-CAM grid
        return gradcam_figure(run_dir, cfg, frame, threshold, model, path) if cfg.gradcam_images else None
    raise InputError(f"unknown figure {name!r} (known: {', '.join(RUN_FIGURES)})")


def gradcam_figure(run_dir: Path, cfg: RunConfig, frame: pd.DataFrame, threshold: float, model=None, path=None):
    """Grad-CAM heatmaps over test images (rows of `frame`) sampled across TP / TN / FP / FN."""
    from xraylib.explain import gradcam
    from xraylib.images import load_gray
    from xraylib.models import load_model

    if model is None:
        model = load_model(run_dir / runs.MODEL)
    sample = plots.sample_outcomes(frame, cfg.gradcam_images, seed=cfg.seed)
    images = np.stack([load_gray(p, cfg.image_size) for p in sample["path"]]).astype(np.float32)
    raw_threshold = runs.read_calibration(run_dir).raw_threshold(threshold)  # gradcam sees the model's own output
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
    names = three_class.RUN_FIGURES if runs.read_config(run_dir).task == "three_class" else RUN_FIGURES
    return {name: run_figure(name, run_dir, model=model) for name in names}


def data_figure(name: str, prepared, cfg: RunConfig, out_dir: str | Path):
    """The run's data figures: `class_distribution` of its index, or `augmentations` of one training image."""
    path = runs.figure_path(out_dir, name)
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
