"""The probes on frozen features (the source shortcut, the train/test shift) and the `exclude_sources` setting."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from xraylib.cli import main
from xraylib.config import resolve_config
from xraylib.data import build_index
from xraylib.errors import InputError
from xraylib.probe import shift_probe, source_probe

SMALL = {"weights": "none", "image_size": "32", "bootstrap": "200"}


def test_the_probe_finds_the_synthetic_sets_framing_of_non_kermany_images(synth_data):
    result, scores = source_probe(synth_data, resolve_config("resnet34", "demo", SMALL))
    index = build_index(synth_data)
    assert result["n_other"] == int(((index["split"] == "train") & (index["source"] == "other")).sum()) >= 2
    auc = result["roc_auc"]
    assert auc["value"] > 0.9 and auc["low"] is not None and auc["low"] > 0.6, auc
    assert len(scores) == result["n_images"] and set(scores["split"]) == {"train"}
    assert scores.loc[scores["source"] == "other", "p_other"].mean() > scores["p_other"].mean()


def test_probe_cli_prints_the_auc_with_its_interval(synth_data, capsys):
    settings = [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(["probe", "--data", str(synth_data), "--backbone", "resnet34", *settings]) == 0
    assert "ROC-AUC (Kermany vs other)" in capsys.readouterr().out


def test_shift_probe_finds_brighter_test_images_and_writes_every_images_score(shifted_data, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    settings = [f"--set={k}={v}" for k, v in SMALL.items()]
    argv = ["probe", "--data", str(shifted_data), "--backbone", "resnet34", "--shift", "train-test", *settings]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    auc = result["roc_auc"]
    assert auc["value"] > 0.9 and auc["low"] > 0.8, auc  # its CI far from 0.5
    for label, part in result["by_label"].items():  # 22 normal and 38 pneumonia test images: wider CIs
        assert part["roc_auc"]["value"] > 0.75 and part["roc_auc"]["low"] > 0.5, (label, part)
    index = build_index(shifted_data)
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["file", "split", "label", "patient", "p_test", "p_test_within_label"]
    assert len(scores) == len(index) == result["n_images"] and list(scores["file"]) == list(index["file"])
    assert scores.groupby("split")["p_test"].mean().pipe(lambda m: m["test"] > m["train"] + 0.5)
    top = result["most_test_like"]
    train = scores[scores["split"] == "train"]
    assert [row["file"] for row in top] == list(train.nlargest(len(top), "p_test")["file"])
    assert main(argv) == 0  # the same probe (random weights from the seed), printed
    text = capsys.readouterr().out
    assert "ROC-AUC (train vs test)" in text and "pneumonia images only" in text and top[0]["file"] in text


def test_shift_probe_of_an_unshifted_set_is_near_one_half(synth_data):
    # 60 test and 160 training images: a probe that cannot tell them apart has an AUC with an SD of about 0.05
    # (more with patients' images together), so 0.2 is about four SDs: a false failure is very rare.
    cfg = resolve_config("resnet34", "demo", {**SMALL, "exclude_sources": "other"})
    result, scores = shift_probe(synth_data, cfg)
    assert abs(result["roc_auc"]["value"] - 0.5) < 0.2, result["roc_auc"]
    assert len(scores) == len(build_index(synth_data).query("source == 'kermany'"))


@pytest.mark.parametrize(
    "option, message",
    [
        (["--shift", "nonsense"], "--shift nonsense: expected source or train-test"),
        (["--out", "."], "is a directory"),
        (["--set", "equalize=site"], "equalize=site: a probe trains no model"),
    ],
)
def test_bad_probe_options_stop_in_one_line(synth_data, option, message, capsys):
    assert main(["probe", "--data", str(synth_data), "--backbone", "resnet34", "--shift", "train-test", *option]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


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
