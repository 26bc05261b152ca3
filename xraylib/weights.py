"""Where a backbone's ImageNet weights come from: a `weights_dir` folder, Keras' cache (checked by md5) or Keras'
download, found without TensorFlow. The network is probed only where the weights are fetched (`fetchable_weights`,
`check_imagenet`), never when a configuration is resolved (`resolve_weights`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from xraylib.backbones import Backbone
from xraylib.download import reachable
from xraylib.errors import InputError

DOWNLOAD_HOST = "storage.googleapis.com"  # where Keras downloads its ImageNet weights from


def keras_cache_dirs() -> list[Path]:
    """Where Keras looks for downloaded weights: $KERAS_HOME/models, else ~/.keras/models (or /tmp/.keras)."""
    if os.environ.get("KERAS_HOME"):
        return [Path(os.environ["KERAS_HOME"]) / "models"]
    return [Path.home() / ".keras" / "models", Path("/tmp/.keras/models")]


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_imagenet(bb: Backbone) -> tuple[Path | None, bool]:
    """(the backbone's ImageNet file in the Keras cache or None, whether it passes Keras' md5 check)."""
    for folder in keras_cache_dirs() if bb.weights_file else []:
        path = folder / bb.weights_file
        if path.is_file():
            return path, _md5(path) == bb.weights_md5
    return None, False


def check_imagenet(bb: Backbone, timeout: float = 3.0) -> None:
    """Raise a one-line InputError in seconds when the backbone's ImageNet weights are neither cached (and intact)
    nor downloadable; Keras would otherwise try to download them, and hang or fail with a traceback."""
    if not bb.weights_file:
        return
    cached, intact = cached_imagenet(bb)
    if intact or reachable(DOWNLOAD_HOST, timeout=timeout):
        return
    if cached is not None:
        raise InputError(
            f"weights=imagenet: {cached} fails Keras' md5 check (not Keras' own download) and the download server is "
            f"unreachable; pass the file with --set weights={cached} or --set weights_dir={cached.parent}"
        )
    dirs = keras_cache_dirs()
    raise InputError(
        f"weights=imagenet: {bb.weights_file} is not in the Keras cache ({dirs[0]}) and the download server is "
        f"unreachable; use --set weights=none, --set weights=PATH (a weights file), --set weights_dir=DIR (a folder "
        f"of Keras' *_notop.h5 files), or copy {bb.weights_file} into {dirs[0]}"
    )


def resolve_weights(bb: Backbone, weights: str, weights_dir: str = "") -> str:
    """The weights a run of backbone `bb` uses, as far as the disk tells: `none`, a file path, `imagenet` (Keras'
    cache or download), or `auto` when only the download server can tell (see `fetchable_weights`). No network.

    `imagenet` and `auto` take the backbone's own file from `weights_dir` when it is there (loaded by path, as
    --set weights=PATH would). `auto` then uses Keras' intact cached file, and falls back to random weights
    (`none`) for a backbone without ImageNet weights."""
    if weights not in ("imagenet", "auto"):
        return weights
    if not bb.weights_file:
        return "none"
    if weights_dir and (Path(weights_dir) / bb.weights_file).is_file():
        return str((Path(weights_dir) / bb.weights_file).resolve())
    if weights == "imagenet" or cached_imagenet(bb)[1]:
        return "imagenet"
    return "auto"


def fetchable_weights(bb: Backbone, weights: str) -> str:
    """`weights` as `resolve_weights` left them, settled where they are fetched: `auto` becomes `imagenet` when
    Keras' download server answers, else `none` (ImageNet wherever possible, offline included); `imagenet` is
    checked (`check_imagenet`); a file path or `none` is returned as given."""
    if weights == "auto":
        return "imagenet" if bb.weights_file and reachable(DOWNLOAD_HOST) else "none"
    if weights == "imagenet":
        check_imagenet(bb)
    return weights
