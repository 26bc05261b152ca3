"""A run's evaluation: its test set scored at the threshold chosen on validation into the run's files, a finished
run scored on a labelled dataset it never saw (external validation) or on its own test set again with its model
adapted to the test images (`xraylib.adapt`), its threshold rules compared, and its validation images scored under
the catalogue of acquisition changes (`xraylib.acquisition`)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xraylib import runs
from xraylib.calibration import correct_prior, cross_fitted, prevalence_rule
from xraylib.config import RunConfig
from xraylib.errors import InputError, check_memory
from xraylib.fileio import claim_dir, owned_dir, write_csv, write_json
from xraylib.inference import frozen_outputs, frozen_split, predict_probabilities
from xraylib.metrics import TITLES, over_changed_copies, threshold_rules
from xraylib.plot_style import REPORT_DIGITS, format_interval
from xraylib.prediction_files import (
    evaluate_file,
    sensitivity_by_kind_of_file,
    tidy_predictions,
)

if TYPE_CHECKING:
    from xraylib.prepare import PreparedData


def predictions_frame(
    rows: pd.DataFrame, p: np.ndarray, threshold: float, raw: np.ndarray | None = None
) -> pd.DataFrame:
    """The predictions.csv table: file, patient, label, p_pneumonia, predicted, subtype, path; with `raw`, the
    model's uncalibrated probabilities too (p_uncalibrated)."""
    frame = pd.DataFrame(
        {
            "file": rows["file"],
            "patient": rows["patient"],
            "label": rows["label"],
            "p_pneumonia": p.astype(float),
            "predicted": np.where(p >= threshold, "pneumonia", "normal"),
            "subtype": rows["subtype"],
            "path": rows["path"],
        }
    )
    if raw is not None:
        frame["p_uncalibrated"] = raw.astype(float)
    return frame


