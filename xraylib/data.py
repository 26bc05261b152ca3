"""The dataset index: the CoronaHack (Kaggle) and Kermany layouts, labelled external sets (NORMAL/ and PNEUMONIA/
folders, or a CSV of file names and labels), labels and pneumonia kinds, patient keys."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from xraylib.errors import InputError
from xraylib.images import IMAGE_SUFFIXES, is_image_file

METADATA_CSV = "Chest_xray_Corona_Metadata.csv"
SUMMARY_CSV = "Chest_xray_Corona_dataset_Summary.csv"
IMAGES_DIR = "Coronahack-Chest-XRay-Dataset"
COLUMNS = ["path", "file", "label", "split", "subtype", "patient", "source"]
SUBTYPES = ("bacteria", "virus", "covid-19", "sars", "ards", "streptococcus", "none")
REQUIRED = ["X_ray_image_name", "Label", "Dataset_type", "Label_2_Virus_category", "Label_1_Virus_category"]
_LABEL_SPELLINGS = {"normal": "normal", "pnemonia": "pneumonia", "pneumonia": "pneumonia"}
_SPLITS = {"train": "train", "test": "test"}
_LABEL1 = {"": None, "bacteria": "bacteria", "virus": "virus", "stress-smoking": "ards"}
_LABEL2 = {"": None, "covid-19": "covid-19", "sars": "sars", "ards": "ards", "streptococcus": "streptococcus"}

_PERSON = re.compile(r"^person(\d+)_(bacteria|virus)_\d+(?:_\d+)?$", re.IGNORECASE)
_IM = re.compile(r"^(NORMAL2-)?IM-(\d+)-\d+(?:-\d+)?$", re.IGNORECASE)


# The classes of each task, in the order of the model's outputs and of predictions.csv's p_* columns.
CLASSES = {"binary": ("normal", "pneumonia"), "three_class": ("normal", "bacterial", "viral")}

PNEUMONIA_KINDS = {
    "bacteria": "bacterial",
    "streptococcus": "bacterial",
    "virus": "viral",
    "covid-19": "viral",
    "sars": "viral",
}  # ARDS (the two Stress-Smoking images) is neither


def pneumonia_codes(labels) -> np.ndarray:
    """1 for each `pneumonia` label, 0 for each `normal` one (an index's or a predictions file's label column)."""
    return (np.asarray(labels) == "pneumonia").astype(int)


def pneumonia_kind(subtype: str) -> str:
    """`bacterial` or `viral` for a pneumonia subtype of the index, "" for normal images and ARDS."""
    return PNEUMONIA_KINDS.get(str(subtype).lower(), "")


# --------------------------------------------------------------------------------------------- patients
def _kermany_match(stem: str) -> re.Match | None:
    return _PERSON.match(stem) or _IM.match(stem)


def patient_key(file_name: str) -> str:
    """Patient key of a file name: `kermany-person12`, `kermany-IM-0128`, `kermany-NORMAL2-IM-0406`, `other-...`."""
    stem = PurePosixPath(str(file_name).replace("\\", "/")).name
    for suffix in IMAGE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    m = _PERSON.match(stem)
    if m:  # N alone: personN is likely numbered per pathogen, and two patients as one never leak (docs/real-dataset.md)
        return f"kermany-person{int(m.group(1))}"
    m = _IM.match(stem)
    if m:
        series = "NORMAL2-" if m.group(1) else ""
        return f"kermany-{series}IM-{m.group(2)}"
    # Non-Kermany images (figures from papers): one key per file, except obvious series of one patient:
    # follow-up days (`...-day3`) and panels of one figure (`...-a`, `...-l-b`, `Fig9c`, `-b2`).
    key = re.sub(r"[-_]day\d+$", "", stem, flags=re.IGNORECASE)
    key = re.sub(r"-(?:l-)?[a-d]\d?$", "", key)
    key = re.sub(r"(?<=\d)[a-d](?=-|$)", "", key)
    return f"other-{key}"


def _source(file_name: str) -> str:
    stem = Path(file_name).stem
    return "kermany" if _kermany_match(stem) else "other"


# --------------------------------------------------------------------------------------------- layouts
def _find_metadata(root: Path) -> Path | None:
    """The metadata CSV of a CoronaHack layout: in root, one of its parents (inner folder given), or below."""
    candidates = [root]
    if root.name.lower() == IMAGES_DIR.lower():  # the inner (or outer) image folder was given
        candidates += [root.parent, root.parent.parent]
    for d in candidates:
        f = d / METADATA_CSV
        if f.is_file():
            return f
    for depth in ("*", "*/*"):
        found = sorted(root.glob(f"{depth}/{METADATA_CSV}"))
        if found:
            return found[0]
    return None


def _coronahack_images(meta_root: Path) -> Path:
    """Folder holding train/ and test/ beside a metadata CSV (the doubly nested folder in the Kaggle zip)."""
    options = [
        meta_root / IMAGES_DIR / IMAGES_DIR,
        meta_root / IMAGES_DIR,
        meta_root,
    ]
    for d in options:
        if (d / "train").is_dir() or (d / "test").is_dir():
            return d
    return options[0]


def _kermany_root(root: Path) -> Path | None:
    """A folder holding train/ and test/ (and maybe val/) each with NORMAL/ and PNEUMONIA/."""

    def is_kermany(d: Path) -> bool:
        return (d / "train" / "NORMAL").is_dir() and (d / "train" / "PNEUMONIA").is_dir()

    for d in [root, root / "chest_xray", root / "chest_xray" / "chest_xray", root.parent]:
        if is_kermany(d):
            return d
    for depth in ("*", "*/*"):
        for d in sorted(root.glob(depth)):
            if d.is_dir() and not d.name.startswith("__") and is_kermany(d):
                return d
    return None


def _safe_name(name: str, where: str) -> str:
    """Reject file names that are empty, absolute or climb out of the image folder."""
    if not name or not name.strip():
        raise InputError(f"{where}: empty image file name")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise InputError(f"{where}: image file name {name!r} is an absolute path (must be inside the image folder)")
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        raise InputError(f"{where}: image file name {name!r} escapes the image folder")
    return name


def utf8_path(path: Path) -> Path:
    """`path` itself; a one-line InputError naming it when it is not valid UTF-8 (no table or CSV can hold it)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"{shown}: the file name is not valid UTF-8; rename the file") from None
    return path


