"""Export a run's model for serving without xraylib or Keras: a TensorFlow SavedModel, ONNX, or LiteRT (TFLite).

The exported model takes what the run's own model takes, the **gray** image resized to the run's size: input
`image`, float32 (batch, S, S, 1), values in [0, 255], what `xraylib.images.load_gray(path, S)` returns (any
JPEG/PNG decoded to 8-bit gray, RGB as ITU-R 601 luma like Pillow's `convert("L")`, the whole image resized to
S x S without cropping). It returns output `p_pneumonia`, float32 (batch,): P(pneumonia), exactly what
`xraylib predict` computes (the study's two-unit head normalised to one probability, the flip average of a run
with `tta`, then the run's calibration, so the run's threshold applies to it). Gray to RGB and the backbone's
preprocessing are inside the model; the augmentation layers are inactive
(inference mode). A mixed-precision run is exported in float32 (its layers rebuilt with the float32 policy; the
weights are float32 already).

`export.json` beside the model holds the decision threshold (from the run's metrics.json, read by
`xraylib.predict.resolve_threshold`), the class names, the input and output specification, backbone, image size and
versions. Each export is loaded with its own runtime (TensorFlow, onnxruntime, the LiteRT interpreter) before it
is kept, and must predict within TOLERANCE of the Keras model on a fixed set of check images. Each format's
converter and runtime, and `load_export` for any export folder: `xraylib.export_formats`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xraylib import runs
from xraylib.calibration import EPS, Calibration
from xraylib.errors import InputError
from xraylib.export_formats import (
    ARTIFACTS,
    CONVERTERS,
    EXPORT_JSON,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    RUNTIMES,
    SIGNATURE,
    ExportedModel,
    convert,
    error_line,
)
from xraylib.fileio import stderr_into

if TYPE_CHECKING:
    import keras

CLASS_NAMES = ("normal", "pneumonia")  # index 0 and 1; pneumonia when p_pneumonia >= threshold
TOLERANCE = 1e-4  # max |export - Keras| of P(pneumonia) on the check images


# ---------------------------------------------------------------------------------------------------------------
# Where an export goes


def run_folder(path: str | os.PathLike) -> Path:
    """The run folder of RUN_DIR (or of its model.keras, given instead); one-line error when it holds no model."""
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        path = path.parent
    if not path.is_dir():
        raise InputError(f"{path}: no such run folder")
    if not (path / runs.MODEL).is_file():
        raise InputError(f"{path}: holds no model.keras (not a finished run of `xraylib train`)")
    runs.binary_run_only(path, "xraylib export")
    return path


def default_out(run_dir: str | os.PathLike, fmt: str) -> Path:
    """RUN_DIR/export/<format>/."""
    return Path(run_dir) / "export" / fmt


def check_out(out: str | os.PathLike, run_dir: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that would replace the run, a file, or a folder of other files.

    The folder is replaced as a whole, so it must be new, empty, or an earlier export (`fileio.owned_dir`: it holds
    export.json) holding nothing but an export's files.
    """
    from xraylib.fileio import entries, owned_dir

    out, run = Path(out), Path(run_dir).resolve()
    target = out.resolve()
    if target == run or target in run.parents:
        raise InputError(f"{option} {out}: is the run folder or holds it; choose a new folder")
    if out.exists() and not out.is_dir():
        what = "a file of the run" if run in target.parents else "an existing file"
        raise InputError(f"{option} {out}: is {what}, not a folder; choose a new folder")
    out = owned_dir(out, "export", option)
    foreign = sorted(set(entries(out)) - {EXPORT_JSON, *ARTIFACTS.values()}) if out.is_dir() else []
    if foreign:  # the export replaces the folder as a whole: files added to an earlier export would go with it
        held = ", ".join(foreign[:3])
        raise InputError(f"{option} {out}: an earlier export that also holds {held}; choose a new folder")
    return out


# ---------------------------------------------------------------------------------------------------------------
# The model that is exported