def run_metrics(
    cfg: RunConfig,
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    subtypes=None,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    pool: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict:
    """metrics.json: every metric with its patient-bootstrap CI, at the validation threshold and at 0.5; with the
    images' `subtypes`, the sensitivity among bacterial and among viral pneumonia images too; with the `validation`
    images' (labels, calibrated probabilities, patients), their metrics at the same threshold and the drop to test,
    and the threshold's 95 % interval over resamples of their patients (`threshold.low`, `threshold.high`). With
    `pool`, the (labels, calibrated probabilities, patients) the threshold was chosen on instead (the validation
    images with their acquisition-changed copies, `threshold=youden:acquisition`), the interval is counted on it and
    the pool's size and the plain Youden threshold of the validation images are recorded beside it."""
    from xraylib.data import pneumonia_kind
    from xraylib.metrics import binary_metrics_ci, choose_threshold, sensitivity_by_kind, threshold_interval

    kinds = [pneumonia_kind(s) for s in subtypes] if subtypes is not None else [""] * len(y)
    by_kind = sensitivity_by_kind(y, p >= threshold, kinds, groups, cfg.bootstrap, cfg.seed)
    result = {
        **runs.metrics_header(cfg, threshold),
        "n_test_images": int(len(y)),
        "n_test_patients": int(len(set(groups))),
        "at_threshold": binary_metrics_ci(y, p, groups, threshold, n_boot=cfg.bootstrap, seed=cfg.seed),
        "at_0.5": binary_metrics_ci(y, p, groups, 0.5, n_boot=cfg.bootstrap, seed=cfg.seed),
        "sensitivity_by_kind": by_kind,
    }
    if validation is not None:
        val_y, val_p, val_groups = validation
        chosen = threshold_interval(*(pool or validation), cfg.threshold, cfg.bootstrap, cfg.seed)
        result["threshold"].update(low=chosen["low"], high=chosen["high"])
        if pool is not None:
            result["threshold"].update(
                n_images=len(pool[0]), youden_on_validation=choose_threshold(val_y, val_p, "youden")
            )
        entry = binary_metrics_ci(val_y, val_p, val_groups, threshold, n_boot=cfg.bootstrap, seed=cfg.seed)
        result["validation"] = runs.validation_entry(entry, result["at_threshold"], float(np.mean(val_y)))
    return result


def evaluate_run(
    model, prepared: PreparedData, cfg: RunConfig, out: str | Path, source_dir: str | Path | None = None
) -> dict:
    """Calibrate on validation (then correct for the `prevalence` setting), choose the threshold on the calibrated
    validation probabilities (`threshold=youden:acquisition`: with those of their acquisition-changed copies),
    predict the test set (with `adapt=batchnorm` by the model aligned to the test images first, `xraylib.adapt`,
    and left so), write predictions.csv, val_predictions.csv and metrics.json (three classes:
    `three_class.evaluate_run`). A model with BatchNormalization layers after its frozen part also gets
    their inputs' moments on the training images written to `source_dir` (default `out`): adapt_source.npz."""
    from xraylib import acquisition, adapt
    from xraylib.calibration import correct_prior, effect, fit_calibration

    out = Path(out)
    computed = frozen_outputs(model, prepared, cfg) or {}
    source = adapt.source_moments(frozen_split(model, cfg), cfg, computed.get("train"), source_dir or out)
    if cfg.task == "three_class":
        from xraylib import three_class

        val_raw, test_raw = (
            predict_probabilities(model, prepared.images[s], cfg, computed.get(s)) for s in ("val", "test")
        )
        return three_class.evaluate_run(prepared, cfg, out, val_raw, test_raw)
    val_raw = predict_probabilities(model, prepared.images["val"], cfg, computed.get("val"))
    fitted = fit_calibration(prepared.labels["val"], val_raw, cfg.calibration)
    val_groups = prepared.rows("val")["patient"].to_numpy()
    pool = (prepared.labels["val"], val_raw, val_groups)  # what the threshold is chosen on
    pooled = over_changed_copies(cfg.threshold)
    if pooled:
        pool = acquisition.with_changed_copies(model, prepared.images["val"], *pool, cfg)
    test_rows = prepared.rows("test")
    test_raw = unadapted = predict_probabilities(model, prepared.images["test"], cfg, computed.get("test"))
    if cfg.adapt != "none":  # the test images are the new site; validation is the training site's, left as it is
        applied = adapt.align(frozen_split(model, cfg), cfg, computed.get("test"), source)
        test_raw = predict_probabilities(model, prepared.images["test"], cfg, computed.get("test"))
    labelled = ((prepared.labels["val"], val_raw), (prepared.labels["test"], test_raw))
    calibration, threshold, prevalence = correct_prior(fitted, cfg.prevalence, cfg.threshold, pool[:2], labelled[1])
    val_p, test_p = calibration(val_raw), calibration(test_raw)
    raw = cfg.calibration != "none"
    frame = predictions_frame(test_rows, test_p, threshold, test_raw if raw else None)
    write_csv(out / runs.PREDICTIONS, frame)
    val_frame = predictions_frame(prepared.rows("val"), val_p, threshold, val_raw if raw else None)
    write_csv(out / runs.VAL_PREDICTIONS, val_frame)
    groups, subtypes = test_rows["patient"].to_numpy(), test_rows["subtype"].to_numpy()
    validation = (prepared.labels["val"], val_p, val_groups)
    calibrated_pool = (pool[0], calibration(pool[1]), pool[2]) if pooled else None
    result = run_metrics(cfg, prepared.labels["test"], test_p, groups, threshold, subtypes, validation, calibrated_pool)
    result["calibration"] = {
        **calibration.to_json(),
        "fitted_on": "validation",
        "n_images": len(val_raw),
        "validation": effect(prepared.labels["val"], val_raw, fitted),
        "test": effect(prepared.labels["test"], test_raw, fitted),
        **({"prevalence": prevalence} if prevalence else {}),
    }
    if cfg.adapt != "none":
        result["adaptation"] = adapt.run_entry(applied, fitted, cfg, pool[:2], labelled[1], unadapted, groups)
    write_json(out / runs.METRICS, result)
    return result


ADAPTED_METRICS = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy", "accuracy", "ece")  # format_adapted


def external_folder(run_dir: Path, data: Path) -> Path:
    """Where `evaluate --run` writes by default: RUN_DIR/external/<the dataset folder's name> (a labels CSV given:
    the name of its folder)."""
    return run_dir / "external" / (data.resolve().parent.name if data.is_file() else data.resolve().name)


def evaluate_on(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    adapt: bool = False,
) -> dict:
    """Predict every labelled image of `data` (any layout `build_index` reads: CoronaHack, Kermany, NORMAL/ and
    PNEUMONIA/ folders, or a CSV of file names and labels; every split) with the run's model, label them at the run's
    validation-chosen threshold, and write predictions.csv, metrics.json (a run's schema, with CIs by patient
    bootstrap; an external set's `patients` says where its patient ids came from) and the figures into `out`.
    Returns `evaluate_file`'s result for them. A three-class run: `three_class.score_run` (the argmax class).
    An unreadable image stops it with its name: no partial metrics. `adapt`: the model is first aligned to the
    images of `data`, unlabelled (`adapt.adapt_predictor`; binary runs), and metrics.json says so (`adaptation`)."""
    from xraylib.data import build_index
    from xraylib.predict import load_predictor, predict_files

    run_dir, data = Path(run_dir), Path(data)
    require_finished_run(run_dir)
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    if adapt:
        runs.binary_run_only(run_dir, "--adapt")
    index = build_index(data, missing="drop")
    if index.attrs["layout"] == "csv" and index.attrs["dropped"]:  # the user's own list: scoring fewer misleads
        raise InputError(
            f"--data {data}: {index.attrs['dropped']} image(s) its labels list are missing (first: "
            f"{index.attrs['dropped_first']}); restore them, or remove them from the labels"
        )
    if index.empty:
        raise InputError(f"--data {data}: no image found")
    out = Path(out or external_folder(run_dir, data))
    folder = (data if data.is_dir() else data.parent).resolve()
    if out.resolve() in (run_dir.resolve(), folder) or folder in out.resolve().parents:
        raise InputError(f"--out {out}: must not be the run folder or lie in the dataset")
    owned_dir(out, "evaluation")
    check_memory(16 * n_boot * len(index), f"--bootstrap {n_boot} over {len(index)} images", "use fewer resamples")
    cfg, predictor = runs.read_config(run_dir), load_predictor(run_dir / runs.MODEL)
    if predictor.three_class:
        from xraylib import three_class

        index = three_class.labelled(index, data)
    table = predict_files(predictor, list(index["path"]), adapt=adapt)
    bad = table[table["error"] != ""]
    if len(bad):
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"{bad['path'].iloc[0]}: {bad['error'].iloc[0]}{more}; remove it from {data} to evaluate")
    claim_dir(out, "evaluation")
    if predictor.three_class:
        result = three_class.score_run(run_dir, cfg, data, index, table, out, n_boot, seed)
        _draw_figures(run_dir, cfg.task, predictor.model, out)
        return result
    frame = predictions_frame(index, table["p_pneumonia"].to_numpy(), predictor.threshold)
    predictions = write_csv(out / runs.PREDICTIONS, frame)
    source = f"the run's {run_dir / runs.METRICS}, chosen on {runs.threshold_pool(cfg.threshold)}"
    result = evaluate_file(predictions, n_boot, seed, threshold=(predictor.threshold, source))
    result.update(run=str(run_dir.resolve()), data=str(data.resolve()), layout=index.attrs["layout"])
    if "patients" in index.attrs:  # an external set: where its patient ids came from
        result["patients"] = index.attrs["patients"]
    result["sensitivity_by_kind"] = sensitivity_by_kind_of_file(predictions, data, n_boot, seed, index)
    if adapt:
        result["adaptation"] = table.attrs["adaptation"]
    write_json(out / runs.METRICS, _run_schema(result, cfg, predictor.threshold))
    _draw_figures(run_dir, cfg.task, predictor.model, out)
    return result


