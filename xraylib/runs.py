"""The run folder: the names of its files, and the one reader or writer of each fact it holds.

A run folder (`xraylib train --out RUN_DIR`, or `REPORT_DIR/RUN` in a sweep) holds:

- `config.json`: the resolved settings (`run`), the data folder, its fingerprint and the count of images its
  metadata lists but it lacks, dropped, of them test images (`data`), the images, patients and classes of each
  subset (`subsets`) and the library versions (`versions`);
- `history.csv`: one row per epoch (metrics, learning rate, seconds, images/s); `timings.json`: where the time went;
- `model.keras`: the trained model (safe-mode loadable);
- `metrics.json`: the test metrics with 95 % CIs at the decision threshold (`at_threshold`) and at 0.5 (`at_0.5`),
  the threshold itself (`threshold.value`, chosen on validation), the calibration map (`calibration`), the
  sensitivity per pneumonia kind (`sensitivity_by_kind`) and the validation metrics at the same threshold with
  their drop to test (`validation`, see `validation_entry`);
- `predictions.csv`, `val_predictions.csv`: one row per test or validation image (`p_pneumonia` calibrated,
  `p_uncalibrated`, `predicted` at the threshold);
  a three-class run (`task=three_class`, see `xraylib.three_class`) has `p_normal`, `p_bacterial`, `p_viral` and the
  argmax class instead, and its metrics.json holds the three-class metrics under `test`;
- `adapt_source.npz` (`fine_tune=N` runs): the training images' per-channel input moments of each BatchNormalization
  layer after the frozen part, which `xraylib.adapt` aligns to a new site's images; `adapted/`: the run's test set
  scored again with that adaptation (`xraylib evaluate --run RUN_DIR --adapt`);
- `figures/*.png`, `gradcam_in_masks.csv`, `tensorboard/`, `mlflow.json` (tracker=mlflow);
- in a sweep: `status.json` (running, done, failed or interrupted, with seconds and error), `RUN.ipynb`, `RUN.html`
  and `RUN.log` (the executed notebook, its page, its kernel's log);
- `backup/` while training is unfinished (see `checkpoint`), and `finished.json`, written last.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib.calibration import Calibration, from_json
from xraylib.config import RunConfig, config_from_json
from xraylib.data import CLASSES
from xraylib.errors import InputError
from xraylib.fileio import atomic_path, read_json, write_json

CONFIG = "config.json"
HISTORY = "history.csv"
MODEL = "model.keras"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
TIMINGS = "timings.json"
STATUS = "status.json"
FINISHED = "finished.json"  # written last by `train` and the training notebook: a run is complete
FIGURES = "figures"
ADAPT_SOURCE = "adapt_source.npz"  # the source moments of `xraylib.adapt`
ADAPTED = "adapted"  # `evaluate --run RUN_DIR --adapt` writes here by default
ACQUISITION = "acquisition.json"  # `evaluate --run RUN_DIR --acquisition`: validation under acquisition changes
# a sweep's report folder, beside its run folders
LEADERBOARD_CSV, LEADERBOARD_MD, RUNS_CSV = "leaderboard.csv", "leaderboard.md", "runs.csv"
COMPARISON_CSV, SUMMARY_MD = "comparison.csv", "summary.md"
REFERENCE_CSV = "reference_comparison.csv"  # each backbone against reference predictions files (report --versus)
MEAN_PREDICTIONS = "mean_predictions"  # a backbone run several times: MEAN_PREDICTIONS/<backbone>.csv

NOTEBOOKS = resources.files("xraylib") / "notebooks"  # package data: in a clone, an editable install or a wheel
TRAIN_NOTEBOOK = NOTEBOOKS / "train_backbone.ipynb"
COMPARE_NOTEBOOK = NOTEBOOKS / "compare_backbones.ipynb"


def figure_path(folder: str | os.PathLike, name: str) -> Path:
    """Where a run's or a report's figure `name` is saved: FOLDER/figures/NAME.png."""
    return Path(folder) / FIGURES / f"{name}.png"


def notebook_path(run_dir: str | os.PathLike) -> Path:
    """A sweep run's executed notebook, RUN_DIR/RUN.ipynb; its page and kernel log share the stem (.html, .log)."""
    run_dir = Path(run_dir)
    return run_dir / f"{run_dir.name}.ipynb"


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    """The resolved configuration of a run, from its config.json."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise InputError(f"{path} is missing: not a run directory")
    return config_from_json(read_json(path), path)


def write_config(out: str | os.PathLike, config: dict, started: bool) -> None:
    """Write config.json; refuse a run folder whose training has `started` with other settings or other data (a
    run that failed before its first epoch does not block its own fix)."""
    path = Path(out) / CONFIG
    if path.is_file() and started:
        try:
            before = json.loads(path.read_text())
            previous, fingerprint = dict(before["run"]), before["data"]["fingerprint"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path} is unreadable: rerun with a new --out, or remove {out}") from None
        defaults = RunConfig().to_json()  # a setting newer than the run's config.json had its default there
        changed = [
            k for k, v in config["run"].items() if previous.get(k, defaults[k]) != v and k not in ("verbose", "tracker")
        ]
        if fingerprint != config["data"]["fingerprint"]:
            changed.append("data")
        if changed:
            raise InputError(f"{out} holds a run with other settings ({', '.join(changed)}): choose another --out")
    write_json(path, config)


def threshold_pool(rule: str) -> str:
    """What a binary run's threshold `rule` is chosen on, as metrics.json's `threshold.chosen_on` says it."""
    from xraylib.acquisition import CHANGES
    from xraylib.metrics import over_changed_copies

    return (
        f"validation with its copies through {len(CHANGES)} acquisition changes"
        if over_changed_copies(rule)
        else "validation"
    )


def metrics_header(cfg: RunConfig, threshold: float | None) -> dict:
    """The head of a run's metrics.json: backbone, preset, seed and the decision threshold chosen on validation
    (None: three classes, the argmax class is predicted)."""
    if threshold is None:
        chosen = {"rule": "argmax", "value": None, "chosen_on": "none: the predicted class is the argmax"}
    else:
        chosen = {"rule": cfg.threshold, "value": float(threshold), "chosen_on": threshold_pool(cfg.threshold)}
    return {"backbone": cfg.backbone, "preset": cfg.preset, "seed": cfg.seed, "threshold": chosen}


def validation_entry(validation: dict, test: dict, prevalence: float | dict[str, float]) -> dict:
    """metrics.json's `validation`: the metrics of the calibrated validation predictions at the test's threshold
    (each {value, low, high}, as in `test`), the validation prevalence (of pneumonia; three classes: of each class)
    and `drop`, each metric's test value minus its validation value."""
    drop = {}
    for name, entry in test.items():
        if isinstance(entry, dict) and "value" in entry:
            values = (entry["value"], validation[name]["value"])
            drop[name] = None if None in values else values[0] - values[1]
    return {**validation, "prevalence": prevalence, "drop": drop}