def _resolve(folder: Path, name: str) -> Path:
    """Path of `name` in `folder`; when absent, the same stem with another image suffix if that exists."""
    path = folder / name
    if path.exists():
        return path
    stem, suffix = os.path.splitext(name)
    if suffix.lower() in IMAGE_SUFFIXES:
        for other in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
            alt = folder / (stem + other)
            if other != suffix and alt.exists():
                return alt
    return path


def _index_coronahack(meta: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta}: not a readable metadata CSV ({str(exc).splitlines()[0]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing_cols = [c for c in REQUIRED if c not in table.columns]
    if missing_cols:
        raise InputError(f"{meta}: metadata lacks required column(s) {', '.join(missing_cols)}")
    images = _coronahack_images(meta.parent)
    rows = []
    for i, rec in enumerate(table[REQUIRED].itertuples(index=False)):
        where = f"{meta.name} line {i + 2}"
        name, label, split, label2, label1 = (str(v).strip() for v in rec)
        lab = _LABEL_SPELLINGS.get(label.lower())
        if lab is None:
            raise InputError(f"{where}: unknown Label {label!r} (expected Normal or Pnemonia)")
        spl = _SPLITS.get(split.lower())
        if spl is None:
            raise InputError(f"{where}: unknown Dataset_type {split!r} (expected TRAIN or TEST)")
        if label1.lower() not in _LABEL1:
            raise InputError(f"{where}: unknown Label_1_Virus_category {label1!r}")
        if label2.lower() not in _LABEL2:
            raise InputError(f"{where}: unknown Label_2_Virus_category {label2!r}")
        _safe_name(name, where)
        sub = "none" if lab == "normal" else (_LABEL2[label2.lower()] or _LABEL1[label1.lower()] or "none")
        path = _resolve(images / spl, name)
        rows.append((str(path.absolute()), path.name, lab, spl, sub, patient_key(name), _source(name)))
    index = pd.DataFrame(rows, columns=COLUMNS)
    dup = index.duplicated(["split", "path"], keep=False)
    if dup.any():
        lines = [str(i + 2) for i in np.flatnonzero(dup)[:4]]
        name = index.loc[dup, "file"].iloc[0]
        raise InputError(f"{meta.name}: image {name!r} listed more than once (lines {', '.join(lines)})")
    return index


def _index_kermany(root: Path) -> pd.DataFrame:
    rows = []
    for split_dir in ("train", "val", "test"):
        for label_dir in ("NORMAL", "PNEUMONIA"):
            folder = root / split_dir / label_dir
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if not is_image_file(path):
                    continue
                utf8_path(path)
                label = label_dir.lower()
                m = _PERSON.match(path.stem)
                sub = "none" if label == "normal" else (m.group(2).lower() if m else "none")
                split = "test" if split_dir == "test" else "train"
                rows.append(
                    (str(path.absolute()), path.name, label, split, sub, patient_key(path.name), _source(path.name))
                )
    if not rows:
        raise InputError(f"{root}: Kermany layout holds no .jpeg/.jpg/.png/.dcm images")
    return pd.DataFrame(rows, columns=COLUMNS)


def _class_folders(root: Path) -> dict[str, Path]:
    """Label -> folder, for a folder whose subfolders are named after the classes (normal, pneumonia; any case)."""
    if not root.is_dir():
        return {}
    found = {d.name.lower(): d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in _LABEL_SPELLINGS}
    return {_LABEL_SPELLINGS[name]: d for name, d in found.items()} if len(found) == 2 else {}


def _test_class_folders(root: Path) -> dict[str, Path]:
    """The class folders of an external test set as it comes: in `root`, or in its test/, chest_xray/test/ or
    chest_xray/chest_xray/test/ (a Kermany-style test set without its train folder)."""
    for d in (root, root / "test", root / "chest_xray" / "test", root / "chest_xray" / "chest_xray" / "test"):
        if folders := _class_folders(d):
            return folders
    return {}


def _external_patients(names: list[str], ids: list[str] | None = None) -> tuple[list[str], str]:
    """Patient keys of an external set's images, and a sentence saying where they came from: the given `ids` (a
    CSV's patient column), else the file name where it carries one (Kermany's personN_, IM-N), else the image
    itself (each image its own patient)."""
    keys, own = [], 0
    for i, name in enumerate(names):
        given = ids[i].strip() if ids is not None else ""
        if given:
            keys.append(f"id-{given}")
        elif _kermany_match(PurePosixPath(name).stem):
            keys.append(patient_key(name))
        else:
            keys.append(f"image-{name}")
            own += 1
    if not own:
        return keys, "every image has a patient id (from a patient column or a Kermany file name)"
    why = "an empty patient cell" if ids is not None else "no patient column"
    return (
        keys,
        f"{own} of {len(names)} images have no patient id ({why}, no Kermany file name): each is its own patient",
    )


def _external_rows(paths: list[Path], labels: list[str], names: list[str], ids: list[str] | None) -> pd.DataFrame:
    """The index of a labelled external set (every image in the test split), with its patients' provenance in
    `.attrs["patients"]`."""
    keys, provenance = _external_patients(names, ids)
    rows = []
    for path, label, key in zip(paths, labels, keys, strict=True):
        m = _PERSON.match(utf8_path(path).stem)
        sub = m.group(2).lower() if m and label == "pneumonia" else "none"
        rows.append((str(path.absolute()), path.name, label, "test", sub, key, _source(path.name)))
    index = pd.DataFrame(rows, columns=COLUMNS)
    index.attrs["patients"] = provenance
    return index


def _index_class_folders(folders: dict[str, Path]) -> pd.DataFrame:
    """Every image under NORMAL/ and PNEUMONIA/ (recursively), all in the test split: a labelled external set."""
    found = [(label, path) for label, folder in sorted(folders.items()) for path in sorted(folder.rglob("*"))]
    found = [(label, path) for label, path in found if is_image_file(path)]
    if not found:
        raise InputError(f"{folders['normal'].parent}: its NORMAL/ and PNEUMONIA/ folders hold no image")
    names = [path.relative_to(folders[label].parent).as_posix() for label, path in found]
    return _external_rows([p for _, p in found], [label for label, _ in found], names, None)


# The columns of a labels CSV (names in any case; the first of each tuple is the documented one) and its labels.
CSV_COLUMNS = {"file": ("file", "filename", "image"), "label": ("label", "class"), "patient": ("patient", "patient_id")}
CSV_LABELS = {"normal": "normal", "0": "normal", "pneumonia": "pneumonia", "pnemonia": "pneumonia", "1": "pneumonia"}


def _labels_csv(root: Path) -> Path | None:
    """The labels CSV of a flat external set: `root` itself when it is a .csv file, else the one .csv in `root`."""
    if root.is_file():
        return root if root.suffix.lower() == ".csv" else None
    found = sorted(p for p in root.glob("*") if p.suffix.lower() == ".csv" and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4])
        raise InputError(f"{root}: {len(found)} CSV files ({names}): give the one of labels as the data path")
    return found[0] if found else None


def _csv_column(table: pd.DataFrame, role: str) -> str | None:
    """The name of the table's column for `role` (file, label or patient), matched in any case."""
    lower = {str(c).strip().lower(): c for c in table.columns}
    return next((lower[name] for name in CSV_COLUMNS[role] if name in lower), None)


def _index_labels_csv(csv: Path) -> pd.DataFrame:
    """A flat external set: the images a CSV names (relative to its folder), labelled by it, all in the test split."""
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv}: not a readable labels CSV ({str(exc).splitlines()[0]})") from None
    file_col, label_col, patient_col = (_csv_column(table, role) for role in CSV_COLUMNS)
    if file_col is None or label_col is None:
        expected = " and ".join(f"{'/'.join(CSV_COLUMNS[r])}" for r in ("file", "label"))
        columns = ", ".join(str(c) for c in table.columns) or "none"
        raise InputError(f"{csv}: a labels CSV needs columns {expected} (any case); its columns: {columns}")
    names, labels = [], []
    for i, (name, label) in enumerate(zip(table[file_col], table[label_col], strict=True)):
        where = f"{csv.name} line {i + 2}"
        lab = CSV_LABELS.get(label.strip().lower())
        if lab is None:
            raise InputError(f"{where}: unknown label {label!r} (expected normal or pneumonia, or 0 or 1)")
        names.append(_safe_name(name.strip(), where).replace("\\", "/"))
        labels.append(lab)
    if not names:
        raise InputError(f"{csv}: the labels CSV lists no image")
    dup = pd.Series(names).duplicated(keep=False)
    if dup.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(dup)[:4])
        raise InputError(
            f"{csv.name}: image {names[int(np.flatnonzero(dup)[0])]!r} listed more than once (lines {lines})"
        )
    ids = list(table[patient_col]) if patient_col is not None else None
    return _external_rows([csv.parent / name for name in names], labels, names, ids)