def _draw_figures(run_dir: Path, task: str, model, out: Path) -> None:
    """The run's figures (all but its training curves; `task`: the run's) of its predictions on other data, in
    `out`."""
    from xraylib.run_figures import RUN_FIGURES, run_figure

    for name in RUN_FIGURES[task][1:]:
        run_figure(name, run_dir, model=model, results=out)


def _run_schema(result: dict, cfg, threshold: float) -> dict:
    """metrics.json in the layout a run writes (so report and figures read it), with where the images came from."""
    return {
        **runs.metrics_header(cfg, threshold),
        "run": result["run"],
        "data": result["data"],
        "layout": result["layout"],
        **({"patients": result["patients"]} if "patients" in result else {}),
        "n_test_images": result["n_images"],
        "n_test_patients": result["n_patients"],
        "at_threshold": result["at_threshold"],
        "at_0.5": result["at_0.5"],
        "sensitivity_by_kind": result["sensitivity_by_kind"],
        **({"adaptation": result["adaptation"]} if "adaptation" in result else {}),
    }


def evaluate_adapted(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """A finished binary run's own test set scored again with its model adapted to the test images (the run
    setting adapt=batchnorm), from model.keras and the data folder in config.json, without training: writes
    predictions.csv, val_predictions.csv (unadapted, as the run's) and metrics.json (with `adaptation`) into `out`
    (default RUN_DIR/adapted), and the run's adapt_source.npz. Returns the metrics."""
    from xraylib.config import adapt_refusal
    from xraylib.models import load_model

    run_dir = Path(run_dir)
    require_finished_run(run_dir)
    runs.binary_run_only(run_dir, "--adapt")
    cfg = dataclasses.replace(runs.read_config(run_dir), adapt="batchnorm")
    if adapt_refusal(cfg.fine_tune):
        raise InputError(f"--adapt: {adapt_refusal(cfg.fine_tune)}")
    out = Path(out or run_dir / runs.ADAPTED)
    if out.resolve() == run_dir.resolve():
        raise InputError(f"--out {out}: must not be the run folder (its own predictions stay unadapted)")
    owned_dir(out, "evaluation")
    cfg, prepared = run_and_data(run_dir, "--adapt", cfg)
    result = evaluate_run(load_model(run_dir / runs.MODEL), prepared, cfg, claim_dir(out, "evaluation"), run_dir)
    return {**result, "out": str(out)}


def require_finished_run(run_dir: Path) -> None:
    """An InputError unless `run_dir` holds a finished run's model, metrics and config."""
    for name in (runs.MODEL, runs.METRICS, runs.CONFIG):
        if not (run_dir / name).is_file():
            raise InputError(f"--run {run_dir}: {name} is missing (not a finished run of `xraylib train`)")


def run_and_data(run_dir: Path, flag: str, cfg: RunConfig | None = None) -> tuple[RunConfig, PreparedData]:
    """A finished binary run's settings (`cfg`, default its config.json's) and its own data, split as it was
    trained, from the data folder config.json names; an InputError (naming `flag`) when that folder is gone or its
    images changed. Sets the precision policy the run computed (and cached) its trunk with. The caller has checked
    the run (`require_finished_run`, `runs.binary_run_only`)."""
    from xraylib.fileio import read_json
    from xraylib.prepare import prepare_data
    from xraylib.strategy import distribution_strategy, precision_policy

    cfg = cfg if cfg is not None else runs.read_config(run_dir)
    data = read_json(run_dir / runs.CONFIG).get("data") or {}
    if not Path(str(data.get("dir", ""))).is_dir():
        raise InputError(f"{flag}: the run's data folder {data.get('dir')!r} (config.json) is not there")
    prepared = prepare_data(data["dir"], cfg)
    if prepared.fingerprint != data.get("fingerprint"):
        raise InputError(f"{flag}: the data in {data['dir']} changed since the run was trained (fingerprint)")
    precision_policy(cfg, distribution_strategy(cfg.strategy))
    return cfg, prepared


def format_adapted(result: dict) -> str:
    """`evaluate_adapted`'s metrics as a table: each headline test metric unadapted and adapted, with its CI."""
    from xraylib.adapt import format_entry

    entry = result["adaptation"]
    unadapted = entry["unadapted"]
    rows = {TITLES[name]: (unadapted["at_threshold"][name], result["at_threshold"][name]) for name in ADAPTED_METRICS}
    rows = {title: [format_interval(e, REPORT_DIGITS) for e in pair] for title, pair in rows.items()}
    rows["threshold"] = [f"{t:.4f}" for t in (unadapted["threshold"], result["threshold"]["value"])]
    lines = [*format_entry(entry), "", f"{'test metric':<28}{'unadapted':<28}adapted"]
    lines += [f"{title:<28}{a:<28}{b}" for title, (a, b) in rows.items()]
    return "\n".join([*lines, "", f"predictions and metrics.json written to {result['out']}"])


def threshold_rules_of_run(
    run_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0, prevalence: str | float = "none"
) -> dict:
    """`metrics.threshold_rules` of a finished binary run: each rule chosen on its val_predictions.csv, scored on
    its predictions.csv with patient-bootstrap CIs. `prevalence` (P, or `estimate` by EM on the unlabelled test
    predictions) first re-weights the run's calibrated probabilities to that prevalence (`correct_prior`), as
    training with `--set prevalence=...` would have; its entry says what it did."""
    run_dir = Path(run_dir)
    runs.binary_run_only(run_dir, "--thresholds")
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    val, test = (tidy_predictions(run_dir / name) for name in (runs.VAL_PREDICTIONS, runs.PREDICTIONS))
    val_p, test_p, entry = val["p"].to_numpy(), test["p"].to_numpy(), {}
    if prevalence_rule(prevalence) != "none":
        if "p_raw" not in val or "p_raw" not in test:
            raise InputError(f"--prevalence {prevalence}: {run_dir}'s predictions lack p_uncalibrated: rerun the run")
        fitted = dataclasses.replace(runs.read_calibration(run_dir), shift=0.0)  # the run's own correction undone
        val_xy, test_xy = ((f["y_true"].to_numpy(), f["p_raw"].to_numpy()) for f in (val, test))
        corrected, _, entry = correct_prior(fitted, prevalence, "youden", val_xy, test_xy)
        val_p, test_p = corrected(val_xy[1]), corrected(test_xy[1])
    val_xy, test_xy = (val["y_true"], val_p), (test["y_true"], test_p)
    rules = threshold_rules(val_xy, test_xy, test["patient"], n_boot=n_boot, seed=seed, val_groups=val["patient"])
    return {
        "run": str(run_dir.resolve()),
        "n_validation_images": len(val),
        "n_test_images": len(test),
        "n_test_patients": int(test["patient"].nunique()),
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "patient"},
        "prevalence": entry,
        "rules": rules,
    }


