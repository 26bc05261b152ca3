"""Files: writes that never leave a half-written file behind, the one rule of which folders a command may write
into (`owned_dir`), locks, JSON reading, stderr redirected to a file."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from xraylib.errors import InputError, first_line

# A temporary entry of `atomic_path` or `atomic_dir` for the output NAME: .NAME.PID-<8 random characters>.part[.SUFFIX]
# (PID: the writing process; entries of earlier versions have none)
TEMP = r"\.{name}\.((?P<pid>\d+)-)?[a-z0-9_]{{8}}\.part(\.[A-Za-z0-9_.]+)?"
MARKER = ".xraylib"  # in each output folder a command claims (`claim_dir`): the kind of output it holds
LOCK = ".lock"  # `exclusive`'s lock file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`, for writers that check the extension); move it
    into place only if the block succeeds. A killed attempt's temporary files for `path` are removed first; an
    OSError names `path`, not the temporary file."""
    path = Path(path)
    with named_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=f".part{suffix}", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp)
    try:
        with named_errors(path, tmp):
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a library that still holds it open (h5py) can then close it on a full disk
            os.truncate(tmp, 0)
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; rename it to `path` only if the block succeeds. A killed
    attempt's temporary folders for `path` are removed first; an OSError names `path` (or the file in it)."""
    path = Path(path)
    with named_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".part", dir=path.parent))
    try:
        with named_errors(path, tmp):
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside the existing `folder`; only if the block succeeds, move each file written
    there to its place in `folder` (replacing the file there): a failure (a full disk) changes nothing in `folder`."""
    folder = Path(folder)
    with named_errors(folder):
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(folder.name), suffix=".part", dir=folder))
    try:
        with named_errors(folder, tmp):
            yield tmp
            moves = [(p, folder / p.relative_to(tmp)) for p in sorted(tmp.rglob("*")) if not p.is_dir()]
            for _, target in moves:  # before any move: one that cannot be made leaves the folder as it was
                if target.is_dir():
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
            for source, target in moves:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def named_errors(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """Re-raise an OSError of the block about the output `path` (it names no file, `path`, a temporary entry of
    `path`, or a file in the temporary folder `tmp`) as one line naming `path` or that file's place in it, with the
    errno's text; an OSError about another file passes unchanged."""
    try:
        yield
    except OSError as exc:
        where = _output_named(exc.filename, path, tmp)
        if where is None:
            raise
        code = _errno_in(str(exc)) or exc.errno  # h5py's own errno is not the system's; its message quotes that
        raise OSError(code, os.strerror(code) if code else first_line(exc), str(where)) from exc


def _output_named(named: str | os.PathLike | None, path: Path, tmp: Path | None) -> Path | None:
    """The output an OSError's file name stands for (see `named_errors`); None for another file."""
    if named is None:
        return path
    named = Path(named)
    if named == path or (named.parent == path.parent and _is_temp(named.name, path.name)):
        return path
    if tmp is not None and tmp in named.parents:
        return path / named.relative_to(tmp)
    return None


def _errno_in(message: str) -> int | None:
    """The errno a library quotes in its message (h5py: `errno = 28`), None when it quotes none."""
    found = re.search(r"errno = (\d+)", message)
    return int(found.group(1)) if found else None


def _temp_prefix(name: str) -> str:
    """The start of a temporary entry's name for the output `name`, written by this process (see TEMP)."""
    return f".{name}.{os.getpid()}-"


def _is_temp(entry: str, name: str | None = None) -> bool:
    """Whether `entry` names a temporary entry of `atomic_path` or `atomic_dir` for the output `name` (any output's
    when None)."""
    return re.fullmatch(TEMP.format(name=re.escape(name) if name else ".+"), entry) is not None


