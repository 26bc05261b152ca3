"""Benchmarks that print figures: the input pipeline against model-only training (`xraylib bench pipeline`), a
recipe's training on a frozen trunk's outputs against end-to-end training (`xraylib bench train`), and decode +
prediction of arbitrary images (`xraylib bench predict`)."""

from __future__ import annotations

import os
import time

import numpy as np

from xraylib.data import build_index, pneumonia_codes
from xraylib.errors import InputError
from xraylib.pipeline import cached_images, decode_workers, tf_batches

FULL_DATASET = 5910  # images in CoronaHack (for the cache-size statement)


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
    index = build_index(data)
    if limit and limit < len(index):
        index = index.sample(n=limit, random_state=0).sort_index()
    paths = index["path"].tolist()
    labels = pneumonia_codes(index["label"]).astype(np.float32)
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
    result["load_average_start"] = round(os.getloadavg()[0], 2)
    images, decode = _cold_decode(paths, image_size)
    result.update(decode)
    result.update(_augmentation_rates(images, labels, result["notes"]))
    result.update(_training_rates(images, labels, backbone, image_size, rounds, steps, result["notes"]))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


def _cold_decode(paths: list[str], image_size: int) -> tuple[np.ndarray, dict]:
    """1. Cold decode: every file decoded and resized, no disk cache. (the images, their figures)"""
    t0, c0 = time.perf_counter(), time.process_time()
    images = cached_images(paths, image_size, cache_dir="none")
    cold, cpu = time.perf_counter() - t0, time.process_time() - c0
    return images, {
        "cold_decode_seconds": round(cold, 2),
        "cold_decode_images_per_s": round(len(paths) / cold, 1),
        # CPU time per image: what the decode costs whatever else the machine runs at the same time
        "cold_decode_cpu_ms_per_image": round(1000 * cpu / len(paths), 2),
        "cache_mb": round(images.nbytes / 1e6, 1),
        "cache_mb_full_dataset_224px": round(FULL_DATASET * 224 * 224 / 1e6, 1),
    }