def format_threshold_rules(result: dict) -> str:
    """`threshold_rules_of_run`'s result as a table: one row per rule."""
    boot = result["bootstrap"]
    lines = [
        f"run: {result['run']}",
        f"thresholds chosen on its {result['n_validation_images']} validation images, scored on its "
        f"{result['n_test_images']} test images ({result['n_test_patients']} patients)",
        f"95 % CIs: bootstrap over patients, {boot['resamples']} resamples, seed {boot['seed']} (the threshold's: "
        "over the validation patients)",
        *_prevalence_lines(result["prevalence"]),
        "",
        f"{'rule':<18}{'threshold':<26}{'val. sens.':<12}{'val. spec.':<12}"
        + "".join(f"{'test ' + name:<26}" for name in ("sensitivity", "specificity", "accuracy")).rstrip(),
    ]
    for row in result["rules"]:
        val = "".join(f"{'undefined' if v is None else f'{v:.4f}':<12}" for v in row["validation"].values())
        test = "".join(f"{format_interval(entry, REPORT_DIGITS):<26}" for entry in row["test"].values())
        chosen = format_interval(row["threshold_interval"], REPORT_DIGITS)
        lines.append(f"{row['rule']:<18}{chosen:<26}{val}{test}".rstrip())
    return "\n".join(lines)