def _in_use(entry: str) -> bool:
    """Whether the process that named the temporary entry `entry` still runs (this one included); one of an
    earlier version (no process in its name) is stale. Where processes cannot be probed (Windows), True."""
    found = re.fullmatch(TEMP.format(name=".+"), entry)
    if found is None or found["pid"] is None:
        return False
    if os.name == "nt" or int(found["pid"]) == os.getpid():
        return True
    try:
        os.kill(int(found["pid"]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> None:
    """Remove the temporary files and folders that killed writes left in `folder`: those of the output `name`, or
    (None) those of every output in `folder` and its subfolders. One a live process is writing is kept."""
    folder = Path(folder)
    found = folder.glob(f".{glob.escape(name)}.*.part*") if name else folder.rglob(".*.part*")
    for entry in sorted(found, key=lambda p: len(p.parts)):  # a folder before what is in it
        if not _is_temp(entry.name, name) or _in_use(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write `obj` as indented JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def output_file(
    path: str | os.PathLike,
    reads: list[str | os.PathLike] = (),
    owner: str | os.PathLike = "",
    header: tuple[str, ...] = (),
) -> Path:
    """Check an output file path before any work, with a one-line InputError: not a directory, in a folder that
    can be written, not one of the command's inputs (`reads`: files, or folders whose files it reads), not an
    existing file of the run folder `owner`, and, with `header` (the first columns of the CSV the command writes),
    not an existing file other than an earlier output of the same command (whose first line starts with them)."""
    path = Path(path)
    target = path.resolve()
    if path.is_dir():
        raise InputError(f"--out {path}: is a directory; give a file name")
    for read in reads:
        read = Path(read).resolve()
        if target == read or (read.is_dir() and path.exists() and read in target.parents):
            raise InputError(f"--out {path}: is one of this command's inputs; choose another file")
    if owner and path.exists() and Path(owner).resolve() in target.parents:
        raise InputError(f"--out {path}: would overwrite a file of the run in {owner}; choose another file")
    if header and path.is_file() and not _starts_with_columns(path, header):
        raise InputError(
            f"--out {path}: exists and is not an earlier output of this command (a CSV starting "
            f"{','.join(header)}); choose another file, or remove it"
        )
    _check_folder(target.parent, f"--out {path}")
    return path


def _starts_with_columns(path: Path, header: tuple[str, ...]) -> bool:
    """Whether the file's first line is a CSV header beginning with the columns `header`."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().rstrip("\r\n").split(",")
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(first[: len(header)]) == header


def output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check an output folder path before any work: not an existing file, and creatable or writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a directory")
    _check_folder(path, f"{option} {path}")
    return path


def _check_folder(folder: Path, what: str) -> None:
    """The deepest existing folder on the way to `folder` must be writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what}: the folder {existing} cannot be written")


KINDS = {  # the outputs a folder can hold, as refusals name them
    "run": "an xraylib run (train)",
    "sweep": "an xraylib sweep (its report folder)",
    "evaluation": "an xraylib evaluation (evaluate --run)",
    "gradcam": "xraylib Grad-CAM images (predict --gradcam)",
    "export": "an xraylib export",
}


def output_kind(folder: str | os.PathLike) -> str | None:
    """The kind of xraylib output (see KINDS) a folder holds: its marker's, else the kind whose own file it holds (a
    folder written before markers were: a run's config.json or a sweep run's status.json, export.json, an
    evaluation's metrics.json, runs in its subfolders); None when it holds none."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return (folder / MARKER).read_text(encoding="utf-8", errors="replace").strip()
    if _json_with(folder / "config.json", "run") or _json_with(folder / "status.json", "status"):
        return "run"
    if (folder / "export.json").is_file():
        return "export"
    if _json_with(folder / "metrics.json", "run") or _json_with(folder / "metrics.json", "adaptation"):
        return "evaluation"
    if any(child.is_dir() and output_kind(child) == "run" for child in folder.iterdir()):
        return "sweep"
    return None


def _json_with(path: Path, key: str) -> bool:
    """Whether `path` is a readable JSON object with `key`."""
    try:
        return key in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def owned_dir(path: str | os.PathLike, kind: str, option: str = "--out", reads: list[str | os.PathLike] = ()) -> Path:
    """Check an output folder of `kind` before any work, by the one rule of where a command writes: a writable
    folder (`output_dir`), not one of the command's inputs `reads` nor inside one, and new, empty, or holding an
    earlier output of the same kind (to resume or redo it). Anything else is a one-line InputError."""
    path = output_dir(path, option)
    target = path.resolve()
    for read in map(Path, reads):
        if target == read.resolve() or read.resolve() in target.parents:
            raise InputError(f"{option} {path}: is the input {read} or lies in it; choose a folder outside it")
    others = entries(path) if path.is_dir() else []
    found = output_kind(path) if others else kind
    if found != kind:
        held = KINDS.get(found) or f"files xraylib did not write ({', '.join(others[:3])}{', ...' * (len(others) > 3)})"
        raise InputError(f"{option} {path}: holds {held}, not {KINDS[kind]}; choose a new or empty folder")
    return path


def entries(folder: Path) -> list[str]:
    """The names in `folder`, but for its marker, its lock and temporary entries."""
    return sorted(e.name for e in folder.iterdir() if e.name not in (MARKER, LOCK) and not _is_temp(e.name))


def claim_dir(path: str | os.PathLike, kind: str) -> Path:
    """Create the output folder `path` (checked by `owned_dir`) when writing starts, mark it as holding `kind`, and
    remove the temporary entries that killed writes left anywhere in it."""
    path = Path(path)
    with named_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        write_text(path / MARKER, f"{kind}\n")
    remove_stale_temps(path)
    return path


@contextlib.contextmanager
def unclaimed_on_refusal(path: str | os.PathLike) -> Iterator[None]:
    """When the block refuses its input (InputError), take back what claiming `path` wrote (its marker and lock, when
    they were not there before) if the folder holds nothing else, and the folder itself if the block created it: a
    refused command leaves the folder as it found it."""
    path = Path(path)
    existed = path.exists()
    claimed_before = {name for name in (MARKER, LOCK) if (path / name).exists()}
    try:
        yield
    except InputError:
        if path.is_dir() and {p.name for p in path.iterdir()} <= {MARKER, LOCK}:
            for name in {MARKER, LOCK} - claimed_before:
                (path / name).unlink(missing_ok=True)
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
        raise


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder/.lock` for the block, so a second process writing into the same folder is refused in one
    line. The operating system releases the lock when the process ends, a kill included (POSIX `flock`)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the folder is not locked
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise InputError(
                f"{folder} is in use by another xraylib process (pid {holder}): wait for it, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a file; a truncated, empty or non-object file is a one-line InputError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is unreadable ({type(exc).__name__}): rerun what wrote it, or remove it") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} holds no JSON object: rerun what wrote it, or remove it")
    return data


@contextlib.contextmanager
def stderr_into(stream) -> Iterator[None]:
    """Point file descriptor 2 at `stream` meanwhile: what this process and its children write to stderr goes there."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
