"""Presets and the resolved run configuration (`--set KEY=VALUE`, validation, config.json)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

from xraylib.backbones import Backbone, get_backbone
from xraylib.calibration import METHODS as CALIBRATIONS
from xraylib.calibration import prevalence_rule
from xraylib.data import CLASSES
from xraylib.errors import InputError
from xraylib.metrics import threshold_rule
from xraylib.weights import fetchable_weights, resolve_weights

PRESETS = ("study", "sound", "cpu", "demo", "smoke")
ADAPTATIONS = ("none", "batchnorm")  # the setting `adapt` (xraylib.adapt)
EQUALIZATIONS = ("none", "histogram", "clahe", "site")  # the setting `equalize` (xraylib.layers.equalization)
STRATEGIES = ("auto", "mirrored", "multiworker", "tpu", "none")
TRACKERS = ("none", "mlflow")
MLFLOW_MISSING = "tracker=mlflow needs the tracking extra: pip install 'xraylib[tracking]'"


@dataclass
class RunConfig:
    """Every parameter of one training run. `None` means "the backbone's default"."""

    backbone: str = "resnet34"
    preset: str = "sound"
    seed: int = 42
    deterministic: bool = False
    task: str = "binary"  # binary: normal vs pneumonia | three_class: normal, bacterial, viral (ARDS images left out)
    # data
    image_size: int | None = None
    batch_size: int | None = None
    validation: str = "patient"  # patient (grouped, stratified) | first_rows (as Keras validation_split)
    val_fraction: float = 0.15
    exclude_sources: str = "none"  # other: leave the non-Kermany images out of train and validation (test has none)
    folds: int = 0  # K >= 2: validate on fold `fold` of K patient-grouped, stratified folds of the training split
    fold: int = 0
    limit: int = 0  # keep at most this many images per subset (0 = all), stratified; for quick runs
    missing_test: str = "error"  # a test image the metadata lists but the folder lacks: error | drop (scored without)
    augment: bool = True
    noise: float = 0.0  # SD in grey levels of Gaussian noise added to each raw training image (needs augment=true)
    blur: float = 0.0  # SD in pixels of a Gaussian blur of every image the model sees, training and scoring (0: off)
    equalize: str = "none"  # none | histogram | clahe (each image by itself) | site (one table from the training set)
    cache_dir: str = "auto"
    # model
    head: str = "sound"  # sound: pooling -> dropout -> Dense(1, sigmoid); study: the study's Dense(2, sigmoid)
    weights: str = "imagenet"  # imagenet | auto (ImageNet where available, else none) | none | a weights file
    weights_dir: str = ""  # a folder of Keras' *_notop.h5 ImageNet files (default: $XRAYLIB_WEIGHTS_DIR)
    fine_tune: str = "all"  # all | none | N (the last N layers of the backbone are trained)
    dropout: float = 0.3
    head_init: str = "random"  # random | probe: fitted as a linear probe on the training images first (LP-FT)
    pooled_norm: bool = False  # standardise the pooled features (for frozen, randomly initialised backbones)
    precompute_features: bool = True  # frozen backbone, no augmentation: compute its features once, train the head
    # optimisation
    optimizer: str = "adamax"
    learning_rate: float = 1e-4
    ema_momentum: float = 0.0  # 0: off; in (0, 1): validation and the kept model use the weights' moving average
    epochs: int = 100
    class_weight: bool = True
    sampling: str = "shuffle"  # shuffle: each image once an epoch | balanced: drawn so each class comes equally often
    monitor: str = "val_auc"
    keep: str = "best"  # best (restore the best epoch by `monitor`) | last
    early_stopping: int = 10  # patience in epochs; 0 = off
    reduce_lr: int = 4  # patience in epochs; 0 = off
    # evaluation
    threshold: str = "youden"  # youden | balanced | youden:acquisition | sensitivity:0.95 | (0, 1); 3 classes: argmax
    calibration: str = "platt"  # platt | temperature | none: fitted on validation; three_class: temperature | none
    prevalence: str = "none"  # none | P in (0, 1) | estimate: the pneumonia prevalence the probabilities are moved to
    adapt: str = "none"  # none | batchnorm: the trained layers aligned to the test images, label-free (xraylib.adapt)
    tta: bool = False
    bootstrap: int = 1000
    gradcam_images: int = 16
    # hardware
    mixed_precision: str = "auto"  # auto (on for GPUs and CPUs with AMX) | on | off
    strategy: str = "auto"
    jit_compile: bool = False
    steps_per_execution: int = 1
    verbose: int = 2
    # tracking (TensorBoard logs are always written)
    tracker: str = "none"  # none | mlflow (each run also an MLflow run; needs the tracking extra)

    def to_json(self) -> dict:
        """A plain dict of every field."""
        return dataclasses.asdict(self)


STUDY = dict(
    head="study",
    validation="first_rows",
    val_fraction=0.1,
    class_weight=False,
    early_stopping=0,
    reduce_lr=0,
    keep="last",
    monitor="val_accuracy",
    threshold="0.5",
    calibration="none",
    dropout=0.0,
)
# Fine-tuning whole backbones costs minutes of graph building each on a CPU: the demo trains a standardised linear
# head on frozen backbones, with ImageNet weights where they can be had offline or downloaded (weights=auto), else
# randomly initialised (a random-features baseline). Brightness jitter swamps what random features carry, so the
# demo trains without augmentation, and so the backbone's features are computed once (precompute_features): an
# epoch of the head takes well under a second.
DEMO = dict(
    weights="auto",
    fine_tune="none",
    pooled_norm=True,
    augment=False,
    image_size=80,
    batch_size=32,
    epochs=20,
    early_stopping=4,
    reduce_lr=2,
    learning_rate=1e-2,
    bootstrap=500,
    mixed_precision="off",  # the demo's numbers are the same on every CPU (bfloat16 would change them on AMX ones)
)
SMOKE = dict(DEMO, weights="none", augment=True, epochs=1, limit=48, bootstrap=50, gradcam_images=4, batch_size=8)
# `sound` leaves out the 70 non-Kermany training images: the test set holds none of them and 69 are pneumonia, so
# what they teach is their source (docs/real-dataset.md, the source shortcut). The demo keeps them, as it always has.
SOUND = dict(exclude_sources="other")
# `cpu`: the sound recipe fine-tuned on 2 CPU cores in about half an hour (reports/real-summary/README.md says how
# each value was chosen, on validation): ImageNet weights, 224 px, each image's histogram equalized, the last 17
# layers of Xception (its exit flow) trained on the frozen trunk's outputs, computed once and cached on disk (so no
# augmentation), 3 epochs at 3e-4 (4 at 1e-4 took 34 minutes on a CPU without AMX, 3 at 3e-4 29, report #27),
# the threshold where the calibrated validation odds equal the prior odds (`balanced`: Youden's argmax moved with
# the seed, report #29).
CPU = dict(
    SOUND,
    image_size=224,
    equalize="histogram",
    fine_tune="17",
    augment=False,
    batch_size=32,
    learning_rate=3e-4,
    epochs=3,
    threshold="balanced",
)
PRESET_VALUES: dict[str, dict] = {"study": STUDY, "sound": SOUND, "cpu": CPU, "demo": DEMO, "smoke": SMOKE}
# Names the study's recipe had before it was called `study`, still accepted (and read from older config.json files).
ALIASES = {"preset": {"seed": "study"}, "head": {"seed": "study"}, "validation": {"seed": "first_rows"}}

CHOICES = {
    "task": tuple(CLASSES),
    "exclude_sources": ("none", "other"),
    "validation": ("patient", "first_rows"),
    "head": ("sound", "study"),
    "optimizer": ("adamax", "adam", "sgd", "rmsprop"),
    "keep": ("best", "last"),
    "mixed_precision": ("auto", "on", "off"),
    "strategy": STRATEGIES,
    "monitor": ("val_auc", "val_loss", "val_accuracy"),
    "tracker": TRACKERS,
    "calibration": CALIBRATIONS,
    "adapt": ADAPTATIONS,
    "equalize": EQUALIZATIONS,
    "missing_test": ("error", "drop"),
    "sampling": ("shuffle", "balanced"),
    "head_init": ("random", "probe"),
}


# The path-valued settings, each with the words it takes that are not paths, and the environment variable that
# names its folder when it is left to its default ("" or auto).
PATH_SETTINGS = {
    "weights": ("imagenet", "auto", "none"),
    "weights_dir": ("",),
    "cache_dir": ("auto", "none", "off", ""),
}
PATH_VARIABLES = {"weights_dir": "XRAYLIB_WEIGHTS_DIR", "cache_dir": "XRAYLIB_CACHE"}


def absolute_setting(key: str, value):
    """A path-valued setting made absolute against the working directory; a word (auto, none...) or any other
    setting unchanged."""
    text = str(value).strip()
    if key not in PATH_SETTINGS or text.lower() in PATH_SETTINGS[key]:
        return value
    return str(Path(text).expanduser().resolve())


def caller_paths(overrides: dict) -> dict:
    """`overrides` for a kernel or worker with another working directory (a sweep's runs): every path-valued
    setting, and the folder of $XRAYLIB_WEIGHTS_DIR or $XRAYLIB_CACHE that a setting left to its default takes,
    made absolute against this process's working directory."""
    out = {key: absolute_setting(key, value) for key, value in overrides.items()}
    for key, variable in PATH_VARIABLES.items():
        folder = os.environ.get(variable, "").strip()
        if folder and str(out.get(key, "")).strip().lower() in ("", "auto"):
            out[key] = absolute_setting(key, folder)
    return out


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}`, rejecting items without `=`."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _coerce(key: str, value, kind: str):
    """A setting's value as its field's type: a string (the command line's) converted, any other value (a
    config.json's) checked; a one-line InputError naming the setting otherwise."""
    base = kind.split(" ")[0]
    if not isinstance(value, str):
        if value is None and "None" in kind:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = {"bool": isinstance(value, bool), "int": number and float(value).is_integer(), "float": number}
        if not fits.get(base, False):
            raise InputError(f"setting {key}={value!r}: expected {base}")
        return {"int": int, "float": float}.get(base, bool)(value)
    text = value.strip()
    if "None" in kind and text.lower() in ("", "none", "default", "auto"):
        return None
    try:
        if base == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        raise InputError(f"setting {key}={value!r}: expected {base}") from None
    return text


def adapt_refusal(fine_tune: str) -> str:
    """Why a run with this `fine_tune` setting has no BatchNormalization layer to adapt ("" when it may have)."""
    if fine_tune == "none":
        return "fine_tune=none trains no BatchNormalization layer after the frozen features: nothing to adapt"
    if fine_tune == "all":
        return (
            "fine_tune=all trains the whole backbone: aligning every BatchNormalization layer of it is too costly "
            "on a CPU; adapt=batchnorm needs fine_tune=N"
        )
    return ""


def _check(cfg: RunConfig, bb: Backbone) -> None:
    """Reject impossible values of `cfg` (of backbone `bb`) with a one-line error naming the setting."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise InputError(f"setting {key}={getattr(cfg, key)!r}: expected one of {', '.join(allowed)}")
    positive = ("epochs", "image_size", "batch_size", "steps_per_execution", "bootstrap")
    for key in positive:
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise InputError(f"setting {key}={getattr(cfg, key)}: must be at least 1")
    if not 0 <= cfg.seed < 2**32:
        raise InputError(f"setting seed={cfg.seed}: must be in [0, 2**32)")
    for key in ("limit", "early_stopping", "reduce_lr", "gradcam_images"):
        if getattr(cfg, key) < 0:
            raise InputError(f"setting {key}={getattr(cfg, key)}: must not be negative")
    if cfg.image_size < bb.min_size:
        raise InputError(f"setting image_size={cfg.image_size}: {cfg.backbone} needs at least {bb.min_size} px")
    if cfg.folds == 1 or cfg.folds < 0:
        raise InputError(f"setting folds={cfg.folds}: must be 0 (one validation split) or at least 2")
    if cfg.folds and not 0 <= cfg.fold < cfg.folds:
        raise InputError(f"setting fold={cfg.fold}: must be in [0, {cfg.folds}) for folds={cfg.folds}")
    if not cfg.folds and cfg.fold:
        raise InputError(f"setting fold={cfg.fold} needs folds=K (K >= 2): without folds there is one validation split")
    if cfg.folds and cfg.validation != "patient":
        raise InputError(f"setting folds={cfg.folds} needs validation=patient (got {cfg.validation})")
    if not 0.0 < cfg.val_fraction < 0.5:
        raise InputError(f"setting val_fraction={cfg.val_fraction}: must be in (0, 0.5)")
    if not 0.0 <= cfg.dropout < 1.0:
        raise InputError(f"setting dropout={cfg.dropout}: must be in [0, 1)")
    if not (math.isfinite(cfg.noise) and 0 <= cfg.noise < 255):
        raise InputError(f"setting noise={cfg.noise}: must be in [0, 255) grey levels")
    if not (math.isfinite(cfg.blur) and 0 <= cfg.blur <= 8):
        raise InputError(f"setting blur={cfg.blur}: must be in [0, 8] pixels (0 turns the blur off)")
    if cfg.noise and not cfg.augment:
        raise InputError(
            f"setting noise={cfg.noise} is drawn anew for each batch, like the augmentation: it needs augment=true"
        )
    if cfg.sampling == "balanced" and cfg.class_weight:
        raise InputError(
            "setting sampling=balanced already balances the classes: add --set class_weight=false "
            "(class weights too would count the balance twice)"
        )
    if not 0.0 < cfg.learning_rate < 1.0:
        raise InputError(f"setting learning_rate={cfg.learning_rate}: must be in (0, 1)")
    if not 0.0 <= cfg.ema_momentum < 1.0:
        raise InputError(f"setting ema_momentum={cfg.ema_momentum}: must be in [0, 1) (0 turns the averaging off)")
    if cfg.fine_tune not in ("all", "none") and not (cfg.fine_tune.isdigit() and int(cfg.fine_tune) > 0):
        raise InputError(f"setting fine_tune={cfg.fine_tune!r}: expected all, none or a positive layer count")
    if cfg.head_init == "probe" and (cfg.head != "sound" or cfg.fine_tune == "none"):
        raise InputError(
            f"setting head_init=probe fits the sound head before the backbone trains: it needs head=sound and "
            f"fine_tune=all or N (got head={cfg.head}, fine_tune={cfg.fine_tune}; fine_tune=none trains a linear probe "
            "already)"
        )
    if cfg.pooled_norm and cfg.fine_tune != "none":
        raise InputError(
            f"setting pooled_norm=true needs fine_tune=none (got {cfg.fine_tune}): its statistics are fixed before "
            "training, so a backbone that trains makes them stale"
        )
    if prevalence_rule(cfg.prevalence) != "none" and cfg.calibration == "none":
        raise InputError(
            f"setting prevalence={cfg.prevalence} needs calibration=platt or temperature: the correction re-weights "
            "probabilities calibrated on validation"
        )
    if cfg.adapt != "none" and adapt_refusal(cfg.fine_tune):
        raise InputError(f"setting adapt={cfg.adapt}: {adapt_refusal(cfg.fine_tune)}")
    if cfg.task == "three_class":
        _check_three_class(cfg)
    else:
        threshold_rule(cfg.threshold)


def _check_machine(cfg: RunConfig) -> None:
    """Reject settings this machine cannot train with (a run folder read elsewhere may hold them)."""
    if cfg.tracker == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise InputError(MLFLOW_MISSING)  # before any work
    if cfg.weights not in ("imagenet", "auto", "none") and not Path(cfg.weights).is_file():
        raise InputError(f"setting weights={cfg.weights!r}: expected imagenet, auto, none or an existing weights file")


def _check_three_class(cfg: RunConfig) -> None:
    """The settings that only the binary task has."""
    if cfg.head == "study":
        raise InputError(
            "setting head=study is the study's binary Dense(2, sigmoid) head: task=three_class needs head=sound"
        )
    if cfg.threshold != "argmax":
        raise InputError(
            f"setting threshold={cfg.threshold}: threshold rules are binary-only; "
            "task=three_class predicts the argmax class"
        )
    if cfg.calibration == "platt":
        raise InputError("setting calibration=platt is binary-only: task=three_class takes temperature or none")
    if prevalence_rule(cfg.prevalence) != "none":
        raise InputError(f"setting prevalence={cfg.prevalence} is binary-only: it moves P(pneumonia)")
    if cfg.adapt != "none":
        raise InputError(
            f"setting adapt={cfg.adapt} is binary-only: it reports P(pneumonia)'s prevalence before and after"
        )


def resolve_config(backbone: str, preset: str = "sound", overrides: dict | None = None) -> RunConfig:
    """Preset values, then overrides, then the backbone's defaults; validated, with every path (the settings'
    and $XRAYLIB_WEIGHTS_DIR's) absolute against the working directory."""
    bb = get_backbone(backbone)
    preset = ALIASES["preset"].get(preset, preset)
    if preset not in PRESET_VALUES:
        raise InputError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    values: dict = dict(PRESET_VALUES[preset])
    if preset == "study":
        values.update(bb.study_recipe)
    kinds = _kinds()
    for key, value in (overrides or {}).items():
        if key not in kinds or key in ("backbone", "preset"):
            known = ", ".join(k for k in kinds if k not in ("backbone", "preset"))
            raise InputError(f"unknown setting {key!r} (known: {known})")
        values[key] = _alias(key, value)
    values = {k: absolute_setting(k, _coerce(k, v, kinds[k])) for k, v in values.items()}
    given = overrides or {}
    if values.get("task") == "three_class":  # the binary defaults (a preset's too) that three classes replace
        if "threshold" not in given:
            values["threshold"] = "argmax"
        if "calibration" not in given and values.get("calibration", "platt") == "platt":
            values["calibration"] = "temperature"
    cfg = RunConfig(backbone=bb.name, preset=preset, **values)
    variable = PATH_VARIABLES["weights_dir"]
    source = "setting weights_dir" if cfg.weights_dir else f"${variable}"
    cfg.weights_dir = absolute_setting("weights_dir", cfg.weights_dir or os.environ.get(variable, "").strip())
    if cfg.weights_dir and not Path(cfg.weights_dir).is_dir():
        raise InputError(f"{source}={cfg.weights_dir!r}: not a folder")
    # a backbone without ImageNet weights (the study's own CNN) is trained from scratch; no network asked here
    cfg.weights = resolve_weights(bb, cfg.weights, cfg.weights_dir)
    _fill_defaults(cfg, bb)
    _check(cfg, bb)
    _check_machine(cfg)
    return cfg


def _alias(key: str, value):
    """The current name of a setting's old value (`ALIASES`), else the value itself."""
    return ALIASES.get(key, {}).get(value, value) if isinstance(value, str) else value


def _kinds() -> dict[str, str]:
    """Each RunConfig field's type, as written in its annotation ("int | None")."""
    return {f.name: str(f.type) for f in dataclasses.fields(RunConfig)}


def _fill_defaults(cfg: RunConfig, bb: Backbone) -> None:
    """The backbone's (`bb`) image and batch size where the configuration leaves them to it (None)."""
    if cfg.image_size is None:
        cfg.image_size = bb.default_size
    if cfg.batch_size is None:
        cfg.batch_size = bb.batch_size


def settle_weights(cfg: RunConfig) -> RunConfig:
    """`cfg` with its weights as they can be fetched now (`weights.fetchable_weights`: `auto` becomes imagenet or
    none, imagenet is checked): the step of a run, before its model is built, that may probe the network."""
    return dataclasses.replace(cfg, weights=fetchable_weights(get_backbone(cfg.backbone), cfg.weights))


def config_from_json(config: dict, source: str | Path) -> RunConfig:
    """The RunConfig of a config.json object (its `run` entry); `source` names the file in errors."""
    run = config.get("run")
    if not isinstance(run, dict) or not run.get("backbone"):
        raise InputError(f"{source} holds no run settings: rerun the run, or remove its folder")
    kinds = _kinds()
    try:
        values = {k: _coerce(k, _alias(k, v), kinds[k]) for k, v in run.items() if k in kinds}
        cfg = RunConfig(**values)
        if cfg.preset not in PRESETS:
            raise InputError(f"unknown preset {cfg.preset!r} (known: {', '.join(PRESETS)})")
        bb = get_backbone(cfg.backbone)
        _fill_defaults(cfg, bb)
        _check(cfg, bb)  # as `--set` values are checked, but not against this machine (another may have trained it)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    return cfg
