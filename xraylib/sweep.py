"""The sweep: the training notebook executed by papermill once per backbone, each in its own kernel."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xraylib.errors import InputError
from xraylib.fileio import stderr_into
from xraylib.runs import (
    COMPARE_NOTEBOOK,
    SUMMARY_MD,
    TRAIN_NOTEBOOK,
    epochs_done,
    notebook_path,
    read_status,
    write_status,
)


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its folder name, backbone, and the settings it adds to the sweep's (seed, fold)."""

    name: str
    backbone: str
    settings: dict = field(default_factory=dict)


def plan_runs(backbones: list[str], seeds: list[int] | None = None, folds: int = 0) -> list[RunSpec]:
    """One run per (backbone, seed, fold), named `BACKBONE[-seedS][-foldK]`; no seeds and no folds: one run per
    backbone, named after it."""
    runs = []
    for backbone in backbones:
        for seed in seeds or [None]:
            for fold in range(folds) if folds else [None]:
                name, settings = backbone, {}
                if seed is not None:
                    name, settings["seed"] = f"{name}-seed{seed}", seed
                if fold is not None:
                    name, settings["folds"], settings["fold"] = f"{name}-fold{fold}", folds, fold
                runs.append(RunSpec(name, backbone, settings))
    return runs


def parse_seeds(text: str) -> list[int]:
    """`"0,1,2"` -> `[0, 1, 2]`: distinct integers in [0, 2**32)."""
    try:
        seeds = [int(item) for item in text.split(",")]
    except ValueError:
        raise InputError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or not all(0 <= s < 2**32 for s in seeds):
        raise InputError(f"--seeds {text!r}: expected distinct seeds in [0, 2**32)")
    return seeds


def notebook_parameters(data: Path, backbone: str, preset: str, overrides: dict, run_dir: Path) -> dict:
    """The values papermill injects into the training notebook's `parameters` cell."""
    return {
        "backbone": backbone,
        "data_dir": str(data),
        "preset": preset,
        "overrides": dict(overrides),
        "out_dir": str(run_dir),
    }


def _follow_epochs(running: set[Path], bar, stop: threading.Event) -> None:
    """Show the current epoch of each running notebook (read from its history.csv) on the progress bar."""
    shown = ""
    while not stop.wait(2.0):
        text = ", ".join(f"{d.name}: {epochs_done(d)} epoch(s)" for d in sorted(running.copy())) or "starting"
        if text != shown:
            shown = text
            bar.set_postfix_str(text, refresh=True)


def run_backbone(data: Path, backbone: str, preset: str, overrides: dict, run_dir: Path) -> dict:
    """Execute the training notebook for one run (named after its folder); record and return its status, never
    raise on failure."""
    import papermill
    from nbclient.exceptions import DeadKernelError

    from xraylib.fileio import claim_dir, exclusive
    from xraylib.notebook import execute
    from xraylib.tracking import log_notebook

    claim_dir(run_dir, "run")
    started = time.time()
    running = {"backbone": backbone, "status": "running", "started": started, "pid": os.getpid()}
    write_status(run_dir, running)
    status = {"backbone": backbone, "status": "done", "error": "", "pid": os.getpid()}
    notebook = notebook_path(run_dir)
    try:
        with exclusive(run_dir), notebook.with_suffix(".log").open("w") as stream, stderr_into(stream):
            parameters = notebook_parameters(data, backbone, preset, overrides, run_dir)
            execute(TRAIN_NOTEBOOK, notebook, parameters, cwd=run_dir, log=stream)
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
        status["seconds"] = round(time.time() - started, 1)
        write_status(run_dir, status)
    log_notebook(run_dir, status)  # tracker=mlflow: the executed notebook into the backbone's MLflow run
    return status


def _invalid_configs(backbones: list[str], preset: str, overrides: dict) -> dict[str, str]:
    """Backbone name -> the one-line reason its configuration is impossible (e.g. an image size below its minimum)."""
    from xraylib.backbones import get_backbone
    from xraylib.config import resolve_config
    from xraylib.weights import check_imagenet

    invalid = {}
    for name in backbones:
        try:
            if resolve_config(name, preset, overrides).weights == "imagenet":
                check_imagenet(get_backbone(name))
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
    seeds: list[int] | None = None,
    folds: int = 0,
    jobs: int = 1,
    address: str | None = None,
) -> list[str]:
    """Train every run (one per backbone, seed and fold) through the notebook, `jobs` at a time (on Ray when more
    than one, or at `address`), then build the comparison report. Returns the failed runs' names.
    The report folder is locked meanwhile: a second sweep into it is refused. Every path (the data, the report
    folder, the settings' and the environment's) is made absolute here, before any kernel or worker starts in
    another working directory."""
    from xraylib.config import caller_paths
    from xraylib.data import build_index
    from xraylib.fileio import claim_dir, exclusive, owned_dir
    from xraylib.workers import check_address

    data = Path(data).resolve()
    if not data.is_dir():
        raise InputError(f"--data {data}: no such folder")
    out = owned_dir(out, "sweep", reads=[data]).resolve()
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: must be at least 1")
    check_address(address)
    overrides = caller_paths(overrides or {})
    if seeds and "seed" in overrides:
        raise InputError("--seeds and --set seed=... both choose the seed: give one")
    if folds and {"folds", "fold"} & overrides.keys():
        raise InputError("--folds and --set folds=/fold=... both choose the folds: give one")
    invalid = _invalid_configs(backbones, preset, overrides)
    if len(invalid) == len(set(backbones)):  # wrong for every backbone: the option itself is wrong
        raise InputError(next(iter(invalid.values())))
    if not TRAIN_NOTEBOOK.is_file():
        raise InputError(f"the training notebook {TRAIN_NOTEBOOK} is missing: reinstall xraylib")
    index = build_index(data, missing="drop")  # a wrong metadata file is refused before any folder is made
    if folds:
        _check_folds(index, folds, seeds or [overrides.get("seed", 42)])
    runs = plan_runs(backbones, seeds, folds)
    with exclusive(out):
        return _sweep_locked(data, runs, preset, overrides, invalid, claim_dir(out, "sweep"), resume, jobs, address)


def _check_folds(index, folds: int, seeds: list) -> None:
    """Refuse a fold count the training split cannot hold, before any kernel starts."""
    from xraylib.splits import cross_validation_folds

    cross_validation_folds(index[index["split"] == "train"], folds, int(seeds[0]))


def _sweep_locked(
    data: Path,
    runs: list[RunSpec],
    preset: str,
    overrides: dict,
    invalid: dict[str, str],
    out: Path,
    resume: bool,
    jobs: int,
    address,
) -> list[str]:
    """The runs and the report, with `out` locked by `sweep`; returns the failed runs' names. `invalid`: backbone ->
    why its configuration is impossible (its runs fail without starting)."""
    from tqdm.auto import tqdm

    from xraylib.leaderboard import build_report
    from xraylib.notebook import write_index

    started = [run.name for run in runs if read_status(out / run.name)]
    if started and not resume:
        raise InputError(f"{out} already holds runs of {', '.join(started)}: add --resume, or choose another --out")
    failed, todo = [], []
    with tqdm(total=len(runs), desc="sweep", unit="run", file=sys.stdout, dynamic_ncols=True) as bar:
        for run in runs:
            if read_status(out / run.name).get("status") == "done":
                bar.write(f"{run.name}: finished earlier, skipped")
                bar.update()
            elif run.backbone in invalid:
                status = {"backbone": run.backbone, "status": "failed", "error": invalid[run.backbone], "seconds": 0.0}
                write_status(out / run.name, status)
                failed.append(_finished(bar, run, status))
            else:
                todo.append(run)
        tasks = [(data, run.backbone, preset, {**overrides, **run.settings}, out / run.name) for run in todo]
        running: set[Path] = set()
        stop = threading.Event()
        threading.Thread(target=_follow_epochs, args=(running, bar, stop), daemon=True).start()
        try:
            if jobs == 1 and address is None:
                results = _in_this_process(tasks, running)
            else:
                from xraylib.workers import on_ray

                results = on_ray(run_backbone, tasks, running, jobs, address)
            by_folder = {out / run.name: run for run in todo}
            failed += [_finished(bar, by_folder[folder], status) for folder, status in results]
        finally:
            stop.set()
    failed = [name for name in failed if name]
    try:
        if not compare_notebook(out):  # its first cell builds the report
            build_report(out)
        print((out / SUMMARY_MD).read_text())
    except InputError as exc:  # nothing finished: there is no comparison to make
        print(f"no report: {exc}")
    write_index(out, {run.name: read_status(out / run.name) for run in runs}, f"Sweep report: {out.name}")
    print(f"report pages: {out / 'index.html'}")
    if failed:
        _report_failures(out, failed, len(runs))
    return failed


def _report_failures(out: Path, failed: list[str], total: int) -> None:
    """One line on stderr naming the failed runs and the first one's error; an InputError when every run failed on
    bad input (the data or a setting, as `train` would have said), so that the sweep's status is 2 as train's."""
    errors = [read_status(out / name).get("error", "") for name in failed]
    if len(failed) == total and all(error.startswith("InputError: ") for error in errors):
        raise InputError(f"every run failed: {errors[0].removeprefix('InputError: ')} (see {out / failed[0]})")
    print(
        f"xraylib: {len(failed)} of {total} runs failed: {', '.join(failed)}; {failed[0]}: {errors[0]}"
        " (see their status.json and notebooks)",
        file=sys.stderr,
    )


def _in_this_process(tasks: list[tuple], running: set[Path]) -> Iterable[tuple[Path, dict]]:
    """(run folder, status) of each run, one run after another in this process (each notebook in its own kernel)."""
    for task in tasks:
        running.add(task[-1])
        try:
            yield task[-1], run_backbone(*task)
        finally:
            running.discard(task[-1])


def _finished(bar, run: RunSpec, status: dict) -> str:
    """Print a run's outcome and advance the bar; the run's name if it did not finish, else ""."""
    bar.write(f"{run.name}: {status['status']} in {status['seconds']:.0f} s {status['error']}".rstrip())
    bar.update()
    return "" if status["status"] == "done" else run.name


def compare_notebook(report_dir: Path) -> bool:
    """Execute the comparison notebook into the report folder (with its HTML), which builds the report (leaderboard,
    figures, summary.md) as its first cell; whether it ran to the end. A failure is printed, not raised."""
    import papermill

    from xraylib.leaderboard import finished_runs
    from xraylib.notebook import execute

    if not finished_runs(report_dir):
        raise InputError(f"{report_dir} holds no finished run")
    output = report_dir / COMPARE_NOTEBOOK.name
    try:
        with output.with_suffix(".log").open("w") as stream, stderr_into(stream):
            execute(COMPARE_NOTEBOOK, output, {"report_dir": str(report_dir)}, cwd=report_dir, log=stream)
    except papermill.PapermillExecutionError as exc:
        print(f"the comparison notebook failed ({exc.ename}: {exc.evalue}); see {output}".splitlines()[0])
        return False
    except Exception as exc:  # its kernel died, timed out or did not start: the sweep builds the report itself
        log = output.with_suffix(".log")
        print(f"the comparison notebook did not run ({type(exc).__name__}: {exc}); see {log}".splitlines()[0])
        return False
    return True
