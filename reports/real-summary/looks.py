"""Every committed test prediction file of the report: its figures at its own threshold, and what the best threshold
chosen on the test labels themselves would give it (a bound on what any threshold rule could reach, never a result).

Reads every `predictions.csv` under this folder with two classes; writes looks.csv and prints the summary the report
cites. Test labels are read: that is the point of the bound.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score, roc_curve

R = Path(__file__).resolve().parent
N_NORMAL, N_PNEUMONIA = 234, 390
# #14-#16 equalized with one histogram per batch of one class: their test figures carry the label (report, "What
# #14's batch-wide equalization measured"), so they are listed but left out of the summary.
LEAKED = ("xception-cpu-equalize", "cpu-eq-seeds", "xception-cpu-eq-augment/")


def at_threshold(truth: np.ndarray, called: np.ndarray) -> dict:
    """Accuracy, sensitivity and specificity of yes/no calls."""
    return {
        "accuracy": float((truth == called).mean()),
        "sensitivity": float(called[truth].mean()),
        "specificity": float((~called[~truth]).mean()),
    }


def oracle(truth: np.ndarray, score: np.ndarray) -> dict:
    """The test-chosen bounds: best accuracy over thresholds, and best specificity while sensitivity is >= 0.97."""
    fpr, tpr, _ = roc_curve(truth, score)
    accuracy = (tpr * truth.sum() + (1 - fpr) * (~truth).sum()) / truth.size
    return {
        "oracle_accuracy": float(accuracy.max()),
        "oracle_specificity_at_sens_0.97": float((1 - fpr[tpr >= 0.97]).max()),
        "first_target_reachable": bool(((accuracy >= 0.93) & (1 - fpr >= 0.85)).any()),
    }


def row(path: Path) -> dict:
    """One prediction file's figures."""
    frame = pd.read_csv(path)
    truth = (frame["label"] == "pneumonia").to_numpy()
    called = (frame["predicted"] == "pneumonia").to_numpy()
    score = frame["p_pneumonia"].to_numpy()
    validation = pd.read_csv(path.parent / "val_predictions.csv")
    return {
        "run": str(path.parent.relative_to(R)),
        "validation_roc_auc": float(roc_auc_score(validation["label"] == "pneumonia", validation["p_pneumonia"])),
        "roc_auc": float(roc_auc_score(truth, score)),
        **at_threshold(truth, called),
        **oracle(truth, score),
    }


def main() -> None:
    """Write looks.csv and print the figures the report cites."""
    files = sorted(p for p in R.rglob("predictions.csv") if set(pd.read_csv(p)["label"]) == {"normal", "pneumonia"})
    table = pd.DataFrame([row(p) for p in files]).round(4)
    table.insert(1, "label_leak", [(run + "/").startswith(LEAKED) for run in table["run"]])
    assert all(len(pd.read_csv(p)) == N_NORMAL + N_PNEUMONIA for p in files), "a file without the 624 test images"
    table.to_csv(R / "looks.csv", index=False)
    for leak, part in table.groupby("label_leak"):
        print(f"\n{len(part)} test prediction files" + (" with #14-#16's label leak" if leak else " without a leak"))
        for column in part.columns[3:-1]:
            print(f"{column:32s} median {part[column].median():.3f}  best {part[column].max():.3f}")
        best = part.loc[part["oracle_accuracy"].idxmax()]
        print(f"best oracle accuracy: {best['run']} {best['oracle_accuracy']:.3f} (at its own {best['accuracy']:.3f})")
        print("files where one threshold gives accuracy >= 0.93 and specificity >= 0.85:", int(part.iloc[:, -1].sum()))
        rho = spearmanr(part["validation_roc_auc"], part["roc_auc"])
        print(f"Spearman of validation and test ROC-AUC: {rho.statistic:.2f} (p = {rho.pvalue:.2f})")


if __name__ == "__main__":
    main()
