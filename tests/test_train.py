"""Training end to end on the synthetic set: run files, resume after a kill, two-replica mirrored strategy."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xraylib import explain, run_figures
from xraylib.cli import main
from xraylib.config import resolve_config
from xraylib.train import plateau_state, train, training_batches

# 40 images a subset in batches of 6: the last batch of an epoch is short, so epochs must not run into each other
SMOKE = {"image_size": "32", "limit": "40", "batch_size": "6", "bootstrap": "30", "gradcam_images": "4", "epochs": "2"}
RUN_FILES = ("config.json", "history.csv", "model.keras", "predictions.csv", "metrics.json")
FIGURES = ("training_curves", "confusion_matrix", "roc_pr", "reliability", "examples", "gradcam")


@pytest.fixture(scope="module")
def smoke_run(synth_data, tmp_path_factory):
    cfg = resolve_config("resnet34", "smoke", SMOKE)
    return train(synth_data, cfg, tmp_path_factory.mktemp("runs") / "resnet34")


def test_smoke_run_writes_every_file(smoke_run):
    for name in RUN_FILES:
        assert (smoke_run / name).stat().st_size > 0, name
    for name in FIGURES + ("class_distribution", "augmentations"):
        assert (smoke_run / "figures" / f"{name}.png").stat().st_size > 1000, name
    assert not (smoke_run / "backup").exists(), "the resume backup is removed once training ends"


def test_config_records_seed_versions_and_data(smoke_run):
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["run"]["seed"] == 42 and config["run"]["backbone"] == "resnet34"
    assert config["versions"]["tensorflow"] and config["versions"]["keras"].startswith("3")
    assert len(config["data"]["fingerprint"]) >= 12
    assert set(config["subsets"]) == {"train", "val", "test"}


def test_history_and_predictions(smoke_run):
    history = pd.read_csv(smoke_run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"loss", "auc", "val_loss", "val_auc", "learning_rate", "images_per_s"} <= set(history.columns)
    predictions = pd.read_csv(smoke_run / "predictions.csv")
    assert list(predictions.columns[:5]) == ["file", "patient", "label", "p_pneumonia", "predicted"]
    assert predictions["p_pneumonia"].between(0, 1).all()
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    threshold = metrics["threshold"]["value"]
    expected = predictions["p_pneumonia"].ge(threshold).map({True: "pneumonia", False: "normal"})
    assert (predictions["predicted"] == expected).all()
    assert metrics["threshold"]["chosen_on"] == "validation"
    assert metrics["threshold"]["low"] <= threshold <= metrics["threshold"]["high"]  # over validation patients
    for entry in (metrics["at_threshold"]["accuracy"], metrics["at_0.5"]["accuracy"]):
        assert entry["low"] <= entry["value"] <= entry["high"]


def test_calibrated_on_validation_then_thresholded(smoke_run):
    """Platt scaling fitted on validation: stored in metrics.json, applied to the test probabilities (the raw ones
    beside them), ECE not raised on validation, and the threshold chosen on the calibrated validation ones."""
    from xraylib.metrics import choose_threshold
    from xraylib.runs import read_calibration

    metrics = json.loads((smoke_run / "metrics.json").read_text())
    entry = metrics["calibration"]
    assert entry["method"] == "platt" and entry["fitted_on"] == "validation"
    assert entry["applied"], entry["note"]  # this seed's 2-epoch model is far from calibrated (ECE 0.27 -> 0.06)
    val = pd.read_csv(smoke_run / "val_predictions.csv")
    test = pd.read_csv(smoke_run / "predictions.csv")
    assert entry["n_images"] == len(val)
    cal = read_calibration(smoke_run)
    for frame in (val, test):
        assert np.allclose(frame["p_pneumonia"], cal(frame["p_uncalibrated"]), atol=1e-9)
        assert not np.allclose(frame["p_pneumonia"], frame["p_uncalibrated"], atol=1e-3)
    assert entry["validation"]["ece"]["after"] <= entry["validation"]["ece"]["before"]
    for subset in ("validation", "test"):
        for name in ("brier", "ece", "log_loss"):
            assert {"before", "after"} <= set(entry[subset][name])
    assert entry["test"]["ece"]["after"] == pytest.approx(metrics["at_threshold"]["ece"]["value"])
    y_val = (val["label"] == "pneumonia").to_numpy(int)
    assert metrics["threshold"]["value"] == pytest.approx(choose_threshold(y_val, val["p_pneumonia"]), abs=1e-6)
    # the report and the notebook's table
    table = run_figures.calibration_table(metrics)
    assert table.loc[("validation", "ece"), "after"] == entry["validation"]["ece"]["after"]
    assert "platt" in table.attrs["title"]


def test_validation_beside_test_at_the_same_threshold(smoke_run, tmp_path):
    """metrics.json's validation entry: the calibrated validation predictions scored at the test's threshold with
    the run's bootstrap, their images, patients and prevalence, and the drop (test minus validation); the
    notebook's table and the leaderboard show them."""
    from xraylib import leaderboard
    from xraylib.metrics import METRICS, binary_metrics_ci
    from xraylib.runs import read_config

    metrics = json.loads((smoke_run / "metrics.json").read_text())
    entry, test = metrics["validation"], metrics["at_threshold"]
    val = pd.read_csv(smoke_run / "val_predictions.csv")
    y = (val["label"] == "pneumonia").to_numpy(int)
    assert entry["threshold"] == test["threshold"] == metrics["threshold"]["value"]
    assert entry["n_images"] == len(val) and entry["n_patients"] == val["patient"].nunique()
    assert entry["prevalence"] == pytest.approx(y.mean())
    cfg = read_config(smoke_run)
    again = binary_metrics_ci(
        y, val["p_pneumonia"], val["patient"], test["threshold"], n_boot=cfg.bootstrap, seed=cfg.seed
    )
    assert entry["bootstrap"] == again["bootstrap"] == {"resamples": 30, "seed": 42, "unit": "patient"}
    assert entry["confusion"] == again["confusion"]
    for name in METRICS:
        assert entry[name] == pytest.approx(again[name]), name
        if test[name]["value"] is not None and entry[name]["value"] is not None:
            assert entry["drop"][name] == pytest.approx(test[name]["value"] - entry[name]["value"]), name
    table = run_figures.validation_table(metrics)
    assert table.loc["specificity", "validation"] == entry["specificity"]["value"]
    assert table.loc["specificity", "test"] == test["specificity"]["value"]
    assert table.loc["roc_auc", "drop (test - validation)"] == entry["drop"]["roc_auc"]
    assert f"validation: {len(val)} images" in table.attrs["title"]
    shutil.copytree(smoke_run, tmp_path / "resnet34", ignore=shutil.ignore_patterns("*.keras", "figures"))
    board = leaderboard.leaderboard(tmp_path)
    for name in ("roc_auc", "sensitivity", "specificity", "accuracy"):
        assert board.loc[0, f"val_{name}"] == pytest.approx(entry[name]["value"])
        assert f"val. {name} (drop)" in leaderboard.leaderboard_markdown(board).splitlines()[0]