def validation_of(metrics: dict, source: str | os.PathLike) -> dict:
    """The `validation` entry of a metrics.json object (see `validation_entry`); `{}` for a run made before it was
    written; `source` names the file in errors."""
    entry = metrics.get("validation")
    if entry is None:
        return {}
    if not isinstance(entry, dict) or not isinstance(entry.get("drop"), dict):
        raise InputError(f"{source}: an unreadable validation entry: rerun the run, or remove it")
    return entry


VALIDATION_NOTE = (  # what a leaderboard's validation columns are
    "val. M (drop): the same metric on the validation images at the same threshold (the images the calibration "
    "and the threshold were fitted on), then the drop, test minus validation"
)


def validation_columns(metrics: dict, source: str | os.PathLike, names: Iterable[str]) -> dict[str, float]:
    """A run's validation metrics `names` as flat columns: val_M, val_M_low, val_M_high and M_drop (test minus
    validation); NaN where the run's metrics.json has none."""
    entry, out = validation_of(metrics, source), {}
    for name in names:
        value = entry.get(name) or {}
        cells = {f"val_{name}": value.get("value"), f"val_{name}_low": value.get("low")}
        cells.update({f"val_{name}_high": value.get("high"), f"{name}_drop": entry.get("drop", {}).get(name)})
        out.update({key: math.nan if v is None else float(v) for key, v in cells.items()})
    return out


def has_validation(board: pd.DataFrame) -> bool:
    """Whether some row of a table of `validation_columns` (a leaderboard) holds a validation metric."""
    return bool(board.filter(regex="^val_").notna().any().any())


