"""The figure modules (plots, gradcam_plots, compare_plots, data_plots): every function returns a Figure, writes
a non-empty PNG, and labels classes Normal / Pneumonia."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from xraylib import compare_plots, data_plots, gradcam_plots, plot_style
from xraylib import metrics as M
from xraylib import plots as P
from xraylib.errors import InputError
from xraylib.leaderboard import leaderboard_row
from xraylib.prediction_files import tidy_predictions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def texts(fig: Figure) -> str:
    """Every piece of text drawn in a figure (titles, labels, ticks, legends, annotations)."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and a.get_visible()))


def check(fig: Figure, path) -> str:
    """The figure is a Figure, its PNG exists and is a real PNG, and no class is called Covid."""
    assert isinstance(fig, Figure)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000
    words = texts(fig)
    assert "covid" not in words.lower()
    return words


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    """Smaller PNGs keep the tests fast; the figures themselves are unchanged."""
    monkeypatch.setattr(plot_style, "DPI", 60)


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    n = 300
    y = np.r_[np.zeros(120), np.ones(180)].astype(int)
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.2, n))))
    patient = rng.integers(0, 150, n).astype(str)
    return y, p, patient


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Twelve small gray images of different aspect ratios on disk."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        h, w = (120, 160) if i % 2 else (160, 120)
        path = folder / f"IM-{i:04d}-0001.png"
        yy, xx = np.mgrid[:h, :w]
        image = 127 + 100 * np.sin(xx / (8 + i)) * np.cos(yy / 11) + rng.normal(0, 3, (h, w))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_training_curves_mark_the_best_epoch(tmp_path):
    e = np.arange(8)
    history = pd.DataFrame(
        {
            "epoch": e,
            "loss": 0.7 - 0.05 * e,
            "val_loss": 0.7 - 0.03 * e,
            "accuracy": 0.6 + 0.04 * e,
            "val_accuracy": 0.6 + 0.03 * e,
            "auc": 0.7 + 0.03 * e,
            "val_auc": [0.7, 0.75, 0.8, 0.86, 0.84, 0.83, 0.85, 0.82],
        }
    )
    fig = P.plot_training_curves(history, path=tmp_path / "curves.png")
    words = check(fig, tmp_path / "curves.png")
    assert "best epoch 4 (max val_auc)" in words  # epochs shown from 1
    assert P.best_epoch(history, "val_loss") == (7, "val_loss")


def test_training_curves_handle_missing_columns(tmp_path):
    history = pd.DataFrame({"epoch": [0, 1], "loss": [0.7, 0.6], "val_loss": [0.8, 0.7]})
    fig = P.plot_training_curves(history, path=tmp_path / "partial.png")
    assert "not recorded" in check(fig, tmp_path / "partial.png")
    with pytest.raises(InputError, match="empty"):
        P.plot_training_curves(pd.DataFrame())


def test_confusion_matrix_counts_and_row_percentages(tmp_path, predictions):
    y, p, _ = predictions
    pred = (p >= 0.5).astype(int)
    fig = P.plot_confusion_matrix(y, pred, path=tmp_path / "cm.png")
    words = check(fig, tmp_path / "cm.png")
    tn = int(((y == 0) & (pred == 0)).sum())
    assert f"{tn}\n{tn / 120 * 100:.1f} %" in words
    assert "Normal" in words and "Pneumonia" in words and "True label" in words


def test_roc_pr_shows_auc_ci_and_operating_point(tmp_path, predictions):
    y, p, patient = predictions
    result = M.binary_metrics_ci(y, p, patient, 0.4, n_boot=200)
    fig = P.plot_roc_pr(y, p, 0.4, metrics=result, path=tmp_path / "roc.png")
    words = check(fig, tmp_path / "roc.png")
    auc = result["roc_auc"]
    assert f"ROC-AUC {auc['value']:.3f} (95 % CI {auc['low']:.3f}–{auc['high']:.3f})" in words
    assert "threshold 0.4: sensitivity" in words and "PR-AUC" in words
    fig = P.plot_roc_pr(y, p, 0.5, groups=patient, n_boot=50)  # computes its own CIs
    assert "95 % CI" in texts(fig)
    with pytest.raises(InputError, match="both classes"):
        P.plot_roc_pr(np.ones(5), np.linspace(0, 1, 5))


