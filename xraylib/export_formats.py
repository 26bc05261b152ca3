"""The export formats, each with its converter and its runtime: SavedModel, ONNX and LiteRT, written and loaded back.

SavedModel and LiteRT files are written by Keras' `Model.export`. ONNX is converted with tf2onnx (the library
Keras' own ONNX export calls) from a frozen graph: Keras' `Model.export(format="onnx")` hands tf2onnx a function
whose captured constants (the mean and variance of a `Normalization` layer, as in the `demo` head) become extra
required inputs of the ONNX model, which then cannot run.

`xraylib.export` builds the serving model from a run, converts it here, and checks the result with `ExportedModel`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xraylib.errors import InputError, first_line

if TYPE_CHECKING:
    import keras

FORMATS = ("saved_model", "onnx", "tflite")
ARTIFACTS = {"saved_model": "saved_model", "onnx": "model.onnx", "tflite": "model.tflite"}
RUNTIMES = {"saved_model": "TensorFlow", "onnx": "onnxruntime", "tflite": "LiteRT"}
CONVERTERS = {"saved_model": "Keras SavedModel export", "onnx": "tf2onnx", "tflite": "Keras LiteRT export"}
INPUT_NAME, OUTPUT_NAME = "image", "p_pneumonia"
SIGNATURE = "serving_default"
EXPORT_JSON = "export.json"
BATCH = 32  # images per call of an exported model


# ---------------------------------------------------------------------------------------------------------------
# Converters


def _input_spec(size: int):
    import tensorflow as tf

    return tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME)


def _to_onnx(model: keras.Model, path: Path, size: int) -> None:
    """tf2onnx on the frozen inference graph: captured constants become ONNX initializers, not inputs."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise InputError(f"--format onnx needs tf2onnx and onnx (pip install 'xraylib[export]'): {exc}") from None
    with contextlib.suppress(ImportError):  # Keras' own patch of tf2onnx for NumPy 2 (np.object, np.cast)
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()

    function = tf.function(lambda image: model(image, training=False)[OUTPUT_NAME])
    frozen = convert_variables_to_constants_v2(
        function.get_concrete_function(_input_spec(size)), lower_control_flow=False, aggressive_inlining=True
    )
    inputs, outputs = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise RuntimeError(f"the frozen graph has inputs {inputs} and outputs {outputs}, expected one of each")
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(add_shapes=True),
        name="xraylib",
        input_names=inputs,
        output_names=outputs,
        tensors_to_rename={inputs[0]: INPUT_NAME, outputs[0]: OUTPUT_NAME},
    )
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(proto, str(path))


def convert(model: keras.Model, fmt: str, path: Path) -> None:
    """Write the serving model in `fmt` to `path` (a folder for saved_model, a file otherwise)."""
    size = int(model.inputs[0].shape[1])
    if fmt == "saved_model":
        model.export(str(path), format="tf_saved_model", input_signature=[_input_spec(size)], verbose=False)
    elif fmt == "tflite":
        model.export(str(path), format="litert", input_signature=[_input_spec(size)], verbose=False)
    elif fmt == "onnx":
        _to_onnx(model, path, size)
    else:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------------------------
# Loading an export with its own runtime


def error_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's type and the first line of its message."""
    return f"{type(exc).__name__}: {first_line(exc, limit)}"


class ExportedModel:
    """An export loaded with its own runtime: `predict(images)` -> (N,) P(pneumonia) for float (N, S, S, 1) gray
    images in [0, 255]. `path` is an export folder (with export.json) or the model file / SavedModel folder."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None):
        from xraylib.fileio import read_json

        path = Path(path)
        self.info: dict = {}
        if (path / EXPORT_JSON).is_file():
            self.info = read_json(path / EXPORT_JSON)
            fmt = fmt or self.info.get("format")
            path = path / str(self.info.get("model_file") or ARTIFACTS.get(str(fmt), ""))
        if fmt is None:
            fmt = {".onnx": "onnx", ".tflite": "tflite"}.get(path.suffix.lower(), "saved_model")
        if fmt not in FORMATS:
            raise InputError(f"{path}: unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")
        if not path.exists():
            raise InputError(f"{path}: no such exported model")
        self.path, self.format = path, fmt
        try:
            self._run = getattr(self, f"_load_{fmt}")()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"--format {fmt}: {RUNTIMES[fmt]} cannot load {path} ({error_line(exc)})") from exc

    def _load_saved_model(self):
        import tensorflow as tf

        signature = tf.saved_model.load(str(self.path)).signatures[SIGNATURE]
        return lambda x: signature(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()

    def _load_onnx(self):
        try:
            import onnxruntime
        except ImportError as exc:
            raise InputError(
                f"--format onnx: onnxruntime is not installed (pip install 'xraylib[export]'): {exc}"
            ) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def _load_tflite(self):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # the LiteRT interpreter TensorFlow still ships
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter  # noqa: N806
        runner = Interpreter(model_path=str(self.path)).get_signature_runner(SIGNATURE)
        return lambda x: runner(**{INPUT_NAME: x})[OUTPUT_NAME]

    def predict(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """(N,) float32 P(pneumonia), in batches of at most `batch_size` images."""
        images = np.asarray(images, dtype="float32")
        if images.ndim == 3:
            images = images[..., None]
        parts = [
            np.asarray(self._run(np.ascontiguousarray(images[i : i + batch_size])), dtype="float32").reshape(-1)
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype="float32")


def load_export(path: str | os.PathLike) -> ExportedModel:
    """An export folder written by `xraylib export` (or its model file), loaded with its format's runtime."""
    return ExportedModel(path)
