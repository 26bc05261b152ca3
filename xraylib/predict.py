"""Use a trained model: P(pneumonia) for any chest X-ray files, with Grad-CAM explanations on request.

The run directory next to `model.keras` (written by `xraylib train`) supplies everything else: config.json gives
the image size (and test-time augmentation), metrics.json the calibration and the decision threshold chosen on
validation data (`xraylib.calibration`): P(pneumonia) here is the calibrated probability the threshold applies to. The
model holds its own preprocessing (gray -> RGB -> the backbone's preprocess_input), so its input is the gray image
resized to the run's size, float32 in [0, 255], shape (N, S, S, 1), exactly what training fed it
(`xraylib.pipeline.decode_images`, the same decode loop).

A three-class run (`task=three_class`) gives one calibrated probability per class (p_normal, p_bacterial, p_viral)
and predicts the argmax class; it has no threshold, and its predictions get no Grad-CAM PNGs here (the run's
figures/gradcam.png explains its test images).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xraylib import runs
from xraylib.calibration import Calibration
from xraylib.data import utf8_path
from xraylib.errors import InputError, check_memory
from xraylib.images import is_image_file, load_gray
from xraylib.pipeline import decode_images

if TYPE_CHECKING:
    import keras

    from xraylib.config import RunConfig

BATCH_SIZE = 32  # images per forward pass
CHUNK = 256  # images decoded, predicted and explained together (bounds memory on large folders)
SHOW_ROWS = 25  # rows printed by format_predictions before it abbreviates
FIGURE_SIDE = 600  # long side (pixels) of the radiograph drawn in a Grad-CAM PNG (about its size at 150 dpi)


@dataclass
class Predictor:
    """A loaded model with what it needs from its run: image size, threshold (and where it came from), TTA and
    the calibration of its probabilities."""

    model: keras.Model
    path: Path
    image_size: int
    threshold: float
    threshold_source: str
    config: RunConfig | None = None
    calibration: Calibration = Calibration()

    @property
    def three_class(self) -> bool:
        """Whether the model gives three classes' probabilities (normal, bacterial, viral) instead of P(pneumonia)."""
        return self.config is not None and self.config.task == "three_class"

    @property
    def tta(self) -> bool:
        """Average with the horizontally flipped image, as the run's own evaluation did."""
        return bool(self.config is not None and self.config.tta)


def _model_size(model: keras.Model, path: Path) -> int:
    """The square input size of a model (H == W), from its input shape."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 1 or shape[1] is None or shape[1] != shape[2]:
        raise InputError(f"{path}: input shape {shape} is not the (None, S, S, 1) gray image of `xraylib train`")
    return int(shape[1])


def resolve_threshold(
    run_dir: str | os.PathLike, threshold: float | None = None, metrics: dict | None = None
) -> tuple[float, str]:
    """The decision threshold and where it came from: the one given, else the run's metrics.json (`metrics`, when
    already read), else 0.5."""
    if threshold is not None:
        value = float(threshold)
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise InputError(f"--threshold {threshold}: expected a number in [0, 1]")
        return value, "--threshold"
    path = Path(run_dir) / runs.METRICS
    value = runs.threshold_of(runs.stored_metrics(run_dir) if metrics is None else metrics, path)
    if value is not None and math.isnan(value):
        raise InputError(f"{path}: threshold.value {value} is not in [0, 1]")
    if value is not None:
        return value, f"the run's {path}"
    return 0.5, f"default; no {runs.METRICS} beside the model"


def load_predictor(model_path: str | os.PathLike, threshold: float | None = None) -> Predictor:
    """Load model.keras (safe mode) with its run's image size and threshold: given > metrics.json > 0.5."""
    from xraylib.models import load_model

    path = Path(model_path)
    run_dir = path.parent
    cfg = runs.read_config(run_dir) if (run_dir / runs.CONFIG).is_file() else None
    metrics = runs.stored_metrics(run_dir)
    if cfg is not None and cfg.task == "three_class":
        if threshold is not None:
            raise InputError(f"--threshold: {run_dir} is a three-class run, which predicts the argmax class")
        threshold, source = math.nan, "none: three classes, the argmax class is predicted"
    else:
        threshold, source = resolve_threshold(run_dir, threshold, metrics)  # bad values fail before the slow load
    calibration = runs.calibration_of(metrics, run_dir / runs.METRICS)
    model = load_model(path)
    size = _model_size(model, path)
    if cfg is not None and cfg.image_size and int(cfg.image_size) != size:
        raise InputError(f"{run_dir / runs.CONFIG}: image_size {cfg.image_size} but the model takes {size} px")
    return Predictor(model, path, size, threshold, source, cfg, calibration)


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given (any name) and folders searched recursively for images (`xraylib.images.is_image_file`: .jpeg,
    .jpg, .png, .dcm, .dicom in any case, and DICOM files without a suffix), sorted; no repeats.

    A path that does not exist is kept, so it gets its own error row; an input list naming no file is an error.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[Path] = []
    seen: set[str] = set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files = sorted(
                (p for p in item.rglob("*") if is_image_file(p)),
                key=lambda p: str(p.relative_to(item)).lower(),
            )
            if not files:
                raise InputError(f"{item}: folder holds no .jpeg, .jpg, .png or DICOM file")
        else:
            files = [item]
        for p in files:
            key = os.path.realpath(utf8_path(p))
            if key not in seen:
                seen.add(key)
                found.append(p)
    if not found:
        raise InputError("no image file or folder given")
    return found


