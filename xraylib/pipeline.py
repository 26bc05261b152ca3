"""The input pipeline: decode every image once (in parallel), cache it, and feed tf.data batches.

Design (measured on the 2-core machine, see docs/performance.md / `xraylib bench pipeline`):
- Decoding uses `xraylib.images.load_gray` (Pillow, JPEG DCT-domain downscaling) in a thread pool: Pillow
  releases the GIL while decoding and resizing, every odd format (CMYK, 16-bit, RGBA, palette) takes the same
  path, every failure is caught per file. `decode_images` is the one decode loop of training and of
  `xraylib predict` (the caller chooses whether a bad file stops it or is reported beside the others).
- The decoded images are held in memory as uint8 (N, S, S, 1) and saved to an on-disk .npy cache keyed by the
  index fingerprint, the image size and every file's name, size and modification time, with a checksum of the
  array beside it, so a second run skips decoding and a changed file or a damaged cache is decoded again.
- `tf_batches` shuffles *indices* per epoch from (seed, epoch) (a perfect, cheap, resumable shuffle), or draws them
  with replacement by given probabilities (`balanced_draw`: each class equally often on average), batches them,
  then gathers and casts whole batches: no per-image Python, no augmentation (a layer inside the model).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from xraylib.errors import InputError, check_memory
from xraylib.fileio import atomic_path
from xraylib.images import ImageDecodeError, load_gray

CACHE_VERSION = "1"  # bump when load_gray's output changes, so old caches are not reused
SHOW_BAD = 5  # bad file names shown in the one error message


def decode_workers() -> int:
    """Threads used for decoding: one per usable CPU core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_cache_dir(cache_dir: str | os.PathLike | None = "auto") -> Path | None:
    """`auto` -> $XRAYLIB_CACHE or ~/.cache/xraylib; `none` (or $XRAYLIB_CACHE=none) -> None (no disk cache)."""
    if cache_dir is None:
        return None
    text = os.fspath(cache_dir).strip()
    if text.lower() == "auto":
        text = os.environ.get("XRAYLIB_CACHE", "").strip() or str(Path.home() / ".cache" / "xraylib")
    if text.lower() in ("none", "off", ""):
        return None
    return Path(text).expanduser()


def cache_file(paths: list[str], image_size: int, cache_dir: Path, key: str) -> Path:
    """The .npy file holding these images at this size: named by key, size and a digest of every file's name, size
    and modification time (a file rewritten in place gets a new cache)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{key}|{image_size}|{len(paths)}|".encode())
    for p in paths:
        try:
            stat = os.stat(p)
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{os.path.basename(os.fspath(p))}\0{stamp}\0".encode())
    safe_key = "".join(c for c in str(key) if c.isalnum())[:16] or "nokey"
    return cache_dir / f"images-{safe_key}-{image_size}px-{len(paths)}-{h.hexdigest()[:12]}.npy"


def cache_checksum(images: np.ndarray) -> str:
    """A digest of an array's bytes (the sidecar of a cached array)."""
    return hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).hexdigest()


def read_cache(path: Path, shape: tuple, dtype=np.uint8) -> np.ndarray | None:
    """The cached array, memory-mapped read-only, if it is present, of the expected shape and dtype, and matches
    the checksum written beside it; None otherwise (the caller then computes it again)."""
    sidecar = path.with_suffix(".blake2b")
    if not path.is_file() or not sidecar.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        expected = sidecar.read_text().strip()
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"ignoring unreadable cache {path}: {exc}", stacklevel=3)
        return None
    if arr.dtype != dtype or arr.shape != tuple(shape):
        warnings.warn(f"ignoring cache {path}: shape {arr.shape} {arr.dtype} is not the expected", stacklevel=3)
        return None
    if cache_checksum(arr) != expected:
        warnings.warn(f"ignoring cache {path}: its checksum does not match (the file changed)", stacklevel=3)
        return None
    return arr


