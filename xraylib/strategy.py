"""Where a run computes: the tf.distribute strategy (GPUs, a TPU, several workers) and the mixed-precision policy."""

from __future__ import annotations

from xraylib.config import RunConfig
from xraylib.errors import InputError


def distribution_strategy(name: str):
    """The tf.distribute strategy for `auto | mirrored | multiworker | tpu | none`."""
    import tensorflow as tf

    if name == "tpu" or (name == "auto" and _tpu_address()):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"setting strategy=tpu: no TPU found ({str(exc).splitlines()[0]})") from exc
        return tf.distribute.TPUStrategy(resolver)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_address() -> str:
    import os

    return os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or ""


def _cpuinfo(field: str, path: str) -> str:
    """The first value of `field` in /proc/cpuinfo ("" where there is none)."""
    try:
        with open(path) as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no /proc/cpuinfo)."""
    return set(_cpuinfo("flags", path).split())


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name as Linux (and `lscpu`) gives it, else what Python's platform module knows."""
    import platform

    return _cpuinfo("model name", path) or platform.processor() or "unknown CPU"


def bfloat16_is_faster(flags: set[str] | None = None) -> bool:
    """True on CPUs with AMX bfloat16 tiles (`amx_bf16`): there Xception's forward pass ran 1.9x faster in
    mixed_bfloat16 (docs/performance.md); elsewhere (e.g. AMD EPYC without AMX) bfloat16 is emulated and slower."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


def precision_policy(cfg: RunConfig, strategy) -> str:
    """Set and return Keras' global dtype policy: `on` -> mixed precision (float16 on GPUs, bfloat16 elsewhere);
    `auto` -> the same on accelerators and on CPUs with AMX (`bfloat16_is_faster`), float32 on other CPUs."""
    import keras
    import tensorflow as tf

    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    accelerated = on_tpu or bool(tf.config.list_logical_devices("GPU"))
    wanted = cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and (accelerated or bfloat16_is_faster()))
    policy = ("mixed_bfloat16" if on_tpu or not accelerated else "mixed_float16") if wanted else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy
