"""The prediction page (Gradio): upload chest X-rays, see P(pneumonia), the label at the run's threshold, Grad-CAM.

Everything it shows comes from `xraylib.predict` (the same decoding, probabilities, labels and Grad-CAM figures as
`xraylib predict --gradcam`). The server listens on 127.0.0.1 unless told otherwise, and Gradio's analytics are off.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from xraylib import runs
from xraylib.errors import InputError

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

    from xraylib.predict import Predictor

HOST = "127.0.0.1"
NOTEBOOK_HEIGHT = 900  # pixels of the inline frame in a notebook (Gradio's 500 hides the results)
UPLOADS_KEPT = 3600  # seconds Gradio keeps uploaded radiographs (and the figures) in its temporary cache
RUN_FILES = (runs.MODEL, runs.METRICS)  # the model and its validation-chosen threshold
COLUMNS = ["file", "P(pneumonia)", "prediction"]


def _gradio():
    """The gradio module, or one line saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise InputError("xraylib app needs the app extra: pip install 'xraylib[app]'") from None
    return gradio


def check_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR if it holds a finished run (model.keras and metrics.json), else a one-line InputError."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: no such run folder")
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        raise InputError(f"{run}: not a finished run (no {' or '.join(missing)}); train one with `xraylib train`")
    runs.binary_run_only(run, "the prediction page")
    return run


def predict_uploads(
    predictor: Predictor, paths: list[str | os.PathLike]
) -> tuple[pd.DataFrame, list[tuple[Image.Image, str]], list[str]]:
    """The page's outputs for uploaded files: a table row each, a captioned Grad-CAM figure for each readable one, and
    one line per file that could not be read, naming it (the other files are still predicted)."""
    from PIL import Image

    from xraylib.plot_style import format_probability
    from xraylib.predict import predict_files

    with tempfile.TemporaryDirectory(prefix="xraylib-app-") as cams:
        table = predict_files(predictor, paths, gradcam_dir=cams)
        rows, figures, problems = [], [], []
        for row in table.itertuples():
            name = Path(row.path).name
            if row.error:
                rows.append([name, "", f"error: {row.error}"])
                problems.append(f"{name} could not be read: {row.error}")
                continue
            p = format_probability(row.p_pneumonia, predictor.threshold)
            rows.append([name, p, row.predicted])
            with Image.open(row.gradcam) as im:
                figures.append((im.convert("RGB"), f"{name}: {row.predicted}, P(pneumonia) {p}"))
    return pd.DataFrame(rows, columns=COLUMNS), figures, problems


def status_text(n_files: int, problems: list[str], threshold: float) -> str:
    """Markdown above the results: how many files were predicted, then each file that could not be read."""
    from xraylib.plot_style import format_probability

    done = f"{n_files - len(problems)} of {n_files} images predicted (threshold {format_probability(threshold)})."
    return "\n".join([done, *(f"- **Error**: {line}" for line in problems)])


def build_app(run_dir: str | os.PathLike) -> gr.Blocks:
    """The page for one run (model loaded once), ready to `.launch()`; a bad RUN_DIR fails before the slow load."""
    from xraylib.plot_style import format_probability
    from xraylib.predict import load_predictor

    run = check_run(run_dir)
    gr = _gradio()
    predictor = load_predictor(run / runs.MODEL)
    backbone = predictor.config.backbone if predictor.config else "model"

    def on_upload(files: list[str] | None):
        if not files:
            return None, None, ""
        try:
            table, figures, problems = predict_uploads(predictor, files)
        except InputError as exc:
            raise gr.Error(str(exc)) from None
        for line in problems:
            gr.Warning(line)
        return table, figures, status_text(len(table), problems, predictor.threshold)

    cache = (UPLOADS_KEPT, UPLOADS_KEPT)
    with gr.Blocks(title=f"xraylib: {backbone}", analytics_enabled=False, delete_cache=cache) as page:
        gr.Markdown(
            f"## Pneumonia or normal? · {backbone} at {predictor.image_size} px\n"
            f"Run `{run}`. A chest X-ray is called **pneumonia** when P(pneumonia) ≥ "
            f"{format_probability(predictor.threshold)} ({predictor.threshold_source}). "
            "Grad-CAM shows where the model found the evidence for its call. A research tool, not a diagnosis."
        )
        # any file type: Gradio would refuse a whole upload for one file of another type, unnamed; xraylib names
        # each file it cannot read and still predicts the others
        files = gr.File(file_count="multiple", label="Chest X-rays (JPEG, PNG or DICOM)", elem_id="upload")
        status = gr.Markdown(elem_id="status")
        table = gr.Dataframe(headers=COLUMNS, label="Predictions", interactive=False, elem_id="predictions")
        gallery = gr.Gallery(label="Grad-CAM", object_fit="contain", format="png", elem_id="gradcam")
        files.change(on_upload, inputs=files, outputs=[table, gallery, status])
    return page


def serve(
    page: gr.Blocks, port: int | None = None, share: bool | None = None, server_name: str = HOST, **launch_options
) -> gr.Blocks:
    """`page.launch()` on 127.0.0.1 (inline in a notebook; blocks a script until Ctrl-C unless
    prevent_thread_lock=True). `port` None: Gradio's default; `share` None: Gradio's choice (a public link only on
    Colab and hosted notebooks such as Kaggle). A port in use is a one-line InputError."""
    try:
        page.launch(server_name=server_name, server_port=port, share=share, **launch_options)
    except OSError as exc:  # Gradio's "Cannot find empty port" names its own launch() parameters
        where = f"port {port}" if port else "Gradio's default ports (7860-7959)"
        raise InputError(
            f"{where}: cannot listen on {server_name} ({exc.strerror or 'in use'}); choose another"
        ) from exc
    return page


def launch_app(
    run_dir: str | os.PathLike, port: int | None = None, share: bool | None = None, **launch_options
) -> gr.Blocks:
    """Build the page of RUN_DIR and serve it: the one call of a notebook cell (the page shows inline)."""
    launch_options.setdefault("height", NOTEBOOK_HEIGHT)
    return serve(build_app(run_dir), port=port, share=share, **launch_options)