def predict_images(predictor: Predictor, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N,) calibrated P(pneumonia), or (N, 3) class probabilities of a three-class run, for uint8 or float
    (N, S, S, 1) images in [0, 255], batched (TTA if the run used it)."""
    from xraylib.config import RunConfig
    from xraylib.inference import predict_probabilities

    if len(images) == 0:
        return np.zeros((0, 3) if predictor.three_class else 0)
    cfg = predictor.config or RunConfig(tta=False)
    raw = predict_probabilities(predictor.model, images, dataclasses.replace(cfg, batch_size=batch_size))
    return predictor.calibration(raw)


def adapt_predictor(predictor: Predictor, paths: list, batch_size: int) -> dict:
    """Align the predictor's model (in place) to the readable images among `paths`, a new site's unlabelled images,
    with its run's adapt_source.npz. Returns what was done, with EM prevalence estimates before and after for a
    binary run whose metrics.json has a validation prevalence."""
    from xraylib.adapt import MIN_IMAGES, align, prevalence_estimates, require_batchnorm
    from xraylib.inference import frozen_split, predict_probabilities
    from xraylib.pipeline import predict_in_batches

    run_dir, cfg = predictor.path.parent, predictor.config
    if cfg is None:
        raise InputError(f"--adapt: {run_dir} has no {runs.CONFIG}: the model's run folder is needed")
    split = frozen_split(predictor.model, cfg)
    frozen = require_batchnorm(split, cfg, "--adapt")[0]
    stored = runs.read_adapt_source(run_dir)
    if stored is None:
        raise InputError(
            f"--adapt: {run_dir} has no {runs.ADAPT_SOURCE}: `xraylib evaluate --run {run_dir} --adapt` computes it "
            "from the run's training images"
        )
    images, errors = decode_images(list(paths), predictor.image_size, on_error="collect")
    images = images[[not e for e in errors]]
    if len(images) < MIN_IMAGES:
        raise InputError(f"--adapt needs at least {MIN_IMAGES} readable images of the new site, got {len(images)}")
    size = int(np.prod(frozen.output.shape[1:]))
    check_memory(4 * size * len(images), f"--adapt over {len(images)} images", "give fewer images")
    cfg = dataclasses.replace(cfg, batch_size=batch_size)
    outputs = predict_in_batches(frozen, images, batch_size)
    before = predict_probabilities(predictor.model, images, cfg, outputs)
    entry = {**align(split, cfg, outputs, stored[0]), "n_source_images": stored[1]}
    validation = runs.validation_of(runs.stored_metrics(run_dir), run_dir / runs.METRICS).get("prevalence")
    if isinstance(validation, float):
        after = predict_probabilities(predictor.model, images, cfg, outputs)
        entry["prevalence"] = prevalence_estimates(predictor.calibration, validation, before, after)
    return entry


def gradcam_names(paths: list[Path]) -> list[str]:
    """A unique PNG name per input: `<stem>.png`, else `<parent>_<stem>.png`, else a numbered `<stem>-<k>.png`."""
    stems = [p.stem for p in paths]
    counts = pd.Series([s.lower() for s in stems]).value_counts()
    names, used = [], set()
    for p, stem in zip(paths, stems, strict=True):
        name = stem if counts[stem.lower()] == 1 else f"{p.parent.name}_{stem}" if p.parent.name else stem
        base, k = name, 1
        while name.lower() in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name.lower())
        names.append(f"{name}.png")
    return names


def _label(p: float, threshold: float) -> str:
    return "pneumonia" if p >= threshold else "normal"


def _display_image(path: Path) -> np.ndarray:
    """The whole radiograph at its own aspect, long side at most FIGURE_SIDE pixels (uint8 gray)."""
    from PIL import Image

    gray = load_gray(path)
    if max(gray.shape) <= FIGURE_SIDE:
        return gray
    h, w = gray.shape
    scale = FIGURE_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.LANCZOS))


def predict_files(
    model: str | os.PathLike | Predictor,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike | None = None,
    gradcam_dir: str | os.PathLike | None = None,
    threshold: float | None = None,
    batch_size: int = BATCH_SIZE,
    adapt: bool = False,
) -> pd.DataFrame:
    """One row per image (path, p_pneumonia, predicted, error [, gradcam]); a bad file gets its error, the rest is
    predicted. Writes the CSV atomically to `out` (unless no image could be read) and one Grad-CAM PNG per image into
    `gradcam_dir` when given.
    `adapt`: the model is first aligned to the readable images (`adapt.adapt_predictor`; what was done in
    `table.attrs["adaptation"]`)."""
    from xraylib.fileio import claim_dir, owned_dir, write_csv

    if isinstance(model, Predictor):
        if threshold is not None:
            value, source = resolve_threshold(model.path.parent, threshold)
            model = dataclasses.replace(model, threshold=value, threshold_source=source)
        predictor = model
    else:
        predictor = load_predictor(model, threshold)
    if gradcam_dir is not None and predictor.three_class:
        raise InputError(f"--gradcam: not drawn for three-class runs ({predictor.path.parent}); see its figures/")
    paths = find_images(inputs)
    adaptation = adapt_predictor(predictor, paths, batch_size) if adapt else None
    p_all = np.full((len(paths), 3) if predictor.three_class else len(paths), np.nan)
    errors = [""] * len(paths)
    pngs = [""] * len(paths)
    names = gradcam_names(paths) if gradcam_dir is not None else []
    if gradcam_dir is not None:
        _check_gradcam_folder(inputs, gradcam_dir)
        _check_gradcam_targets(paths, [Path(gradcam_dir) / name for name in names], gradcam_dir)
        claim_dir(owned_dir(gradcam_dir, "gradcam", "--gradcam"), "gradcam")
    seconds = 0.0  # decoding + prediction, without Grad-CAM
    for start in range(0, len(paths), CHUNK):
        chunk = list(range(start, min(start + CHUNK, len(paths))))
        started = time.perf_counter()
        images, chunk_errors = decode_images([paths[i] for i in chunk], predictor.image_size, on_error="collect")
        good = [k for k, e in enumerate(chunk_errors) if not e]
        p = np.round(predict_images(predictor, images[good], batch_size), 6)  # as the CSV stores it: labels agree
        seconds += time.perf_counter() - started
        for k, e in enumerate(chunk_errors):
            errors[chunk[k]] = e
        for k, value in zip(good, p, strict=True):
            p_all[chunk[k]] = value
        if gradcam_dir is not None and good:
            targets = [Path(gradcam_dir) / names[chunk[k]] for k in good]
            _write_gradcams(predictor, [paths[chunk[k]] for k in good], images[good], p, targets)
            for k, target in zip(good, targets, strict=True):
                pngs[chunk[k]] = str(target)
    if all(errors):  # nothing read: nothing to write
        out = None
    table = pd.DataFrame({"path": [str(p.absolute()) for p in paths]})
    if predictor.three_class:
        from xraylib.three_class import COLUMNS, THREE_CLASSES

        table[COLUMNS] = p_all
        ok = ~np.isnan(p_all).any(axis=1)
        table["predicted"] = np.where(ok, np.asarray(THREE_CLASSES)[np.nan_to_num(p_all).argmax(axis=1)], "")
    else:
        table["p_pneumonia"] = p_all
        table["predicted"] = [_label(v, predictor.threshold) if not np.isnan(v) else "" for v in p_all]
    table["error"] = errors
    if gradcam_dir is not None:
        table["gradcam"] = pngs
    table.attrs.update(
        threshold=predictor.threshold,
        threshold_source=predictor.threshold_source,
        model=str(predictor.path),
        image_size=predictor.image_size,
        seconds=seconds,
        out=str(out) if out else "",
        gradcam_dir=str(gradcam_dir) if gradcam_dir else "",
        adaptation=adaptation,
    )
    if out:
        write_csv(out, table)
    return table


def _check_gradcam_folder(inputs: list[str | os.PathLike], gradcam_dir) -> None:
    """Refuse a Grad-CAM folder inside an input folder: a later `predict` on that folder would read its PNGs."""
    target = Path(gradcam_dir).resolve()
    for folder in (Path(item) for item in inputs):
        if folder.is_dir() and (target == folder.resolve() or folder.resolve() in target.parents):
            raise InputError(f"--gradcam {gradcam_dir}: inside the input folder {folder}; choose another folder")


def _check_gradcam_targets(inputs: list[Path], targets: list[Path], gradcam_dir) -> None:
    """Refuse Grad-CAM PNGs that would overwrite an input image or an existing file of a run folder."""
    readable = {p.resolve() for p in inputs}
    for target in targets:
        if target.resolve() in readable:
            what = "the input image"
        elif target.exists() and any((d / runs.MODEL).is_file() for d in target.resolve().parents):
            what = "a run's file"
        else:
            continue
        raise InputError(f"--gradcam {gradcam_dir}: would overwrite {what} {target}; choose another folder")


def _write_gradcams(
    predictor: Predictor, paths: list[Path], images: np.ndarray, p: np.ndarray, targets: list[Path]
) -> None:
    """Grad-CAM for the decoded images of one chunk, one PNG each (written atomically)."""
    from xraylib.explain import gradcam, smooth_heatmaps
    from xraylib.gradcam_plots import plot_prediction

    raw_threshold = predictor.calibration.raw_threshold(predictor.threshold)  # gradcam sees the model's output
    heatmaps = gradcam(predictor.model, images.astype("float32"), batch_size=BATCH_SIZE // 2, threshold=raw_threshold)
    heatmaps = smooth_heatmaps(predictor.model, heatmaps)
    for path, heat, value, target in zip(paths, heatmaps, p, targets, strict=True):
        plot_prediction(_display_image(path), heat, float(value), predictor.threshold, title=path.name, path=target)


def format_predictions(table: pd.DataFrame, rows: int = SHOW_ROWS) -> str:
    """A short printable table (file, P(pneumonia), prediction or error) with a count line and the threshold."""
    from xraylib.plot_style import format_probability

    if "p_pneumonia" not in table:
        return _format_three_class(table, rows)
    shown = table.head(rows)
    width = max([len(Path(p).name) for p in shown["path"]] + [4])
    lines = [f"{'file':<{width}}  {'P(pneumonia)':>12}  prediction"]
    for _, row in shown.iterrows():
        name = Path(row["path"]).name
        if row["error"]:
            lines.append(f"{name:<{width}}  {'-':>12}  error: {row['error']}")
        else:
            p = format_probability(row["p_pneumonia"], table.attrs.get("threshold"))
            lines.append(f"{name:<{width}}  {p:>12}  {row['predicted']}")
    if len(table) > rows:
        lines.append(f"... and {len(table) - rows} more rows" + (" (see the CSV)" if table.attrs.get("out") else ""))
    n_err = int((table["error"] != "").sum())
    counts = table.loc[table["error"] == "", "predicted"].value_counts()
    attrs = table.attrs
    summary = (
        f"{len(table)} images: {counts.get('pneumonia', 0)} pneumonia, {counts.get('normal', 0)} normal, "
        f"{n_err} unreadable"
    )
    if "threshold" in attrs:
        summary += f"; threshold {format_probability(attrs['threshold'])} ({attrs['threshold_source']})"
    lines.append(summary)
    if attrs.get("seconds") and len(table) - n_err:
        rate = (len(table) - n_err) / attrs["seconds"]
        lines.append(f"model {attrs['model']} at {attrs['image_size']} px: {rate:.1f} images/s (decode + predict)")
    if attrs.get("out"):
        lines.append(f"predictions written to {attrs['out']}")
    if attrs.get("gradcam_dir"):
        lines.append(f"Grad-CAM PNGs written to {attrs['gradcam_dir']}")
    return "\n".join(lines)


def _format_three_class(table: pd.DataFrame, rows: int) -> str:
    """format_predictions of a three-class run: each class's probability and the argmax class."""
    from xraylib.three_class import COLUMNS, THREE_CLASSES

    shown = table.head(rows)
    width = max([len(Path(p).name) for p in shown["path"]] + [4])
    lines = [f"{'file':<{width}}  " + "  ".join(f"{c:>11}" for c in COLUMNS) + "  prediction"]
    for _, row in shown.iterrows():
        name = Path(row["path"]).name
        if row["error"]:
            lines.append(f"{name:<{width}}  error: {row['error']}")
        else:
            lines.append(
                f"{name:<{width}}  " + "  ".join(f"{row[c]:>11.3f}" for c in COLUMNS) + f"  {row['predicted']}"
            )
    if len(table) > rows:
        lines.append(f"... and {len(table) - rows} more rows" + (" (see the CSV)" if table.attrs.get("out") else ""))
    counts = table.loc[table["error"] == "", "predicted"].value_counts()
    n_err = int((table["error"] != "").sum())
    found = ", ".join(f"{counts.get(name, 0)} {name}" for name in THREE_CLASSES)
    lines.append(f"{len(table)} images: {found}, {n_err} unreadable; the predicted class is the argmax")
    if table.attrs.get("out"):
        lines.append(f"predictions written to {table.attrs['out']}")
    return "\n".join(lines)