def write_cache(path: Path, images: np.ndarray) -> None:
    """Save atomically, the checksum beside it; a cache that cannot be written is a warning, never a failed run."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
        with atomic_path(path.with_suffix(".blake2b")) as tmp:
            tmp.write_text(cache_checksum(images) + "\n")
    except OSError as exc:
        warnings.warn(f"could not write the cache {path}: {exc}", stacklevel=3)


def bad_files_message(failures: list[tuple[str, str]], total: int) -> str:
    """One line: how many files are bad, and the first few by name with the reason."""
    shown = "; ".join(f"{os.path.basename(p)} ({reason})" for p, reason in failures[:SHOW_BAD])
    more = f"; and {len(failures) - SHOW_BAD} more" if len(failures) > SHOW_BAD else ""
    folder = os.path.dirname(os.path.abspath(failures[0][0])) if failures else ""
    return (
        f"{len(failures)} of {total} image files cannot be decoded (in {folder}): {shown}{more}"
        " — fix or remove them (e.g. `xraylib data index --missing drop` for missing ones) and run again"
    )


DECODE_ERRORS = ("raise", "collect")  # what decode_images does with a file it cannot decode


def decode_images(
    paths: list, image_size: int, on_error: str = "raise", workers: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """Decode and resize every file once, in parallel: uint8 (N, S, S, 1) and one error reason per file ("" for a
    file that decoded). The one decode loop of training and of `xraylib predict`; the caller chooses what a bad
    file does. `on_error="raise"` (training): one InputError listing every bad file, by name and reason.
    `on_error="collect"` (predict): a bad file keeps a zero image and its reason, so the other files still count.
    """
    if on_error not in DECODE_ERRORS:
        raise InputError(f"on_error={on_error!r}: expected one of {', '.join(DECODE_ERRORS)}")
    n = len(paths)
    check_memory(n * image_size**2, f"decoding {n} images at image_size={image_size}", "choose a smaller image_size")
    out = np.zeros((n, image_size, image_size, 1), dtype=np.uint8)
    errors = [""] * n
    failures: list[tuple[int, str]] = []  # (index, path as the decoder names it)

    def work(i: int) -> None:
        try:
            out[i, :, :, 0] = load_gray(paths[i], image_size)
        except ImageDecodeError as exc:
            errors[i] = exc.reason
            failures.append((i, exc.path))
        except InputError as exc:  # any other one-line reason
            errors[i] = str(exc)
            failures.append((i, os.fspath(paths[i])))

    workers = workers or decode_workers()
    if workers == 1 or n < 2:
        for i in range(n):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xraylib-decode") as pool:
            list(pool.map(work, range(n), chunksize=8))
    if failures and on_error == "raise":
        raise InputError(bad_files_message([(path, errors[i]) for i, path in sorted(failures)], n))
    return out, errors


def cached_images(
    paths: list[str], image_size: int, cache_dir: str | os.PathLike | None = "auto", key: str | None = None
) -> np.ndarray:
    """uint8 (N, S, S, 1) of every image, decoded once in parallel and cached on disk under `key` + size."""
    if int(image_size) != image_size or image_size < 1:
        raise InputError(f"image size {image_size!r}: expected a positive integer")
    paths = [os.fspath(p) for p in paths]
    folder = resolve_cache_dir(cache_dir) if key else None  # without a key there is nothing safe to key on
    target = cache_file(paths, image_size, folder, key) if folder is not None else None
    if target is not None:
        hit = read_cache(target, (len(paths), image_size, image_size, 1))
        if hit is not None:
            return hit
    images, _ = decode_images(paths, image_size, on_error="raise")
    if target is not None:
        write_cache(target, images)
    return images


def batch_sizes(n: int, batch_size: int, replicas: int = 1) -> list[int]:
    """Sizes of the batches one pass over n items is cut into: `batch_size` each, the rest last; a last batch too
    small to give each of `replicas` devices an item takes items from the one before it (tf.distribute splits a
    batch evenly over the replicas, and an empty replica batch fails)."""
    if replicas < 1 or n < replicas:
        raise InputError(f"{n} images cannot be spread over {replicas} replicas: use fewer devices or more images")
    if batch_size < replicas:
        raise InputError(f"batch size {batch_size} is smaller than the {replicas} replicas it is split over")
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if len(sizes) > 1 and sizes[-1] < replicas:
        moved = replicas - sizes[-1]
        sizes[-2:] = [sizes[-2] - moved, replicas]
    return sizes


def replicas_of(model) -> int:
    """The devices a Keras model's batches are split over (its tf.distribute strategy's replicas)."""
    return int(model.distribute_strategy.num_replicas_in_sync)


def tf_batches(
    images: np.ndarray,
    labels,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    first_epoch: int = 0,
    replicas: int = 1,
    draw: np.ndarray | None = None,
):
    """tf.data of (float32 (B,S,S,1) in [0,255], float32 labels), or of (B,C) features; never augments.

    shuffle=False: one pass in index order (validation, test, prediction). shuffle=True: an endless stream of
    epochs for `fit(steps_per_epoch=len(batch_sizes(N, batch_size, replicas)))`; epoch e is a permutation drawn from
    (seed, e) alone and batched on its own, so a run resumed at `first_epoch` sees exactly the batches an
    uninterrupted run would. `draw` (with shuffle=True): each image's probability of being drawn; epoch e is then N
    images drawn with replacement from (seed, e) alone (`balanced_draw` gives each class the same share).
    `replicas`: the devices each batch is split over; no batch leaves one of them empty.
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim not in (2, 4):
        raise InputError(f"images of shape {images.shape}: expected (N, S, S, 1) or features (N, C) or (N, H, W, C)")
    if batch_size < 1:
        raise InputError(f"batch size {batch_size}: must be at least 1")
    n = len(images)
    sizes = tf.constant(batch_sizes(n, batch_size, replicas), dtype=tf.int64)
    x = tf.convert_to_tensor(images)
    y = None
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if len(labels) != n:
            raise InputError(f"{len(labels)} labels for {n} images")
        y = tf.convert_to_tensor(labels)

    def cut(order):
        return tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(order, sizes))

    if draw is not None:
        draw = np.asarray(draw, dtype=np.float64)
        if not shuffle:
            raise InputError("draw: only a shuffled stream (shuffle=True) draws its images")
        if draw.shape != (n,) or not (np.all(np.isfinite(draw)) and np.all(draw >= 0) and draw.sum() > 0):
            raise InputError(f"draw: expected {n} finite, non-negative probabilities, not all 0 (shape {draw.shape})")
        cumulative = np.cumsum(draw)
        cdf = tf.constant(cumulative / cumulative[-1])

    def epoch(e):
        if draw is None:
            order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, e]))
        else:  # inverse transform: where each uniform number falls in the cumulative probabilities
            uniform = tf.random.stateless_uniform([n], seed=tf.stack([seed, e]), dtype=tf.float64)
            order = tf.minimum(tf.searchsorted(cdf, uniform, side="right", out_type=tf.int64), n - 1)
        return cut(order)

    order = tf.data.Dataset.range(first_epoch, 1 << 62).flat_map(epoch) if shuffle else cut(tf.range(n))

    def gather(idx):
        batch = tf.cast(tf.gather(x, idx), tf.float32)
        return batch if y is None else (batch, tf.gather(y, idx))

    ds = order.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def balanced_draw(labels: np.ndarray) -> np.ndarray:
    """Each image's probability of being drawn so that every class present in `labels` (class codes) is drawn
    equally often on average: scikit-learn's balanced sample weights (the rule of `train.class_weights`), summing
    to 1."""
    from sklearn.utils.class_weight import compute_sample_weight

    weights = compute_sample_weight("balanced", np.asarray(labels).astype(int))
    return weights / weights.sum()


def predict_in_batches(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict` over every image in batches of one shape: the last is filled up with copies of the first
    image, whose outputs are dropped. One traced shape per model (no retracing on a short last batch), and no
    replica of a distributed model is ever left without an image."""
    n = len(images)
    batch = max(1, min(batch_size, n))
    filled = np.concatenate([images, np.repeat(images[:1], -n % batch, axis=0)]) if n % batch else images
    batches = tf_batches(filled, None, batch, shuffle=False, replicas=replicas_of(model))
    return np.asarray(model.predict(batches, verbose=0))[:n]
