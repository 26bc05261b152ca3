"""Where the test set sits in the patients' numbering, and whether the training patients nearest it look like it.

Reads the metadata (file names and splits), the shift probe's label-free P(test) of each training image and the
five-fold run's out-of-fold probabilities (training images only): no test prediction or test label is read.
Writes patient-numbers.csv (the numbers by split) and patient-numbers-train.csv (by fifth of the numbering).
"""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

R = Path(__file__).resolve().parent
METADATA = R.parents[2] / "shared" / "data" / "coronahack-224" / "Chest_xray_Corona_Metadata.csv"
SERIES = r"^(?P<series>NORMAL2-IM-|IM-|person)(?P<number>\d+)"  # Kermany's three naming series


def numbered(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """`frame` with each Kermany file's naming series and patient number (other files dropped)."""
    parts = frame[column].str.extract(SERIES)
    return frame.assign(series=parts["series"], number=pd.to_numeric(parts["number"])).dropna(subset=["series"])


def by_split() -> pd.DataFrame:
    """Each series' patient numbers in train and test: count and quantiles."""
    meta = numbered(pd.read_csv(METADATA), "X_ray_image_name")
    quantiles = meta.groupby(["series", "Dataset_type"])["number"].describe(percentiles=[0.25, 0.5, 0.75])
    return quantiles[["count", "min", "25%", "50%", "75%", "max"]].astype(int)


def by_fifth() -> pd.DataFrame:
    """Training images by fifth of their series' numbering (lowest first): P(test) and out-of-fold figures."""
    paths = sorted((R / "cv-epochs").glob("xception-fold*/val_predictions.csv"))
    folds = pd.concat(pd.read_csv(path) for path in paths)
    probe = pd.read_csv(R / "shift-probe" / "scores.csv")[["file", "split", "p_test"]]
    train = numbered(folds.merge(probe[probe["split"] == "train"], on="file", how="left"), "file")
    train["fifth"] = train.groupby("series")["number"].transform(lambda n: np.ceil(n.rank(pct=True) * 5)).astype(int)
    normal = train["label"] == "normal"
    rows = []
    for fifth, part in train.groupby("fifth"):
        is_normal = part["label"] == "normal"
        rows.append(
            {
                "fifth": fifth,
                "images": len(part),
                "normal": int(is_normal.sum()),
                "p_test_normal": part.loc[is_normal, "p_test"].mean(),
                "p_test_pneumonia": part.loc[~is_normal, "p_test"].mean(),
                "oof_p_pneumonia_normal": part.loc[is_normal, "p_pneumonia"].mean(),
                "oof_normal_at_or_above_0.5": (part.loc[is_normal, "p_pneumonia"] >= 0.5).mean(),
                "oof_roc_auc": roc_auc_score(~is_normal, part["p_pneumonia"]),
            }
        )
    print(f"out-of-fold images: {len(train)}, of them normal {int(normal.sum())}")
    return pd.DataFrame(rows).round(4)


def main() -> None:
    """Print both tables and write them beside this script."""
    splits, fifths = by_split(), by_fifth()
    print(splits.to_string(), fifths.to_string(index=False), sep="\n\n")
    splits.to_csv(R / "patient-numbers.csv")
    fifths.to_csv(R / "patient-numbers-train.csv", index=False)


if __name__ == "__main__":
    main()