def mean_validation(columns: pd.DataFrame, names: Iterable[str]) -> dict[str, float]:
    """Several runs' `validation_columns` (one row each) as one row: the mean over the runs of each validation
    metric and of its drop, without a CI (one run: its own, with its CI)."""
    out = {}
    for name in names:
        out[f"val_{name}"], out[f"{name}_drop"] = columns[f"val_{name}"].mean(), columns[f"{name}_drop"].mean()
        for end in ("_low", "_high"):
            out[f"val_{name}{end}"] = columns[f"val_{name}{end}"].iloc[0] if len(columns) == 1 else math.nan
    return out


def read_metrics(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a finished run."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise InputError(f"{path} is missing: the run has not finished")
    return read_json(path)


def stored_metrics(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a run, `{}` when there is none (a model file without its run)."""
    return read_metrics(run_dir) if (Path(run_dir) / METRICS).is_file() else {}


def threshold_of(metrics: dict, source: str | os.PathLike) -> float | None:
    """The decision threshold in a metrics.json object: None when there is no object or the run predicts the argmax
    class (three classes), NaN when it records an undefined one; `source` names it in errors."""
    if not metrics or (metrics.get("threshold") or {}).get("rule") == "argmax":
        return None
    try:
        value = float(metrics["threshold"]["value"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{source}: no readable threshold.value ({type(exc).__name__}: {exc})") from None
    if not 0.0 <= value <= 1.0 and not math.isnan(value):
        raise InputError(f"{source}: threshold.value {value} is not in [0, 1]")
    return value


def read_threshold(run_dir: str | os.PathLike) -> float | None:
    """The run's decision threshold (chosen on validation), None when the folder holds no metrics.json."""
    return threshold_of(stored_metrics(run_dir), Path(run_dir) / METRICS)


def calibration_of(metrics: dict, source: str | os.PathLike) -> Calibration:
    """The calibration map in a metrics.json object (the identity when there is none); `source` names it in errors."""
    return from_json(metrics.get("calibration"), source)


def read_calibration(run_dir: str | os.PathLike) -> Calibration:
    """The calibration map stored with a run (the identity when there is none)."""
    return calibration_of(stored_metrics(run_dir), Path(run_dir) / METRICS)


# the columns every reader of a predictions.csv needs: the binary task's, or the three-class task's
PREDICTION_COLUMNS = ({"file", "label", "p_pneumonia"}, {"file", "label"} | {f"p_{c}" for c in CLASSES["three_class"]})


def probabilities(values: pd.Series, column: str, path: str | os.PathLike) -> np.ndarray:
    """A probability column of a predictions file as floats; a non-number, a missing value or one outside [0, 1]
    (NaN and infinities included) is a one-line InputError naming the file, line, image and value."""
    p = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    given = values.notna().to_numpy() & (values.astype(str).str.strip() != "").to_numpy()
    bad = np.isnan(p) & given
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: column {column!r} has a non-numeric value {values.iloc[i]!r} on line {i + 2}")
    if np.isnan(p).any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(np.isnan(p))[:3])
        raise InputError(f"{path}: column {column!r} has {int(np.isnan(p).sum())} missing value(s) (line {lines})")
    outside = ~((p >= 0) & (p <= 1))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"{path}: column {column!r} has {int(outside.sum())} value(s) outside [0, 1] "
            f"(e.g. {float(p[i])!r} on line {i + 2})"
        )
    return p


def run_predictions(results: str | os.PathLike) -> pd.DataFrame:
    """predictions.csv of a run (or of an evaluation written to `results`); unreadable, without either task's
    columns, or with a probability (a p_* column) that is not a number in [0, 1]: a one-line InputError naming it."""
    path = Path(results) / PREDICTIONS
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
        raise InputError(f"{path} is unreadable ({type(exc).__name__}): rerun the run, or remove it") from None
    if not any(columns <= set(frame.columns) for columns in PREDICTION_COLUMNS):
        raise InputError(
            f"{path} lacks a run's columns (file, label and the probabilities): rerun the run, or remove it"
        )
    for column in (c for c in frame.columns if str(c).startswith("p_")):
        frame[column] = probabilities(frame[column], column, path)
    return frame


