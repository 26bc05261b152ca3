"""#29: Youden's threshold against the validation prevalence on Platt-calibrated probabilities, validation only."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib.calibration import fit_calibration, logit
from xraylib.metrics import bootstrap_weights, choose_threshold

R = Path(__file__).resolve().parent
MODELS = {
    "#14b s42": R / "xception-cpu-eq2",
    **{f"#14b s{s}": R / f"cpu-eq2-seeds/xception-seed{s}" for s in (43, 44, 45, 46)},
    "#27 s42": R / "xception-cpu-lr3e-4-e3",
    "#27 s47": R / "xception-cpu-e3-seed47",
}


def rules(y, raw):
    """(Youden, balanced) as logits of the raw probability."""
    cal = fit_calibration(y, raw, "platt")
    youden_cal = choose_threshold(y, cal(raw), "youden")
    return float(logit(cal.raw_threshold(youden_cal))), float(logit(cal.raw_threshold(float(np.mean(y)))))


def balanced_accuracy(y, z, t):
    pred = z >= t - 1e-12
    return 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())


def main() -> None:
    """The validation figures of #29 and its decision, into threshold-balanced.csv."""
    rows = []
    for name, folder in MODELS.items():
        val = pd.read_csv(folder / "val_predictions.csv")
        y = (val["label"] == "pneumonia").to_numpy().astype(int)
        raw = val["p_uncalibrated"].to_numpy()
        z = logit(raw)
        youden, balanced = rules(y, raw)
        counts = bootstrap_weights(val["patient"].to_numpy(), len(y), 1000, 0).astype(np.int64)
        draws = []
        for count in counts:
            index = np.repeat(np.arange(len(y)), count)
            if 0 < y[index].sum() < len(index):
                draws.append(rules(y[index], raw[index]))
        draws = np.array(draws)
        rows.append(
            {
                "model": name,
                "youden_logit": youden,
                "balanced_logit": balanced,
                "youden_sd": draws[:, 0].std(ddof=1),
                "balanced_sd": draws[:, 1].std(ddof=1),
                "ba_youden": balanced_accuracy(y, z, youden),
                "ba_balanced": balanced_accuracy(y, z, balanced),
                "prevalence": y.mean(),
            }
        )
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(4).to_string(index=False))
    fewer = int((table["balanced_sd"] < table["youden_sd"]).sum())
    gap = table["ba_balanced"].mean() - table["ba_youden"].mean()
    print(f"(a) balanced SD below Youden's for {fewer} of {len(table)} models (needs >= 6)")
    mean_b, mean_y = table["ba_balanced"].mean(), table["ba_youden"].mean()
    print(f"(b) mean validation balanced accuracy: balanced {mean_b:.4f}, Youden {mean_y:.4f}, difference {gap:+.4f}")
    print("ADOPT" if fewer >= 6 and gap >= -0.005 else "NOT ADOPTED")
    table.to_csv(sys.argv[1] if len(sys.argv) > 1 else "threshold-balanced.csv", index=False)


if __name__ == "__main__":
    main()