def build_index(root: str | os.PathLike, missing: str = "error") -> pd.DataFrame:
    """One row per image (metadata order) of a CoronaHack or Kermany layout, or of a labelled external set (every
    image in the test split): NORMAL/ and PNEUMONIA/ folders (in `root`, or its test/ or chest_xray/test/), or a
    CSV of file names and labels (`root` itself, or the one .csv in it); columns `COLUMNS`."""
    if missing not in ("error", "drop", "keep"):
        raise InputError(f"missing={missing!r}: expected error, drop or keep")
    root = Path(root).expanduser()
    if not root.is_dir() and not (root.is_file() and root.suffix.lower() == ".csv"):
        raise InputError(f"{root}: no such dataset directory (or labels CSV file)")
    csv = None
    meta = _find_metadata(root.absolute()) if root.is_dir() else None
    if meta is not None:
        index = _index_coronahack(meta)
        layout, dataset_root = "coronahack", meta.parent
    elif root.is_dir() and (kermany := _kermany_root(root.absolute())) is not None:
        index, layout, dataset_root = _index_kermany(kermany), "kermany", kermany
    elif folders := _test_class_folders(root.absolute()):
        index, layout = _index_class_folders(folders), "folders"
        dataset_root = folders["normal"].parent
    elif (csv := _labels_csv(root.absolute())) is not None:
        index, layout, dataset_root = _index_labels_csv(csv), "csv", csv.parent
    else:
        raise InputError(
            f"{root}: no dataset found (expected {METADATA_CSV} with {IMAGES_DIR}/, "
            "chest_xray/{train,test}/{NORMAL,PNEUMONIA}, NORMAL/ and PNEUMONIA/ folders (also in test/ or "
            "chest_xray/test/), or images with a CSV of file and label)"
        )
    absent = np.array([not os.path.exists(p) for p in index["path"]], dtype=bool)  # a link loop too
    n_absent = int(absent.sum())
    if n_absent and missing == "error":
        raise InputError(
            f"{root}: {n_absent} of {len(index)} listed image files are missing (first: {first_files(index[absent])}); "
            "use --missing drop to skip them or --missing keep to index them anyway"
        )
    gone = index[absent] if missing == "drop" else index.iloc[:0]
    if len(gone):
        index = index.loc[~absent].reset_index(drop=True)
    _refuse_outside_links(index, root if csv is None else csv.parent)
    index.attrs.update(layout=layout, root=str(root.absolute()), dataset_root=str(dataset_root), dropped=len(gone))
    test = gone[gone["split"] == "test"]
    index.attrs.update(dropped_first=first_files(gone), dropped_test=len(test), dropped_test_first=first_files(test))
    return index


