"""#32's diagnosis: the finest detail (mean absolute Laplacian of each 224 px image) by split and label, how well it
tells the classes apart alone, and how often models call the normal images pneumonia by third of it.

Reads the 224 px copies and the committed predictions of the preset's seed 48 and of #32 (test labels included:
the report says so). Writes sharpness.csv (the figures by split and label) and prints the rest.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

R = Path(__file__).resolve().parent
DATA = R.parents[2] / "shared" / "data" / "coronahack-224"
IMAGES = DATA / "Coronahack-Chest-XRay-Dataset" / "Coronahack-Chest-XRay-Dataset"
RUNS = {"seed 48": R / "cpu-preset-29" / "seed48", "#32 blur=1": R / "xception-cpu-blur"}


def detail(path: Path) -> float:
    """Mean absolute Laplacian of the image's grey levels."""
    return float(np.abs(ndimage.laplace(np.asarray(Image.open(path).convert("L"), dtype=np.float32))).mean())


def with_detail(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """`frame` (columns file, label) with each image's detail, read from the `split` folder."""
    return frame.assign(detail=[detail(IMAGES / split / name) for name in frame["file"]])


def called_by_third(normal: pd.DataFrame) -> dict:
    """Share of normal images predicted pneumonia, by third of their detail (blurriest first)."""
    thirds = pd.qcut(normal["detail"], 3, labels=["blurriest", "middle", "sharpest"])
    return (normal["predicted"] == "pneumonia").groupby(thirds, observed=True).mean().round(3).to_dict()


def main() -> None:
    """Print the figures #32's rule cites and write sharpness.csv."""
    meta = pd.read_csv(DATA / "Chest_xray_Corona_Metadata.csv").rename(columns={"X_ray_image_name": "file"})
    meta["folder"] = meta["Dataset_type"].str.lower()
    meta = meta[[(IMAGES / folder / name).is_file() for name, folder in zip(meta["file"], meta["folder"], strict=True)]]
    every = pd.concat(with_detail(part, folder) for folder, part in meta.groupby("folder"))
    by = every.groupby(["Dataset_type", "Label"])["detail"]
    table = pd.DataFrame({"images": by.size(), "median_detail": by.median().round(2)}).reset_index()
    print(table.to_string(index=False))
    table.to_csv(R / "sharpness.csv", index=False)
    for name, run in RUNS.items():
        for split, file in (("train", "val_predictions.csv"), ("test", "predictions.csv")):
            scored = with_detail(pd.read_csv(run / file), split)
            auc = roc_auc_score(scored["label"] == "pneumonia", -scored["detail"])
            normal = scored[scored["label"] == "normal"]
            print(
                f"{name}, {file}: ROC-AUC of the detail alone {auc:.3f}; normals called pneumonia by third",
                called_by_third(normal),
            )


if __name__ == "__main__":
    main()
