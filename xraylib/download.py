"""Getting the real dataset: the Kaggle download (kagglehub or the kaggle CLI), and the reachability probe that
lets offline machines fail in seconds with one clear line."""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from xraylib.data import METADATA_CSV, holds_dataset
from xraylib.errors import InputError

KAGGLE_HANDLE = "praveengovi/coronahack-chest-xraydataset"
KAGGLE_MOUNT = Path("/kaggle/input/coronahack-chest-xraydataset")


@functools.lru_cache(maxsize=8)
def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to `host` opens within `timeout` seconds (DNS included); asked once per process."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def fetch(dir: str | os.PathLike) -> Path:
    """Download the CoronaHack dataset from Kaggle into `dir` (kagglehub, else the kaggle CLI); return its root."""
    from xraylib.fileio import atomic_dir

    dest = Path(dir).expanduser().absolute()
    if dest.is_dir() and holds_dataset(dest):
        return dest
    if holds_dataset(KAGGLE_MOUNT):  # inside a Kaggle notebook the dataset is mounted read-only
        return KAGGLE_MOUNT
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: exists and is not empty; choose a new directory for the download")
    try:
        import kagglehub  # noqa: F401

        tool = "kagglehub"
    except ImportError:
        tool = "kaggle" if shutil.which("kaggle") else None
    if tool is None:
        raise InputError(
            "neither kagglehub nor the kaggle CLI is installed: pip install kagglehub (or download "
            f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE} by hand and unzip it into {dest})"
        )
    if not reachable("www.kaggle.com", timeout=4.0):
        raise InputError(
            f"cannot reach www.kaggle.com (no internet?): download https://www.kaggle.com/datasets/{KAGGLE_HANDLE} "
            f"elsewhere and unzip it into {dest}"
        )
    with atomic_dir(dest) as tmp:
        try:
            if tool == "kagglehub":
                import kagglehub

                params = inspect.signature(kagglehub.dataset_download).parameters
                if "output_dir" in params:
                    kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(tmp))
                else:
                    cached = Path(kagglehub.dataset_download(KAGGLE_HANDLE))
                    shutil.copytree(cached, tmp, dirs_exist_ok=True)
            else:
                cmd = ["kaggle", "datasets", "download", "-d", KAGGLE_HANDLE, "-p", str(tmp), "--unzip"]
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=6 * 3600)
                if done.returncode != 0:
                    msg = (done.stderr or done.stdout).strip().splitlines()
                    raise InputError(f"kaggle CLI failed: {msg[-1] if msg else done.returncode}")
        except InputError:
            raise
        except Exception as exc:  # credentials, HTTP errors, ... reported in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"Kaggle download failed ({first}); set up credentials (~/.kaggle/kaggle.json or "
                "KAGGLE_USERNAME/KAGGLE_KEY) or download the dataset by hand"
            ) from exc
        if not holds_dataset(tmp):
            raise InputError(f"Kaggle download into {dest} holds no {METADATA_CSV}")
    return dest
