"""Synthetic dataset: Kaggle layout and metadata schema, file names, images, masks, determinism, refusal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylib import synth
from xraylib.data import IMAGES_DIR, METADATA_CSV, SUMMARY_CSV, build_index, patient_key
from xraylib.errors import InputError
from xraylib.synth import mask_paths, write_synthetic_set

HEADER = ",X_ray_image_name,Label,Dataset_type,Label_2_Virus_category,Label_1_Virus_category"
KERMANY = re.compile(r"^(?:(?:NORMAL2-)?IM-\d{4}-0001(?:-\d{4})?|person\d+_(?:bacteria|virus)_\d+)\.jpeg$")


def _meta(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / METADATA_CSV, dtype=str, keep_default_na=False)


def test_layout_and_metadata_schema(synth_data, shared_data):
    real_header = (shared_data / "coronahack" / METADATA_CSV).read_text().splitlines()[0]
    assert real_header == HEADER
    assert (synth_data / METADATA_CSV).read_text().splitlines()[0] == HEADER
    inner = synth_data / IMAGES_DIR / IMAGES_DIR
    assert (inner / "train").is_dir() and (inner / "test").is_dir()
    meta = _meta(synth_data)
    ids = meta.iloc[:, 0].astype(int)
    assert ids.is_monotonic_increasing and ids.iloc[0] == 0 and ids.iloc[-1] > len(meta) - 1  # gaps
    assert set(meta["Label"]) == {"Normal", "Pnemonia"}
    assert set(meta["Dataset_type"]) == {"TRAIN", "TEST"}
    assert set(meta["Label_1_Virus_category"]) <= {"", "bacteria", "Virus", "Stress-Smoking"}
    assert set(meta["Label_2_Virus_category"]) <= {"", "COVID-19", "SARS", "ARDS", "Streptococcus"}
    assert (meta.loc[meta["Label"] == "Normal", "Label_1_Virus_category"] == "").all()
    assert (meta["Dataset_type"] == "TRAIN").sum() == 160 and (meta["Dataset_type"] == "TEST").sum() == 60
    for split in ("train", "test"):
        listed = set(meta.loc[meta["Dataset_type"] == split.upper(), "X_ray_image_name"])
        assert {p.name for p in (inner / split).iterdir()} == listed
    summary = pd.read_csv(synth_data / SUMMARY_CSV, dtype=str, keep_default_na=False)
    real_summary = (shared_data / "coronahack" / SUMMARY_CSV).read_text().splitlines()[0]
    assert (synth_data / SUMMARY_CSV).read_text().splitlines()[0] == real_summary
    counts = meta.groupby(["Label", "Label_1_Virus_category", "Label_2_Virus_category"]).size()
    assert {tuple(r[1:4]): int(r[4]) for r in summary.itertuples(index=False)} == counts.to_dict()


def test_file_names_patients_and_formats(synth_data):
    meta = _meta(synth_data)
    test = meta[meta["Dataset_type"] == "TEST"]
    assert test["X_ray_image_name"].str.match(KERMANY).all()  # the test split is pure Kermany
    train = meta[meta["Dataset_type"] == "TRAIN"]
    kermany = train["X_ray_image_name"].str.match(KERMANY)
    others = train.loc[~kermany]
    assert 4 <= len(others) <= 10 and (others["Label_2_Virus_category"] != "").sum() >= 3
    assert {Path(n).suffix for n in others["X_ray_image_name"]} >= {".jpg", ".png"}
    names = train.loc[kermany, "X_ray_image_name"]
    assert names.str.startswith("IM-").any() and names.str.startswith("NORMAL2-IM-").any()
    assert names.str.contains("_bacteria_").any() and names.str.contains("_virus_").any()
    bacteria = names[names.str.contains("_bacteria_")]
    assert (train.loc[bacteria.index, "Label_1_Virus_category"] == "bacteria").all()
    per_patient = meta["X_ray_image_name"].map(patient_key).value_counts()
    assert per_patient.max() >= 3 and (per_patient == 1).any()  # several images for some patients
    # the first rows are all Normal, as in the real metadata
    assert (train["Label"].iloc[: len(train) // 10] == "Normal").all()
    # label shares near the real TRAIN ones (Normal 25 %, bacteria 48 %, virus 25 %)
    share = train["Label_1_Virus_category"].value_counts(normalize=True)
    assert 0.38 <= share["bacteria"] <= 0.58 and 0.18 <= share["Virus"] <= 0.35


def test_images_look_like_films(synth_data):
    index = build_index(synth_data)
    modes, widths, ratios = set(), [], []
    for path in index["path"]:
        with Image.open(path) as im:
            modes.add(im.mode)
            widths.append(im.size[0])
            ratios.append(im.size[0] / im.size[1])
    assert "L" in modes and "RGB" in modes
    assert min(widths) >= 300 and max(widths) <= 700 and max(widths) - min(widths) > 150
    assert min(ratios) >= 0.8 and max(ratios) <= 1.6
    with Image.open(index["path"].iloc[0]) as im:
        a = np.asarray(im, dtype=np.float32)
    h, w = a.shape
    lungs = a[int(0.35 * h) : int(0.6 * h), int(0.25 * w) : int(0.38 * w)].mean()
    spine = a[int(0.35 * h) : int(0.6 * h), int(0.48 * w) : int(0.52 * w)].mean()
    corner = a[: h // 20, : w // 20].mean()
    assert corner < lungs < spine  # dark air outside, darker lungs than the mediastinum


def _lung_stats(index: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for path, label in zip(index["path"], index["label"], strict=True):
        lungs_p, opacity_p = mask_paths(path)
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.float32) if im.mode != "I;16" else None
        lungs = np.asarray(Image.open(lungs_p))
        opacity = np.asarray(Image.open(opacity_p))
        assert set(np.unique(lungs)) <= {0, 255} and set(np.unique(opacity)) <= {0, 255}
        assert lungs.dtype == np.uint8 and opacity.shape == lungs.shape
        if a is not None:
            assert lungs.shape == a.shape
        inside = lungs > 0
        assert 0.1 < inside.mean() < 0.6
        assert not (opacity > 0)[~inside].any()  # opacities only inside the lung fields
        brightness = a[inside].mean() / max(a[~inside].mean(), 1.0) if a is not None else np.nan
        rows.append((label, (opacity > 0).sum() / inside.sum(), brightness))
    return pd.DataFrame(rows, columns=["label", "opacity", "brightness"])


def test_masks_and_signal(synth_data):
    index = build_index(synth_data)
    stats = _lung_stats(index.iloc[::2])
    normal, sick = stats[stats["label"] == "normal"], stats[stats["label"] == "pneumonia"]
    assert (normal["opacity"] == 0).all()
    assert (sick["opacity"] > 0.01).mean() > 0.8
    # pneumonia brightens the lung fields on average, but the classes overlap (not a trivial task)
    assert sick["brightness"].mean() > normal["brightness"].mean()
    assert sick["brightness"].min() < normal["brightness"].max()


def test_mask_paths():
    lungs, opacity = mask_paths(f"/d/root/{IMAGES_DIR}/{IMAGES_DIR}/test/person1_virus_6.jpeg")
    assert lungs == Path("/d/root/masks/test/person1_virus_6_lungs.png")
    assert opacity == Path("/d/root/masks/test/person1_virus_6_opacity.png")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_from_seed(tmp_path):
    a = _tree(write_synthetic_set(tmp_path / "a", n_train=20, n_test=4, seed=5, masks=True))
    b = _tree(write_synthetic_set(tmp_path / "b", n_train=20, n_test=4, seed=5, masks=True))
    assert a == b
    c = _tree(write_synthetic_set(tmp_path / "c", n_train=20, n_test=4, seed=6, masks=True))
    shared = a.keys() & c.keys()
    assert any(a[k] != c[k] for k in shared if k.endswith((".jpeg", ".jpg", ".png"))) or a.keys() != c.keys()
    assert a["Chest_xray_Corona_Metadata.csv"] != c["Chest_xray_Corona_Metadata.csv"]


def test_refuses_existing_dataset_and_bad_sizes(tmp_path, synth_data):
    with pytest.raises(InputError, match="holds a dataset already"):
        write_synthetic_set(synth_data, n_train=24, n_test=6)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        write_synthetic_set(busy, n_train=24, n_test=6)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="too small"):
        write_synthetic_set(tmp_path / "tiny", n_train=3, n_test=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_synthetic_set(empty, n_train=20, n_test=4) == empty  # an empty folder is fine


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def broken(item, *args):
        calls.append(item)
        if len(calls) > 5:
            raise OSError("disk full")

    monkeypatch.setattr(synth, "_render", broken)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_set(tmp_path / "out", n_train=24, n_test=6)
    assert list(tmp_path.iterdir()) == []


def test_a_link_to_an_empty_folder_gets_the_dataset(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    write_synthetic_set(tmp_path / "link", n_train=20, n_test=4)
    assert (target / "Chest_xray_Corona_Metadata.csv").is_file() and (tmp_path / "link").is_symlink()