def _prevalence_lines(entry: dict) -> list[str]:
    """What a prior-shift correction did, for `format_threshold_rules` (nothing without one)."""
    if not entry:
        return []
    how = "estimated by EM on the unlabelled test predictions" if entry["estimated"] else "given"
    ece = entry["test"]["ece"]
    line = (
        f"probabilities re-weighted from the validation prevalence {entry['validation']:.4f} to "
        f"{entry['target']:.4f} ({how}): test ECE {ece['before']:.4f} -> {ece['after']:.4f}"
    )
    return [line] + [f"note: {entry['note']}"] * bool(entry["note"])


def calibrations_of_run(run_dir: str | os.PathLike, folds: int = 5, repeats: int = 20, seed: int = 0) -> dict:
    """`calibration.cross_fitted` on a finished binary run's validation predictions: which calibration method
    serves patients it was not fitted on, decided without the test set."""
    run_dir = Path(run_dir)
    runs.binary_run_only(run_dir, "--calibrations")
    val = tidy_predictions(run_dir / runs.VAL_PREDICTIONS)
    if "p_raw" not in val:
        raise InputError(f"--calibrations: {run_dir / runs.VAL_PREDICTIONS} lacks p_uncalibrated: rerun the run")
    if val["patient"].nunique() < 2 * folds or val["y_true"].nunique() < 2:
        raise InputError(f"--calibrations: {run_dir}'s validation set is too small for {folds} folds of patients")
    scores = cross_fitted(val["y_true"], val["p_raw"], val["patient"], folds, repeats, seed)
    return {
        "run": str(run_dir.resolve()),
        "n_validation_images": len(val),
        "n_validation_patients": int(val["patient"].nunique()),
        "cross_fitting": {"folds": folds, "repeats": repeats, "seed": seed, "unit": "patient"},
        "used": runs.read_calibration(run_dir).method,
        "held_out": scores,
    }


