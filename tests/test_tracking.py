"""Tracking: a run's TensorBoard event files, and its MLflow run read back from a real local store."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest
from test_train import SMOKE

from xraylib import tracking
from xraylib.config import resolve_config
from xraylib.errors import InputError
from xraylib.prepare import prepare_data
from xraylib.train import build_run_model, fit, record_config, train

# the head on precomputed features (frozen backbone, no augmentation): the model fit is not the model saved
SETTINGS = {**SMOKE, "augment": "false", "epochs": "3", "tracker": "mlflow"}
EPOCHS = [0, 1, 2]
# MLflow's SQLite store on SQLAlchemy 2 (MLflow's code, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture(scope="module")
def tracked(synth_data, tmp_path_factory, stop_before_epoch):
    """A run into the store MLFLOW_TRACKING_URI names, stopped before its last epoch and resumed by `train`: its
    folder, the store's URI and client, the MLflow run's id, and the epochs MLflow held when the run stopped."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("tracking")
    uri, out = f"sqlite:///{root / 'mlflow.db'}", root / "resnet34"
    cfg = resolve_config("resnet34", "smoke", SETTINGS)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)  # a store named by URI alone keeps its artifacts in ./mlruns, MLflow's default
        prepared = prepare_data(synth_data, cfg)
        record_config(prepared, cfg, synth_data, out)
        with pytest.raises(KeyboardInterrupt):
            fit(build_run_model(cfg), prepared, cfg, out, callbacks=[stop_before_epoch(EPOCHS[-1])])
        client = MlflowClient(uri)
        run_id = json.loads((out / tracking.MLFLOW_RUN).read_text())["run_id"]
        before = [metric.step for metric in client.get_metric_history(run_id, "loss")]
        train(synth_data, cfg, out)
    return SimpleNamespace(out=out, uri=uri, client=client, run_id=run_id, before=before)


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a TensorBoard folder (all its event files): [(step, value), ...]."""
    pytest.importorskip("tensorboard", reason="reading TensorBoard logs needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    return {
        tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }


def test_tensorboard_holds_every_epoch_and_the_learning_rate(tracked):
    out = tracked.out
    history = pd.read_csv(out / "history.csv")
    train_tags, val_tags = scalars(out / "tensorboard" / "train"), scalars(out / "tensorboard" / "validation")
    columns = {"epoch_loss": "loss", "epoch_auc": "auc", "epoch_learning_rate": "learning_rate"}
    logged = {
        **{tag: train_tags[tag] for tag in columns},
        "val_loss": val_tags["epoch_loss"],
        "val_auc": val_tags["epoch_auc"],
    }
    for tag, points in logged.items():
        column = columns.get(tag, tag)
        assert [step for step, _ in points] == EPOCHS, f"{tag}: one point per epoch, the resumed one included"
        np.testing.assert_allclose([v for _, v in points], history[column], rtol=1e-5, err_msg=tag)


def test_tensorboard_holds_the_settings_once(tracked):
    pytest.importorskip("tensorboard", reason="reading TensorBoard logs needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    out = tracked.out
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    starts = events.Tensors(metadata.SESSION_START_INFO_TAG)
    assert len(starts) == 1, "written once: the resumed fit does not add a second trial"
    content = events.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["backbone"].string_value == "resnet34" and hparams["epochs"].number_value == 3
    assert hparams["augment"].bool_value is False and hparams["tracker"].string_value == "mlflow"


def test_mlflow_lists_the_run_with_its_parameters_and_epochs(tracked):
    out, client, run_id = tracked.out, tracked.client, tracked.run_id
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == run_id and run.info.run_name == "resnet34" and run.info.status == "FINISHED"
    config = json.loads((out / "config.json").read_text())
    params = run.data.params
    assert params["run.backbone"] == "resnet34" and params["run.epochs"] == "3" and params["run.tracker"] == "mlflow"
    assert params["data.fingerprint"] == config["data"]["fingerprint"]
    assert params["versions.tensorflow"] == config["versions"]["tensorflow"]
    assert sorted(tracked.before) == EPOCHS[:-1], "epochs are logged as they end"
    history = pd.read_csv(out / "history.csv")
    for name in ("loss", "val_loss", "val_auc", "learning_rate"):
        points = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in points) == EPOCHS, f"{name}: one value per epoch, none twice after the resume"
        np.testing.assert_allclose([m.value for m in sorted(points, key=lambda m: m.step)], history[name], rtol=1e-6)


def test_mlflow_holds_the_test_metrics_with_cis_and_the_files(tracked):
    import mlflow

    out, client, run_id = tracked.out, tracked.client, tracked.run_id
    run = client.get_run(run_id)
    result = json.loads((out / "metrics.json").read_text())
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        metric = result["at_threshold"][name]
        logged = [run.data.metrics[f"test_{name}{suffix}"] for suffix in ("_ci_low", "", "_ci_high")]
        np.testing.assert_allclose(logged, [metric["low"], metric["value"], metric["high"]])
        assert logged == sorted(logged)
    assert run.data.metrics["threshold"] == pytest.approx(result["threshold"]["value"])
    assert run.data.metrics["test_tp"] == result["at_threshold"]["confusion"]["tp"]
    files = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "predictions.csv", "figures"} <= files
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert {f"figures/{name}.png" for name in ("training_curves", "roc_pr", "confusion_matrix")} <= figures
    copy = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions.csv", tracking_uri=tracked.uri)
    assert Path(copy).read_bytes() == (out / "predictions.csv").read_bytes()
    assert str(out.parent) in run.info.artifact_uri, "the test's artifacts stay in its own folder"


def test_default_store_beside_the_sweep_and_the_notebook_logged(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    single, in_sweep = tmp_path / "runs" / "resnet34", tmp_path / "report" / "resnet34"
    assert tracking.default_store(single) == tmp_path / "runs" / "mlruns"
    assert tracking.experiment_name(single) == tracking.EXPERIMENT
    in_sweep.mkdir(parents=True)
    (in_sweep / "status.json").write_text(json.dumps({"backbone": "resnet34", "status": "running"}))
    assert tracking.default_store(in_sweep) == tmp_path / "mlruns"
    cfg = resolve_config("resnet34", "smoke", SETTINGS)
    _, run_id = tracking.mlflow_run(cfg, in_sweep)
    nbformat.write(nbformat.v4.new_notebook(), in_sweep / "resnet34.ipynb")
    tracking.log_notebook(in_sweep, {"backbone": "resnet34", "status": "failed"})
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("report").experiment_id])
    assert run.info.run_id == run_id and run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run_id)] == ["resnet34.ipynb"]
    assert str(tmp_path / "mlruns" / "artifacts") in run.info.artifact_uri


def test_tracker_setting_is_checked(monkeypatch):
    with pytest.raises(InputError, match=r"^setting tracker='wandb': expected one of none, mlflow$"):
        resolve_config("resnet34", "smoke", {"tracker": "wandb"})
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    with pytest.raises(InputError, match=r"needs the tracking extra: pip install 'xraylib\[tracking\]'$"):
        resolve_config("resnet34", "smoke", {"tracker": "mlflow"})


def test_without_tensorboard_a_run_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)  # as if tensorboard were not installed
    assert tracking.callbacks(resolve_config("resnet34", "smoke", SMOKE), tmp_path) == []
    assert (
        capsys.readouterr().out == "no TensorBoard logs: they need the tensorboard package (pip install tensorboard)\n"
    )


def test_import_stays_free_of_the_trackers():
    code = "import sys, xraylib.train, xraylib.tracking; print(sorted({'mlflow', 'tensorboard'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
