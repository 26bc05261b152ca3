"""The source shortcut: the probe on frozen features, and the `exclude_sources` setting."""

from __future__ import annotations

import pytest

from xraylib.cli import main
from xraylib.config import resolve_config
from xraylib.data import build_index
from xraylib.errors import InputError
from xraylib.probe import source_probe

SMALL = {"weights": "none", "image_size": "32", "bootstrap": "200"}


def test_the_probe_finds_the_synthetic_sets_framing_of_non_kermany_images(synth_data):
    result = source_probe(synth_data, resolve_config("resnet34", "demo", SMALL))
    index = build_index(synth_data)
    assert result["n_other"] == int(((index["split"] == "train") & (index["source"] == "other")).sum()) >= 2
    auc = result["roc_auc"]
    assert auc["value"] > 0.9 and auc["low"] is not None and auc["low"] > 0.6, auc


def test_probe_cli_prints_the_auc_with_its_interval(synth_data, capsys):
    settings = [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(["probe", "--data", str(synth_data), "--backbone", "resnet34", *settings]) == 0
    assert "ROC-AUC (Kermany vs other)" in capsys.readouterr().out


def test_sound_leaves_the_non_kermany_images_out_of_train_and_validation(synth_data):
    from xraylib.prepare import prepare_data

    cfg = resolve_config("resnet34", "sound", {"image_size": "32", "weights": "none"})
    assert cfg.exclude_sources == "other" and resolve_config("resnet34", "study").exclude_sources == "none"
    prepared = prepare_data(synth_data, cfg)
    for subset in ("train", "val"):
        assert set(prepared.rows(subset)["source"]) == {"kermany"}, subset
    index = build_index(synth_data)
    assert len(prepared.rows("test")) == int((index["split"] == "test").sum()), "the test set is scored whole"
    kept = resolve_config("resnet34", "sound", {"image_size": "32", "weights": "none", "exclude_sources": "none"})
    rows = prepare_data(synth_data, kept).index
    assert (rows["source"] == "other").sum() == (index["source"] == "other").sum()


def test_unknown_source_to_exclude_is_refused():
    with pytest.raises(InputError, match="exclude_sources='paper'"):
        resolve_config("resnet34", "sound", {"exclude_sources": "paper"})