def test_reliability_diagram_reports_ece(tmp_path, predictions):
    y, p, _ = predictions
    fig = P.plot_reliability(y, p, path=tmp_path / "rel.png")
    assert f"ECE {M.expected_calibration_error(y, p):.3f}" in check(fig, tmp_path / "rel.png")


def test_sample_outcomes_spreads_over_tp_tn_fp_fn(predictions):
    y, p, _ = predictions
    frame = pd.DataFrame({"label": np.where(y, "pneumonia", "normal"), "p_pneumonia": p})
    frame["predicted"] = np.where(p >= 0.5, "pneumonia", "normal")
    sample = P.sample_outcomes(frame, 16, seed=0)
    assert len(sample) == 16 and sample["outcome"].value_counts().to_dict() == {"TP": 4, "TN": 4, "FP": 4, "FN": 4}
    assert list(sample["outcome"]) == sorted(sample["outcome"], key=["TP", "TN", "FP", "FN"].index)
    assert {"label", "predicted", "p_pneumonia"} <= set(sample.columns)  # the caller's columns are kept


def test_infer_threshold():
    frame = pd.DataFrame({"y_true": [0, 1, 1, 0], "p": [0.1, 0.7, 0.45, 0.3], "y_pred": [0, 1, 1, 0]})
    assert P.infer_threshold(frame) == 0.45
    assert P.infer_threshold(frame.assign(y_pred=[1, 1, 0, 0])) is None  # not a threshold of p


def test_example_grid_frames_errors_in_red(tmp_path, image_files):
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0])
    frame = pd.DataFrame(
        {
            "file": [f.rsplit("/", 1)[1] for f in image_files],
            "label": np.where(y, "pneumonia", "normal"),
            "p_pneumonia": np.where(pred, 0.8, 0.2),
            "predicted": np.where(pred, "pneumonia", "normal"),
            "path": image_files,
        }
    )
    fig = P.plot_examples(frame, n=8, ncols=4, path=tmp_path / "examples.png")
    words = check(fig, tmp_path / "examples.png")
    assert "FN · true Pneumonia\npredicted Normal, p = 0.200" in words
    assert "threshold 0.8; errors framed in red" in words
    red = mcolors.to_rgba(P.ERROR_COLOR)
    framed = [ax for ax in fig.axes if ax.get_visible() and ax.spines["top"].get_edgecolor() == red]
    assert len(framed) == 4  # two FP, two FN
    with pytest.raises(InputError, match="path"):
        P.plot_examples(frame.drop(columns="path"))