def _layers(model) -> Iterator:
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def precision(model: keras.Model) -> str:
    """The model's dtype policy: "float32", or the mixed policy its layers use (e.g. "mixed_float16")."""
    names = sorted({layer.dtype_policy.name for layer in _layers(model)} - {"float32"})
    return ",".join(names) or "float32"


def _float32_config(obj):
    """A model config with every mixed dtype policy (and float16/bfloat16 tensor dtype) set to float32."""
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    obj = {k: _float32_config(v) for k, v in obj.items()}
    config = obj.get("config")
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(config, dict):
        if str(config.get("name", "")).startswith("mixed_"):
            obj["config"] = {**config, "name": "float32"}
    elif (
        obj.get("class_name") == "__keras_tensor__"
        and isinstance(config, dict)
        and config.get("dtype") in ("float16", "bfloat16")
    ):
        obj["config"] = {**config, "dtype": "float32"}
    return obj


def float32_model(model: keras.Model) -> keras.Model:
    """The model itself when it computes in float32; else the same architecture rebuilt with float32 layers and
    the same weights (mixed precision keeps its weights in float32, so they carry over exactly)."""
    if precision(model) == "float32":
        return model
    import keras

    import xraylib.layers  # noqa: F401  (registers the custom layers)

    with _policy("float32"):
        copy = model.__class__.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    for layer in _layers(copy):
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()  # its mean and variance tensors are computed from the weights just set
    return copy


@contextlib.contextmanager
def _policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to `name` for the block."""
    import keras

    saved = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(saved)


def _probability(outputs):
    """P(pneumonia) from the sound head's (N, 1) or the study head's (N, 2) outputs, as `models.probability`."""
    from keras import ops

    outputs = ops.cast(outputs, "float32")
    if outputs.shape[-1] == 1:
        return ops.squeeze(outputs, -1)
    total = outputs[:, 0] + outputs[:, 1]
    positive = ops.greater(total, 0.0)
    return ops.where(positive, outputs[:, 1] / ops.where(positive, total, 1.0), 0.5)


def _calibrated(p, calibration: Calibration):
    """`calibration` (`xraylib.calibration`) in Keras ops: sigmoid(slope * logit(p) + intercept + shift)."""
    from keras import ops

    if not calibration.applied and not calibration.shift:
        return p
    p = ops.clip(p, EPS, 1.0 - EPS)
    z = ops.log(p) - ops.log(1.0 - p)  # no Log1p in ONNX
    if calibration.applied:
        z = calibration.slope * z + calibration.intercept
    return ops.sigmoid(z + calibration.shift)


def serving_model(model: keras.Model, tta: bool = False, calibration: Calibration | None = None) -> keras.Model:
    """image (N, S, S, 1) float32 [0, 255] -> {"p_pneumonia": (N,)}: the run's model in inference mode, its output
    turned into one probability, averaged with the horizontally flipped image when the run used `tta`, and
    calibrated as the run's probabilities are."""
    import keras
    from keras import ops

    size = int(model.inputs[0].shape[1])
    with _policy("float32"):
        image = keras.Input((size, size, 1), name=INPUT_NAME, dtype="float32")
        p = _probability(model(image, training=False))
        if tta:
            p = (p + _probability(model(ops.flip(image, axis=2), training=False))) / 2.0
        p = _calibrated(p, calibration or Calibration())
        return keras.Model(image, {OUTPUT_NAME: p}, name="xraylib_export")


# ---------------------------------------------------------------------------------------------------------------
# Export a run


