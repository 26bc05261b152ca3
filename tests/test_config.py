"""Presets, overrides and their validation."""

import pytest

from xraylib.config import PRESETS, parse_overrides, resolve_config, threshold_rule
from xraylib.errors import InputError
from xraylib.fileio import write_json
from xraylib.metrics import over_changed_copies
from xraylib.runs import read_config


def test_presets_resolve_for_every_backbone():
    from xraylib.backbones import BACKBONES

    for name, backbone in BACKBONES.items():
        for preset in PRESETS:
            cfg = resolve_config(name, preset)
            assert cfg.image_size >= backbone.min_size
            assert cfg.batch_size >= 1


def test_study_preset_is_the_study_recipe_and_seed_its_alias(tmp_path):
    cfg = resolve_config("vgg19", "study")
    assert (cfg.head, cfg.validation, cfg.val_fraction) == ("study", "first_rows", 0.1)
    assert resolve_config("vgg19", "seed") == cfg  # the preset's former name
    before = {**cfg.to_json(), "preset": "seed", "head": "seed", "validation": "seed"}
    write_json(tmp_path / "config.json", {"run": before})
    assert read_config(tmp_path) == cfg  # a config.json written before the rename
    assert (cfg.optimizer, cfg.learning_rate, cfg.epochs, cfg.batch_size, cfg.image_size) == (
        "adamax",
        1e-4,
        100,
        64,
        150,
    )
    assert not cfg.class_weight and cfg.keep == "last" and cfg.early_stopping == 0
    assert resolve_config("efficientnetv2s", "study").batch_size == 16
    own = resolve_config("resnet34", "study")
    assert own.optimizer == "adam" and own.keep == "best" and own.weights == "none"


def test_sound_preset_fixes_the_defects():
    cfg = resolve_config("xception", "sound")
    assert cfg.head == "sound" and cfg.validation == "patient" and cfg.class_weight
    assert cfg.monitor == "val_auc" and cfg.keep == "best" and cfg.early_stopping > 0 and cfg.reduce_lr > 0


def test_overrides_are_typed():
    items = ["epochs=7", "augment=false", "learning_rate=3e-4", "weights=none"]
    cfg = resolve_config("vgg16", "demo", parse_overrides(items))
    assert cfg.epochs == 7 and cfg.augment is False and cfg.learning_rate == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("items", "named"),
    [
        (["colour=blue"], "colour"),
        (["epochs=-1"], "epochs"),
        (["epochs=many"], "epochs"),
        (["image_size=40"], "image_size"),
        (["val_fraction=0.9"], "val_fraction"),
        (["strategy=magic"], "strategy"),
        (["threshold=2"], "threshold"),
        (["weights=/no/such/file.h5"], "weights"),
        (["fine_tune=half"], "fine_tune"),
        (["fine_tune=all"], "pooled_norm"),
        (["noequals"], "noequals"),
        (["fold=-1"], "fold"),
        (["fold=2"], "fold"),
        (["noise=-1"], r"noise=-1.0: must be in \[0, 255\)"),
        (["noise=nan"], r"noise=nan: must be in \[0, 255\)"),
        (["noise=10"], "noise=10.0 is drawn anew for each batch"),
        (["blur=-1"], r"blur=-1.0: must be in \[0, 8\] pixels"),
        (["blur=nan"], r"blur=nan: must be in \[0, 8\] pixels"),
        (["blur=9"], r"blur=9.0: must be in \[0, 8\] pixels"),
        (["blur=soft"], "blur"),
        (["sampling=often"], "sampling"),
        (["sampling=balanced"], "sampling=balanced already balances the classes: add --set class_weight=false"),
    ],
)
def test_bad_overrides_name_the_setting(items, named):
    with pytest.raises(InputError, match=named) as info:
        resolve_config("inceptionv3", "demo", {"weights": "none", **parse_overrides(items)})
    assert "\n" not in str(info.value)


def test_unknown_backbone_and_preset():
    with pytest.raises(InputError, match="resnet50"):
        resolve_config("resnet50")
    with pytest.raises(InputError, match="quick"):
        resolve_config("vgg16", "quick")


def test_threshold_rules():
    assert threshold_rule("youden")[0] == "youden"
    assert threshold_rule("Youden:Acquisition")[0] == "youden"  # chosen as Youden, over the pool
    assert over_changed_copies("youden:acquisition") and not over_changed_copies("youden")
    with pytest.raises(InputError, match="youden:acquisition"):
        resolve_config("vgg16", "smoke", {"threshold": "youden:site"})
    assert threshold_rule("sensitivity:0.9") == ("sensitivity", 0.9)
    assert threshold_rule("0.3") == ("fixed", 0.3)


