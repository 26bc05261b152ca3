"""The sweep: the training notebook executed by papermill once per backbone, each in its own kernel."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from xraylib.errors import InputError
from xraylib.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TRAIN_NOTEBOOK = NOTEBOOKS / "train_backbone.ipynb"
COMPARE_NOTEBOOK = NOTEBOOKS / "compare_backbones.ipynb"
DEMO_DATA = REPO / "data" / "demo"


def demo_data_dir(root: str | Path = DEMO_DATA) -> Path:
    """The demo's synthetic dataset, written on first use."""
    from xraylib.synth import make_dataset

    root = Path(root)
    if not (root / "Chest_xray_Corona_Metadata.csv").is_file():
        make_dataset(root, masks=True)
    return root


def run_status(run_dir: str | Path) -> dict:
    """The status.json of one backbone's run (`{}` if it never started)."""
    from xraylib.fileio import read_json

    path = Path(run_dir) / "status.json"
    return read_json(path) if path.is_file() else {}


def notebook_parameters(data: Path, backbone: str, preset: str, overrides: dict, run_dir: Path) -> dict:
    """The values papermill injects into the training notebook's `parameters` cell."""
    return {
        "backbone": backbone,
        "data_dir": str(data),
        "preset": preset,
        "overrides": dict(overrides),
        "out_dir": str(run_dir),
    }


def _follow_epochs(run_dir: Path, bar, stop: threading.Event) -> None:
    """Show the current epoch of a running notebook (read from its history.csv) on the progress bar."""
    history, shown = run_dir / "history.csv", 0
    while not stop.wait(2.0):
        epochs = max(sum(1 for _ in history.open()) - 1, 0) if history.is_file() else 0
        if epochs != shown:
            shown = epochs
            bar.set_postfix_str(f"{run_dir.name}: {epochs} epoch(s) done", refresh=True)


