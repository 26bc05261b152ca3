"""Evaluating a trained run on a labelled dataset it never saw (external validation), at the run's own threshold."""

from __future__ import annotations

import os
from pathlib import Path

from xraylib.errors import InputError, check_memory
from xraylib.fileio import output_dir, write_csv, write_json

EXTERNAL_FIGURES = ("confusion_matrix", "roc_pr", "reliability", "examples", "gradcam")


def external_folder(run_dir: Path, data: Path) -> Path:
    """Where `evaluate --run` writes by default: RUN_DIR/external/<the dataset folder's name>."""
    return run_dir / "external" / data.resolve().name


def evaluate_on(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Predict every labelled image of `data` (any layout `build_index` reads: CoronaHack, Kermany, or NORMAL/ and
    PNEUMONIA/ folders; every split) with the run's model, label them at the run's validation-chosen threshold, and
    write predictions.csv, metrics.json (a run's schema, with CIs by patient bootstrap) and the figures into `out`.
    Returns `evaluate_file`'s result for them. An unreadable image stops it with its name: no partial metrics."""
    from xraylib.data import build_index
    from xraylib.metrics import evaluate_file
    from xraylib.predict import load_predictor, predict_files
    from xraylib.report import run_config, run_figure
    from xraylib.train import predictions_frame

    run_dir, data = Path(run_dir), Path(data)
    for name in ("model.keras", "metrics.json", "config.json"):
        if not (run_dir / name).is_file():
            raise InputError(f"--run {run_dir}: {name} is missing (not a finished run of `xraylib train`)")
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    index = build_index(data, missing="drop")
    if index.empty:
        raise InputError(f"--data {data}: no image found")
    out = output_dir(out or external_folder(run_dir, data), "--out")
    if out.resolve() in (run_dir.resolve(), data.resolve()) or data.resolve() in out.resolve().parents:
        raise InputError(f"--out {out}: must not be the run folder or lie in the dataset")
    check_memory(16 * n_boot * len(index), f"--bootstrap {n_boot} over {len(index)} images", "use fewer resamples")
    cfg, predictor = run_config(run_dir), load_predictor(run_dir / "model.keras")
    table = predict_files(predictor, list(index["path"]))
    bad = table[table["error"] != ""]
    if len(bad):
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"{bad['path'].iloc[0]}: {bad['error'].iloc[0]}{more}; remove it from {data} to evaluate")
    frame = predictions_frame(index, table["p_pneumonia"].to_numpy(), predictor.threshold)
    write_csv(out / "predictions.csv", frame)
    source = f"the run's {run_dir / 'metrics.json'}, chosen on its validation set"
    result = evaluate_file(out / "predictions.csv", n_boot, seed, threshold=(predictor.threshold, source))
    result.update(run=str(run_dir.resolve()), data=str(data.resolve()), layout=index.attrs["layout"])
    result["sensitivity_by_kind"] = sensitivity_by_kind_of_file(out / "predictions.csv", data, n_boot, seed, index)
    write_json(out / "metrics.json", _run_schema(result, cfg, predictor.threshold))
    for name in EXTERNAL_FIGURES:
        run_figure(name, run_dir, model=predictor.model, results=out)
    return result


def _run_schema(result: dict, cfg, threshold: float) -> dict:
    """metrics.json in the layout a run writes (so report and figures read it), with where the images came from."""
    return {
        "backbone": cfg.backbone,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "run": result["run"],
        "data": result["data"],
        "layout": result["layout"],
        "threshold": {"rule": cfg.threshold, "value": float(threshold), "chosen_on": "validation"},
        "n_test_images": result["n_images"],
        "n_test_patients": result["n_patients"],
        "at_threshold": result["at_threshold"],
        "at_0.5": result["at_0.5"],
        "sensitivity_by_kind": result["sensitivity_by_kind"],
    }


def sensitivity_by_kind_of_file(
    path: str | os.PathLike, data: str | os.PathLike, n_boot: int = 1000, seed: int = 0, index=None
) -> dict[str, dict]:
    """Sensitivity among the bacterial and among the viral pneumonia images of a predictions file (the study's or
    ours), each with a patient-bootstrap CI: its images joined by file name to the metadata of the dataset at
    `data` (the images themselves need not be there)."""
    from xraylib.data import build_index, pneumonia_kind
    from xraylib.metrics import read_predictions, sensitivity_by_kind

    frame = read_predictions(path)
    if index is None:
        index = build_index(data, missing="keep")
    # a name listed in both splits: the test split's row (the predictions files hold test images)
    rows = index.sort_values("split", key=lambda split: split != "test", kind="stable").drop_duplicates("file")
    subtypes = rows.set_index("file")["subtype"]
    unknown = frame.loc[~frame["file"].isin(subtypes.index), "file"]
    if len(unknown):
        raise InputError(f"{path}: {len(unknown)} image(s) not in the metadata of {data} (first: {unknown.iloc[0]})")
    kinds = [pneumonia_kind(subtypes[f]) for f in frame["file"]]
    return sensitivity_by_kind(frame["y_true"], frame["y_pred"], kinds, frame["patient"], n_boot, seed)