def _augmentation_rates(images: np.ndarray, labels: np.ndarray, notes: list[str]) -> dict:
    """2. Cached arrays -> tf_batches -> augmentation layer (as inside the model), one full epoch, warm."""
    import tensorflow as tf

    try:
        from xraylib.layers import augmentation

        out = {}
        aug = augmentation(seed=0)
        step = tf.function(lambda x: aug(x, training=True))
        ds = tf_batches(images, labels, 64, shuffle=True, seed=0)
        for x, _ in ds.take(2):  # warm-up: tracing
            step(x)
        batches = ds.take(-(-max(len(images), 2000) // 64))  # at least one epoch and 2,000 images
        seen, t0, c0 = 0, time.perf_counter(), time.process_time()
        for x, _ in batches:
            _ = step(x)
            seen += int(x.shape[0])
        out["cached_augmented_images_per_s"] = round(seen / (time.perf_counter() - t0), 1)
        out["cached_augmented_cpu_ms_per_image"] = round(1000 * (time.process_time() - c0) / seen, 3)
        t0, seen = time.perf_counter(), 0
        for x, _ in batches:
            seen += int(x.shape[0])
        out["cached_images_per_s"] = round(seen / (time.perf_counter() - t0), 1)
        return out
    except ImportError as exc:
        notes.append(f"augmentation not measured: {exc}")
        return {"cached_augmented_images_per_s": None}


def _training_rates(images, labels, backbone: str, image_size: int, rounds: int, steps: int, notes: list) -> dict:
    """3.+4. Model-only (a fixed in-memory batch) and end-to-end (tf_batches of the cached arrays, augmentation
    inside the model) training, both with model.fit, after each one's graph building."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model, cfg = _compiled_model(backbone, image_size, augment=False)
    bs = cfg.batch_size
    out: dict = {"batch_size": bs}
    reps = int(np.ceil(bs / len(images)))
    xb = np.concatenate([images] * reps)[:bs].astype(np.float32)
    yb = np.concatenate([labels] * reps)[:bs]
    fixed = tf.data.Dataset.from_tensors((tf.constant(xb), tf.constant(yb))).repeat()
    out["graph_build_seconds"] = round(_timed_fit(model, fixed, 1)[0], 1)  # first step: tracing + graph building
    _timed_fit(model, fixed, 1)  # warm-up
    e2e_model, ds = None, None
    try:
        e2e_model, _ = _compiled_model(backbone, image_size, augment=True)
        usable = max(bs, len(images) - len(images) % bs)  # whole batches only: no retrace on a short last batch
        reps = int(np.ceil(usable / len(images)))
        xi, yi = np.concatenate([images] * reps)[:usable], np.concatenate([labels] * reps)[:usable]
        ds = tf_batches(xi, yi, bs, shuffle=True, seed=0)
        out["graph_build_seconds_end_to_end"] = round(_timed_fit(e2e_model, ds, 1)[0], 1)
        _timed_fit(e2e_model, ds, 1)
    except ImportError as exc:
        notes.append(f"end-to-end not measured: {exc}")
        e2e_model = None
    out.update(_alternating_rounds(model, fixed, e2e_model, ds, rounds, steps, bs))
    return out


def _alternating_rounds(model, fixed, e2e_model, ds, rounds: int, steps: int, batch_size: int) -> dict:
    """Model-only (`model` on `fixed`) and end-to-end (`e2e_model` on `ds`, unless None) training measured in
    alternating rounds of `steps` steps, so that a load change on a shared machine hits both alike; the figures are
    medians over the rounds, the ratio the median of per-round ratios."""
    only, e2e, ratios, cpu_only, cpu_e2e = [], [], [], [], []
    n_img = steps * batch_size
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
    out = {"model_only_cpu_ms_per_image": round(float(np.median(cpu_only)), 1)}
    if cpu_e2e:
        out["end_to_end_cpu_ms_per_image"] = round(float(np.median(cpu_e2e)), 1)
        out["end_to_end_vs_model_only_cpu"] = round(float(np.median(cpu_only) / np.median(cpu_e2e)), 3)
    out["model_only_images_per_s"] = round(float(np.median(only)), 2)
    out["model_only_rounds"] = [round(v, 2) for v in only]
    out["end_to_end_images_per_s"] = round(float(np.median(e2e)), 2) if e2e else None
    out["end_to_end_rounds"] = [round(v, 2) for v in e2e]
    out["end_to_end_vs_model_only"] = round(float(np.median(ratios)), 3) if ratios else None
    out["steps_per_round"] = steps
    return out


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
        f"  end-to-end training (tf_batches + aug)         {fig('end_to_end_images_per_s')}"
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


PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # --precision -> Keras dtype policy


def _random_targets(model, n: int) -> np.ndarray:
    """Random labels shaped as `model`'s head wants them: 0/1 for one output unit, one-hot for several."""
    units = int(model.output.shape[-1])
    codes = np.random.default_rng(0).integers(0, max(units, 2), n)
    return codes[:, None].astype(np.float32) if units == 1 else np.eye(units, dtype=np.float32)[codes]


def _training_rate(model, x: np.ndarray, y: np.ndarray, batch_size: int, prefix: str) -> dict:
    """`prefix`_first_step_seconds (graph building, excluded from the rate), then the images/s and CPU ms per image
    of one pass over `x` in model.fit."""
    ds = tf_batches(x, y, batch_size, shuffle=True, seed=0)
    first, _ = _timed_fit(model, ds, 1)
    wall, cpu = _timed_fit(model, ds, len(x) // batch_size)
    return {
        f"{prefix}_first_step_seconds": round(first, 1),
        f"{prefix}_images_per_s": round(len(x) / wall, 2),
        f"{prefix}_cpu_ms_per_image": round(1000 * cpu / len(x), 1),
    }


def _bench_policy(cfg, images: np.ndarray) -> dict:
    """bench_train's figures under the current dtype policy."""
    from xraylib.inference import frozen_split
    from xraylib.models import build_model
    from xraylib.pipeline import predict_in_batches
    from xraylib.train import compile_model

    bs = cfg.batch_size
    model = build_model(cfg)
    labels = _random_targets(model, len(images))
    result: dict = {}
    split = frozen_split(model, cfg)
    if split is not None:
        trunk, top = split
        predict_in_batches(trunk, images[:bs], bs)  # warm-up: traces the trunk's predict
        t0, c0 = time.perf_counter(), time.process_time()
        outputs = predict_in_batches(trunk, images, bs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        result.update(
            trunk_output=f"{trunk.layers[-1].name} {tuple(trunk.output.shape[1:])}",
            trunk_images_per_s=round(len(images) / wall, 2),
            trunk_cpu_ms_per_image=round(1000 * cpu / len(images), 1),
        )
        compile_model(top, cfg)
        result.update(_training_rate(top, outputs, labels, bs, "top_train"))
    compile_model(model, cfg)
    result.update(_training_rate(model, images, labels, bs, "end_to_end_train"))
    if split is not None:
        cached, whole = result["top_train_images_per_s"], result["end_to_end_train_images_per_s"]
        result["top_vs_end_to_end"] = round(cached / whole, 1)
    return result


def bench_train(
    backbone: str = "xception",
    preset: str = "sound",
    settings: dict | None = None,
    precisions: tuple[str, ...] = ("float32",),
    batches: int = 3,
) -> dict:
    """A recipe's training throughput, per precision (`PRECISIONS`): the frozen trunk's forward pass (what a run
    pays once, `features.trunk_outputs`), training the layers above it on the trunk's outputs (what each epoch
    pays), and training the whole model end to end, every batch through the trunk (the model-only limit the
    cache replaces). Each over `batches` batches of random images (the speed does not depend on what they show)
    after a warm-up batch; `settings` override the preset (weights: none unless given)."""
    import keras

    from xraylib.config import resolve_config
    from xraylib.strategy import cpu_flags, cpu_name

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise InputError(f"--precision {','.join(precisions)}: expected one or more of {', '.join(PRECISIONS)}")
    if batches < 1:
        raise InputError(f"--batches {batches}: must be at least 1")
    cfg = resolve_config(backbone, preset, {"weights": "none", **(settings or {})})
    size, bs = cfg.image_size, cfg.batch_size
    images = np.random.default_rng(0).integers(0, 256, (bs * batches, size, size, 1), dtype=np.uint8)
    result: dict = {
        "backbone": cfg.backbone,
        "image_size": size,
        "fine_tune": cfg.fine_tune,
        "augment": cfg.augment,
        "weights": cfg.weights,
        "batch_size": bs,
        "batches": batches,
        "cpu": cpu_name(),
        "amx_bf16": "amx_bf16" in cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "load_average_start": round(os.getloadavg()[0], 2),
        "precisions": {},
        "notes": [],
    }
    if cfg.fine_tune == "all":
        result["notes"].append("fine_tune=all: every layer trains, there is no frozen trunk to compute once")
    elif cfg.augment or not cfg.precompute_features:
        result["notes"].append(
            "a run of this recipe trains end to end: the trunk's outputs are computed once only with "
            "augment=false and precompute_features=true"
        )
    saved = keras.mixed_precision.global_policy().name
    try:
        for name in precisions:
            keras.backend.clear_session()  # frees the previous model and restarts layer names (and the policy)
            keras.mixed_precision.set_global_policy(PRECISIONS[name])
            keras.utils.set_random_seed(cfg.seed)
            result["precisions"][PRECISIONS[name]] = _bench_policy(cfg, images)
    finally:
        keras.mixed_precision.set_global_policy(saved)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


def format_bench_train(result: dict) -> str:
    """A printable table of bench_train's figures, one column per precision."""
    policies = list(result["precisions"])

    def row(label: str, key: str, unit: str = "images/s") -> str:
        values = [result["precisions"][p].get(key) for p in policies]
        cells = ["not measured" if v is None else f"{v:,.1f} {unit}".rstrip() for v in values]
        return f"  {label:<44}" + "".join(f"{c:>20}" for c in cells)

    amx = "with" if result["amx_bf16"] else "without"
    first = result["precisions"][policies[0]]
    lines = [
        f"training benchmark: {result['backbone']} at {result['image_size']} px, fine_tune={result['fine_tune']}, "
        f"augment={result['augment']}, weights={result['weights']}, batch {result['batch_size']}, "
        f"{result['batches']} timed batches after a warm-up",
        f"  CPU: {result['cpu']} ({amx} amx_bf16), {result['cpu_cores']} cores; load average (1 min) "
        f"{result['load_average_start']} at start, {result['load_average_end']} at end",
        f"  trunk output: {first.get('trunk_output', 'none (every layer trains)')}",
        f"  {'':<44}" + "".join(f"{p:>20}" for p in policies),
        row("trunk forward pass (once per run)", "trunk_images_per_s"),
        row("top trained on the trunk's outputs (epoch)", "top_train_images_per_s"),
        row("whole model trained end to end (no cache)", "end_to_end_train_images_per_s"),
        row("top / end to end", "top_vs_end_to_end", "x"),
        row("CPU per image: trunk", "trunk_cpu_ms_per_image", "ms"),
        row("CPU per image: top training", "top_train_cpu_ms_per_image", "ms"),
        row("CPU per image: end-to-end training", "end_to_end_train_cpu_ms_per_image", "ms"),
        row("first step (graph building): top", "top_train_first_step_seconds", "s"),
        row("first step (graph building): end to end", "end_to_end_train_first_step_seconds", "s"),
    ]
    lines += [f"  note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def _best_of(repeats: int, work) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of the fastest of `repeats` calls of work()."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        work()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def bench_predict(model_path: str | os.PathLike, inputs: list[str | os.PathLike], repeats: int = 3) -> dict:
    """Images per second of `xraylib predict` (decode + batched prediction, no Grad-CAM) beside the cold decode of
    the same files through the training pipeline and the model alone on the decoded images: each the best of
    `repeats` passes after one warm-up pass, with its CPU time per image. The CPU times give the ceiling of
    predict / decode when the cores are the limit: decode / (decode + model), whatever the decode loop does."""
    from xraylib.predict import find_images, load_predictor, predict_files, predict_images

    if repeats < 1:
        raise InputError(f"--repeats {repeats}: must be at least 1")
    predictor = load_predictor(model_path)
    files = find_images(inputs)
    if not files:
        raise InputError(f"no images found in {', '.join(map(str, inputs))}")
    n, load_start = len(files), round(os.getloadavg()[0], 2)
    predict_files(predictor, files)  # warm-up: traces the predict function
    predict, predict_cpu = _best_of(repeats, lambda: predict_files(predictor, files))
    paths = [str(f) for f in files]
    images = cached_images(paths, predictor.image_size, cache_dir="none")
    decode, decode_cpu = _best_of(repeats, lambda: cached_images(paths, predictor.image_size, cache_dir="none"))
    model, model_cpu = _best_of(repeats, lambda: predict_images(predictor, images))
    return {
        "images": n,
        "image_size": predictor.image_size,
        "cpu_cores": os.cpu_count(),
        "predict_images_per_s": round(n / predict, 1),
        "pipeline_cold_decode_images_per_s": round(n / decode, 1),
        "model_only_images_per_s": round(n / model, 1),
        "predict_vs_decode": round(decode / predict, 3),
        "predict_cpu_ms_per_image": round(1000 * predict_cpu / n, 2),
        "decode_cpu_ms_per_image": round(1000 * decode_cpu / n, 2),
        "model_cpu_ms_per_image": round(1000 * model_cpu / n, 2),
        "predict_vs_decode_cpu_bound_ceiling": round(decode_cpu / (decode_cpu + model_cpu), 3),
        "load_average_start": load_start,
        "load_average_end": round(os.getloadavg()[0], 2),
    }


def format_bench_predict(result: dict) -> str:
    """A printable table of bench_predict's figures."""
    return "\n".join(
        [
            f"predict benchmark: {result['images']} images at {result['image_size']} px",
            f"  xraylib predict (decode + predict)   {result['predict_images_per_s']:,.1f} images/s"
            f"  (CPU {result['predict_cpu_ms_per_image']} ms/image)",
            f"  training pipeline, cold decode       {result['pipeline_cold_decode_images_per_s']:,.1f} images/s"
            f"  (CPU {result['decode_cpu_ms_per_image']} ms/image)",
            f"  the model alone, decoded images      {result['model_only_images_per_s']:,.1f} images/s"
            f"  (CPU {result['model_cpu_ms_per_image']} ms/image)",
            f"  predict / decode                     {result['predict_vs_decode']:.3f}"
            f"  (at most {result['predict_vs_decode_cpu_bound_ceiling']:.3f} when the cores are the limit:"
            " decode CPU / (decode + model CPU))",
            f"  load average (1 min) at start / end  {result['load_average_start']} / {result['load_average_end']}"
            f" on {result['cpu_cores']} cores",
        ]
    )
