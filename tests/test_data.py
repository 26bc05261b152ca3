"""Dataset index: real metadata counts, layouts, bad input, patient keys, splits, fingerprint, fetch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from xraylib import data
from xraylib.data import (
    COLUMNS,
    build_index,
    fingerprint,
    patient_key,
    summarize,
)
from xraylib.errors import InputError
from xraylib.splits import assign_subsets, limit_subsets

HEADER = ",X_ray_image_name,Label,Dataset_type,Label_2_Virus_category,Label_1_Virus_category"
ROWS = [
    (0, "IM-0128-0001.jpeg", "Normal", "TRAIN", "", ""),
    (1, "IM-0128-0001-0002.jpeg", "Normal", "TRAIN", "", ""),
    (2, "NORMAL2-IM-0406-0001-0002.jpeg", "Normal", "TRAIN", "", ""),
    (3, "person1946_bacteria_4875.jpeg", "Pnemonia", "TRAIN", "", "bacteria"),
    (4, "person1946_virus_12.jpeg", "Pnemonia", "TRAIN", "", "Virus"),
    (6, "ABCD-1234.jpg", "Pnemonia", "TRAIN", "COVID-19", "Virus"),
    (7, "ards-1.png", "Pnemonia", "TRAIN", "ARDS", "Stress-Smoking"),
    (8, "IM-0001-0001.jpeg", "Normal", "TEST", "", ""),
    (9, "person1_virus_6.jpeg", "Pnemonia", "TEST", "", "Virus"),
]


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 6), 120).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _coronahack(root: Path, rows=ROWS, images: bool = True) -> Path:
    """A tiny CoronaHack zip-root layout."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [",".join(str(v) for v in r) for r in rows]
    (root / data.METADATA_CSV).write_text("\n".join(lines) + "\n")
    inner = root / data.IMAGES_DIR / data.IMAGES_DIR
    for _, name, _, split, _, _ in rows:
        if images:
            _image(inner / split.lower() / name)
    (inner / "train").mkdir(parents=True, exist_ok=True)
    return root


def _kermany(root: Path) -> Path:
    files = {
        "train/NORMAL": ["IM-0115-0001.jpeg", "NORMAL2-IM-0427-0001.jpeg"],
        "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_virus_6.jpeg", "person22_virus_55.jpeg"],
        "val/NORMAL": ["NORMAL2-IM-1427-0001.jpeg"],
        "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
        "test/NORMAL": ["IM-0001-0001.jpeg"],
        "test/PNEUMONIA": ["person100_bacteria_475.jpeg"],
    }
    for folder, names in files.items():
        for name in names:
            _image(root / "chest_xray" / folder / name)
    return root


# --------------------------------------------------------------------------------------------- real metadata
def test_real_metadata_reproduces_the_published_counts(shared_data):
    index = build_index(shared_data / "coronahack", missing="keep")
    assert list(index.columns) == COLUMNS
    assert len(index) == 5910
    assert index["split"].value_counts().to_dict() == {"train": 5286, "test": 624}
    by = index.groupby(["subtype", "split"]).size().to_dict()
    expected = {
        ("none", "train"): 1342,
        ("none", "test"): 234,
        ("virus", "train"): 1345,
        ("virus", "test"): 148,
        ("bacteria", "train"): 2530,
        ("bacteria", "test"): 242,
        ("covid-19", "train"): 58,
        ("sars", "train"): 4,
        ("streptococcus", "train"): 5,
        ("ards", "train"): 2,
    }
    assert by == expected
    assert (index.loc[index["subtype"] == "none", "label"] == "normal").all()
    assert (index.loc[index["subtype"] != "none", "label"] == "pneumonia").all()
    assert index.groupby("split")["label"].value_counts().to_dict() == {
        ("test", "normal"): 234,
        ("test", "pneumonia"): 390,
        ("train", "normal"): 1342,
        ("train", "pneumonia"): 3944,
    }
    # 70 non-Kermany TRAIN images (69 with a Label_2 subtype and one Normal); the test set is pure Kermany
    assert index.loc[index["source"] == "other", "split"].value_counts().to_dict() == {"train": 70}
    # metadata order: the first 1341 rows are all Normal
    assert (index["label"].iloc[:1341] == "normal").all() and index["label"].iloc[1341] == "pneumonia"
    assert index["file"].iloc[0] == "IM-0128-0001.jpeg"
    assert all(Path(p).is_absolute() and Path(p).name == f for p, f in zip(index["path"], index["file"], strict=True))
    text = summarize(index)
    assert "missing files: 5910 of 5910" in text
    assert "2530" in text and "1345" in text


def test_real_metadata_without_images_is_an_error_by_default(shared_data):
    with pytest.raises(InputError, match=r"5910 of 5910 .*missing .*IM-0128-0001\.jpeg"):
        build_index(shared_data / "coronahack")


@pytest.mark.parametrize("fraction", [0.15, 0.05])
def test_patient_split_on_real_metadata(shared_data, fraction):
    index = build_index(shared_data / "coronahack", missing="keep")
    split = assign_subsets(index, mode="patient", fraction=fraction, seed=42)
    assert (split["subset"] == "test").equals(split["split"] == "test")  # the test set is never touched
    train = split[split["split"] == "train"]
    val_patients = set(train.loc[train["subset"] == "val", "patient"])
    assert not val_patients & set(train.loc[train["subset"] == "train", "patient"])
    for label, rows in train.groupby("label"):
        share = (rows["subset"] == "val").mean()
        assert abs(share - fraction) <= min(0.02, fraction / 2), (label, share)


def test_patient_split_is_seeded(synth_data):
    index = build_index(synth_data)
    first = assign_subsets(index, mode="patient", fraction=0.1, seed=7)
    assert first["subset"].equals(assign_subsets(index, mode="patient", fraction=0.1, seed=7)["subset"])
    assert not first["subset"].equals(assign_subsets(index, mode="patient", fraction=0.1, seed=8)["subset"])


def test_first_rows_split_is_like_keras_validation_split(shared_data):
    index = build_index(shared_data / "coronahack", missing="keep")
    split = assign_subsets(index, mode="first_rows", fraction=0.1)
    val = split[split["subset"] == "val"]
    assert len(val) == int(0.1 * 5286) == 528
    assert list(val.index) == list(range(528))  # the first TRAIN rows in metadata order
    assert (val["label"] == "normal").all()  # the study's validation set held one class only
    assert (split["subset"] == "test").sum() == 624


# --------------------------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    "name, key",
    [
        ("person1946_bacteria_4875.jpeg", "kermany-person1946"),
        ("person1946_virus_3.jpeg", "kermany-person1946"),
        ("person447_virus_921_1.jpeg", "kermany-person447"),
        ("IM-0128-0001.jpeg", "kermany-IM-0128"),
        ("IM-0128-0001-0002.jpeg", "kermany-IM-0128"),
        ("NORMAL2-IM-0406-0001-0002.jpeg", "kermany-NORMAL2-IM-0406"),
        ("NORMAL2-IM-0406-0001.jpeg", "kermany-NORMAL2-IM-0406"),
        ("/some/dir/test/IM-0001-0001.jpg", "kermany-IM-0001"),
        ("F051E018-DAD1-4506-AD43-BE4CA29E960B.jpeg", "other-F051E018-DAD1-4506-AD43-BE4CA29E960B"),
        (
            "streptococcus-pneumoniae-pneumonia-temporal-evolution-1-day3.jpg",
            "other-streptococcus-pneumoniae-pneumonia-temporal-evolution-1",
        ),
        ("jkms-35-e79-g001-l-c.jpg", "other-jkms-35-e79-g001"),
    ],
)
def test_patient_key(name, key):
    assert patient_key(name) == key


# --------------------------------------------------------------------------------------------- layouts
def test_coronahack_layout_found_from_root_inner_and_parent(tmp_path):
    root = _coronahack(tmp_path / "coronahack-chest-xraydataset")
    inner = root / data.IMAGES_DIR / data.IMAGES_DIR
    first = build_index(root)
    assert list(first["file"]) == [r[1] for r in ROWS]
    assert list(first["split"]) == ["train"] * 7 + ["test"] * 2
    assert list(first["subtype"]) == ["none", "none", "none", "bacteria", "virus", "covid-19", "ards", "none", "virus"]
    assert list(first["source"]) == ["kermany"] * 5 + ["other"] * 2 + ["kermany"] * 2
    assert first["patient"].iloc[3] == first["patient"].iloc[4] == "kermany-person1946"
    assert first.attrs["layout"] == "coronahack"
    for where in (inner, inner.parent, tmp_path):  # inner folder, outer folder, /kaggle/input-like parent
        assert build_index(where)["path"].equals(first["path"])
    assert all(Path(p).is_file() for p in first["path"])