def test_gradcam_grid(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    images = np.stack([127 + 100 * np.sin(xx / (4 + i)) for i in range(6)]).astype(np.uint8)[..., None]
    heatmaps = np.stack([np.exp(-((xx - 10 * i) ** 2 + (yy - 32) ** 2) / 200) for i in range(6)])
    titles = [f"image {i}" for i in range(6)]
    fig = gradcam_plots.plot_gradcam_grid(
        images, heatmaps, titles=titles, errors=[0, 1, 0, 0, 0, 1], path=tmp_path / "cam.png"
    )
    words = check(fig, tmp_path / "cam.png")
    assert "image 5" in words and "Grad-CAM activation" in words
    fig = gradcam_plots.plot_gradcam_grid(images[..., 0].astype(float) / 255, heatmaps, path=tmp_path / "cam2.png")
    check(fig, tmp_path / "cam2.png")
    with pytest.raises(InputError, match="heatmaps"):
        gradcam_plots.plot_gradcam_grid(images, heatmaps[:3])
    with pytest.raises(InputError, match="titles"):
        gradcam_plots.plot_gradcam_grid(images, heatmaps, titles=["a"])


def test_class_distribution_counts_on_bars(tmp_path):
    index = pd.DataFrame(
        {
            "label": ["normal"] * 30 + ["pneumonia"] * 70 + ["normal"] * 10 + ["pneumonia"] * 15,
            "split": ["train"] * 100 + ["test"] * 25,
        }
    )
    fig = data_plots.plot_class_distribution(index, path=tmp_path / "classes.png")
    words = check(fig, tmp_path / "classes.png")
    assert [ax.get_title() for ax in fig.axes] == ["All images (n = 125)", "Train (n = 100)", "Test (n = 25)"]
    assert "40\n(32%)" in words and "70\n(70%)" in words and "15\n(60%)" in words
    heights = [[round(b.get_height()) for b in ax.patches] for ax in fig.axes]
    assert heights == [[40, 85], [30, 70], [10, 15]]
    index["subset"] = ["train"] * 80 + ["val"] * 20 + ["test"] * 25
    titles = [ax.get_title() for ax in data_plots.plot_class_distribution(index).axes]
    assert titles[2] == "Validation (n = 20)"
    with pytest.raises(InputError, match="split"):
        data_plots.plot_class_distribution(index.drop(columns="split"))


def test_augmentation_grid(tmp_path):
    original = np.tile(np.linspace(0, 255, 64), (64, 1)).astype(np.uint8)
    draws = [np.clip(original * f, 0, 255).astype(np.float32) for f in (0.5, 0.8, 1.1, 1.3)]
    fig = data_plots.plot_augmentations(original, np.stack(draws)[..., None], path=tmp_path / "aug.png")
    assert "draw 4" in check(fig, tmp_path / "aug.png")
    limits = {tuple(ax.images[0].get_clim()) for ax in fig.axes if ax.images}
    assert limits == {(0.0, 255.0)}  # one fixed gray scale: brightness changes stay visible


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])  # a training run may have set bfloat16
def test_the_augmentation_figure_shows_the_equalized_image_the_model_trains_on(tmp_path, policy):
    from types import SimpleNamespace

    import keras

    from xraylib.config import resolve_config
    from xraylib.layers import equalization
    from xraylib.run_figures import data_figure

    image = np.random.default_rng(0).integers(40, 120, (1, 32, 32, 1)).astype(np.uint8)  # a dim, flat image
    prepared = SimpleNamespace(images={"train": image})
    saved = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        for kind, augment, noise in (("none", "true", "0"), ("histogram", "false", "0"), ("none", "true", "10")):
            cfg = resolve_config("resnet34", "smoke", {"equalize": kind, "augment": augment, "noise": noise})
            fig = data_figure("augmentations", prepared, cfg, tmp_path / f"{kind}-{noise}")
            shown = np.asarray(fig.axes[0].images[0].get_array())
            expected = image[0, ..., 0]
            if kind != "none":
                expected = np.asarray(equalization(kind)(image.astype(np.float32)))[0, ..., 0]
            np.testing.assert_allclose(shown, expected, atol=1e-4)
            assert ("equalization" in fig.get_suptitle()) == (kind != "none")
            assert ("not used by this run" in fig.get_suptitle()) == (augment == "false")
            assert ("Gaussian noise σ 10" in fig.get_suptitle()) == (noise == "10")
    finally:
        keras.mixed_precision.set_global_policy(saved)


