"""Every committed test prediction file of the report: its figures at its own threshold, and what the best threshold
chosen on the test labels themselves would give it (a bound on what any threshold rule could reach, never a result).

Reads every two-class `predictions.csv` under this folder and #7's averaged fold models
(`cv-epochs/mean_predictions/xception.csv`); writes looks.csv and prints the summary the report cites. Test labels
are read: that is the point of the bound.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score, roc_curve

from xraylib.metrics import binary_metrics

R = Path(__file__).resolve().parent
N_NORMAL, N_PNEUMONIA = 234, 390
# #14-#16 equalized with one histogram per batch of one class: their test figures carry the label (report, "What
# #14's batch-wide equalization measured"), so they are listed but left out of the summary.
LEAKED = ("xception-cpu-equalize/", "cpu-eq-seeds/", "xception-cpu-eq-augment/")


def oracle(truth: np.ndarray, score: np.ndarray) -> dict:
    """The test-chosen bounds: best accuracy over thresholds, and best specificity while sensitivity is >= 0.97."""
    fpr, tpr, _ = roc_curve(truth, score)
    accuracy = (tpr * truth.sum() + (1 - fpr) * (~truth).sum()) / truth.size
    return {
        "oracle_accuracy": float(accuracy.max()),
        "oracle_specificity_at_sens_0.97": float((1 - fpr[tpr >= 0.97]).max()),
        "first_target_reachable": bool(((accuracy >= 0.93) & (1 - fpr >= 0.85)).any()),
    }


def validation_roc_auc(path: Path) -> float:
    """ROC-AUC of the model's own validation predictions beside `path` (NaN for #7's average, which has none)."""
    file = path.parent / "val_predictions.csv"
    if not file.is_file():
        return float("nan")
    validation = pd.read_csv(file)
    return float(roc_auc_score(validation["label"] == "pneumonia", validation["p_pneumonia"]))


def row(path: Path) -> dict:
    """One prediction file's figures."""
    frame = pd.read_csv(path).sort_values("file")
    assert len(frame) == N_NORMAL + N_PNEUMONIA, f"{path}: not the 624 test images"
    truth = (frame["label"] == "pneumonia").to_numpy()
    score = frame["p_pneumonia"].to_numpy()
    own = binary_metrics(truth, score, y_pred=frame["predicted"] == "pneumonia")
    name = str(path.relative_to(R).parent if path.name == "predictions.csv" else path.relative_to(R))
    return {
        "run": name,
        "label_leak": (name + "/").startswith(LEAKED),
        "adapted": name.endswith("adapted"),
        "scores": hash(score.round(12).tobytes()),
        "validation_roc_auc": validation_roc_auc(path),
        **{key: own[key] for key in ("roc_auc", "accuracy", "sensitivity", "specificity")},
        **oracle(truth, score),
    }


def main() -> None:
    """Write looks.csv and print the figures the report cites."""
    files = [*R.rglob("predictions.csv"), R / "cv-epochs" / "mean_predictions" / "xception.csv"]
    files = sorted(p for p in files if set(pd.read_csv(p)["label"]) == {"normal", "pneumonia"})
    table = pd.DataFrame([row(p) for p in files])
    table.insert(
        3, "same_model_as", table.groupby("scores")["run"].transform("first").where(lambda r: r != table["run"])
    )
    table = table.drop(columns="scores").round(4)
    table.to_csv(R / "looks.csv", index=False)
    models = table[table["same_model_as"].isna()]  # a model whose scores two files hold counts once
    print(f"{len(table)} files, {len(models)} models, {int(models['label_leak'].sum())} of them with #14-#16's leak")
    for leak, part in models.groupby("label_leak"):
        print(f"\n{len(part)} models" + (" with #14-#16's label leak" if leak else " without a leak"))
        for column in part.columns[6:-1]:
            print(f"{column:32s} median {part[column].median():.3f}  best {part[column].max():.3f}")
        gap = np.median((part["oracle_accuracy"] - part["accuracy"]) * (N_NORMAL + N_PNEUMONIA))
        print(f"median gain of the test-chosen threshold: {gap:.0f} images, {gap / (N_NORMAL + N_PNEUMONIA):.3f}")
        for column in ("accuracy", "specificity", "oracle_accuracy", "oracle_specificity_at_sens_0.97", "roc_auc"):
            print(f"best {column}: {part.loc[part[column].idxmax(), 'run']}")
        print("models where one threshold gives accuracy >= 0.93 and specificity >= 0.85:", int(part.iloc[:, -1].sum()))
        own = part[~part["adapted"] & part["validation_roc_auc"].notna()]  # adapted models share their validation
        rho = spearmanr(own["validation_roc_auc"], own["roc_auc"])
        print(f"Spearman of validation and test ROC-AUC over {len(own)}: {rho.statistic:.2f} (p = {rho.pvalue:.2f})")


if __name__ == "__main__":
    main()
