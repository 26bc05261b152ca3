"""Training: fit with callbacks, resume, and the run's files.

Its data comes from `xraylib.prepare`, the devices it computes on and their precision from `xraylib.strategy`.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import checkpoint, runs, tracking
from xraylib.config import RunConfig, settle_weights
from xraylib.data import CLASSES
from xraylib.errors import InputError
from xraylib.fileio import atomic_path, claim_dir, exclusive, owned_dir, unclaimed_on_refusal, write_csv, write_json
from xraylib.inference import frozen_outputs, frozen_split
from xraylib.pipeline import balanced_draw, batch_sizes, replicas_of, tf_batches
from xraylib.prepare import LEFT_OUT, PreparedData, prepare_data, subset_counts
from xraylib.run_evaluation import evaluate_run
from xraylib.strategy import bfloat16_is_faster, cpu_name, distribution_strategy, precision_policy

MONITOR_MODE = {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"}


def machine() -> dict:
    """Where a run's timings were measured: the CPU (as `lscpu` names it), its cores, whether it has AMX bfloat16
    tiles, the GPUs TensorFlow sees, and the dtype policy the model ran in (`mixed_precision=auto` decides it here)."""
    import keras
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "amx_bf16": bfloat16_is_faster(),
        "gpus": len(tf.config.list_logical_devices("GPU")),
        "precision": keras.mixed_precision.global_policy().name,
    }


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    import keras
    import matplotlib
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
    }


def seed_everything(cfg: RunConfig) -> None:
    """One seed for Python, NumPy and TensorFlow; optionally deterministic ops."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(model, cfg: RunConfig, optimizer=None) -> None:
    """Attach an optimizer (a new one as `cfg` says, or the one given), the loss and the metrics named in
    history.csv (loss, accuracy, auc). Three classes: categorical cross-entropy on one-hot targets (the same loss
    as sparse categorical cross-entropy) and `auc` the micro-averaged one-vs-rest ROC-AUC, so `monitor=val_auc`
    works for both tasks."""
    import keras

    optimizers = {
        "adamax": keras.optimizers.Adamax,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    if cfg.task == "three_class":  # one-hot targets, so that Keras' AUC (micro one-vs-rest) can read them
        loss, accuracy = keras.losses.CategoricalCrossentropy(), keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, accuracy = keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy(name="accuracy")
    averaging = {"use_ema": True, "ema_momentum": cfg.ema_momentum} if cfg.ema_momentum else {}
    model.compile(
        optimizer=optimizer or optimizers[cfg.optimizer](learning_rate=cfg.learning_rate, **averaging),
        loss=loss,
        metrics=[accuracy, keras.metrics.AUC(name="auc")],
        jit_compile=cfg.jit_compile,
        steps_per_execution=cfg.steps_per_execution,
    )


def _targets(labels: np.ndarray, cfg: RunConfig) -> np.ndarray:
    """Labels as the head expects them: (N,) for the sound head, one-hot (N, 2) for the study's head, one-hot
    (N, 3) for three classes."""
    if cfg.task == "three_class":
        return np.eye(3, dtype=np.float32)[labels.astype(int)]
    if cfg.head == "study":
        return np.stack([1.0 - labels, labels], axis=1).astype(np.float32)
    return labels.astype(np.float32)


def training_batches(images: np.ndarray, labels: np.ndarray, cfg: RunConfig, first_epoch: int = 0, replicas: int = 1):
    """The endless, seeded stream of training epochs (`pipeline.tf_batches`): each image once an epoch, or with
    `sampling=balanced` drawn with replacement so that each class comes equally often."""
    draw = balanced_draw(labels) if cfg.sampling == "balanced" else None
    targets = _targets(labels, cfg)
    return tf_batches(images, targets, cfg.batch_size, True, cfg.seed, first_epoch, replicas, draw=draw)


def class_weights(labels: np.ndarray, n_classes: int = 2) -> dict[int, float]:
    """Balanced class weights (scikit-learn's rule) for class codes 0 .. n_classes - 1."""
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(n_classes)
    weights = compute_class_weight("balanced", classes=classes, y=labels.astype(int))
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}


