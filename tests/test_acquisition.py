"""The validation under acquisition changes: each change of the catalogue does what its name says, and a finished
run's validation images are scored again through every one of them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from xraylib import runs
from xraylib.acquisition import CHANGES, UNCHANGED, changed
from xraylib.cli import main
from xraylib.config import resolve_config
from xraylib.run_evaluation import IN_SAMPLE

SIZE = 64


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    """Smooth grey images (a gradient and a few blobs) with mid-grey levels, (n, SIZE, SIZE, 1) in 20-230."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE] / SIZE
    out = []
    for _ in range(n):
        blobs = sum(np.exp(-((rows - rng.uniform()) ** 2 + (cols - rng.uniform()) ** 2) / 0.02) for _ in range(3))
        out.append(20 + 150 * (0.5 * rows + 0.5 * cols) + 60 * blobs / max(1.0, blobs.max()))
    return np.clip(np.stack(out)[..., None], 0, 255).astype(np.float32)


def test_every_change_keeps_the_shape_and_grey_range_and_changes_the_image():
    x = images() + np.random.default_rng(1).uniform(-20, 20, (4, SIZE, SIZE, 1)).astype(np.float32)  # some texture
    for name in CHANGES:
        out = changed(x, name)
        assert out.shape == x.shape and out.dtype == np.float32, name
        assert out.min() >= 0 and out.max() <= 255, name
        assert np.abs(out - x).mean() > 0.5, name


def test_the_gamma_changes_brighten_and_darken_and_keep_black_and_white():
    x = np.linspace(0, 255, SIZE * SIZE, dtype=np.float32).reshape(1, SIZE, SIZE, 1)
    bright, dark = changed(x, "gamma-0.6"), changed(x, "gamma-1.6")
    inner = (x > 0) & (x < 255)
    assert np.all(bright[inner] > x[inner]) and np.all(dark[inner] < x[inner])
    np.testing.assert_allclose([bright.min(), bright.max(), dark.min(), dark.max()], [0, 255, 0, 255], atol=1e-3)
    np.testing.assert_allclose(bright[0, 10, 10, 0], 255 * (x[0, 10, 10, 0] / 255) ** 0.6, rtol=1e-5)


def test_the_contrast_change_narrows_the_window_about_each_images_mean():
    x = images()
    out = changed(x, "contrast-0.6")
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3)), 0.6, rtol=1e-4)


def test_the_blur_spreads_a_point_by_its_sigma_within_its_own_image():
    x = np.zeros((2, SIZE, SIZE, 1), np.float32)
    x[0, 32, 32, 0] = 255
    out = changed(x, "blur-1.5")[0, ..., 0]
    rows = np.arange(SIZE)
    profile = out.sum(axis=1) / out.sum()
    assert np.sqrt((profile * (rows - 32) ** 2).sum()) == pytest.approx(1.5, rel=0.02)
    assert out.sum() == pytest.approx(255, rel=1e-4)  # nothing lost
    assert changed(x, "blur-1.5")[1].max() == 0  # the second image gets nothing of the first's


def test_the_noise_has_its_sd_and_is_the_same_for_every_run():
    x = np.full((2, SIZE, SIZE, 1), 128, np.float32)
    out = changed(x, "noise-10")
    assert (out - x).std() == pytest.approx(10, rel=0.03)
    np.testing.assert_array_equal(out, changed(x, "noise-10"))


def test_half_resolution_wipes_out_the_finest_detail_and_keeps_smooth_images():
    checkers = (np.indices((SIZE, SIZE)).sum(axis=0) % 2 * 255).astype(np.float32)[None, ..., None]
    assert changed(checkers, "half-resolution").std() < 0.1 * checkers.std()
    smooth = images()
    assert np.abs(changed(smooth, "half-resolution") - smooth).mean() < 1.0


