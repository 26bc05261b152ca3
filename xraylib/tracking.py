"""Experiment tracking: TensorBoard logs in every run folder, and an MLflow run per run with `tracker=mlflow`.

TensorBoard: `RUN_DIR/tensorboard/` holds Keras' per-epoch scalars (`train/`, `validation/`; the learning rate with
the training ones) and the run's settings for the HParams dashboard (written once, so a resumed run keeps them).

MLflow: each run folder is one MLflow run, named after the folder, in the experiment named after the sweep's report
folder (a run of a sweep) or `xraylib`. Its id and store are kept in `RUN_DIR/mlflow.json`, so a resumed run goes on
in the same MLflow run. The store is MLflow's own `MLFLOW_TRACKING_URI` when set; else `mlruns/` beside the sweep's
report folder (or beside the run folder of a single run): MLflow's SQLite store `mlruns/mlflow.db` with the
artifacts under `mlruns/artifacts/` (MLflow 3 refuses its older plain-file store unless told to allow it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from xraylib import runs
from xraylib.config import MLFLOW_MISSING
from xraylib.errors import InputError
from xraylib.fileio import read_json, write_json

if TYPE_CHECKING:
    import keras
    from mlflow import MlflowClient

    from xraylib.config import RunConfig

TENSORBOARD = "tensorboard"
MLFLOW_RUN = "mlflow.json"
EXPERIMENT = "xraylib"  # the experiment of runs outside a sweep
ARTIFACTS = (runs.CONFIG, runs.HISTORY, runs.METRICS, runs.PREDICTIONS)
TEST_PREFIXES = {"at_threshold": "test", "at_0.5": "test_at_0.5"}  # metrics.json section -> metric name prefix


def callbacks(cfg: RunConfig, out: Path) -> list:
    """The tracking callbacks of a fit into the run folder `out`: TensorBoard's, and MLflow's with
    `tracker=mlflow`. Put them after the history writer: MLflow's logs the rows it has written."""
    found = [tensorboard_callback(cfg, out)]
    if cfg.tracker == "mlflow":
        found.append(mlflow_callback(cfg, out))
    return [callback for callback in found if callback is not None]


def tensorboard_callback(cfg: RunConfig, out: Path) -> keras.callbacks.Callback | None:
    """Keras' TensorBoard callback writing `out/tensorboard/`, after the run's settings (HParams plugin; once per
    run folder). None, said in one line, when the tensorboard package (which tf.summary needs) is missing."""
    import keras
    import tensorflow as tf

    try:
        from tensorboard.plugins.hparams import api as hp
    except ImportError:
        print("no TensorBoard logs: they need the tensorboard package (pip install tensorboard)")
        return None
    logdir = Path(out) / TENSORBOARD
    if not any(logdir.glob("events.out.tfevents.*")):  # the settings' record, beside Keras' train/ and validation/
        writer = tf.summary.create_file_writer(str(logdir))
        with writer.as_default():
            hp.hparams(cfg.to_json(), trial_id=Path(out).name)  # bool, int, float, str
        writer.close()
    return keras.callbacks.TensorBoard(str(logdir), write_graph=False)  # it flushes its files at each epoch's end


def mlflow_module():
    """The mlflow module, or one line naming the extra that installs it. Quiet in a notebook: no progress bars
    for copying a run's files (unless MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR says otherwise), and no info lines
    about creating a store's tables (its warnings and errors still show)."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow
    except ImportError:
        raise InputError(MLFLOW_MISSING) from None
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return mlflow


def experiment_name(out: Path) -> str:
    """The sweep's report folder's name for a run of a sweep, else `xraylib`."""
    return Path(out).resolve().parent.name if runs.in_sweep(out) else EXPERIMENT


def default_store(out: Path) -> Path:
    """`mlruns/` beside the sweep's report folder (a run of a sweep) or beside the run folder."""
    out = Path(out).resolve()
    return (out.parent.parent if runs.in_sweep(out) else out.parent) / "mlruns"


