"""Predictions files, the study's (`Filename,real,Predictions`) or ours (predictions.csv): read, scored with
patient-bootstrap CIs and reported, two of them paired image by image (`--versus`), sensitivity by pneumonia kind."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from xraylib import runs
from xraylib.errors import InputError, check_memory
from xraylib.metrics import (
    LABEL_VALUES,
    METRICS,
    STUDY_FIGURES,
    STUDY_TITLES,
    TITLES,
    binary_metrics_ci,
    infer_threshold,
    json_float,
    paired_comparison,
    study_figures,
)
from xraylib.plot_style import REPORT_DIGITS, format_interval

STUDY_COLUMNS = ("Filename", "real", "Predictions")
SUITE_COLUMNS = ("file", "patient", "label", "p_pneumonia", "predicted")


def _filled(values: pd.Series, column: str, path: str) -> pd.Series:
    """The column's values as stripped strings; an empty or missing one is refused, naming its lines."""
    missing = values.isna() | (values.astype(str).str.strip() == "")
    if missing.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(missing)[:3])
        raise InputError(f"{path}: column {column!r} has {int(missing.sum())} empty or missing value(s) (line {lines})")
    return values.astype(str).str.strip()


def _label_codes(values: pd.Series, column: str, path: str) -> np.ndarray:
    """Map label strings (normal | pneumonia, the study's Pnemonia/Covid) to 0/1, naming unknown ones."""
    keys = _filled(values, column, path).str.lower()
    unknown = sorted(set(keys) - set(LABEL_VALUES))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:3])
        raise InputError(f"{path}: column {column!r} has unknown label(s) {shown} (expected Normal or Pneumonia)")
    return keys.map(LABEL_VALUES).to_numpy(dtype=np.int64)


def _patient_keys(files: pd.Series) -> np.ndarray:
    """Patient keys from Kermany file names (xraylib.data.patient_key)."""
    from xraylib.data import patient_key

    return np.array([patient_key(str(f)) for f in files], dtype=object)