def test_kermany_layout(tmp_path):
    _kermany(tmp_path)
    index = build_index(tmp_path)
    assert index.attrs["layout"] == "kermany"
    assert len(index) == 9
    assert index["split"].value_counts().to_dict() == {"train": 7, "test": 2}  # val counts as train
    by_file = index.set_index("file")
    assert by_file.loc["person1946_bacteria_4874.jpeg", "split"] == "train"
    assert by_file.loc["person1_virus_6.jpeg", "subtype"] == "virus"
    assert by_file.loc["person1_bacteria_1.jpeg", "subtype"] == "bacteria"
    assert by_file.loc["IM-0115-0001.jpeg", ["label", "subtype"]].tolist() == ["normal", "none"]
    assert by_file.loc["person100_bacteria_475.jpeg", ["label", "split"]].tolist() == ["pneumonia", "test"]
    assert (index["source"] == "kermany").all()
    assert build_index(tmp_path / "chest_xray")["path"].equals(index["path"])


def test_listed_jpeg_found_under_jpg_suffix(tmp_path):
    root = _coronahack(tmp_path / "ds", rows=ROWS[:2])
    train = root / data.IMAGES_DIR / data.IMAGES_DIR / "train"
    (train / "IM-0128-0001.jpeg").rename(train / "IM-0128-0001.jpg")
    index = build_index(root)
    assert index["file"].iloc[0] == "IM-0128-0001.jpg"


def test_no_dataset_found(tmp_path):
    with pytest.raises(InputError, match="no dataset found"):
        build_index(tmp_path)
    with pytest.raises(InputError, match="no such dataset directory"):
        build_index(tmp_path / "absent")


# --------------------------------------------------------------------------------------------- external sets
EXTERNAL = {"NORMAL": ["IM-0001-0001.jpeg", "scan-a.png"], "PNEUMONIA": ["person1_virus_6.jpeg", "scan-b.png"]}


@pytest.mark.parametrize("inner", ["chest_xray/test", "test", ""])
def test_a_test_set_without_its_train_folder(tmp_path, inner):
    for folder, names in EXTERNAL.items():
        for name in names:
            _image(tmp_path / inner / folder / name)
    index = build_index(tmp_path)
    assert index.attrs["layout"] == "folders" and (index["split"] == "test").all()
    assert index.attrs["dataset_root"] == str((tmp_path / inner).absolute())
    by_file = index.set_index("file")
    assert by_file["label"].to_dict() == {
        "IM-0001-0001.jpeg": "normal",
        "scan-a.png": "normal",
        "person1_virus_6.jpeg": "pneumonia",
        "scan-b.png": "pneumonia",
    }
    # Kermany names carry their patient; the others (which patient_key would merge as panels a/b of one figure)
    # are each their own patient, and the index says so
    assert by_file.loc["person1_virus_6.jpeg", "patient"] == "kermany-person1"
    assert index["patient"].nunique() == 4
    assert index.attrs["patients"].startswith("2 of 4 images have no patient id") and "own patient" in summarize(index)


def _flat(root: Path, lines: list[str], csv: str = "labels.csv") -> Path:
    """A flat folder of images with a labels CSV (`lines` with its header); every file the CSV names exists."""
    root.mkdir(parents=True, exist_ok=True)
    (root / csv).write_text("\n".join(lines) + "\n")
    for line in lines[1:]:
        _image(root / line.split(",")[0].strip())
    return root


def test_a_flat_folder_with_a_csv_of_file_names_and_labels(tmp_path):
    root = _flat(tmp_path / "flat", ["File,Label", "a.png,normal", "sub/b.png,PNEUMONIA", "c.png,0", "d.png,1"])
    index = build_index(root)
    assert index.attrs["layout"] == "csv" and index.attrs["dataset_root"] == str(root.absolute())
    assert list(index["label"]) == ["normal", "pneumonia", "normal", "pneumonia"]
    assert list(index["path"]) == [str((root / n).absolute()) for n in ("a.png", "sub/b.png", "c.png", "d.png")]
    assert index["patient"].nunique() == 4 and "4 of 4 images have no patient id" in index.attrs["patients"]
    assert build_index(root / "labels.csv")["path"].equals(index["path"]), "the CSV itself may be given"


def test_a_csv_patient_column_groups_images(tmp_path):
    lines = ["filename,class,patient_id", "a.png,normal,p1", "b.png,normal,p1", "c.png,pneumonia,"]
    index = build_index(_flat(tmp_path / "flat", lines))
    assert index["patient"].tolist()[:2] == ["id-p1", "id-p1"] and index["patient"].nunique() == 2
    assert "1 of 3 images have no patient id (an empty patient cell" in index.attrs["patients"]


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ["name,diagnosis", "a.png,normal"],
            "needs columns file/filename/image and label/class (any case); its columns: name, diagnosis",
        ),
        (["file,label", "a.png,covid"], "labels.csv line 2: unknown label 'covid'"),
        (["file,label", "../a.png,normal"], "escapes the image folder"),
        (["file,label", "a.png,normal", "a.png,pneumonia"], "'a.png' listed more than once (lines 2, 3)"),
    ],
)
def test_a_bad_labels_csv_is_one_line_naming_it(tmp_path, lines, message):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        build_index(root)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_two_csv_files_are_ambiguous(tmp_path):
    root = _flat(tmp_path / "flat", ["file,label", "a.png,normal"])
    (root / "other.csv").write_text("x\n")
    with pytest.raises(InputError, match="2 CSV files .*give the one of labels"):
        build_index(root)


# --------------------------------------------------------------------------------------------- bad input
def test_missing_column_is_named(tmp_path):
    root = _coronahack(tmp_path / "ds", rows=ROWS[:2])
    meta = root / data.METADATA_CSV
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    table.drop(columns=["Label", "Label_1_Virus_category"]).to_csv(meta, index=False)
    with pytest.raises(InputError, match="Label, Label_1_Virus_category") as err:
        build_index(root)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "row, message",
    [
        ((0, "IM-0128-0001.jpeg", "Covid", "TRAIN", "", ""), r"line 2: unknown Label 'Covid'"),
        ((0, "IM-0128-0001.jpeg", "Normal", "VALID", "", ""), r"line 2: unknown Dataset_type 'VALID'"),
        ((0, "IM-0128-0001.jpeg", "Pnemonia", "TRAIN", "", "fungus"), r"line 2: unknown Label_1.*'fungus'"),
        ((0, "../x.jpeg", "Normal", "TRAIN", "", ""), r"line 2: .*'\.\./x\.jpeg' escapes the image folder"),
        ((0, "a/../../x.jpeg", "Normal", "TRAIN", "", ""), r"escapes the image folder"),
        ((0, "/etc/x.jpeg", "Normal", "TRAIN", "", ""), r"line 2: .*'/etc/x\.jpeg' is an absolute path"),
        ((0, "C:\\x.jpeg", "Normal", "TRAIN", "", ""), r"is an absolute path"),
    ],
)
def test_bad_rows_are_rejected_in_one_line(tmp_path, row, message):
    root = _coronahack(tmp_path / "ds", rows=[row], images=False)
    with pytest.raises(InputError, match=message) as err:
        build_index(root, missing="keep")
    assert "\n" not in str(err.value)


def test_duplicate_rows_are_rejected(tmp_path):
    root = _coronahack(tmp_path / "ds", rows=[ROWS[0], ROWS[1], (5, *ROWS[0][1:])])
    with pytest.raises(InputError, match=r"'IM-0128-0001\.jpeg' listed more than once \(lines 2, 4\)"):
        build_index(root)


def test_missing_files_error_drop_keep(tmp_path):
    root = _coronahack(tmp_path / "ds")
    train = root / data.IMAGES_DIR / data.IMAGES_DIR / "train"
    for name in ("IM-0128-0001.jpeg", "ards-1.png"):
        (train / name).unlink()
    with pytest.raises(InputError, match=r"2 of 9 .*missing \(first: IM-0128-0001\.jpeg, ards-1\.png\)"):
        build_index(root)
    dropped = build_index(root, missing="drop")
    assert len(dropped) == 7 and "IM-0128-0001.jpeg" not in set(dropped["file"])
    assert "2 listed but missing, dropped" in summarize(dropped)
    kept = build_index(root, missing="keep")
    assert len(kept) == 9
    assert "missing files: 2 of 9" in summarize(kept)
    with pytest.raises(InputError, match="missing="):
        build_index(root, missing="ignore")


# --------------------------------------------------------------------------------------------- synthetic set
def test_synthetic_set_indexes_like_the_real_layout(synth_data):
    index = build_index(synth_data)
    assert index.attrs["layout"] == "coronahack"
    assert len(index) == 220
    assert index["split"].value_counts().to_dict() == {"train": 160, "test": 60}
    assert set(index.loc[index["split"] == "test", "source"]) == {"kermany"}
    assert (index["source"] == "other").sum() >= 4
    split = assign_subsets(index, mode="patient", fraction=0.2, seed=0)
    val = set(split.loc[split["subset"] == "val", "patient"])
    assert val and not val & set(split.loc[split["subset"] == "train", "patient"])
    assert set(split.loc[split["subset"] == "val", "label"]) == {"normal", "pneumonia"}


