"""The input pipeline: decode every image once (in parallel), cache it, and feed tf.data batches.

Design (measured on the 2-core machine, see README / `xraylib bench pipeline`):
- Decoding uses `xraylib.images.load_gray` (Pillow, JPEG DCT-domain downscaling) in a thread pool: Pillow
  releases the GIL while decoding and resizing, every odd format (CMYK, 16-bit, RGBA, palette) takes the same
  path, every failure is caught per file, and training decodes exactly like `xraylib predict` does.
- The decoded images are held in memory as uint8 (N, S, S, 1) and saved to an on-disk .npy cache keyed by the
  index fingerprint, the image size and every file's name, size and modification time, with a checksum of the
  array beside it, so a second run skips decoding and a changed file or a damaged cache is decoded again.
- `make_dataset` shuffles *indices* per epoch from (seed, epoch) (a perfect, cheap, resumable shuffle), batches
  them, then gathers and casts whole batches: no per-image Python, no augmentation (a layer inside the model).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from xraylib.errors import InputError
from xraylib.fileio import atomic_path
from xraylib.images import ImageDecodeError, load_gray

CACHE_VERSION = "1"  # bump when load_gray's output changes, so old caches are not reused
SHOW_BAD = 5  # bad file names shown in the one error message
FULL_DATASET = 5910  # images in CoronaHack (for the cache-size statement)


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


def _checksum(images: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).hexdigest()


def _read_cache(path: Path, n: int, image_size: int) -> np.ndarray | None:
    """The cached array if it is present, of the expected shape and dtype, and matches the checksum written beside
    it; None otherwise (the images are then decoded again)."""
    sidecar = path.with_suffix(".blake2b")
    if not path.is_file() or not sidecar.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
        expected = sidecar.read_text().strip()
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"ignoring unreadable image cache {path}: {exc}", stacklevel=3)
        return None
    if arr.dtype != np.uint8 or arr.shape != (n, image_size, image_size, 1):
        warnings.warn(f"ignoring image cache {path}: shape {arr.shape} {arr.dtype} is not the expected", stacklevel=3)
        return None
    if _checksum(arr) != expected:
        warnings.warn(f"ignoring image cache {path}: its checksum does not match (the file changed)", stacklevel=3)
        return None
    return arr


def _write_cache(path: Path, images: np.ndarray) -> None:
    """Save atomically, the checksum beside it; a cache that cannot be written is a warning, never a failed run."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
        with atomic_path(path.with_suffix(".blake2b")) as tmp:
            tmp.write_text(_checksum(images) + "\n")
    except OSError as exc:
        warnings.warn(f"could not write the image cache {path}: {exc}", stacklevel=3)


def bad_files_message(failures: list[tuple[str, str]], total: int) -> str:
    """One line: how many files are bad, and the first few by name with the reason."""
    shown = "; ".join(f"{os.path.basename(p)} ({reason})" for p, reason in failures[:SHOW_BAD])
    more = f"; and {len(failures) - SHOW_BAD} more" if len(failures) > SHOW_BAD else ""
    folder = os.path.dirname(failures[0][0]) if failures else ""
    return (
        f"{len(failures)} of {total} image files cannot be decoded (in {folder}): {shown}{more}"
        " — fix or remove them (e.g. `xraylib data index --missing drop` for missing ones) and run again"
    )


def decode_all(paths: list[str], image_size: int, workers: int | None = None) -> np.ndarray:
    """Decode and resize every file once, in parallel; one InputError listing every bad file."""
    n = len(paths)
    out = np.zeros((n, image_size, image_size, 1), dtype=np.uint8)
    failures: list[tuple[int, str, str]] = []

    def work(i: int) -> None:
        try:
            out[i, :, :, 0] = load_gray(paths[i], image_size)
        except ImageDecodeError as exc:
            failures.append((i, exc.path, exc.reason))
        except InputError as exc:  # any other one-line reason
            failures.append((i, os.fspath(paths[i]), str(exc)))

    workers = workers or decode_workers()
    if workers == 1 or n < 2:
        for i in range(n):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xraylib-decode") as pool:
            list(pool.map(work, range(n), chunksize=8))
    if failures:
        failures.sort()
        raise InputError(bad_files_message([(p, r) for _, p, r in failures], n))
    return out


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
        hit = _read_cache(target, len(paths), image_size)
        if hit is not None:
            return hit
    images = decode_all(paths, image_size)
    if target is not None:
        _write_cache(target, images)
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


