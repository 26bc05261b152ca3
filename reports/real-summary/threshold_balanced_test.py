"""#29's test look, once, after its decision: the seven models' test figures at Youden's threshold and at the
validation prevalence on their calibrated probabilities (`threshold_balanced.py` holds the validation figures)."""

import sys
from pathlib import Path

import pandas as pd

from xraylib.calibration import fit_calibration
from xraylib.metrics import binary_metrics_ci, choose_threshold

R = Path(__file__).resolve().parent
sys.path.insert(0, str(R))
from threshold_balanced import MODELS  # noqa: E402


def labelled(folder: Path, name: str):
    frame = pd.read_csv(folder / name)
    return (frame["label"] == "pneumonia").to_numpy().astype(int), frame["p_uncalibrated"].to_numpy(), frame


rows = []
for model, folder in MODELS.items():
    val_y, val_raw, _ = labelled(folder, "val_predictions.csv")
    test_y, test_raw, test = labelled(folder, "predictions.csv")
    calibration = fit_calibration(val_y, val_raw, "platt")
    thresholds = {"youden": choose_threshold(val_y, calibration(val_raw), "youden"), "balanced": float(val_y.mean())}
    for rule, threshold in thresholds.items():
        m = binary_metrics_ci(test_y, calibration(test_raw), test["patient"].to_numpy(), threshold, 1000, 42)
        rows.append(
            {
                "model": model,
                "rule": rule,
                "threshold": threshold,
                **{f"{k}": m[k]["value"] for k in ("roc_auc", "accuracy", "sensitivity", "specificity")},
                "accuracy_ci": f"[{m['accuracy']['low']:.3f}, {m['accuracy']['high']:.3f}]",
            }
        )
table = pd.DataFrame(rows)
pd.set_option("display.width", 200)
print(table.round(4).to_string(index=False))
for rule, part in table.groupby("rule", sort=False):
    acc, spec = part["accuracy"], part["specificity"]
    print(
        f"{rule}: accuracy {acc.mean():.3f} ± {acc.std(ddof=1):.3f} ({acc.min():.3f}–{acc.max():.3f}), "
        f"specificity {spec.mean():.3f} ± {spec.std(ddof=1):.3f} ({spec.min():.3f}–{spec.max():.3f}), "
        f"sensitivity {part['sensitivity'].mean():.3f}"
    )
table.to_csv(R / "threshold-balanced-test.csv", index=False)