def first_files(rows: pd.DataFrame, count: int = 3) -> str:
    """The file names of the first `count` rows, comma-separated, with how many more there are."""
    names = ", ".join(rows["file"].head(count))
    return f"{names} and {len(rows) - count} more" if len(rows) > count else names


def _refuse_outside_links(index: pd.DataFrame, root: Path) -> None:
    """An image that is a symbolic link (or lies under one) pointing out of the dataset folder is refused, unless
    $XRAYLIB_FOLLOW_SYMLINKS=1 says to follow such links."""
    if os.environ.get("XRAYLIB_FOLLOW_SYMLINKS", "").strip() == "1":
        return
    inside = os.path.realpath(root)
    for path in index["path"]:
        target = os.path.realpath(path)
        try:
            outside = os.path.commonpath([inside, target]) != inside
        except ValueError:  # another drive (Windows)
            outside = True
        if outside and os.path.exists(path):
            raise InputError(
                f"{path} links to {target}, outside the dataset folder {root}: copy the file in, or set "
                "XRAYLIB_FOLLOW_SYMLINKS=1 to follow links out of it"
            )


# --------------------------------------------------------------------------------------------- summary
def summarize(index: pd.DataFrame) -> str:
    """Plain-text table: images by split x label x subtype, patients, sources and missing files."""
    if index.empty:
        return "empty index (0 images)"
    splits = [s for s in ("train", "test") if s in set(index["split"])]
    lines = []
    if "layout" in index.attrs:
        lines.append(f"layout: {index.attrs['layout']}  root: {index.attrs.get('root', '')}")
    if "patients" in index.attrs:
        lines.append(f"patient ids: {index.attrs['patients']}")
    header = f"{'label':<10} {'subtype':<14}" + "".join(f"{s:>8}" for s in splits) + f"{'all':>8}"
    lines += [header, "-" * len(header)]
    order = {s: i for i, s in enumerate(SUBTYPES)}
    groups = index.groupby(["label", "subtype"]).size().reset_index()[["label", "subtype"]]
    groups = sorted(groups.itertuples(index=False), key=lambda r: (r[0], order.get(r[1], 99)))
    for label, subtype in groups:
        sel = index[(index["label"] == label) & (index["subtype"] == subtype)]
        counts = [int((sel["split"] == s).sum()) for s in splits]
        lines.append(f"{label:<10} {subtype:<14}" + "".join(f"{c:>8}" for c in counts) + f"{len(sel):>8}")
    lines.append("-" * len(header))
    for label in ("normal", "pneumonia"):
        sel = index[index["label"] == label]
        counts = [int((sel["split"] == s).sum()) for s in splits]
        lines.append(f"{label:<10} {'(all)':<14}" + "".join(f"{c:>8}" for c in counts) + f"{len(sel):>8}")
    counts = [int((index["split"] == s).sum()) for s in splits]
    lines.append(f"{'total':<25}" + "".join(f"{c:>8}" for c in counts) + f"{len(index):>8}")
    patients = [index.loc[index["split"] == s, "patient"].nunique() for s in splits]
    lines.append(f"{'patients':<25}" + "".join(f"{c:>8}" for c in patients) + f"{index['patient'].nunique():>8}")
    other = [int(((index["split"] == s) & (index["source"] == "other")).sum()) for s in splits]
    lines.append(f"{'non-Kermany images':<25}" + "".join(f"{c:>8}" for c in other) + f"{sum(other):>8}")
    if "subset" in index.columns:
        sub = index["subset"].value_counts()
        lines.append("subsets: " + ", ".join(f"{k} {int(sub.get(k, 0))}" for k in ("train", "val", "test")))
    n_missing = int(sum(not os.path.exists(p) for p in index["path"]))
    dropped = int(index.attrs.get("dropped", 0))
    text = f"missing files: {n_missing} of {len(index)}"
    if dropped:
        text += f" (and {dropped} listed but missing, dropped)"
    lines.append(text)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- splits
def fingerprint(index: pd.DataFrame) -> str:
    """Short sha256 of the index content: file, label, split, subtype and file size of every row."""
    h = hashlib.sha256()
    for file, label, split, subtype, path in index[["file", "label", "split", "subtype", "path"]].itertuples(
        index=False
    ):
        try:
            size = os.path.getsize(path)
        except OSError:
            size = -1
        h.update(f"{file}\t{label}\t{split}\t{subtype}\t{size}\n".encode())
    return h.hexdigest()[:16]


def holds_dataset(d: Path) -> bool:
    """Whether folder `d` holds a dataset in a supported layout (CoronaHack metadata, or Kermany folders)."""
    if not d.is_dir():
        return False
    return (d / METADATA_CSV).is_file() or _kermany_root(d) is not None