def make_dataset(
    images: np.ndarray,
    labels,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    first_epoch: int = 0,
    replicas: int = 1,
):
    """tf.data of (float32 (B,S,S,1) in [0,255], float32 labels), or of (B,C) features; never augments.

    shuffle=False: one pass in index order (validation, test, prediction). shuffle=True: an endless stream of
    epochs for `fit(steps_per_epoch=len(batch_sizes(N, batch_size, replicas)))`; epoch e is a permutation drawn from
    (seed, e) alone and batched on its own, so a run resumed at `first_epoch` sees exactly the batches an
    uninterrupted run would. `replicas`: the devices each batch is split over; no batch leaves one of them empty.
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim not in (2, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise InputError(f"images of shape {images.shape}: expected (N, S, S, 1) or features (N, C)")
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

    def epoch(e):
        return cut(tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, e])))

    order = tf.data.Dataset.range(first_epoch, 1 << 62).flat_map(epoch) if shuffle else cut(tf.range(n))

    def gather(idx):
        batch = tf.cast(tf.gather(x, idx), tf.float32)
        return batch if y is None else (batch, tf.gather(y, idx))

    ds = order.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_in_batches(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict` over every image in batches of one shape: the last is filled up with copies of the first
    image, whose outputs are dropped. One traced shape per model (no retracing on a short last batch), and no
    replica of a distributed model is ever left without an image."""
    n = len(images)
    batch = max(1, min(batch_size, n))
    filled = np.concatenate([images, np.repeat(images[:1], -n % batch, axis=0)]) if n % batch else images
    batches = make_dataset(filled, None, batch, shuffle=False, replicas=replicas_of(model))
    return np.asarray(model.predict(batches, verbose=0))[:n]


# ----------------------------------------------------------------------------------------------------- benchmark


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    import resource  # POSIX only: imported here so the module loads on Windows

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _timed_fit(model, dataset, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of `steps` training steps of model.fit (the dataset shuffles itself)."""
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return time.perf_counter() - t0, time.process_time() - c0


def _compiled_model(backbone: str, image_size: int, augment: bool):
    """The sound recipe's model (fully trainable, no download) compiled with Adamax + binary cross-entropy."""
    import keras

    from xraylib.config import resolve_config
    from xraylib.models import build_model

    settings = {"weights": "none", "image_size": str(image_size), "augment": str(augment)}
    cfg = resolve_config(backbone, "sound", settings)  # the whole backbone trained, as in a real run
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adamax(cfg.learning_rate), loss="binary_crossentropy")
    return model, cfg