def plateau_state(values: list[float], mode: str, patience: int = 0) -> tuple[float | None, int]:
    """(best, epochs since the last strict improvement) after `values`, as Keras' EarlyStopping counts them;
    with `patience`, the count restarts whenever it reaches it (ReduceLROnPlateau's rule)."""
    best, wait = None, 0
    for value in values:
        if best is None or (value > best if mode == "max" else value < best):
            best, wait = value, 0
        else:
            wait += 1
            if patience and wait >= patience:
                wait = 0
    return best, wait


def epoch_line(row: dict, epochs: int) -> str:
    """One compact line for a finished epoch: its metrics, the learning rate and the time it took."""
    metrics = "  ".join(f"{k} {row[k]:.4f}" for k in ("loss", "auc", "val_loss", "val_auc") if k in row)
    return f"epoch {row['epoch'] + 1}/{epochs}  {metrics}  lr {row['learning_rate']:.3g}  {row['seconds']:.1f} s"


def _history_writer(out: Path, first_epoch: int, n_train: int, cfg: RunConfig, callbacks: list):
    """A callback that keeps history.csv (one row per epoch: metrics, learning rate, timings), prints one line per
    epoch if `cfg.verbose`, and, on a resumed run, gives the checkpoint, early-stopping and learning-rate callbacks
    back what they knew at the interruption."""
    import keras

    path = out / runs.HISTORY
    rows = []
    if first_epoch and path.is_file():
        rows = pd.read_csv(path).query("epoch < @first_epoch").to_dict("records")
    monitor = cfg.monitor
    mode = MONITOR_MODE[monitor]

    class HistoryWriter(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if not rows:
                return
            values = [row[monitor] for row in rows]
            for cb in callbacks:
                if isinstance(cb, keras.callbacks.ModelCheckpoint):
                    cb.best = plateau_state(values, mode)[0]
                elif isinstance(cb, keras.callbacks.EarlyStopping):
                    cb.best, cb.wait = plateau_state(values, mode)
                elif isinstance(cb, keras.callbacks.ReduceLROnPlateau):
                    cb.best, cb.wait = plateau_state(values, mode, cb.patience)

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0 and not hasattr(self, "first_step_seconds"):
                self.first_step_seconds = time.perf_counter() - self.started

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
            row.update(learning_rate=lr, seconds=round(seconds, 3), images_per_s=round(n_train / seconds, 2))
            rows.append(row)
            write_csv(path, pd.DataFrame(rows))
            if cfg.verbose:
                print(epoch_line(row, cfg.epochs), flush=True)

    return HistoryWriter()


def build_run_model(cfg: RunConfig):
    """Seed everything, pick the strategy and precision, then build and compile the model in its scope."""
    from xraylib.models import build_model

    seed_everything(cfg)
    strategy = distribution_strategy(cfg.strategy)
    precision_policy(cfg, strategy)
    with strategy.scope():
        model = build_model(cfg)
        compile_model(model, cfg)
    if cfg.adapt != "none":  # before training: a model whose trained layers hold no BatchNormalization (VGG)
        from xraylib.adapt import require_batchnorm

        require_batchnorm(frozen_split(model, cfg), cfg, f"setting adapt={cfg.adapt}")
    return model


def _callbacks(cfg: RunConfig, out: Path) -> list:
    """Best-weights checkpoint, early stopping and learning-rate reduction, as `cfg` asks; with `ema_momentum`,
    validation scores the weights' moving average (snapshots and checkpoint keep both)."""
    import keras

    mode = MONITOR_MODE[cfg.monitor]
    callbacks = [keras.callbacks.SwapEMAWeights()] if cfg.ema_momentum else []
    if cfg.keep == "best":
        callbacks.append(checkpoint.best_weights_callback(out / "best.weights.h5", cfg.monitor, mode))
    if cfg.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=mode, patience=cfg.early_stopping))
    if cfg.reduce_lr:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=cfg.monitor, mode=mode, factor=0.3, patience=cfg.reduce_lr, min_lr=1e-7
            )
        )
    return callbacks


