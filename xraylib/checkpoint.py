"""The training state of a run, committed as one unit at each epoch's end and restored on resume.

A snapshot, `RUN_DIR/backup/state/`, holds everything a resumed run needs to continue exactly: the weights with
the optimizer's state (`weights.weights.h5`), the history so far (`history.csv`), the best epoch's weights
(`best.weights.h5`, when the run keeps its best epoch) and `state.json` (epochs done, whether early stopping
ended the run). It is written into a fresh folder, then renamed into place: a kill at any instant leaves either
the previous snapshot or the new one, never a mixture. Keras' `BackupAndRestore` writes its weights and its
epoch counter one after the other, beside a history and a checkpoint it knows nothing of, so a kill between
those writes resumed from the wrong epoch; this module replaces it.

Files outside the snapshot (`RUN_DIR/history.csv`, `RUN_DIR/best.weights.h5`) are rewritten from it on resume,
so whatever a killed epoch left half-written there is discarded and the epoch is trained again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from xraylib.errors import InputError
from xraylib.fileio import atomic_path, write_text
from xraylib.runs import HISTORY, MODEL

STATE = "state"
FILES = (HISTORY, "best.weights.h5")  # run files the snapshot carries


def backup_dir(out: str | Path) -> Path:
    """The folder of a run's snapshots (present while training is unfinished)."""
    return Path(out) / "backup"


def _snapshot(out: Path) -> Path | None:
    """The committed snapshot, or the one a kill left renamed aside mid-commit; None for a fresh run."""
    for name in (STATE, f"{STATE}.old"):
        path = backup_dir(out) / name
        if (path / "state.json").is_file():
            return path
    return None


def _unusable(path: Path, why: str) -> InputError:
    out = path.parents[2]  # every file of a snapshot is RUN_DIR/backup/<snapshot>/<file>
    return InputError(
        f"{path} {why}: the run cannot resume; remove {backup_dir(out)} to restart its training, or rerun with a "
        "new --out"
    )


def read_state(out: str | Path) -> dict:
    """state.json of the run's snapshot (`{}` for a fresh run); one-line error if it is unreadable."""
    snapshot = _snapshot(Path(out))
    if snapshot is None:
        return {}
    path = snapshot / "state.json"
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError("no epoch count")
    except (OSError, ValueError) as exc:
        raise _unusable(path, f"is unreadable ({type(exc).__name__})") from None
    return state


def restore(model, out: str | Path) -> dict:
    """Load the snapshot into `model` (weights and optimizer) and rewrite the run's history and best weights
    from it. Returns its state (`{}` for a fresh run)."""
    out = Path(out)
    state = read_state(out)
    if not state:
        return state
    snapshot = _snapshot(out)
    weights = snapshot / "weights.weights.h5"
    try:
        if model.optimizer is not None and not model.optimizer.built:
            with model.distribute_strategy.scope():  # a mirrored model's optimizer variables are mirrored too
                model.optimizer.build(model.trainable_variables)
        model.load_weights(weights)
    except Exception as exc:  # h5py raises OSError, Keras ValueError/KeyError for a mismatched or cut file
        raise _unusable(weights, f"cannot be loaded ({type(exc).__name__})") from exc
    if not _whole_history(snapshot / HISTORY, state["epoch"]):
        raise _unusable(snapshot / HISTORY, f"does not hold the snapshot's {state['epoch']} epoch(s) as whole rows")
    for name in FILES:
        (out / name).unlink(missing_ok=True)
        if (snapshot / name).is_file():
            _copy(snapshot / name, out / name)
    return state


def _whole_history(path: Path, epochs: int) -> bool:
    """Whether history.csv holds exactly the rows of epochs 0 .. epochs-1, each whole: as many fields as the
    header and a final newline (a write torn mid-row leaves a short last row)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    lines = text.splitlines()
    if not lines or not text.endswith("\n"):
        return False
    width = lines[0].count(",")
    whole = all(line.count(",") == width for line in lines)
    return whole and [line.split(",", 1)[0] for line in lines[1:]] == [str(i) for i in range(epochs)]


def _copy(source: Path, target: Path) -> None:
    """Copy via a temporary file and a rename, so `target` is never half-written."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def save_weights(model, path: str | Path) -> None:
    """Write a model's weights to `path` (.weights.h5) via a temporary file and a rename: a failure (a full disk)
    leaves the previous file or none, h5py's handle closable, and one line naming `path`."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def best_weights_callback(path: str | Path, monitor: str, mode: str):
    """Keras' ModelCheckpoint keeping the best epoch's weights in `path`, each written by `save_weights`."""
    import keras

    class BestWeights(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            target = self._get_file_path(epoch, batch, logs)
            if self._should_save_model(epoch, batch, logs, target):
                save_weights(self.model, target)

    return BestWeights(str(path), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True)


def _signature(path: Path) -> list[int] | None:
    """What tells whether a run file changed since the last snapshot: its size and modification time."""
    if not path.is_file():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def commit(model, out: str | Path, epochs_done: int, stopped: bool) -> None:
    """Write a new snapshot of the run after `epochs_done` epochs, then rename it into place."""
    out = Path(out)
    folder = backup_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    new, current, old = folder / f"{STATE}.new", folder / STATE, folder / f"{STATE}.old"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    save_weights(model, new / "weights.weights.h5")
    previous = read_state(out)
    signatures = {}
    for name in FILES:
        signatures[name] = _signature(out / name)
        if signatures[name] is None:
            continue
        unchanged = previous.get("files", {}).get(name) == signatures[name] and (current / name).is_file()
        if unchanged:  # the best epoch did not change: share the previous snapshot's file (never written in place)
            os.link(current / name, new / name)
        else:
            _copy(out / name, new / name)
    state = {"epoch": epochs_done, "stopped": bool(stopped), "files": signatures}
    write_text(new / "state.json", json.dumps(state) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        os.replace(current, old)
    os.replace(new, current)
    shutil.rmtree(old, ignore_errors=True)


def snapshot_callback(out: str | Path):
    """A Keras callback that commits a snapshot at each epoch's end; it must come after every callback that
    writes run files or changes training state (history, checkpoint, early stopping, learning rate)."""
    import keras

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            commit(self.model, out, epoch + 1, stopped=bool(self.model.stop_training))

    return Snapshot()


def discard(out: str | Path) -> None:
    """Remove the snapshots once the run's model is saved."""
    shutil.rmtree(backup_dir(out), ignore_errors=True)


def run_started(out: str | Path) -> bool:
    """Whether training has begun in the run folder `out` (its settings are fixed from then on)."""
    return backup_dir(out).exists() or any((Path(out) / name).exists() for name in (HISTORY, MODEL))