def bench_pipeline(
    data: str | os.PathLike,
    backbone: str = "resnet34",
    image_size: int = 150,
    limit: int = 0,
    rounds: int = 3,
    steps: int = 3,
) -> dict:
    """Cold decode, cached+augmentation, model-only and end-to-end training throughput; peak memory."""
    import keras
    import tensorflow as tf

    from xraylib.data import build_index

    index = build_index(data)
    if limit and limit < len(index):
        index = index.sample(n=limit, random_state=0).sort_index()
    paths = index["path"].tolist()
    labels = (index["label"] == "pneumonia").to_numpy(np.float32)
    if not paths:
        raise InputError(f"no images indexed in {data}")
    result: dict = {
        "data": os.fspath(data),
        "images": len(paths),
        "image_size": image_size,
        "backbone": backbone,
        "decode_workers": decode_workers(),
        "cpu_cores": os.cpu_count(),
        "notes": [],
    }

    # 1. cold decode: every file decoded and resized, no disk cache
    result["load_average_start"] = round(os.getloadavg()[0], 2)
    t0, c0 = time.perf_counter(), time.process_time()
    images = cached_images(paths, image_size, cache_dir="none")
    cold, cpu = time.perf_counter() - t0, time.process_time() - c0
    result.update(cold_decode_seconds=round(cold, 2), cold_decode_images_per_s=round(len(paths) / cold, 1))
    # CPU time per image: what the decode costs whatever else the machine runs at the same time
    result["cold_decode_cpu_ms_per_image"] = round(1000 * cpu / len(paths), 2)
    result["cache_mb"] = round(images.nbytes / 1e6, 1)
    result["cache_mb_full_dataset_224px"] = round(FULL_DATASET * 224 * 224 / 1e6, 1)

    # 2. cached arrays -> make_dataset -> augmentation layer (as inside the model), one full epoch, warm
    try:
        from xraylib.augment import augmentation

        aug = augmentation(seed=0)
        step = tf.function(lambda x: aug(x, training=True))
        ds = make_dataset(images, labels, 64, shuffle=True, seed=0)
        for x, _ in ds.take(2):  # warm-up: tracing
            step(x)
        batches = ds.take(-(-max(len(paths), 2000) // 64))  # at least one epoch and 2,000 images
        seen, t0, c0 = 0, time.perf_counter(), time.process_time()
        for x, _ in batches:
            _ = step(x)
            seen += int(x.shape[0])
        result["cached_augmented_images_per_s"] = round(seen / (time.perf_counter() - t0), 1)
        result["cached_augmented_cpu_ms_per_image"] = round(1000 * (time.process_time() - c0) / seen, 3)
        t0, seen = time.perf_counter(), 0
        for x, _ in batches:
            seen += int(x.shape[0])
        result["cached_images_per_s"] = round(seen / (time.perf_counter() - t0), 1)
    except ImportError as exc:
        result["cached_augmented_images_per_s"] = None
        result["notes"].append(f"augmentation not measured: {exc}")

    # 3.+4. model-only (a fixed in-memory batch) and end-to-end (make_dataset of the cached arrays, augmentation
    # inside the model), both with model.fit; measured in alternating rounds so that a load change on a shared
    # machine hits both alike; the figures are medians over the rounds, the ratio the median of per-round ratios.
    keras.utils.set_random_seed(0)
    model, cfg = _compiled_model(backbone, image_size, augment=False)
    bs = cfg.batch_size
    result["batch_size"] = bs
    reps = int(np.ceil(bs / len(images)))
    xb = np.concatenate([images] * reps)[:bs].astype(np.float32)
    yb = np.concatenate([labels] * reps)[:bs]
    fixed = tf.data.Dataset.from_tensors((tf.constant(xb), tf.constant(yb))).repeat()
    result["graph_build_seconds"] = round(_timed_fit(model, fixed, 1)[0], 1)  # first step: tracing + graph building
    _timed_fit(model, fixed, 1)  # warm-up
    e2e_model, ds = None, None
    try:
        e2e_model, _ = _compiled_model(backbone, image_size, augment=True)
        usable = max(bs, len(images) - len(images) % bs)  # whole batches only: no retrace on a short last batch
        reps = int(np.ceil(usable / len(images)))
        xi, yi = np.concatenate([images] * reps)[:usable], np.concatenate([labels] * reps)[:usable]
        ds = make_dataset(xi, yi, bs, shuffle=True, seed=0)
        result["graph_build_seconds_end_to_end"] = round(_timed_fit(e2e_model, ds, 1)[0], 1)
        _timed_fit(e2e_model, ds, 1)
    except ImportError as exc:
        result["notes"].append(f"end-to-end not measured: {exc}")
        e2e_model = None
    only, e2e, ratios, cpu_only, cpu_e2e = [], [], [], [], []
    n_img = steps * bs
    for _ in range(rounds):
        wall, cpu = _timed_fit(model, fixed, steps)
        only.append(n_img / wall)
        cpu_only.append(1000 * cpu / n_img)
        if e2e_model is not None:
            wall, cpu = _timed_fit(e2e_model, ds, steps)
            e2e.append(n_img / wall)
            cpu_e2e.append(1000 * cpu / n_img)
            ratios.append(e2e[-1] / only[-1])
    # CPU time per trained image (all threads of this process): robust to other processes sharing the cores
    result["model_only_cpu_ms_per_image"] = round(float(np.median(cpu_only)), 1)
    if cpu_e2e:
        result["end_to_end_cpu_ms_per_image"] = round(float(np.median(cpu_e2e)), 1)
        result["end_to_end_vs_model_only_cpu"] = round(float(np.median(cpu_only) / np.median(cpu_e2e)), 3)
    result["model_only_images_per_s"] = round(float(np.median(only)), 2)
    result["model_only_rounds"] = [round(v, 2) for v in only]
    result["end_to_end_images_per_s"] = round(float(np.median(e2e)), 2) if e2e else None
    result["end_to_end_rounds"] = [round(v, 2) for v in e2e]
    result["end_to_end_vs_model_only"] = round(float(np.median(ratios)), 3) if ratios else None
    result["steps_per_round"] = steps
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


def _idle(result: dict) -> str:
    """Decode throughput the CPU time per image allows on otherwise idle cores (an estimate, not a measurement)."""
    cpu = result.get("cold_decode_cpu_ms_per_image")
    return f"{result['decode_workers'] * 1000 / cpu:,.0f}" if cpu else "?"


def format_bench(result: dict) -> str:
    """A printable table of bench_pipeline's figures."""

    def fig(key: str, unit: str = "images/s") -> str:
        value = result.get(key)
        return "not measured" if value is None else f"{value:,.1f} {unit}".rstrip()

    ratio = result.get("end_to_end_vs_model_only")
    lines = [
        f"pipeline benchmark: {result['images']} images at {result['image_size']} px, backbone "
        f"{result['backbone']}, batch {result.get('batch_size', '?')}, {result['decode_workers']} decode threads",
        f"  cold decode (decode + resize, no disk cache)   {fig('cold_decode_images_per_s')}"
        f"  ({result['cold_decode_seconds']} s)",
        f"  cold decode CPU time per image                 {fig('cold_decode_cpu_ms_per_image', 'ms')}"
        f"  (= {_idle(result)} images/s if {result['decode_workers']} cores were free for it)",
        f"  cached epoch, no augmentation                  {fig('cached_images_per_s')}",
        f"  cached epoch with augmentation                 {fig('cached_augmented_images_per_s')}"
        f"  (CPU {result.get('cached_augmented_cpu_ms_per_image')} ms/image)",
        f"  model-only training (fixed in-memory batch)    {fig('model_only_images_per_s')}"
        f"  (rounds: {result.get('model_only_rounds')})",
        f"  end-to-end training (make_dataset + aug)       {fig('end_to_end_images_per_s')}"
        f"  (rounds: {result.get('end_to_end_rounds')})",
        f"  end-to-end / model-only                        {'not measured' if ratio is None else f'{ratio:.3f}'}"
        f" (wall, median of rounds); by CPU time per image: {result.get('end_to_end_vs_model_only_cpu')}"
        f" ({result.get('model_only_cpu_ms_per_image')} vs {result.get('end_to_end_cpu_ms_per_image')} ms)",
        f"  first training step (graph building)           {fig('graph_build_seconds', 's')} model-only, "
        f"{fig('graph_build_seconds_end_to_end', 's')} end-to-end",
        f"  image cache of this run                        {fig('cache_mb', 'MB')} "
        f"(full 5,910 images at 224 px: {result['cache_mb_full_dataset_224px']:.1f} MB, uint8, one channel)",
        f"  peak memory (RSS)                              {fig('peak_rss_mb', 'MB')}",
        f"  load average (1 min) at start / end            {result.get('load_average_start')} / "
        f"{result.get('load_average_end')} on {result['cpu_cores']} cores",
    ]
    lines += [f"  note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)