def train_on_frozen_outputs(model, prepared: PreparedData, cfg: RunConfig):
    """(trained part, train inputs, val inputs) for a partly frozen model without augmentation: the frozen part's
    outputs are computed once (`frozen_outputs`, after a random backbone's `models.adapt_batchnorm`, and then
    standardising the pooled features if the head asks), and training the rest on them trains `model` exactly as
    end-to-end training would, without running the frozen part every epoch."""
    from xraylib.layers import fit_site_tables
    from xraylib.models import adapt_batchnorm, standardise_pooled

    fit_site_tables(model.layers, prepared.images["train"])
    if cfg.weights == "none":
        adapt_batchnorm(model, prepared.images["train"])
    outputs = frozen_outputs(model, prepared, cfg)
    if "pool_norm" in {layer.name for layer in model.layers}:
        standardise_pooled(model.get_layer("pool_norm"), outputs["train"])
    trained = frozen_split(model, cfg)[1]
    with model.distribute_strategy.scope():
        compile_model(trained, cfg, optimizer=model.optimizer)  # one optimizer: model.keras saves its trained state
    return trained, outputs["train"], outputs["val"]


def fit(model, prepared: PreparedData, cfg: RunConfig, out: str | Path, callbacks: list | None = None) -> pd.DataFrame:
    """Train `model` and save the kept (best or last) weights as model.keras; resume an interrupted run in `out`,
    or just load model.keras if training finished there already. Frozen statistics are first set from the training
    images (`models.adapt_to_data`); a frozen backbone without augmentation trains only its head, on features
    computed once (`head_on_features`, unless cfg.precompute_features is off). TensorBoard logs (and, with
    `tracker=mlflow`, the MLflow run's epochs) are written by `tracking.callbacks`; `callbacks`: more Keras callbacks.
    Returns the history."""
    from xraylib.models import adapt_to_data, fit_probe_head

    cfg = settle_weights(cfg)  # weights=auto as build_model settled it: whether the backbone starts random
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / runs.MODEL).is_file() and not checkpoint.backup_dir(out).exists():
        try:
            model.load_weights(out / runs.MODEL)
        except Exception as exc:  # Keras raises ValueError, OSError or zipfile errors for a damaged file
            raise InputError(
                f"{out / 'model.keras'} cannot be loaded ({type(exc).__name__}): rerun with a new --out, or remove it"
            ) from exc
        print(f"training finished earlier: loaded {out / 'model.keras'}")
        return runs.read_history(out)
    state = checkpoint.read_state(out)
    first_epoch = state.get("epoch", 0)
    if first_epoch and cfg.verbose:
        print(f"resuming at epoch {first_epoch + 1} from {checkpoint.backup_dir(out)}")
    started = time.perf_counter()
    trained, train_x, val_x = model, prepared.images["train"], prepared.images["val"]
    train_y = prepared.labels["train"]
    if cfg.precompute_features and not cfg.augment and frozen_split(model, cfg) is not None:
        trained, train_x, val_x = train_on_frozen_outputs(model, prepared, cfg)  # the snapshot restores its state
    elif not first_epoch:
        adapt_to_data(model, train_x, random_backbone=cfg.weights == "none", batch_size=cfg.batch_size)
    if cfg.head_init == "probe" and not first_epoch:  # a resumed run's snapshot holds the head already
        start = model.inputs if trained is model else frozen_split(model, cfg)[0].outputs  # where train_x enter
        balanced = cfg.class_weight or cfg.sampling == "balanced"
        fit_probe_head(model, start, train_x, train_y, balanced, cfg.batch_size)
    checkpoint.restore(trained, out)
    kept = _callbacks(cfg, out)
    history = _history_writer(out, first_epoch, len(train_y), cfg, kept)
    use_weights = cfg.class_weight and cfg.head == "sound"
    replicas = replicas_of(trained)
    val_y = _targets(prepared.labels["val"], cfg)
    if first_epoch < cfg.epochs and not state.get("stopped"):
        tracked = tracking.callbacks(cfg, out)  # after the history writer: MLflow's logs the rows it wrote
        trained.fit(
            training_batches(train_x, train_y, cfg, first_epoch, replicas),
            steps_per_epoch=len(batch_sizes(len(train_y), cfg.batch_size, replicas)),
            validation_data=tf_batches(val_x, val_y, cfg.batch_size, False, replicas=replicas),
            initial_epoch=first_epoch,
            epochs=cfg.epochs,
            class_weight=class_weights(train_y, len(CLASSES[cfg.task])) if use_weights else None,
            callbacks=[*kept, history, *tracked, *(callbacks or []), checkpoint.snapshot_callback(out)],
            shuffle=False,  # the stream is already shuffled, per epoch, by seed
            verbose=0,  # the history writer prints one line per epoch
        )
    best = out / "best.weights.h5"
    if cfg.keep == "best" and best.is_file():
        trained.load_weights(best)
    trained.optimizer.finalize_variable_values(trained.trainable_weights)  # the moving average, with ema_momentum
    timings = {
        "fit_seconds": round(time.perf_counter() - started, 2),
        "first_step_seconds": round(getattr(history, "first_step_seconds", float("nan")), 2),
        "trained": "end to end" if trained is model else f"{trained.name} on precomputed features",
        **machine(),
    }
    write_json(out / runs.TIMINGS, timings)
    save_model(model, out)
    checkpoint.discard(out)
    best.unlink(missing_ok=True)
    return runs.read_history(out)