def test_config_roundtrip(tmp_path):
    cfg = resolve_config("vgg16", "smoke", {"seed": "7"})
    write_json(tmp_path / "config.json", {"run": cfg.to_json()})
    assert read_config(tmp_path) == cfg


@pytest.mark.parametrize(
    ("key", "value"),
    [("image_size", "abc"), ("weights", 5), ("epochs", 2.5), ("augment", "maybe"), ("seed", None), ("head", "x")],
)
def test_a_run_folders_config_is_validated_as_set_values_are(tmp_path, key, value):
    run = {**resolve_config("vgg16", "smoke").to_json(), key: value}
    write_json(tmp_path / "config.json", {"run": run})
    with pytest.raises(InputError, match=f"config.json: setting {key}=") as info:
        read_config(tmp_path)
    assert "\n" not in str(info.value)


def test_a_run_trained_with_a_weights_file_or_mlflow_elsewhere_is_still_read(tmp_path):
    run = {**resolve_config("vgg16", "smoke").to_json(), "weights": "/elsewhere/w.h5", "tracker": "mlflow"}
    write_json(tmp_path / "config.json", {"run": run})
    assert read_config(tmp_path).weights == "/elsewhere/w.h5"


def test_three_class_task_replaces_the_binary_defaults():
    assert resolve_config("resnet34", "sound").task == "binary"
    cfg = resolve_config("resnet34", "smoke", {"task": "three_class"})
    assert (cfg.threshold, cfg.calibration) == ("argmax", "temperature")
    assert resolve_config("resnet34", "smoke", {"task": "three_class", "calibration": "none"}).calibration == "none"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("threshold", "youden", "threshold rules are binary-only"),
        ("calibration", "platt", "calibration=platt is binary-only"),
        ("head", "study", "head=study"),
    ],
)
def test_three_class_refuses_binary_only_settings(key, value, named):
    with pytest.raises(InputError, match=named) as info:
        resolve_config("resnet34", "smoke", {"task": "three_class", key: value})
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="setting task='four_class'"):
        resolve_config("resnet34", "smoke", {"task": "four_class"})


def test_bfloat16_counts_as_faster_only_on_cpus_with_amx(tmp_path):
    from xraylib.strategy import bfloat16_is_faster, cpu_flags

    xeon, epyc = tmp_path / "xeon", tmp_path / "epyc"
    xeon.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    epyc.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma sha_ni\n")
    assert bfloat16_is_faster(cpu_flags(str(xeon)))
    assert not bfloat16_is_faster(cpu_flags(str(epyc)))
    assert cpu_flags(str(tmp_path / "absent")) == set()


@pytest.mark.parametrize(
    "amx, preset, expected", [(True, "sound", "mixed_bfloat16"), (False, "sound", "float32"), (True, "demo", "float32")]
)
def test_auto_precision_follows_the_cpu(amx, preset, expected, monkeypatch):
    import keras
    import tensorflow as tf

    from xraylib import strategy

    monkeypatch.setattr(strategy, "bfloat16_is_faster", lambda flags=None: amx)
    cfg = resolve_config("xception", preset, {"weights": "none"})
    try:
        assert strategy.precision_policy(cfg, tf.distribute.get_strategy()) == expected
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_path_settings_are_absolute_against_the_working_directory(tmp_path, monkeypatch):
    from xraylib.backbones import BACKBONES
    from xraylib.config import caller_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / BACKBONES["xception"].weights_file).write_bytes(b"x")
    monkeypatch.setenv("XRAYLIB_WEIGHTS_DIR", "w")
    cfg = resolve_config("xception", "smoke", {"weights": "imagenet", "cache_dir": "c"})
    assert (cfg.weights_dir, cfg.cache_dir) == (str(tmp_path / "w"), str(tmp_path / "c"))
    assert cfg.weights == str(tmp_path / "w" / BACKBONES["xception"].weights_file)
    monkeypatch.setenv("XRAYLIB_CACHE", "none")
    given = caller_paths({"weights": "w/start.keras", "epochs": "2"})
    expected = {"weights": str(tmp_path / "w" / "start.keras"), "weights_dir": str(tmp_path / "w"), "cache_dir": "none"}
    assert given == {"epochs": "2", **expected}, "a word stays a word; the environment's folders come along"
    monkeypatch.setenv("XRAYLIB_WEIGHTS_DIR", "nowhere")
    with pytest.raises(InputError, match=r"^\$XRAYLIB_WEIGHTS_DIR='/.*/nowhere': not a folder$"):
        resolve_config("xception", "smoke")


def test_preset_help_names_every_preset():
    from xraylib.cli import PRESET_HELP

    names = {word.strip("()") for word in PRESET_HELP.replace("|", " ").split()}
    assert set(PRESETS) <= names