def _store(out: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location of new experiments): MLflow's `MLFLOW_TRACKING_URI` with MLflow's own
    choice of artifact location, else the default store."""
    mlflow = mlflow_module()
    from mlflow.environment_variables import MLFLOW_TRACKING_URI

    if MLFLOW_TRACKING_URI.is_set():
        return mlflow.get_tracking_uri(), None
    store = default_store(out)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def _stored_run(path: Path) -> tuple[MlflowClient, str]:
    """(client, run id) of the MLflow run that `path` (a run folder's mlflow.json) names."""
    mlflow = mlflow_module()
    stored = read_json(path)
    client = mlflow.MlflowClient(stored["tracking_uri"])
    try:
        client.get_run(stored["run_id"])
    except mlflow.exceptions.MlflowException as exc:
        raise InputError(
            f"{path} names MLflow run {stored['run_id']}, which {stored['tracking_uri']} does not hold: remove {path} "
            "to start a new MLflow run"
        ) from exc
    return client, stored["run_id"]


def mlflow_run(cfg: RunConfig, out: Path) -> tuple[MlflowClient, str]:
    """(client, run id) of the run folder's MLflow run: the one its mlflow.json names once training has begun (so a
    resumed run goes on in it), else a new one holding the run's parameters (config.json, flattened)."""
    import pandas as pd

    from xraylib.checkpoint import run_started

    mlflow = mlflow_module()
    out = Path(out)
    if (out / MLFLOW_RUN).is_file() and run_started(out):
        return _stored_run(out / MLFLOW_RUN)
    uri, artifacts = _store(out)
    client = mlflow.MlflowClient(uri)
    name = experiment_name(out)
    experiment_id = _experiment_id(client, name, artifacts)
    run_id = client.create_run(experiment_id, run_name=out.name, tags={"run_dir": str(out.resolve())}).info.run_id
    config = read_json(out / runs.CONFIG) if (out / runs.CONFIG).is_file() else {"run": cfg.to_json()}
    flat = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    client.log_batch(run_id, params=[mlflow.entities.Param(key, str(value)) for key, value in flat.items()])
    write_json(out / MLFLOW_RUN, {"run_id": run_id, "tracking_uri": uri, "experiment": name})
    return client, run_id


def _experiment_id(client: MlflowClient, name: str, artifacts: str | None) -> str:
    """The id of experiment `name`, created if missing; runs of a parallel sweep may race to create it."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifacts)
    except MlflowException:  # another run created it meanwhile
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _metrics(values: dict[str, float], step: int) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()]


def log_history(client: MlflowClient, run_id: str, out: Path) -> None:
    """Log the epochs of history.csv that the MLflow run lacks (step = epoch): a resumed or re-run epoch is not
    logged twice, and epochs trained before tracking was turned on are added."""
    import pandas as pd

    path = Path(out) / runs.HISTORY
    if not path.is_file():
        return
    logged = {metric.step for metric in client.get_metric_history(run_id, "loss")}
    metrics = []
    for row in pd.read_csv(path).to_dict("records"):
        epoch = int(row.pop("epoch"))
        if epoch not in logged:
            metrics += _metrics(row, epoch)
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def mlflow_callback(cfg: RunConfig, out: Path) -> keras.callbacks.Callback:
    """A Keras callback logging each epoch's row of history.csv into the run's MLflow run."""
    import keras

    client, run_id = mlflow_run(cfg, out)

    class MlflowEpochs(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            log_history(client, run_id, out)

        def on_epoch_end(self, epoch, logs=None):
            log_history(client, run_id, out)

    return MlflowEpochs()


def flat_metrics(result: dict) -> dict[str, float]:
    """metrics.json as MLflow metrics: `test_<name>` with `_ci_low` and `_ci_high` and the confusion counts
    (`test_tn`, ...) at the validation threshold, `test_at_0.5_<name>...` at 0.5, and `threshold`; undefined values
    are left out. A three-class run: `test_<name>` of its summary metrics and `test_<metric>_<class>` per class."""
    if result.get("task") == "three_class":
        test = result["test"]
        entries = {name: entry for name, entry in test.items() if isinstance(entry, dict) and "value" in entry}
        for label, per_class in test["per_class"].items():
            entries.update({f"{m}_{label}": e for m, e in per_class.items() if isinstance(e, dict)})
        parts = (("", "value"), ("_ci_low", "low"), ("_ci_high", "high"))
        return {f"test_{n}{s}": e[k] for n, e in entries.items() for s, k in parts if e[k] is not None}
    values = {"threshold": runs.threshold_of(result, runs.METRICS)}
    for section, prefix in TEST_PREFIXES.items():
        for name, metric in result[section].items():
            if name == "confusion":
                values.update({f"{prefix}_{count}": n for count, n in metric.items()})
            elif isinstance(metric, dict) and "value" in metric:
                parts = {"": metric["value"], "_ci_low": metric["low"], "_ci_high": metric["high"]}
                values.update({f"{prefix}_{name}{suffix}": v for suffix, v in parts.items() if v is not None})
    return values


def log_results(cfg: RunConfig, out: Path) -> None:
    """With `tracker=mlflow`: the epochs, the test metrics with their CIs, the run's files and figures into its
    MLflow run, then marked finished."""
    if cfg.tracker != "mlflow":
        return
    out = Path(out)
    client, run_id = mlflow_run(cfg, out)
    log_history(client, run_id, out)
    client.log_batch(run_id, metrics=_metrics(flat_metrics(runs.read_metrics(out)), 0))
    for name in ARTIFACTS:
        client.log_artifact(run_id, str(out / name))
    if (out / runs.FIGURES).is_dir():
        client.log_artifacts(run_id, str(out / runs.FIGURES), runs.FIGURES)
    client.set_terminated(run_id, "FINISHED")


def log_notebook(run_dir: Path, status: dict) -> None:
    """For a sweep, once a backbone's notebook has ended: the executed notebook and its HTML page into the run's
    MLflow run (if it has one), marked finished or failed as the sweep recorded it. An MLflow failure is printed:
    the sweep goes on."""
    path = Path(run_dir) / MLFLOW_RUN
    if not path.is_file():
        return
    mlflow = mlflow_module()
    try:
        client, run_id = _stored_run(path)
        notebook = runs.notebook_path(run_dir)
        for page in (notebook, notebook.with_suffix(".html")):
            if page.is_file():
                client.log_artifact(run_id, str(page))
        client.set_terminated(run_id, "FINISHED" if status["status"] == "done" else "FAILED")
    except (InputError, mlflow.exceptions.MlflowException) as exc:
        print(f"MLflow: the notebook of {run_dir} was not logged ({str(exc).splitlines()[0]})")