def check_images(size: int) -> np.ndarray:
    """Fixed float32 (6, S, S, 1) images in [0, 255] for the export check: black, white, noise, a gradient, and
    two chest-like pictures (bright body, two dark lung fields, one with a bright opacity)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype("float32") / max(1, size - 1)
    body = 200.0 * np.exp(-(((x - 0.5) / 0.45) ** 6 + ((y - 0.55) / 0.5) ** 6))
    lungs = np.exp(-(((x - 0.3) / 0.13) ** 2 + ((y - 0.5) / 0.25) ** 2)) + np.exp(
        -(((x - 0.7) / 0.13) ** 2 + ((y - 0.5) / 0.25) ** 2)
    )
    chest = np.clip(body * (1.0 - 0.6 * lungs) + rng.normal(0, 6, (size, size)), 0, 255)
    opacity = 90.0 * np.exp(-(((x - 0.68) / 0.08) ** 2 + ((y - 0.6) / 0.1) ** 2))
    images = [
        np.zeros((size, size)),
        np.full((size, size), 255.0),
        rng.uniform(0, 255, (size, size)),
        255.0 * x,
        chest,
        np.clip(chest + opacity, 0, 255),
    ]
    return np.stack(images).astype("float32")[..., None]


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Converters' and runtimes' own log lines (file descriptor 2, Python warnings, TensorFlow's logger) kept
    out of the way while `enabled`."""
    if not enabled:
        yield
        return
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx", "absl")]
    levels = [logger.level for logger in loggers]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), stderr_into(sink):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _versions(fmt: str) -> dict[str, str]:
    """Versions of xraylib and of the libraries that wrote and checked the export."""
    from importlib import metadata

    import xraylib

    names = {"saved_model": [], "onnx": ["tf2onnx", "onnx", "onnxruntime"], "tflite": ["ai-edge-litert"]}[fmt]
    versions = {"xraylib": xraylib.__version__}
    for name in ["tensorflow", "keras", *names]:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _backbone(model: keras.Model, cfg) -> str:
    if cfg is not None and cfg.backbone:
        return str(cfg.backbone)
    for layer in _layers(model):
        if getattr(layer, "backbone", None) and isinstance(layer.backbone, str):
            return layer.backbone
    return ""


def _describe(run: Path, predictor, fmt: str, run_precision: str, diff: float, n_images: int) -> dict:
    """export.json: what the export takes and returns, the run's threshold and class names, the check, versions."""
    size, cfg = predictor.image_size, predictor.config
    how = (
        "decode the image, convert it to 8-bit gray (RGB as ITU-R 601 luma, as Pillow's convert('L')), resize the "
        f"whole image to {size}x{size} without cropping (Lanczos), pass the values 0-255 unscaled as float32: what "
        f"xraylib.images.load_gray(path, {size}) returns"
    )
    return {
        "format": fmt,
        "model_file": ARTIFACTS[fmt],
        "runtime": RUNTIMES[fmt],
        "source_model": str((run / runs.MODEL).resolve()),
        "backbone": _backbone(predictor.model, cfg),
        "head": str(cfg.head) if cfg is not None else "",
        "image_size": size,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [None, size, size, 1],
            "layout": "NHWC",
            "color": "gray",
            "range": [0.0, 255.0],
            "how": how,
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None], "meaning": "P(pneumonia) per image"},
        "calibration": predictor.calibration.to_json(),
        "signature": SIGNATURE if fmt != "onnx" else "",
        "class_names": list(CLASS_NAMES),
        "threshold": predictor.threshold,
        "threshold_source": predictor.threshold_source,
        "decision": f"{CLASS_NAMES[1]} when {OUTPUT_NAME} >= threshold, else {CLASS_NAMES[0]}",
        "tta": predictor.tta,
        "precision": {"run": run_precision, "export": "float32"},
        "augmentation": "inactive (inference mode)",
        "check": {
            "images": n_images,
            "max_abs_diff": diff,
            "tolerance": TOLERANCE,
            "against": "the run's Keras model" + (" rebuilt in float32" if run_precision != "float32" else ""),
        },
        "versions": _versions(fmt),
    }