def test_finished_run_is_not_overwritten(smoke_run, synth_data):
    before = (smoke_run / "model.keras").stat().st_mtime
    code = main(
        ["train", "--data", str(synth_data), "--backbone", "resnet34", "--preset", "smoke", "--out", str(smoke_run)]
    )
    assert code == 2 and (smoke_run / "model.keras").stat().st_mtime == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--backbone", "resnet50"], "resnet50"),
        (["--backbone", "vgg16", "--set", "epochs=-3"], "epochs"),
        (["--backbone", "inceptionv3", "--set", "image_size=50"], "image_size"),
        (["--backbone", "vgg16", "--preset", "fast"], "fast"),
    ],
)
def test_bad_options_one_line(args, named, synth_data, tmp_path, capsys):
    assert main(["train", "--data", str(synth_data), "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _train_args(data, out):
    """`xraylib train`'s arguments for the smoke run of `smoke_run`, writing to `out`."""
    verb = ["train", "--data", str(data), "--backbone", "resnet34", "--preset", "smoke", "--out", str(out)]
    return [*verb, *[f"--set={k}={v}" for k, v in SMOKE.items()]]


# A training run killed (SIGKILL) at a chosen instant: after the first history row is written but before the
# snapshot, while the snapshot's weights are being written, between the two renames that commit the second epoch's
# snapshot, and once the first is committed. `checkpoint` functions are wrapped to kill the process there.
KILLED_AT = """
import os, signal, sys
from xraylib import checkpoint
from xraylib.cli import main
stage = sys.argv[1]
commit, replace = checkpoint.commit, os.replace

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def killing_commit(model, out, epochs_done, stopped):
    if stage == "before_snapshot":
        die()
    if stage == "mid_weights":
        model.save_weights = lambda path: (open(path, "wb").write(b"half a file"), die())
    commit(model, out, epochs_done, stopped)
    if stage == "after_snapshot":
        die()

def killing_replace(src, dst):
    aside = os.path.join(os.path.dirname(dst), "state.old")
    if stage == "between_renames" and os.path.basename(dst) == "state" and os.path.exists(aside):
        die()  # the second epoch's snapshot: the first one is renamed aside, the new one not yet in place
    replace(src, dst)

checkpoint.commit = killing_commit
checkpoint.os.replace = killing_replace
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("stage", ["before_snapshot", "mid_weights", "between_renames", "after_snapshot"])
def test_run_killed_at_any_instant_resumes_to_the_same_result(stage, smoke_run, synth_data, tmp_path, capsys):
    killed = tmp_path / "killed"
    args = _train_args(synth_data, killed)
    proc = subprocess.run([sys.executable, "-c", KILLED_AT, stage, *args], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "metrics.json").exists()
    capsys.readouterr()
    assert main(args) == 0  # the same command, resumed in this process (TensorFlow is imported already)
    assert ("resuming at epoch 2" in capsys.readouterr().out) == (stage in ("between_renames", "after_snapshot"))
    whole, resumed = pd.read_csv(smoke_run / "history.csv"), pd.read_csv(killed / "history.csv")
    assert list(resumed["epoch"]) == [0, 1]
    for column in ("loss", "val_loss", "val_auc"):
        pd.testing.assert_series_equal(whole[column], resumed[column], rtol=1e-4)
    a, b = (pd.read_csv(run / "predictions.csv") for run in (smoke_run, killed))
    np.testing.assert_allclose(a["p_pneumonia"], b["p_pneumonia"], rtol=1e-4, atol=1e-6)
    assert not (killed / "backup").exists()


def test_unusable_snapshot_is_one_line(smoke_run, synth_data, tmp_path, capsys):
    killed = tmp_path / "killed"
    args = _train_args(synth_data, killed)
    proc = subprocess.run([sys.executable, "-c", KILLED_AT, "after_snapshot", *args])
    assert proc.returncode == -signal.SIGKILL
    state = killed / "backup" / "state"
    history = (state / "history.csv").read_bytes()
    (state / "history.csv").write_bytes(history[: history.rindex(b",") + 3])  # a write torn mid-row
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "history.csv does not hold the snapshot's 1 epoch(s) as whole rows" in err and len(err.splitlines()) == 1
    (state / "history.csv").write_bytes(history)
    (state / "weights.weights.h5").write_bytes(b"\0" * 100)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "weights.weights.h5" in err and f"remove {killed / 'backup'} " in err and len(err.splitlines()) == 1
    (state / "state.json").write_text("{")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "state.json" in err and len(err.splitlines()) == 1


MIRRORED = """
import sys, keras, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from xraylib.config import resolve_config
from xraylib.prepare import prepare_data
from xraylib.strategy import distribution_strategy
from xraylib.train import build_run_model, fit, train
assert distribution_strategy("mirrored").num_replicas_in_sync == 2
settings = dict(image_size="32", limit="40", batch_size="8", bootstrap="20", gradcam_images="2", strategy="mirrored")
train(sys.argv[1], resolve_config("resnet34", "smoke", settings), sys.argv[2])

class StopAtSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt

cfg = resolve_config("resnet34", "smoke", {**settings, "epochs": "2", "augment": "false", "ema_momentum": "0.9"})
prepared = prepare_data(sys.argv[1], cfg)
try:
    fit(build_run_model(cfg), prepared, cfg, sys.argv[3], callbacks=[StopAtSecondEpoch()])
except KeyboardInterrupt:
    pass
fit(build_run_model(cfg), prepared, cfg, sys.argv[3])
"""


def test_mirrored_strategy_on_two_logical_cpus_trains_and_resumes(synth_data, tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    args = [sys.executable, "-c", MIRRORED, str(synth_data), str(run), str(resumed)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(run / "history.csv")) == 1
    assert "resuming at epoch 2" in result.stdout and list(pd.read_csv(resumed / "history.csv")["epoch"]) == [0, 1]


@pytest.mark.parametrize(("sampling", "normal_share"), [("shuffle", (0.19, 0.21)), ("balanced", (0.4, 0.6))])
def test_training_stream_follows_the_sampling_setting(sampling, normal_share):
    cfg = resolve_config("resnet34", "smoke", {"sampling": sampling, "class_weight": "false", "batch_size": "10"})
    labels = (np.arange(100) >= 20).astype(np.int64)  # a fifth normal
    stream = training_batches(np.zeros((100, 4), np.float32), labels, cfg)
    seen = np.concatenate([y.numpy() for _, y in stream.take(30)])  # three epochs
    assert len(seen) == 300 and normal_share[0] <= np.mean(seen == 0) <= normal_share[1]


def test_plateau_state_counts_as_keras_callbacks_do():
    assert plateau_state([0.5, 0.6, 0.55, 0.58], "max") == (0.6, 2)
    assert plateau_state([0.5, 0.4, 0.45, 0.46, 0.47], "min", patience=2) == (0.4, 1)
    assert plateau_state([], "max") == (None, 0)


def test_gradcam_mass_in_synthetic_masks(smoke_run):
    written = pd.read_csv(smoke_run / "gradcam_in_masks.csv")
    assert len(written) == (pd.read_csv(smoke_run / "predictions.csv")["label"] == "pneumonia").sum()
    table = explain.gradcam_in_masks(smoke_run, limit=6)
    assert len(table) >= 1 and set(table.columns) == {
        "in_lungs",
        "lung_area",
        "lung_map_in_lungs",
        "peak_in_lungs",
        "in_opacity",
        "opacity_area",
        "peak_in_opacity",
    }
    assert table["lung_area"].between(0.05, 0.8).all()
    finite = table["in_lungs"].dropna()
    assert finite.between(0, 1).all()
    # the smoke model's last block is 3 x 3 at 80 px, too coarse for a lung shape: a lung-shaped map scores ~ the area
    assert np.allclose(table["lung_map_in_lungs"], table["lung_area"], atol=0.02)


@pytest.mark.parametrize("fine_tune, trained_part", [("none", "head"), ("9", "top")])
def test_precomputed_features_train_as_end_to_end(fine_tune, trained_part, synth_data, tmp_path):
    from xraylib.inference import predict_probabilities
    from xraylib.prepare import prepare_data
    from xraylib.train import build_run_model, fit

    results = []
    for precompute in ("true", "false"):
        settings = {**SMOKE, "augment": "false", "precompute_features": precompute, "fine_tune": fine_tune}
        if fine_tune != "none":
            settings["pooled_norm"] = "false"
        cfg = resolve_config("resnet34", "smoke", settings)
        prepared = prepare_data(synth_data, cfg)
        model = build_run_model(cfg)
        history = fit(model, prepared, cfg, tmp_path / precompute)
        results.append((history, predict_probabilities(model, prepared.images["test"], cfg)))
        trained = json.loads((tmp_path / precompute / "timings.json").read_text())["trained"]
        assert trained == (f"{trained_part} on precomputed features" if precompute == "true" else "end to end")
    (fast, p_fast), (slow, p_slow) = results
    for column in ("loss", "val_loss", "val_auc"):
        pd.testing.assert_series_equal(fast[column], slow[column], rtol=1e-3)
    np.testing.assert_allclose(p_fast, p_slow, rtol=1e-3, atol=1e-5)


def test_head_on_precomputed_features_resumes_exactly(synth_data, tmp_path, stop_before_epoch):
    from xraylib.inference import predict_probabilities
    from xraylib.prepare import prepare_data
    from xraylib.train import build_run_model, fit

    cfg = resolve_config("resnet34", "smoke", {**SMOKE, "augment": "false", "epochs": "3"})
    prepared = prepare_data(synth_data, cfg)

    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        fit(build_run_model(cfg), prepared, cfg, stopped, callbacks=[stop_before_epoch(2)])
    assert len(pd.read_csv(stopped / "history.csv")) == 2 and (stopped / "backup").is_dir()
    results = []
    for out in (stopped, tmp_path / "whole"):
        model = build_run_model(cfg)
        history = fit(model, prepared, cfg, out)
        results.append((history, predict_probabilities(model, prepared.images["test"], cfg)))
    (resumed, p_resumed), (whole, p_whole) = results
    assert list(resumed["epoch"]) == [0, 1, 2]
    timings = json.loads((stopped / "timings.json").read_text())
    assert timings["trained"] == "head on precomputed features"
    from xraylib.strategy import cpu_flags, cpu_name

    assert timings["cpu"] == cpu_name() and timings["cpu_cores"] == os.cpu_count()
    assert timings["amx_bf16"] == ("amx_bf16" in cpu_flags())
    assert timings["precision"] == "float32", "the smoke preset keeps float32 (mixed_precision=off) on every CPU"
    for column in ("loss", "val_loss", "val_auc", "learning_rate"):
        pd.testing.assert_series_equal(resumed[column], whole[column], rtol=1e-5)
    np.testing.assert_allclose(p_resumed, p_whole, rtol=1e-5, atol=1e-7)


@pytest.fixture
def holey_data(synth_data, tmp_path):
    """A copy of the synthetic set lacking one test image and one training image (a link to itself, a loop)."""
    from xraylib.data import build_index

    copy = shutil.copytree(synth_data, tmp_path / "holey")
    index = build_index(copy)
    test, train = (index.loc[index["split"] == split, "path"].iloc[0] for split in ("test", "train"))
    Path(test).unlink()
    Path(train).unlink()
    Path(train).symlink_to(Path(train).name)
    return copy, Path(test).name, Path(train).name


def test_a_missing_test_image_is_refused_unless_asked_and_every_drop_is_said_and_recorded(holey_data, tmp_path, capsys):
    from xraylib.prepare import prepare_data
    from xraylib.train import record_config

    data, test, train = holey_data
    args = ["train", "--data", str(data), "--backbone", "resnet34", "--preset", "smoke", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"1 test image(s) listed in its metadata are missing (first: {test})" in err
    assert "missing_test=drop" in err and len(err.splitlines()) == 1
    cfg = resolve_config("resnet34", "smoke", {"image_size": "32", "missing_test": "drop"})
    prepared = prepare_data(data, cfg)
    said = capsys.readouterr().out
    assert "left out 2 image(s)" in said and "1 of them test images" in said and test in said and train in said
    assert test not in set(prepared.index["file"]) and train not in set(prepared.index["file"])
    config = record_config(prepared, cfg, data, tmp_path / "r")
    assert (config["data"]["missing_dropped"], config["data"]["missing_dropped_test"]) == (2, 1)


def test_a_probe_head_is_the_logistic_regression_of_the_training_features(synth_data, tmp_path):
    """`head_init=probe` through `fit` (the trunk's outputs precomputed): after one epoch at a learning rate too
    small to move it, the head predicts what scikit-learn's logistic regression of the pooled training features
    predicts; a random head does not."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from xraylib.models import probability
    from xraylib.prepare import prepare_data
    from xraylib.train import build_run_model, fit

    settings = {**SMOKE, "augment": "false", "fine_tune": "9", "pooled_norm": "false", "epochs": "1"}
    cfg = resolve_config("resnet34", "smoke", {**settings, "learning_rate": "1e-9", "head_init": "probe"})
    prepared = prepare_data(synth_data, cfg)
    model = build_run_model(cfg)
    fit(model, prepared, cfg, tmp_path / "probe")
    images, labels = prepared.images["train"], prepared.labels["train"]
    features = keras.Model(model.inputs, model.layers[-1].input).predict(images, verbose=0).astype("float64")
    expected = LogisticRegression(max_iter=1000, class_weight="balanced").fit(features, labels).predict_proba(features)
    got = probability(model.predict(images, verbose=0))
    np.testing.assert_allclose(got, expected[:, 1], atol=1e-3)
    random_head = build_run_model(resolve_config("resnet34", "smoke", settings))
    assert np.abs(probability(random_head.predict(images, verbose=0)) - expected[:, 1]).max() > 0.05


@pytest.mark.parametrize("settings", [{"fine_tune": "none"}, {"head": "study"}])
def test_probe_head_refused_where_it_means_nothing(settings):
    from xraylib.errors import InputError

    with pytest.raises(InputError, match="head_init=probe"):
        resolve_config("xception", "cpu", {**settings, "head_init": "probe", "weights": "none"})


def test_averaged_weights_are_validated_kept_and_resumed(synth_data, tmp_path, stop_before_epoch):
    """`ema_momentum`: each epoch's validation scores the weights' moving average, the model kept is that average
    (its validation loss is the history's at the kept epoch), and a run stopped mid-way resumes to the same model;
    without the setting the history differs."""
    import keras

    from xraylib.inference import predict_probabilities
    from xraylib.prepare import prepare_data
    from xraylib.train import MONITOR_MODE, build_run_model, fit

    settings = {**SMOKE, "augment": "false", "epochs": "3", "keep": "best", "learning_rate": "1e-2"}
    cfg = resolve_config("resnet34", "smoke", {**settings, "ema_momentum": "0.8"})
    prepared = prepare_data(synth_data, cfg)
    with pytest.raises(KeyboardInterrupt):
        fit(build_run_model(cfg), prepared, cfg, tmp_path / "stopped", callbacks=[stop_before_epoch(2)])
    results = []
    for out in ("stopped", "whole"):
        model = build_run_model(cfg)
        history = fit(model, prepared, cfg, tmp_path / out)
        results.append((history, predict_probabilities(model, prepared.images["test"], cfg)))
    (resumed, p_resumed), (whole, p_whole) = results
    pd.testing.assert_series_equal(resumed["val_loss"], whole["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(p_resumed, p_whole, rtol=1e-5, atol=1e-7)
    p_val = model.predict(prepared.images["val"], verbose=0).ravel()
    val_loss = float(keras.losses.binary_crossentropy(prepared.labels["val"].astype("float32"), p_val))
    monitored = whole[cfg.monitor]
    kept = whole.loc[monitored.idxmax() if MONITOR_MODE[cfg.monitor] == "max" else monitored.idxmin()]
    assert val_loss == pytest.approx(kept["val_loss"], rel=1e-4)
    plain_cfg = resolve_config("resnet34", "smoke", settings)
    plain = fit(build_run_model(plain_cfg), prepared, plain_cfg, tmp_path / "plain")
    assert abs(plain.loc[kept.name, "val_loss"] - val_loss) > 1e-2 * val_loss, "the average is not the last weights"


def test_ema_momentum_outside_0_1_is_refused():
    from xraylib.errors import InputError

    with pytest.raises(InputError, match="ema_momentum=1.0"):
        resolve_config("xception", "cpu", {"ema_momentum": "1", "weights": "none"})
