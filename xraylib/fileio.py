"""Files: writes that never leave a half-written file behind, locks, JSON reading, stderr redirected to a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from xraylib.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def output_file(path: str | os.PathLike, reads: list[str | os.PathLike] = (), owner: str | os.PathLike = "") -> Path:
    """Check an output file path before any work, with a one-line InputError: not a directory, in a folder that
    can be written, not one of the command's inputs (`reads`: files, or folders whose files it reads), and not an
    existing file of the run folder `owner`."""
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
    _check_folder(target.parent, f"--out {path}")
    return path


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
    with open(folder / ".lock", "a+") as handle:
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