def _convert_and_check(serving, fmt: str, artifact: Path, images: np.ndarray, expected: np.ndarray, quiet: bool):
    """Convert, load the result with its runtime, and return its max |difference| from `expected` on `images`;
    a failing converter or runtime, or a difference above TOLERANCE, is a one-line InputError naming the format."""
    try:
        with _quiet(quiet):
            convert(serving, fmt, artifact)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"--format {fmt}: the {CONVERTERS[fmt]} converter failed ({error_line(exc)})") from exc
    with _quiet(quiet):
        exported = ExportedModel(artifact, fmt)
        try:
            got = exported.predict(images)
        except Exception as exc:
            raise InputError(f"--format {fmt}: {RUNTIMES[fmt]} cannot run the export ({error_line(exc)})") from exc
    diff = float(np.max(np.abs(got.astype("float64") - expected))) if got.shape == expected.shape else np.inf
    if not diff <= TOLERANCE:
        message = (
            f"--format {fmt}: the export's P(pneumonia) differs from the Keras model's by {diff:.3g} on the check "
            f"images (more than {TOLERANCE:g}); nothing written"
        )
        own = keras_spread(serving, images, expected)
        if own > TOLERANCE:
            message += (
                f". The Keras model itself differs by {own:.3g} between predict() and a direct call on them: its "
                "outputs change with float rounding (as a deep, randomly initialised backbone's do), so no export "
                "can match it"
            )
        raise InputError(message)
    return diff


def keras_spread(serving, images: np.ndarray, expected: np.ndarray) -> float:
    """max |P(pneumonia)| difference between the Keras model's `predict` (`expected`) and the same computation
    called directly (eager, one batch): how far float rounding alone moves this model's outputs."""
    direct = np.asarray(serving(np.asarray(images, dtype="float32"), training=False)[OUTPUT_NAME], dtype="float64")
    return float(np.max(np.abs(direct.reshape(-1) - expected)))


def export_run(
    run_dir: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    quiet: bool = True,
) -> dict:
    """Export the run's model.keras in `fmt` into `out` (default RUN_DIR/export/<format>/), with export.json.

    The export is loaded with its format's runtime and compared with the Keras model on `check_images`; one
    differing by more than TOLERANCE, or a converter or runtime that fails, is a one-line InputError naming the
    format, and nothing is written. Returns export.json's content (with "out" and "seconds").
    """
    from xraylib.fileio import atomic_dir, write_json
    from xraylib.predict import load_predictor, predict_images

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    run = run_folder(run_dir)
    out = Path(out) if out is not None else default_out(run, fmt)
    check_out(out, run)
    started = time.perf_counter()
    predictor = load_predictor(run / runs.MODEL)  # the run's image size, threshold (metrics.json) and settings
    run_precision = precision(predictor.model)
    with _quiet(quiet):
        reference = dataclasses.replace(predictor, model=float32_model(predictor.model))
        serving = serving_model(reference.model, tta=predictor.tta, calibration=predictor.calibration)
    images = check_images(predictor.image_size)
    expected = predict_images(reference, images)  # the Keras model's own predictions (with TTA if the run used it)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    try:
        with atomic_dir(out) as tmp:
            diff = _convert_and_check(serving, fmt, tmp / ARTIFACTS[fmt], images, expected, quiet)
            info = _describe(run, predictor, fmt, run_precision, diff, len(images))
            write_json(tmp / EXPORT_JSON, info)
    except BaseException:
        for folder in created:  # folders made for an export that was not written
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return {**info, "out": str(out), "seconds": round(time.perf_counter() - started, 1)}


def format_export(info: dict) -> str:
    """What the export verb prints: where it went, the input and output, the threshold, the check."""
    spec, size = info["input"], info["image_size"]
    lines = [
        f"exported {info['source_model']} as {info['format']} to {Path(info['out']) / info['model_file']}",
        f"  input  {spec['name']!r}: float32 (batch, {size}, {size}, 1), gray image resized to {size} px, "
        "values 0-255 (not scaled)",
        f"  output {info['output']['name']!r}: float32 (batch,), P(pneumonia); {CLASS_NAMES[1]} when "
        f">= {info['threshold']:.6g} ({info['threshold_source']}), else {CLASS_NAMES[0]}",
        f"  checked with {info['runtime']} on {info['check']['images']} images: max |export - Keras| = "
        f"{info['check']['max_abs_diff']:.2g} (tolerance {info['check']['tolerance']:g})",
        f"  {Path(info['out']) / EXPORT_JSON}: threshold, class names, input and output, backbone, versions",
    ]
    if info["precision"]["run"] != "float32":
        lines.insert(3, f"  the run computed in {info['precision']['run']}; the export computes in float32")
    return "\n".join(lines)