def format_calibrations(result: dict) -> str:
    """`calibrations_of_run`'s result as a table: one row per method."""
    how = result["cross_fitting"]
    lines = [
        f"run: {result['run']} (calibration used: {result['used']})",
        f"each method fitted on {how['folds'] - 1} of {how['folds']} folds of its {result['n_validation_patients']} "
        f"validation patients ({result['n_validation_images']} images), scored on the fold left out, "
        f"{how['repeats']} shuffles (seed {how['seed']}); the test set is not read",
        "",
        f"{'method':<14}{'Brier':<10}{'ECE':<10}log loss",
    ]
    for method, s in result["held_out"].items():
        lines.append(f"{method:<14}{s['brier']:<10.4f}{s['ece']:<10.4f}{s['log_loss']:.4f}")
    return "\n".join(lines)


ACQUISITION_HEADLINE = ("roc_auc", "sensitivity", "specificity")  # per change, at the run's threshold
IN_SAMPLE = "its threshold was chosen on these changed copies: the sensitivity and specificity below are in-sample"


def acquisition_of_run(run_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0) -> dict:
    """A finished binary run's validation images, unchanged and through each change of the catalogue, scored by its
    model (calibrated as the run was) at its validation-chosen threshold, with patient-bootstrap CIs; the means over
    the changes of ROC-AUC, sensitivity and specificity, and the run's own validation ROC-AUC (`metrics.json`) beside
    the unchanged row's. Written to RUN_DIR/acquisition.json and returned; each change's progress goes to stderr."""
    from xraylib.acquisition import CHANGES, NOISE_SEED, UNCHANGED, changed_probabilities
    from xraylib.fileio import output_dir
    from xraylib.metrics import binary_metrics_ci
    from xraylib.models import load_model

    run_dir = Path(run_dir)
    require_finished_run(run_dir)
    runs.binary_run_only(run_dir, "--acquisition")
    output_dir(run_dir, "--run")
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    cfg, prepared = run_and_data(run_dir, "--acquisition")
    model, calibration = load_model(run_dir / runs.MODEL), runs.read_calibration(run_dir)
    threshold = runs.read_threshold(run_dir)
    images, y = prepared.images["val"], prepared.labels["val"]
    groups = prepared.rows("val")["patient"].to_numpy()
    check_memory(16 * n_boot * len(y), f"--bootstrap {n_boot} over {len(y)} images", "use fewer resamples")
    scored = {}
    unchanged = ((UNCHANGED, predict_probabilities(model, images, cfg)),)
    for name, raw in itertools.chain(unchanged, changed_probabilities(model, images, cfg)):
        p = calibration(raw)
        entry = binary_metrics_ci(y, p, groups, threshold, n_boot=n_boot, seed=seed)
        scored[name] = {
            **{metric: entry[metric] for metric in ACQUISITION_HEADLINE},
            "mean_p_normal": float(p[y == 0].mean()),
        }
        print(f"{name}: validation ROC-AUC {entry['roc_auc']['value']:.4f}", file=sys.stderr, flush=True)
    own = runs.validation_of(runs.read_metrics(run_dir), run_dir)
    result = {
        "run": str(run_dir.resolve()),
        "threshold": threshold,
        "threshold_chosen_on": runs.threshold_pool(cfg.threshold),
        "run_validation_roc_auc": own.get("roc_auc", {}).get("value"),
        "n_validation_images": int(len(y)),
        "n_validation_patients": int(len(set(groups))),
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "patient"},
        "noise_seed": NOISE_SEED,
        "changes": scored,
        "mean_over_changes": {
            metric: float(np.mean([scored[name][metric]["value"] for name in CHANGES]))
            for metric in ACQUISITION_HEADLINE
        },
    }
    write_json(run_dir / runs.ACQUISITION, result)
    return result