def test_limit_subsets(synth_data):
    index = assign_subsets(build_index(synth_data), mode="patient", fraction=0.2, seed=0)
    assert limit_subsets(index, 0, seed=0) is index
    small = limit_subsets(index, 20, seed=3)
    counts = small["subset"].value_counts()
    assert (counts <= 20).all() and set(counts.index) == {"train", "val", "test"}
    assert counts["test"] == 20
    for subset, rows in small.groupby("subset"):
        full = index[index["subset"] == subset]
        share, full_share = (rows["label"] == "pneumonia").mean(), (full["label"] == "pneumonia").mean()
        assert abs(share - full_share) <= 0.1
    assert list(small.index) == sorted(small.index)  # metadata order kept
    assert small.equals(limit_subsets(index, 20, seed=3))


def test_fingerprint(synth_data):
    index = build_index(synth_data)
    fp = fingerprint(index)
    assert len(fp) == 16 and fp == fingerprint(build_index(synth_data))
    changed = index.copy()
    changed.loc[0, "label"] = "pneumonia"
    assert fingerprint(changed) != fp
    assert fingerprint(index.iloc[:-1]) != fp


def test_assign_subsets_rejects_bad_arguments(synth_data):
    index = build_index(synth_data)
    with pytest.raises(InputError, match="fraction"):
        assign_subsets(index, fraction=1.5)
    with pytest.raises(InputError, match="mode"):
        assign_subsets(index, mode="random")
    assert (assign_subsets(index, fraction=0)["subset"] != "val").all()


def test_links_out_of_the_dataset_folder_are_refused(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "chest_xray"
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            (root / split / label).mkdir(parents=True)
            Image.new("L", (8, 8)).save(root / split / label / f"person1_{split}.jpeg")
    outside = tmp_path / "elsewhere.jpeg"
    outside.write_bytes(b"secret")
    link = root / "train" / "PNEUMONIA" / "person2_bacteria_1.jpeg"
    link.symlink_to(outside)
    (root / "train" / "NORMAL" / "inside.jpeg").symlink_to(root / "test" / "NORMAL" / "person1_test.jpeg")
    with pytest.raises(InputError, match="outside the dataset folder") as info:
        build_index(root)
    assert str(outside) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("XRAYLIB_FOLLOW_SYMLINKS", "1")
    assert str(link.absolute()) in set(build_index(root)["path"])


def test_cross_validation_folds_group_patients_and_leave_test_alone(shared_data):
    index = build_index(shared_data / "coronahack", missing="keep")
    k = 3
    splits = [assign_subsets(index, seed=5, folds=k, fold=i) for i in range(k)]
    held_out = [set(s.index[s["subset"] == "val"]) for s in splits]
    train = index[index["split"] == "train"]
    assert set().union(*held_out) == set(train.index), "the folds cover the training split"
    assert sum(len(h) for h in held_out) == len(train), "and no image is in two folds"
    patients = [set(index.loc[sorted(h), "patient"]) for h in held_out]
    for i in range(k):
        for j in range(i + 1, k):
            assert not patients[i] & patients[j], "no patient is in two folds"
    for s in splits:
        assert (s["subset"] == "test").equals(s["split"] == "test"), "validation is never drawn from test"
        val = s[s["subset"] == "val"]
        share = (val["label"] == "pneumonia").mean()
        assert abs(share - (train["label"] == "pneumonia").mean()) < 0.02, "label-stratified"


def test_impossible_fold_counts_are_one_line_errors(synth_data):
    index = build_index(synth_data)
    with pytest.raises(InputError, match=r"folds=100000: needs 2 to \d+"):
        assign_subsets(index, folds=100000)


@pytest.mark.parametrize("folder", ["chest_xray/test/NORMAL", "NORMAL"])
def test_a_file_name_that_is_not_utf8_is_one_error_naming_it(tmp_path, folder, capsys):
    import os

    from xraylib.cli import main

    root = _kermany(tmp_path / "k") if folder.startswith("chest") else tmp_path / "k"
    if not folder.startswith("chest"):
        _image(root / "PNEUMONIA" / "person1_bacteria_1.jpeg")
    _image(Path(os.fsdecode(os.fsencode(root / folder) + b"/IM-\xff-0001.jpeg")))
    with pytest.raises(InputError, match=r"IM-\\xff-0001\.jpeg: the file name is not valid UTF-8"):
        build_index(root)
    out = tmp_path / "index.csv"
    for extra in ([], ["--out", str(out)]):
        assert main(["data", "index", str(root), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "IM-\\xff-0001.jpeg" in err and len(err.splitlines()) == 1
    assert not out.exists()
