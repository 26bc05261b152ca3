"""xraylib.export: each format loaded with its own runtime predicts like the Keras model (real and synthetic
radiographs); the seed head, TTA and mixed precision; the CLI verb, its refusals and a failing converter."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from xraylib.calibration import Calibration
from xraylib.cli import main
from xraylib.errors import InputError
from xraylib.export import CLASS_NAMES, TOLERANCE, check_images, export_run, float32_model, precision
from xraylib.export_formats import EXPORT_JSON, FORMATS, load_export
from xraylib.images import load_gray
from xraylib.predict import load_predictor, predict_images

SIZE = 32
THRESHOLD = 0.4


CALIBRATION = Calibration("platt", 1.0, 0.8, applied=True)  # moves every probability up


def _write_run(out: Path, model, cfg, calibration: Calibration | None = None) -> Path:
    """A run folder as `xraylib train` leaves it, as far as export reads it: model.keras, config.json,
    metrics.json (threshold 0.4, and the calibration when given)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "config.json").write_text(json.dumps({"run": cfg.to_json()}))
    metrics = {"threshold": {"value": THRESHOLD}}
    if calibration is not None:
        metrics["calibration"] = calibration.to_json()
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def _chest_images(n: int, size: int = SIZE) -> np.ndarray:
    """float32 (n, S, S, 1) varied images in [0, 255] (to give BatchNormalization and pool_norm statistics)."""
    rng = np.random.default_rng(7)
    base = np.repeat(check_images(size), -(-n // 6), axis=0)[:n]
    return np.clip(base * rng.uniform(0.6, 1.2, (n, 1, 1, 1)) + rng.normal(0, 20, base.shape), 0, 255).astype("float32")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The study's ResNet-34 at 32 px with the smoke preset's head (standardised pooled features: a Normalization
    layer) and augmentation layers, each image equalized by one table fitted on the training images (`site`: a
    gather, which every runtime runs) and blurred (`blur`: a mirrored pad and a convolution), its frozen statistics
    set from images as training does; calibrated (Platt)."""
    from xraylib.config import resolve_config
    from xraylib.models import adapt_to_data, build_model

    cfg = resolve_config("resnet34", "smoke", {"image_size": str(SIZE), "equalize": "site", "blur": "1"})
    assert cfg.augment and cfg.pooled_norm
    model = build_model(cfg)
    assert model.get_layer("blur").sigma == 1.0
    adapt_to_data(model, _chest_images(48), random_backbone=True)
    assert not np.array_equal(np.asarray(model.get_layer("equalize").table), np.arange(256))
    return _write_run(tmp_path_factory.mktemp("run"), model, cfg, CALIBRATION)


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory) -> dict[str, dict]:
    """The run exported once in each format: format -> export.json content (with "out")."""
    root = tmp_path_factory.mktemp("exports")
    return {fmt: export_run(run_dir, fmt, out=root / fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def predictor(run_dir):
    return load_predictor(run_dir / "model.keras")


def _compare(exported, predictor, images: np.ndarray) -> float:
    """max |export - Keras| of P(pneumonia) on the same float32 batch (the Keras model's own predict)."""
    images = np.asarray(images, dtype="float32")
    expected = predict_images(predictor, images)
    got = exported.predict(images)
    assert got.shape == expected.shape == (len(images),)
    assert got.dtype == np.float32
    return float(np.max(np.abs(got.astype("float64") - expected)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_predicts_like_keras_on_synthetic_radiographs(fmt, exports, predictor, synth_data):
    paths = sorted(synth_data.rglob("*.jpeg"))[:24]
    images = np.stack([load_gray(p, SIZE) for p in paths])[..., None].astype("float32")
    exported = load_export(exports[fmt]["out"])
    assert exported.format == fmt
    assert _compare(exported, predictor, images) <= TOLERANCE
    # odd batch sizes, extreme values and a batch larger than the export's own batching
    assert _compare(exported, predictor, _chest_images(37)) <= TOLERANCE


@pytest.mark.parametrize("fmt", FORMATS)
def test_predicts_like_keras_on_real_radiographs(fmt, exports, predictor, shared_data):
    paths = sorted((shared_data / "samples" / "coronahack-test").iterdir())
    assert len(paths) == 10
    images = np.stack([load_gray(p, SIZE) for p in paths])[..., None].astype("float32")
    assert _compare(load_export(exports[fmt]["out"]), predictor, images) <= TOLERANCE


def test_the_export_returns_the_runs_calibrated_probability(exports, predictor):
    """The check images' exported P(pneumonia) is the calibrated one, not the model's raw output."""
    from xraylib.inference import predict_probabilities

    assert predictor.calibration == CALIBRATION
    images = check_images(SIZE)
    raw = predict_probabilities(predictor.model, images, predictor.config)
    exported = load_export(exports["saved_model"]["out"]).predict(images)
    assert np.max(np.abs(exported - CALIBRATION(raw))) <= TOLERANCE
    assert np.min(np.abs(exported - raw)) > 10 * TOLERANCE  # the calibration moved every probability
    assert exports["onnx"]["calibration"] == CALIBRATION.to_json()


def test_export_json(exports, run_dir):
    for fmt, info in exports.items():
        out = Path(info["out"])
        on_disk = json.loads((out / EXPORT_JSON).read_text())
        assert (out / on_disk["model_file"]).exists()
        assert on_disk["format"] == fmt
        assert on_disk["threshold"] == THRESHOLD and "metrics.json" in on_disk["threshold_source"]
        assert on_disk["class_names"] == list(CLASS_NAMES) == ["normal", "pneumonia"]
        assert on_disk["input"] == {
            **on_disk["input"],
            "name": "image",
            "dtype": "float32",
            "shape": [None, SIZE, SIZE, 1],
            "color": "gray",
            "range": [0.0, 255.0],
        }
        assert on_disk["output"]["name"] == "p_pneumonia" and on_disk["output"]["shape"] == [None]
        assert on_disk["backbone"] == "resnet34" and on_disk["image_size"] == SIZE
        assert on_disk["versions"]["xraylib"] and on_disk["versions"]["tensorflow"]
        assert on_disk["precision"] == {"run": "float32", "export": "float32"}
        assert on_disk["check"]["max_abs_diff"] <= TOLERANCE
        assert on_disk["source_model"] == str((run_dir / "model.keras").resolve())


def test_signatures_by_runtime(exports):
    """Each runtime sees one float32 input `image` (batch, S, S, 1) and one float32 output `p_pneumonia`."""
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    out = {fmt: Path(info["out"]) for fmt, info in exports.items()}
    signature = tf.saved_model.load(str(out["saved_model"] / "saved_model")).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["image"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, SIZE, SIZE, 1]
    assert signature.structured_outputs["p_pneumonia"].dtype == tf.float32

    session = onnxruntime.InferenceSession(str(out["onnx"] / "model.onnx"), providers=["CPUExecutionProvider"])
    [inp], [outp] = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(float)", ["batch", SIZE, SIZE, 1])
    assert (outp.name, outp.type, outp.shape) == ("p_pneumonia", "tensor(float)", ["batch"])

    runner = Interpreter(model_path=str(out["tflite"] / "model.tflite")).get_signature_runner("serving_default")
    details = runner.get_input_details()["image"]
    assert details["dtype"] == np.float32 and list(details["shape_signature"]) == [-1, SIZE, SIZE, 1]
    assert runner.get_output_details()["p_pneumonia"]["dtype"] == np.float32


def test_augmentation_inactive(exports, predictor):
    """The export holds no random or affine-transform op, and predicts the same twice; the Keras model in training
    mode does not (its augmentation layers are there, and active only in training)."""
    import tensorflow as tf

    graph = tf.saved_model.load(str(Path(exports["saved_model"]["out"]) / "saved_model"))
    graph_def = graph.signatures["serving_default"].graph.as_graph_def()
    ops = {node.op for node in graph_def.node} | {n.op for f in graph_def.library.function for n in f.node_def}
    assert not [op for op in ops if "Random" in op or "ImageProjectiveTransform" in op]
    images = _chest_images(8)
    exported = load_export(exports["tflite"]["out"])
    np.testing.assert_array_equal(exported.predict(images), exported.predict(images))
    assert predictor.model.get_layer("augmentation") is not None
    trained = np.asarray(predictor.model(images, training=True)).ravel()
    assert not np.allclose(trained, np.asarray(predictor.model(images, training=False)).ravel(), atol=1e-3)


def _small_model(head: str = "study"):
    """A small gray-input CNN with the model's own layers (augmentation, gray to RGB, preprocessing, a
    Normalization) and the study head's Dense(2, sigmoid) or the sound head's Dense(1, sigmoid)."""
    import keras

    from xraylib.layers import BackbonePreprocess, GrayToRGB, augmentation

    image = keras.Input((SIZE, SIZE, 1), name="image")
    x = augmentation(3)(image)
    x = GrayToRGB(name="gray_to_rgb")(x)
    x = BackbonePreprocess("vgg16", name="preprocess")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    norm = keras.layers.Normalization(name="pool_norm")
    x = norm(x)
    units = 2 if head == "study" else 1
    output = keras.layers.Dense(units, activation="sigmoid", dtype="float32", name="predictions")(x)
    model = keras.Model(image, output)
    pooled = keras.Model(image, model.get_layer("pool").output).predict(_chest_images(24), verbose=0)
    norm.adapt(pooled)
    return model


def test_study_head_and_tta(tmp_path):
    """The study's two-unit head exports as one probability o1 / (o0 + o1), and a run with `tta` exports the
    average with the flipped image: what `xraylib predict` computes."""
    from xraylib.config import resolve_config

    cfg = resolve_config("vgg16", "study", {"image_size": str(SIZE), "tta": "true"})
    run = _write_run(tmp_path / "run", _small_model("study"), cfg)
    predictor = load_predictor(run / "model.keras")
    assert predictor.tta
    images = _chest_images(13)
    for fmt in FORMATS:
        info = export_run(run, fmt, out=tmp_path / fmt)
        assert info["tta"] is True and info["head"] == "study"
        assert _compare(load_export(info["out"]), predictor, images) <= TOLERANCE
    flipped = load_export(tmp_path / "onnx").predict(images[:, :, ::-1])
    np.testing.assert_allclose(flipped, load_export(tmp_path / "onnx").predict(images), atol=1e-6)


@pytest.fixture()
def mixed_model():
    """A model built under Keras' mixed_bfloat16 policy, as `xraylib train --set mixed_precision=on` builds it on
    a CPU (mixed_float16 on a GPU); the global policy is restored afterwards."""
    import keras

    saved = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _small_model("sound")
    finally:
        keras.mixed_precision.set_global_policy(saved)
    return model


def test_float32_model(mixed_model):
    """The float32 copy of a mixed-precision model has float32 layers and the same weights, and predicts like the
    same architecture built in float32 with those weights."""
    assert precision(mixed_model) == "mixed_bfloat16"
    copy = float32_model(mixed_model)
    assert precision(copy) == "float32" and copy is not mixed_model
    for a, b in zip(mixed_model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    reference = _small_model("sound")
    reference.set_weights(mixed_model.get_weights())
    reference.get_layer("pool_norm").finalize_state()
    images = _chest_images(9)
    np.testing.assert_allclose(copy.predict(images, verbose=0), reference.predict(images, verbose=0), atol=1e-6)
    assert float32_model(reference) is reference


def test_mixed_precision_run_exports_float32(mixed_model, tmp_path):
    """A mixed-precision run's export takes and returns float32, predicts like the float32 Keras model within the
    tolerance, and like the mixed-precision model itself within bfloat16's rounding."""
    from xraylib.config import resolve_config

    cfg = resolve_config("vgg16", "sound", {"image_size": str(SIZE), "mixed_precision": "on"})
    run = _write_run(tmp_path / "run", mixed_model, cfg)
    predictor = load_predictor(run / "model.keras")
    assert precision(predictor.model) == "mixed_bfloat16"
    images = _chest_images(11)
    float32 = predict_images(dataclasses.replace(predictor, model=float32_model(predictor.model)), images)
    mixed = predict_images(predictor, images)
    for fmt in FORMATS:
        info = export_run(run, fmt, out=tmp_path / fmt)
        assert info["precision"] == {"run": "mixed_bfloat16", "export": "float32"}
        got = load_export(info["out"]).predict(images)
        assert got.dtype == np.float32
        assert np.max(np.abs(got - float32)) <= TOLERANCE
        assert np.max(np.abs(got - mixed)) < 0.05
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"


@pytest.fixture()
def small_run(tmp_path) -> Path:
    from xraylib.config import resolve_config

    cfg = resolve_config("vgg16", "sound", {"image_size": str(SIZE)})
    return _write_run(tmp_path / "small", _small_model("sound"), cfg)


def test_cli_export(small_run, capsys):
    assert main(["export", str(small_run), "--format", "onnx"]) == 0
    printed = capsys.readouterr()
    out = small_run / "export" / "onnx"
    assert (out / "model.onnx").is_file() and (out / EXPORT_JSON).is_file()
    assert str(out / "model.onnx") in printed.out and "'image'" in printed.out and "0.4" in printed.out
    assert printed.err == ""
    first = (out / "model.onnx").stat().st_mtime_ns
    assert main(["export", str(small_run / "model.keras"), "--format", "onnx"]) == 0  # an earlier export: replaced
    assert (out / "model.onnx").stat().st_mtime_ns != first
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_JSON, "model.onnx"]
    capsys.readouterr()
    (out / "notes.txt").write_text("mine")  # a user's file in an earlier export: the export would delete it
    assert main(["export", str(small_run), "--format", "tflite", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "an earlier export that also holds notes.txt" in err and "\n" not in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.onnx").is_file()


def test_cli_refuses_outputs(small_run, tmp_path, capsys):
    (small_run / "figures").mkdir()
    (small_run / "figures" / "roc.png").write_bytes(b"png")
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    before = {p: p.read_bytes() for p in small_run.rglob("*") if p.is_file()}
    cases = {
        str(small_run): "is the run folder",
        str(small_run.parent): "holds it",
        str(small_run / "model.keras"): "is a file of the run",
        str(small_run / "metrics.json"): "is a file of the run",
        str(small_run / "figures"): "not an xraylib export",
        str(other): "is an existing file",
    }
    for out, reason in cases.items():
        assert main(["export", str(small_run), "--format", "tflite", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and "--out" in err, err
    assert {p: p.read_bytes() for p in small_run.rglob("*") if p.is_file()} == before
    assert other.read_text() == "keep me"
    assert main(["export", str(tmp_path / "nowhere"), "--format", "onnx"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["export", str(small_run / "figures"), "--format", "onnx"]) == 2
    assert "holds no model.keras" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(small_run), "--format", "pt"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_failing_converter_one_line(fmt, small_run, tmp_path, monkeypatch, capsys):
    """A converter that raises a long multi-line error: one line naming the format, exit 2, nothing written."""
    import keras
    import tf2onnx

    def fail(*args, **kwargs):
        raise RuntimeError("converter exploded\n  Traceback-like detail\n  more detail")

    if fmt == "onnx":
        monkeypatch.setattr(tf2onnx.convert, "from_graph_def", fail)
    else:
        monkeypatch.setattr(keras.Model, "export", fail)
    out = tmp_path / "new" / "out"
    assert main(["export", str(small_run), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--format {fmt}" in err and "converter exploded" in err, err
    assert not (tmp_path / "new").exists()  # no half-written folder, nor the folders made for it
    assert main(["export", str(small_run), "--format", fmt]) == 2  # the default folder, inside the run
    assert f"--format {fmt}" in capsys.readouterr().err
    assert not (small_run / "export").exists()


def test_export_check_rejects_a_wrong_export(small_run, tmp_path, monkeypatch):
    """An export that does not predict like the Keras model is refused (here: a runtime answering 0.5)."""
    import xraylib.export as export
    from xraylib.export_formats import ExportedModel

    monkeypatch.setattr(ExportedModel, "predict", lambda self, images: np.full(len(images), 0.5, "float32"))
    with pytest.raises(InputError, match="--format onnx: the export's P.pneumonia. differs") as info:
        export_run(small_run, "onnx", out=tmp_path / "bad")
    assert "itself" not in str(info.value)  # this model is stable: the export is at fault
    assert not (tmp_path / "bad").exists()
    # a model whose own outputs move with float rounding more than the tolerance: the error says so
    monkeypatch.setattr(export, "keras_spread", lambda serving, images, expected: 0.003)
    with pytest.raises(InputError, match="The Keras model itself differs by 0.003 between predict"):
        export_run(small_run, "onnx", out=tmp_path / "bad")


def test_keras_spread_of_a_stable_model(run_dir, predictor):
    from xraylib.export import keras_spread, serving_model

    images = check_images(SIZE)
    serving = serving_model(predictor.model, calibration=predictor.calibration)
    # float rounding alone, batched predict vs one eager call: 1.04e-5 on an AMD EPYC with AVX-512, well below the
    # tolerance an export is held to, so a failed export check means the export, not Keras' own jitter
    assert keras_spread(serving, images, predict_images(predictor, images)) < TOLERANCE / 4


def test_load_export_errors(tmp_path):
    with pytest.raises(InputError, match="no such exported model"):
        load_export(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(InputError, match="--format onnx: onnxruntime cannot load"):
        load_export(tmp_path / "broken.onnx")


def test_a_run_equalizing_each_image_exports_and_predicts_like_keras(tmp_path):
    """The `cpu` preset equalizes each image by its own histogram inside the model: SavedModel and ONNX carry that
    step and predict like Keras, image by image; LiteRT cannot run it (it needs TensorFlow's own ops), and the
    export says so in one line. (One table for all, `site`, is the module's run: every format runs it.)"""
    from xraylib.config import resolve_config
    from xraylib.models import adapt_to_data, build_model

    cfg = resolve_config("resnet34", "smoke", {"image_size": str(SIZE), "equalize": "histogram"})
    model = build_model(cfg)
    adapt_to_data(model, _chest_images(48), random_backbone=True)
    run = _write_run(tmp_path / "run", model, cfg)
    predictor = load_predictor(run / "model.keras")
    images = _chest_images(13)
    for fmt in ("saved_model", "onnx"):
        exported = load_export(export_run(run, fmt, out=tmp_path / fmt)["out"])
        assert _compare(exported, predictor, images) <= TOLERANCE, fmt
        np.testing.assert_allclose(exported.predict(images[:1]), exported.predict(images)[:1], atol=1e-6)
    with pytest.raises(InputError, match="LiteRT cannot run the export .*Select TensorFlow op"):
        export_run(run, "tflite", out=tmp_path / "tflite")