@contextlib.contextmanager
def _stderr_into(stream) -> Iterator[None]:
    """Point file descriptor 2 at `stream`, so the kernel process (which inherits it) logs there, not on screen."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_backbone(data: Path, backbone: str, preset: str, overrides: dict, run_dir: Path, bar=None) -> dict:
    """Execute the training notebook for one backbone; record and return its status, never raise on failure."""
    import papermill
    from nbclient.exceptions import DeadKernelError

    from xraylib.fileio import exclusive
    from xraylib.notebook import execute
    from xraylib.tracking import log_notebook

    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_json(run_dir / "status.json", {"backbone": backbone, "status": "running", "started": started})
    stop = threading.Event()
    if bar is not None:
        threading.Thread(target=_follow_epochs, args=(run_dir, bar, stop), daemon=True).start()
    status = {"backbone": backbone, "status": "done", "error": ""}
    log = run_dir / f"{backbone}.log"
    try:
        with exclusive(run_dir), log.open("w") as stream, _stderr_into(stream):
            parameters = notebook_parameters(data, backbone, preset, overrides, run_dir)
            execute(TRAIN_NOTEBOOK, run_dir / f"{backbone}.ipynb", parameters, cwd=run_dir, log=stream)
    except papermill.PapermillExecutionError as exc:
        status.update(status="failed", error=f"{exc.ename}: {exc.evalue}".splitlines()[0])
    except DeadKernelError:
        status.update(status="failed", error="the kernel died (out of memory?); see the partial notebook")
    except Exception as exc:  # a sweep outlives any one backbone: record and go on
        status.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    except KeyboardInterrupt:  # the user stops the sweep: say so, and let --resume continue this run
        status.update(status="interrupted", error="interrupted; `--resume` continues it")
        raise
    finally:
        stop.set()
        status["seconds"] = round(time.time() - started, 1)
        write_json(run_dir / "status.json", status)
    log_notebook(run_dir, status)  # tracker=mlflow: the executed notebook into the backbone's MLflow run
    return status


def _invalid_configs(backbones: list[str], preset: str, overrides: dict) -> dict[str, str]:
    """Backbone name -> the one-line reason its configuration is impossible (e.g. an image size below its minimum)."""
    from xraylib.config import resolve_config
    from xraylib.models import check_imagenet

    invalid = {}
    for name in backbones:
        try:
            if resolve_config(name, preset, overrides).weights == "imagenet":
                check_imagenet(name)
        except InputError as exc:
            invalid[name] = str(exc)
    return invalid


def sweep(
    data: str | Path,
    backbones: list[str],
    preset: str = "sound",
    overrides: dict | None = None,
    out: str | Path = "reports/sweep",
    resume: bool = False,
) -> list[str]:
    """Train every backbone through the notebook, then build the comparison report. Returns the failed names.
    The report folder is locked meanwhile: a second sweep into it is refused."""
    from xraylib.fileio import exclusive, output_dir

    data, out = Path(data).resolve(), output_dir(out).resolve()
    if not data.is_dir():
        raise InputError(f"--data {data}: no such folder")
    with exclusive(out):
        return _sweep(data, backbones, preset, dict(overrides or {}), out, resume)


def _sweep(data: Path, backbones: list[str], preset: str, overrides: dict, out: Path, resume: bool) -> list[str]:
    from tqdm.auto import tqdm

    from xraylib.notebook import write_index
    from xraylib.report import build_report

    invalid = _invalid_configs(backbones, preset, overrides)
    if len(invalid) == len(backbones):  # wrong for every backbone: the option itself is wrong
        raise InputError(next(iter(invalid.values())))
    if not TRAIN_NOTEBOOK.is_file():
        raise InputError(f"the training notebook {TRAIN_NOTEBOOK} is missing (install xraylib from a clone)")
    started = [b for b in backbones if run_status(out / b)]
    if started and not resume:
        raise InputError(f"{out} already holds runs of {', '.join(started)}: add --resume, or choose another --out")
    failed = []
    with tqdm(backbones, desc="sweep", unit="backbone", file=sys.stdout, dynamic_ncols=True) as bar:
        for name in bar:
            if run_status(out / name).get("status") == "done":
                bar.write(f"{name}: finished earlier, skipped")
                continue
            bar.set_postfix_str(f"{name}: starting", refresh=True)
            if name in invalid:
                status = {"backbone": name, "status": "failed", "error": invalid[name], "seconds": 0.0}
                write_json(out / name / "status.json", status)
            else:
                status = run_backbone(data, name, preset, overrides, out / name, bar)
            bar.write(f"{name}: {status['status']} in {status['seconds']:.0f} s {status['error']}".rstrip())
            if status["status"] != "done":
                failed.append(name)
    try:
        print(build_report(out))
        compare_notebook(out)
    except InputError as exc:  # nothing finished: there is no comparison to make
        print(f"no report: {exc}")
    write_index(out, {name: run_status(out / name) for name in backbones}, f"Sweep report: {out.name}")
    print(f"report pages: {out / 'index.html'}")
    if failed:
        print(f"{len(failed)} backbone(s) failed: {', '.join(failed)} (see their status.json and notebooks)")
    return failed


def compare_notebook(report_dir: Path) -> None:
    """Execute the comparison notebook into the report folder (with its HTML); a failure is printed, not raised."""
    import papermill

    from xraylib.notebook import execute

    output = report_dir / COMPARE_NOTEBOOK.name
    try:
        with output.with_suffix(".log").open("w") as stream, _stderr_into(stream):
            execute(COMPARE_NOTEBOOK, output, {"report_dir": str(report_dir)}, cwd=report_dir, log=stream)
    except papermill.PapermillExecutionError as exc:
        print(f"the comparison notebook failed ({exc.ename}: {exc.evalue}); see {output}".splitlines()[0])


def notebook_paths(data_dir: str, out_dir: str, backbone: str) -> tuple[Path, Path]:
    """A notebook's data and output folders as absolute paths; empty means the demo data and reports/notebook/."""
    data = Path(data_dir).expanduser().resolve() if data_dir else demo_data_dir()
    out = Path(out_dir).expanduser().resolve() if out_dir else REPO / "reports" / "notebook" / backbone
    return data, out


def report_path(path: str | Path) -> Path:
    """An absolute folder: as given if absolute or present under the working directory, else in the repository."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return REPO / path