def mean_probabilities(frames: list[pd.DataFrame], columns: list[str], what: str) -> pd.DataFrame:
    """Several runs' predictions.csv tables of the same test images as one, indexed by file: the first run's rows
    with each probability column of `columns` that every run has averaged over the runs; one that only some runs
    have is left out. `what` names the runs in errors."""
    first = frames[0].set_index("file")
    if any(len(f) != len(first) or not f["file"].isin(first.index).all() for f in frames):
        raise InputError(f"the runs of {what} are not on the same test images: rerun them on one dataset")
    shared = [c for c in columns if all(c in f.columns for f in frames)]
    mean = first.drop(columns=[c for c in columns if c in first.columns and c not in shared])
    indexed = [f.set_index("file").loc[first.index] for f in frames]
    return mean.assign(**{c: sum(f[c] for f in indexed) / len(frames) for c in shared})


def write_adapt_source(run_dir: str | os.PathLike, moments: dict, n_images: int) -> Path:
    """Write adapt_source.npz: each BatchNormalization layer's per-channel (mean, variance) of its inputs on the
    run's `n_images` training images (`adapt.source_moments`), in the layers' order."""
    arrays = {"layers": np.array(list(moments)), "n_images": np.array(n_images)}
    for name, (mean, variance) in moments.items():
        arrays[f"mean.{name}"], arrays[f"variance.{name}"] = mean, variance
    path = Path(run_dir) / ADAPT_SOURCE
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def read_adapt_source(run_dir: str | os.PathLike) -> tuple[dict, int] | None:
    """adapt_source.npz of a run as (moments by layer name, training images), None when the run has none."""
    path = Path(run_dir) / ADAPT_SOURCE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            moments = {str(n): (npz[f"mean.{n}"], npz[f"variance.{n}"]) for n in npz["layers"]}
            return moments, int(npz["n_images"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"{path} is unreadable ({type(exc).__name__}): remove it and run `xraylib evaluate --run "
            f"{run_dir} --adapt` to write it again"
        ) from None


def read_status(run_dir: str | os.PathLike) -> dict:
    """A sweep run's status.json (`{}` if it never started)."""
    path = Path(run_dir) / STATUS
    return read_json(path) if path.is_file() else {}


def write_status(run_dir: str | os.PathLike, status: dict) -> None:
    """Record a sweep run's status (atomically)."""
    write_json(Path(run_dir) / STATUS, status)


def in_sweep(run_dir: str | os.PathLike) -> bool:
    """Whether a run folder belongs to a sweep (the sweep writes status.json before the notebook starts)."""
    return (Path(run_dir) / STATUS).is_file()


def read_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """history.csv: one row per finished epoch."""
    return pd.read_csv(Path(run_dir) / HISTORY)


def epochs_done(run_dir: str | os.PathLike) -> int:
    """The epochs a run has finished so far (rows of its history.csv), cheap enough to poll."""
    path = Path(run_dir) / HISTORY
    return max(sum(1 for _ in path.open()) - 1, 0) if path.is_file() else 0


def is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether `train` completed the run (finished.json is its last write)."""
    return (Path(run_dir) / FINISHED).is_file()


def mark_finished(run_dir: str | os.PathLike) -> None:
    """The last write of a run: finished.json with the UTC time."""
    write_json(Path(run_dir) / FINISHED, {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def notebook_paths(data_dir: str, out_dir: str, backbone: str) -> tuple[Path, Path]:
    """A notebook's data and output folders as absolute paths (relative ones against the working directory); empty
    means the demo data (data/demo, written on first use) and reports/notebook/BACKBONE under the working directory."""
    from xraylib.synth import demo_data_dir

    data = Path(data_dir).expanduser().resolve() if data_dir else demo_data_dir()
    return data, report_path(out_dir or Path("reports") / "notebook" / backbone)


def report_path(path: str | os.PathLike) -> Path:
    """A folder as an absolute path, a relative one against the working directory."""
    return Path(path).expanduser().resolve()


def binary_run_only(run_dir: str | os.PathLike, what: str) -> None:
    """A one-line InputError when the run in `run_dir` is a three-class run: `what` serves binary runs only."""
    if (Path(run_dir) / CONFIG).is_file() and read_config(run_dir).task == "three_class":
        raise InputError(f"{run_dir} is a three-class run: {what} serves binary runs (P(pneumonia)) only")