def tidy_predictions(path: str | Path) -> pd.DataFrame:
    """Read the study's `Filename,real,Predictions` files or our predictions.csv into one tidy frame.

    Columns: file, patient, y_true (0/1), p (P(pneumonia), NaN for hard-label files), y_pred (0/1), and `path`
    and `p_raw` (the uncalibrated probabilities) when the file has them. `frame.attrs["format"]` is "study" or "suite".
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file {str(path)!r} does not exist")
    try:
        raw = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    name = str(path)
    if set(STUDY_COLUMNS) <= set(raw.columns):
        kind = "study"
        frame = pd.DataFrame({"file": _filled(raw["Filename"], "Filename", name)})
        frame["y_true"] = _label_codes(raw["real"], "real", name)
        frame["p"] = np.nan
        frame["y_pred"] = _label_codes(raw["Predictions"], "Predictions", name)
    elif {"file", "label", "p_pneumonia"} <= set(raw.columns):
        kind = "suite"
        frame = pd.DataFrame({"file": _filled(raw["file"], "file", name)})
        frame["y_true"] = _label_codes(raw["label"], "label", name)
        frame["p"] = runs.probabilities(raw["p_pneumonia"], "p_pneumonia", name)
        if "p_uncalibrated" in raw.columns:  # a run's own file: the model's probabilities before calibration
            frame["p_raw"] = runs.probabilities(raw["p_uncalibrated"], "p_uncalibrated", name)
        if "predicted" in raw.columns:
            frame["y_pred"] = _label_codes(raw["predicted"], "predicted", name)
        else:
            frame["y_pred"] = (frame["p"] >= 0.5).astype(np.int64)
    else:
        have = set(raw.columns)
        want = [c for c in ("file", "label", "p_pneumonia") if c not in have]
        if have & set(STUDY_COLUMNS):
            want = [c for c in STUDY_COLUMNS if c not in have]
        raise InputError(
            f"{path}: missing column(s) {', '.join(want)} (expected {','.join(SUITE_COLUMNS)} "
            f"or the study's {','.join(STUDY_COLUMNS)}; found {','.join(raw.columns) or 'none'})"
        )
    if frame.empty:
        raise InputError(f"{path}: no prediction rows")
    key = frame["file"]
    if "path" in raw.columns:  # the same file name may come from two folders: the path tells them apart
        paths = raw["path"].fillna("").astype(str)
        key = paths.where(paths != "", frame["file"])
    repeated = key.duplicated(keep=False).to_numpy()
    if repeated.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(repeated)[:4])
        first = frame.loc[repeated, "file"].iloc[0]
        raise InputError(f"{path}: image {first!r} is listed more than once (lines {rows}): one row per image")
    if kind == "suite" and "patient" in raw.columns and raw["patient"].notna().all():
        frame.insert(1, "patient", raw["patient"].astype(str).to_numpy())
    else:
        frame.insert(1, "patient", _patient_keys(frame["file"]))
    if "path" in raw.columns:
        frame["path"] = raw["path"].astype(str)
    frame.attrs["format"] = kind
    frame.attrs["source"] = name
    return frame


def _predictions_threshold(path: Path, frame: pd.DataFrame) -> tuple[float | None, str]:
    """The threshold behind a predictions.csv: from metrics.json beside it, else from the predicted column."""
    try:
        value = runs.read_threshold(path.parent)
    except InputError:  # a metrics.json unreadable here still leaves the predicted column
        value = None
    if value is not None:
        return value, f"from {runs.METRICS}"
    inferred = infer_threshold(frame)
    if inferred is not None:
        return inferred, "inferred from the predicted column"
    if not (frame["y_pred"] == 1).any() and len(frame):
        return None, "predicted column holds no pneumonia prediction"
    return None, "the predicted column is not a threshold of p_pneumonia"


def evaluate_file(
    path: str | Path, n_boot: int = 1000, seed: int = 0, threshold: tuple[float, str] | None = None
) -> dict:
    """Every metric of a predictions file (the study's or ours), with patient-bootstrap CIs; JSON-ready.
    `threshold`: (value, where it comes from) for our files; default: the metrics.json beside the file.
    A three-class file (p_normal, p_bacterial, p_viral) is scored by `three_class.evaluate_file`."""
    from xraylib import three_class

    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    path = Path(path)
    if path.is_file() and three_class.is_three_class(_header(path)):
        return three_class.evaluate_file(path, n_boot, seed)
    frame = tidy_predictions(path)
    check_memory(16 * n_boot * len(frame), f"--bootstrap {n_boot} over {len(frame)} images", "use fewer resamples")
    y = frame["y_true"].to_numpy()
    if not 0 < y.sum() < len(y):
        only = "pneumonia" if y[0] else "normal"
        raise InputError(
            f"{path}: every label is {only}: AUC is undefined with one class (and so is sensitivity or specificity)"
        )
    p, groups, kind = frame["p"].to_numpy(), frame["patient"].to_numpy(), frame.attrs["format"]
    result: dict = {
        "file": str(path),
        "format": kind,
        "n_images": int(len(frame)),
        "n_patients": int(frame["patient"].nunique()),
        "n_pneumonia": int(y.sum()),
        "n_normal": int(len(y) - y.sum()),
        "threshold": None,
        "threshold_source": None,
    }
    if kind == "study":
        result["threshold_source"] = "hard labels in the file"
        result["at_threshold"] = binary_metrics_ci(y, p, groups, None, n_boot, seed, y_pred=frame["y_pred"].to_numpy())
    else:
        threshold, source = threshold or _predictions_threshold(path, frame)
        result["threshold"], result["threshold_source"] = threshold, source
        result["at_threshold"] = binary_metrics_ci(
            y, p, groups, threshold, n_boot, seed, y_pred=frame["y_pred"].to_numpy()
        )
        result["at_threshold"]["threshold"] = threshold
        result["at_0.5"] = binary_metrics_ci(y, p, groups, 0.5, n_boot, seed)
    result["study_figures"] = {k: json_float(v) for k, v in study_figures(y, frame["y_pred"]).items()}
    return result


def _header(path: Path) -> list[str]:
    """The column names of a CSV file ([] when it has none readable)."""
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return []


def format_report(result: dict) -> str:
    """A readable report of evaluate_file's result; the study's own figures at full float precision."""
    if result["format"] == "three_class":
        from xraylib.three_class import format_report as three_class_report

        return three_class_report(result)
    boot = result["at_threshold"]["bootstrap"]
    kind = "the study's format: hard labels, no probabilities" if result["format"] == "study" else "probabilities"
    lines = [f"run: {result['run']} on {result['data']} ({result['layout']} layout)"] if "run" in result else []
    lines += [
        f"predictions: {result['file']} ({kind})",
        f"images: {result['n_images']} (pneumonia {result['n_pneumonia']}, normal {result['n_normal']}), "
        f"patients: {result['n_patients']}",
    ]
    if result.get("patients"):
        lines.append(f"patient ids: {result['patients']}")
    if boot["resamples"]:
        lines.append(f"95 % CIs: bootstrap over {boot['unit']}s, {boot['resamples']} resamples, seed {boot['seed']}")
    columns = [("at_threshold", "hard labels in the file" if result["format"] == "study" else "")]
    if result["format"] != "study":
        t = result["threshold"]
        columns[0] = ("at_threshold", f"run threshold {t:.4f}" if t is not None else "predicted column")
        columns.append(("at_0.5", "threshold 0.5"))
    lines.append("")
    lines.append(f"{'metric':<28}" + "".join(f"{title:<28}" for _, title in columns).rstrip())
    for name in METRICS:
        cells = "".join(f"{format_interval(result[key][name], REPORT_DIGITS):<28}" for key, _ in columns)
        lines.append(f"{TITLES[name]:<28}{cells}".rstrip())
    cells = "".join(f"{'{tn}/{fp}/{fn}/{tp}'.format(**result[key]['confusion']):<28}" for key, _ in columns)
    lines.append(f"{'TN/FP/FN/TP':<28}{cells}".rstrip())
    if result["threshold_source"] and result["format"] != "study":
        lines.append(f"run threshold: {result['threshold_source']}")
    lines.append("")
    if result["format"] == "study":
        lines.append("the study's own figures (hard labels, full precision as the study printed them):")
    else:
        lines.append("the study's figures computed its way (from the predicted labels, full precision):")
    for name in STUDY_FIGURES:
        value = result["study_figures"][name]
        lines.append(f"  {STUDY_TITLES[name]:<24}{value!r}")
    by_kind = result.get("sensitivity_by_kind") or {}
    if by_kind:
        lines.append("")
        lines.append("sensitivity by pneumonia kind (of the predicted labels above):")
        for kind, entry in by_kind.items():
            lines.append(f"  {kind:<24}{format_interval(entry, REPORT_DIGITS)}  ({entry['n_images']} images)")
    if "adaptation" in result:
        from xraylib.adapt import format_entry

        lines += ["", *format_entry(result["adaptation"])]
    notes = [n for key, _ in columns for n in result[key]["notes"]]
    notes = list(dict.fromkeys(notes + [n for entry in by_kind.values() for n in entry.get("notes", [])]))
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(f"  - {n}" for n in notes)
    return "\n".join(lines)


def _bare_name(file: str) -> str:
    """The file name at the end of a path (either slash): the key that pairs two predictions files."""
    return PurePosixPath(str(file).replace("\\", "/")).name


def align_predictions(a: pd.DataFrame, b: pd.DataFrame, name_a: str = "", name_b: str = "") -> pd.DataFrame:
    """Two tidy_predictions frames image by image, matched on the bare file name: file, patient (A's), y_true,
    y_pred_a, y_pred_b, p_a, p_b. Other image sets, a name listed twice, or true labels that disagree: a one-line
    InputError naming both (`name_a`, `name_b`; default: the files read)."""
    name_a, name_b = name_a or a.attrs.get("source", "A"), name_b or b.attrs.get("source", "B")
    keyed = [frame.assign(file=frame["file"].map(_bare_name)) for frame in (a, b)]
    for frame, name, other in ((keyed[0], name_a, name_b), (keyed[1], name_b, name_a)):
        twice = frame.loc[frame["file"].duplicated(), "file"]
        if len(twice):
            raise InputError(f"{name} lists image {twice.iloc[0]!r} more than once: cannot pair it with {other}")
    both = keyed[0].merge(keyed[1], on="file", suffixes=("_a", "_b"))
    if len(both) != len(a) or len(both) != len(b):
        alone = sorted(set(keyed[0]["file"]) ^ set(keyed[1]["file"]))[0]
        raise InputError(
            f"{name_a} and {name_b} are not on the same test images ({len(a)} and {len(b)} images, {len(both)} "
            f"shared; {alone!r} is in one only)"
        )
    differ = both["y_true_a"] != both["y_true_b"]
    if differ.any():
        raise InputError(
            f"{name_a} and {name_b} disagree on the true label of {int(differ.sum())} image(s) "
            f"(e.g. {both.loc[differ, 'file'].iloc[0]!r})"
        )
    both = both.rename(columns={"patient_a": "patient", "y_true_a": "y_true"})
    return both[["file", "patient", "y_true", "y_pred_a", "y_pred_b", "p_a", "p_b"]]


def compare_files(path_a: str | Path, path_b: str | Path, n_boot: int = 1000, seed: int = 0) -> dict:
    """Two predictions files (the study's or ours) image by image: `metrics.paired_comparison` of their hard labels
    (and of their probabilities, when both have them), with patient-bootstrap CIs; JSON-ready."""
    if n_boot < 0:
        raise InputError(f"--bootstrap {n_boot}: must not be negative")
    a, b = tidy_predictions(path_a), tidy_predictions(path_b)
    both = align_predictions(a, b)
    check_memory(16 * n_boot * len(both), f"--bootstrap {n_boot} over {len(both)} images", "use fewer resamples")
    paired = paired_comparison(
        both["y_true"], both["y_pred_a"], both["y_pred_b"], both["p_a"], both["p_b"], both["patient"], n_boot, seed
    )
    return {"a": str(path_a), "format_a": a.attrs["format"], "b": str(path_b), "format_b": b.attrs["format"], **paired}


def format_comparisons(results: list[dict]) -> str:
    """A readable report of compare_files' results, one block per pair."""
    kinds = {"study": "hard labels", "suite": "probabilities"}
    blocks = []
    for r in results:
        acc, test, auc, boot = r["accuracy"], r["mcnemar"], r["roc_auc"], r["bootstrap"]
        cis = f"; 95 % CIs: bootstrap over {boot['unit']}s, {boot['resamples']} resamples, seed {boot['seed']}"
        lines = [
            f"A: {r['a']} ({kinds[r['format_a']]})",
            f"B: {r['b']} ({kinds[r['format_b']]})",
            f"paired images: {r['n_images']} (patients: {r['n_patients']})" + (cis if boot["resamples"] else ""),
            f"{'accuracy A / B':<28}{acc['accuracy_a']:.4f} / {acc['accuracy_b']:.4f}",
            f"{'accuracy A - B':<28}{_difference(acc)}",
            f"{'discordant images':<28}b = {test['b']} (A right, B wrong), c = {test['c']} (A wrong, B right)",
            f"{'McNemar':<28}p = {test['p_value']:.4g}, statistic {test['statistic']:.4g}, {test['method']}",
        ]
        if auc["difference"] is None:
            lines.append(f"{'ROC-AUC A - B':<28}not computed: it needs probabilities in both files")
        else:
            p_value = f", p = {auc['p_value']:.4g}" if auc["p_value"] is not None else ""
            lines.append(f"{'ROC-AUC A / B':<28}{auc['auc_a']:.4f} / {auc['auc_b']:.4f}")
            lines.append(f"{'ROC-AUC A - B':<28}{_difference(auc)}{p_value}")
        lines += [f"note: {n}" for n in acc.get("notes", []) + auc.get("notes", [])]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _difference(entry: dict) -> str:
    """A paired difference with its CI, as a metric is written in these reports."""
    return format_interval({"value": entry["difference"], "low": entry["low"], "high": entry["high"]}, REPORT_DIGITS)


def sensitivity_by_kind_of_file(
    path: str | os.PathLike, data: str | os.PathLike, n_boot: int = 1000, seed: int = 0, index=None
) -> dict[str, dict]:
    """Sensitivity among the bacterial and among the viral pneumonia images of a predictions file (the study's or
    ours), each with a patient-bootstrap CI: its images joined by file name to the metadata of the dataset at
    `data` (the images themselves need not be there)."""
    from xraylib.data import build_index, pneumonia_kind
    from xraylib.metrics import sensitivity_by_kind

    frame = tidy_predictions(path)
    if index is None:
        index = build_index(data, missing="keep")
    # a name listed in both splits: the test split's row (the predictions files hold test images)
    rows = index.sort_values("split", key=lambda split: split != "test", kind="stable").drop_duplicates("file")
    subtypes = rows.set_index("file")["subtype"]
    unknown = frame.loc[~frame["file"].isin(subtypes.index), "file"]
    if len(unknown):
        raise InputError(f"{path}: {len(unknown)} image(s) not in the metadata of {data} (first: {unknown.iloc[0]})")
    kinds = [pneumonia_kind(subtypes[f]) for f in frame["file"]]
    return sensitivity_by_kind(frame["y_true"], frame["y_pred"], kinds, frame["patient"], n_boot, seed)