def test_comparison_figures(tmp_path, predictions, shared_data):
    y, p, patient = predictions
    rng = np.random.default_rng(3)
    frames, rows = {}, []
    for i, name in enumerate(("vgg16", "vgg19", "xception")):
        q = np.clip(p + rng.normal(0, 0.1 * i, len(p)), 0, 1)
        frames[name] = pd.DataFrame(
            {
                "label": np.where(y, "pneumonia", "normal"),
                "p_pneumonia": q,
                "predicted": np.where(q >= 0.5, "pneumonia", "normal"),
            }
        )
        rows.append(leaderboard_row(name, M.binary_metrics_ci(y, q, patient, 0.5, n_boot=100)))
    frames["study vgg19"] = tidy_predictions(shared_data / "reference-predictions" / "VGG19 results.csv")
    fig = compare_plots.plot_roc_overlay(frames, path=tmp_path / "overlay.png")
    words = check(fig, tmp_path / "overlay.png")
    assert "vgg16 (AUC" in words and "study vgg19 (hard labels: one point)" in words
    board = pd.DataFrame(rows)
    fig = compare_plots.plot_metric_bars(board, path=tmp_path / "bars.png")
    words = check(fig, tmp_path / "bars.png")
    assert "ROC-AUC" in words and "xception" in words
    whiskers = [c for ax in fig.axes for c in ax.collections]
    assert len(whiskers) >= 5
    with pytest.raises(InputError, match="none of the metrics"):
        compare_plots.plot_metric_bars(board[["backbone"]])


def test_dataset_exploration_figures(tmp_path, image_files):
    index = pd.DataFrame(
        {
            "path": image_files,
            "file": [f.rsplit("/", 1)[1] for f in image_files],
            "label": ["normal"] * 4 + ["pneumonia"] * 8,
            "split": ["train"] * 9 + ["test"] * 3,
            "subtype": ["none"] * 4 + ["bacteria"] * 4 + ["virus"] * 3 + ["covid-19"],
            "patient": ["a", "a", "b", "c", "d", "d", "d", "e", "f", "g", "h", "h"],
            "source": ["kermany"] * 11 + ["other"],
        }
    )
    fig = data_plots.plot_samples(index, per_group=3, path=tmp_path / "samples.png")
    words = check(fig, tmp_path / "samples.png")
    assert "Pneumonia: viral" in words and "Pneumonia: bacterial" in words and "from papers" in words
    fig = data_plots.plot_image_sizes(index, path=tmp_path / "sizes.png")
    assert "Aspect ratio" in check(fig, tmp_path / "sizes.png")
    fig = data_plots.plot_images_per_patient(index, path=tmp_path / "per_patient.png")
    assert "Train: 6 patients, 9 images" in check(fig, tmp_path / "per_patient.png")


def test_a_value_with_its_ci_is_written_one_way():
    entry = {"value": 0.91234, "low": 0.88, "high": float("nan")}
    assert plot_style.format_interval({**entry, "high": 0.95}) == "0.912 [0.880, 0.950]"
    assert plot_style.format_interval({**entry, "high": 0.95}, 4) == "0.9123 [0.8800, 0.9500]"
    assert plot_style.format_ci({**entry, "high": 0.95}) == "0.880–0.950"
    assert plot_style.format_interval(entry) == "0.912" and plot_style.format_ci(entry) == ""
    assert plot_style.format_interval({"value": None, "low": None, "high": None}) == "undefined"


def test_run_spread_is_the_same_figure_every_time(tmp_path):
    rng = np.random.default_rng(0)
    metrics = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity")
    backbones = ["vgg16"] * 3 + ["xception"] * 3
    runs = pd.DataFrame({"backbone": backbones, **{m: rng.uniform(0.6, 0.9, 6) for m in metrics}})
    np.random.seed(7)
    for name in ("a.png", "b.png"):
        np.random.uniform()  # the caller's draws between two figures must not move the dots
        compare_plots.plot_run_spread(runs, path=tmp_path / name)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    np.random.seed(7)
    compare_plots.plot_run_spread(runs, path=tmp_path / "c.png")
    after = np.random.uniform()
    np.random.seed(7)
    assert after == np.random.uniform()  # the caller's random state is given back