def _value(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.4f}"


def format_acquisition(result: dict) -> str:
    """`acquisition_of_run`'s result as a table: one row per change, then the means over the changes."""
    lines = [
        f"run: {result['run']}",
        f"its {result['n_validation_images']} validation images ({result['n_validation_patients']} patients), each "
        f"change applied before the model; threshold {result['threshold']:.4f} (the run's, chosen on its "
        f"{result['threshold_chosen_on']})",
        *([IN_SAMPLE] if result["threshold_chosen_on"] != "validation" else []),
        f"95 % CIs: bootstrap over patients, {result['bootstrap']['resamples']} resamples, seed "
        f"{result['bootstrap']['seed']}",
        f"the run's own validation ROC-AUC (metrics.json): {_value(result['run_validation_roc_auc'])}",
        "",
        f"{'change':<18}{'ROC-AUC':<26}{'sensitivity':<26}{'specificity':<26}mean P(pneumonia) of normals",
    ]
    for name, entry in result["changes"].items():
        cells = "".join(f"{format_interval(entry[m], REPORT_DIGITS):<26}" for m in ACQUISITION_HEADLINE)
        lines.append(f"{name:<18}{cells}{entry['mean_p_normal']:.4f}")
    means = result["mean_over_changes"]
    lines.append(f"{'mean of changes':<18}" + "".join(f"{means[m]:<26.4f}" for m in ACQUISITION_HEADLINE))
    return "\n".join([*lines, "", f"written to {Path(result['run']) / runs.ACQUISITION}"])