def record_config(prepared: PreparedData, cfg: RunConfig, data: str | Path, out: str | Path) -> dict:
    """Write config.json (parameters, seed, versions, data fingerprint, subset counts); refuse a different run."""
    config = {
        "run": cfg.to_json(),
        "data": {
            "dir": str(Path(data).resolve()),
            "fingerprint": prepared.fingerprint,
            "missing_dropped": prepared.dropped,  # listed in the metadata, absent from the folder
            "missing_dropped_test": prepared.dropped_test,  # of them, test images (missing_test=drop)
        },
        "subsets": subset_counts(prepared),
        "versions": library_versions(),
    }
    if prepared.task != "binary":
        config["left_out"] = {"images": prepared.left_out, "why": f"pneumonia {LEFT_OUT}"}
    runs.write_config(out, config, started=checkpoint.run_started(out))
    return config


def train(data: str | Path, cfg: RunConfig, out: str | Path) -> Path:
    """The whole run, as the training notebook tells it: prepare, fit (or resume), evaluate, draw. The run folder
    is locked meanwhile: a second process training into it is refused. `out` must be new, empty or a run's
    (`fileio.owned_dir`), outside the data."""
    out = owned_dir(out, "run", reads=[data])
    with unclaimed_on_refusal(out), exclusive(out):
        return _train_locked(data, cfg, claim_dir(out, "run"))


def _train_locked(data: str | Path, cfg: RunConfig, out: Path) -> Path:
    """The run's steps, with `out` locked by `train`."""
    from xraylib import explain, run_figures

    out = Path(out)
    if runs.is_finished(out):
        raise InputError(f"{out} already holds a finished run: choose another --out")
    cfg = settle_weights(cfg)  # offline: one line in under a second, before minutes of decoding
    prepared = prepare_data(data, cfg)
    record_config(prepared, cfg, data, out)
    for name in ("class_distribution", "augmentations"):
        run_figures.data_figure(name, prepared, cfg, out)
    model = build_run_model(cfg)
    fit(model, prepared, cfg, out)
    evaluate_run(model, prepared, cfg, out)
    run_figures.save_run_figures(out, model=model)
    explain.save_localization(out, model=model)
    tracking.log_results(cfg, out)
    runs.mark_finished(out)
    return out


def save_model(model, out: str | Path) -> Path:
    """Write model.keras; a failure leaves no half-written file behind."""
    path = Path(out) / runs.MODEL
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path