def test_the_zoom_out_frames_a_smaller_image_in_black():
    x = np.full((1, 224, 224, 1), 200, np.float32)
    out = changed(x, "zoom-out-15")[0, ..., 0]
    inner = round(224 / 1.15)  # 195 px, 14 or 15 px of black on each side
    assert out[:14].max() == 0 and out[-15:].max() == 0 and out[:, :14].max() == 0 and out[:, -15:].max() == 0
    assert (out > 0).sum() == inner * inner
    assert out[112, 112] == pytest.approx(200)


def test_histogram_equalization_all_but_ignores_the_gamma_changes():
    """Why the catalogue favours an equalizing model by design: a strictly increasing map of grey levels reaches it
    only through the 256 bins it counts in."""
    from xraylib.layers import equalization

    x = np.round(images(seed=3))
    layer = equalization("histogram")
    for name in ("gamma-0.6", "gamma-1.6"):
        out = changed(x, name)
        moved = np.abs(np.asarray(layer(out)) - np.asarray(layer(x))).mean()
        assert moved < 0.1 * np.abs(out - x).mean(), name


@pytest.fixture(scope="module")
def finished_run(synth_data, tmp_path_factory, train_run):
    """A small finished run on the synthetic set (its files without figures)."""
    cfg = resolve_config("resnet34", "smoke", {"image_size": "48", "limit": "0", "bootstrap": "20"})
    return train_run(synth_data, cfg, tmp_path_factory.mktemp("runs") / "resnet34")


def test_a_run_is_scored_under_every_change_and_unchanged_as_it_was(finished_run, capsys):
    assert main(["evaluate", "--run", str(finished_run), "--acquisition", "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((finished_run / runs.ACQUISITION).read_text())
    assert list(result["changes"]) == [UNCHANGED, *CHANGES]
    val = pd.read_csv(finished_run / runs.VAL_PREDICTIONS)
    assert result["n_validation_images"] == len(val)
    y = (val["label"] == "pneumonia").to_numpy()
    unchanged = result["changes"][UNCHANGED]
    assert unchanged["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, val["p_pneumonia"]), abs=1e-4)
    normal = val["label"] == "normal"
    specificity = (val.loc[normal, "p_pneumonia"] < result["threshold"]).mean()
    assert unchanged["specificity"]["value"] == pytest.approx(specificity, abs=1e-6)
    sensitivity = (val.loc[~normal, "p_pneumonia"] >= result["threshold"]).mean()
    assert unchanged["sensitivity"]["value"] == pytest.approx(sensitivity, abs=1e-6)
    assert result["run_validation_roc_auc"] == pytest.approx(unchanged["roc_auc"]["value"], abs=1e-4)
    assert result["threshold"] == runs.read_threshold(finished_run)
    values = [result["changes"][name]["roc_auc"]["value"] for name in CHANGES]
    assert result["mean_over_changes"]["roc_auc"] == pytest.approx(np.mean(values))
    assert len({round(v, 6) for v in values}) > 1  # the changes move the figures, each its own way
    for name in [UNCHANGED, *CHANGES, "mean of changes"]:
        assert f"\n{name} " in printed, name
    assert IN_SAMPLE not in printed and result["threshold_chosen_on"] == "validation"
    assert main(["evaluate", "--run", str(finished_run), "--acquisition", "--bootstrap", "0", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # one JSON object, the progress on stderr
    assert printed["changes"][UNCHANGED]["roc_auc"]["value"] == unchanged["roc_auc"]["value"]


def one_line_refusal(argv, capsys, match):
    """`xraylib ARGV` exits 2 with one line on stderr containing `match`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("xraylib: error:") and match in err, err


def test_bad_acquisition_requests_are_refused_in_one_line(finished_run, synth_data, tmp_path, capsys):
    one_line_refusal(["evaluate", "--acquisition"], capsys, "--acquisition goes with --run RUN_DIR alone")
    one_line_refusal(
        ["evaluate", "--run", str(finished_run), "--data", str(synth_data), "--acquisition"],
        capsys,
        "--acquisition goes with --run RUN_DIR alone",
    )
    one_line_refusal(["evaluate", "--run", str(tmp_path), "--acquisition"], capsys, "model.keras is missing")
    one_line_refusal(
        ["evaluate", "--run", str(finished_run), "--acquisition", "--thresholds"], capsys, "one of them at a time"
    )
    one_line_refusal(["evaluate", "--run", str(finished_run), "--acquisition", "--bootstrap", "-1"], capsys, "-1")
    moved = shutil.copytree(finished_run, tmp_path / "moved")
    (moved / runs.ACQUISITION).unlink(missing_ok=True)
    config = json.loads((moved / runs.CONFIG).read_text())
    config["data"]["dir"] = str(tmp_path / "gone")
    (moved / runs.CONFIG).write_text(json.dumps(config))
    one_line_refusal(["evaluate", "--run", str(moved), "--acquisition"], capsys, "data folder")
    assert not (moved / runs.ACQUISITION).exists()


def test_a_threshold_chosen_over_the_changed_copies_is_youdens_over_the_pool(synth_data, tmp_path, train_run, capsys):
    """threshold=youden:acquisition: Youden's threshold over the calibrated validation probabilities pooled with
    those of the validation images through every change, its interval over resamples of the patients with all their
    copies; the calibration and the written probabilities stay those of the unchanged images, and the acquisition
    check says its figures at that threshold are in-sample."""
    from xraylib.inference import predict_probabilities
    from xraylib.metrics import choose_threshold, threshold_interval
    from xraylib.models import load_model
    from xraylib.prepare import prepare_data

    settings = {"image_size": "48", "limit": "0", "bootstrap": "20", "threshold": "youden:acquisition"}
    cfg = resolve_config("resnet34", "smoke", settings)
    run = train_run(synth_data, cfg, tmp_path / "resnet34")
    prepared = prepare_data(synth_data, cfg)
    model, calibration = load_model(run / runs.MODEL), runs.read_calibration(run)
    images, y = prepared.images["val"], prepared.labels["val"]
    copies = [images, *(changed(images, name) for name in CHANGES)]
    pooled = np.concatenate([calibration(predict_probabilities(model, x, cfg)) for x in copies])
    metrics = json.loads((run / runs.METRICS).read_text())
    threshold = metrics["threshold"]
    assert threshold["rule"] == "youden:acquisition"
    assert threshold["chosen_on"] == f"validation with its copies through {len(CHANGES)} acquisition changes"
    assert threshold["n_images"] == len(pooled) == (len(CHANGES) + 1) * len(y)
    assert metrics["calibration"]["n_images"] == len(y)  # fitted on the unchanged images alone
    labels, patients = np.tile(y, len(copies)), np.tile(prepared.rows("val")["patient"].to_numpy(), len(copies))
    interval = threshold_interval(labels, pooled, patients, "youden", cfg.bootstrap, cfg.seed)
    assert threshold["value"] == pytest.approx(interval["value"], abs=1e-6)
    assert (threshold["low"], threshold["high"]) == pytest.approx((interval["low"], interval["high"]), abs=1e-6)
    val = pd.read_csv(run / runs.VAL_PREDICTIONS)
    assert val["p_pneumonia"].to_numpy() == pytest.approx(pooled[: len(y)], abs=1e-6)
    on_validation = choose_threshold(y, val["p_pneumonia"].to_numpy(), "youden")
    assert threshold["youden_on_validation"] == pytest.approx(on_validation)
    assert threshold["value"] != pytest.approx(on_validation)  # the changed copies moved it (seeded smoke run)
    predicted = np.where(val["p_pneumonia"] >= threshold["value"], "pneumonia", "normal")
    assert (val["predicted"] == predicted).all()
    assert main(["evaluate", "--run", str(run), "--acquisition", "--bootstrap", "0"]) == 0
    assert IN_SAMPLE in capsys.readouterr().out
    assert json.loads((run / runs.ACQUISITION).read_text())["threshold_chosen_on"] == threshold["chosen_on"]
