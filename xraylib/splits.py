"""A run's subsets: the patient-grouped, label-stratified validation split or folds of the training split (the
official test split is never touched), and stratified limits for quick runs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xraylib.data import pneumonia_codes
from xraylib.errors import InputError


def _fold_plan(fraction: float) -> tuple[int, int]:
    """(n_splits, n_val_folds) whose ratio is closest to `fraction` with few folds."""
    best = (10, round(fraction * 10)) if fraction >= 0.1 else (max(2, round(1 / fraction)), 1)
    best_err = abs(best[1] / best[0] - fraction)
    for n in range(2, 41):
        k = round(fraction * n)
        if 1 <= k < n and abs(k / n - fraction) < best_err - 1e-9:
            best, best_err = (n, k), abs(k / n - fraction)
        if best_err < 0.005:
            break
    return best


def assign_subsets(
    index: pd.DataFrame,
    mode: str = "patient",
    fraction: float = 0.15,
    seed: int = 42,
    folds: int = 0,
    fold: int = 0,
) -> pd.DataFrame:
    """Copy of `index` with a `subset` column (train|val|test); the official test split stays `test`.
    `folds` K >= 2: the validation subset is fold `fold` of K patient-grouped, label-stratified folds of the
    training split (`fraction` is then unused)."""
    if not 0.0 <= float(fraction) < 1.0:
        raise InputError(f"validation fraction {fraction} must be in [0, 1)")
    out = index.copy()
    out["subset"] = np.where(out["split"] == "test", "test", "train")
    train_pos = np.flatnonzero(out["split"].to_numpy() == "train")
    if folds:
        val = cross_validation_folds(out.iloc[train_pos], folds, seed)[fold]
        out.iloc[train_pos[val], out.columns.get_loc("subset")] = "val"
        return out
    if fraction == 0 or len(train_pos) == 0:
        return out
    if mode == "first_rows":
        # Keras ImageDataGenerator(validation_split=f): subset "validation" is rows [0, int(f * n)).
        n_val = int(fraction * len(train_pos))
        out.iloc[train_pos[:n_val], out.columns.get_loc("subset")] = "val"
        return out
    if mode != "patient":
        raise InputError(f"split mode {mode!r}: expected patient or first_rows")
    from sklearn.model_selection import GroupShuffleSplit

    train = out.iloc[train_pos]
    y = pneumonia_codes(train["label"])
    groups = train["patient"].to_numpy()
    n_splits, k = _fold_plan(float(fraction))
    counts = np.bincount(y, minlength=2)
    if min(counts) >= n_splits and len(set(groups)) >= n_splits:
        folds = cross_validation_folds(train, n_splits, seed)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(n_splits, size=k, replace=False)
        val = np.concatenate([folds[i] for i in chosen])
    else:  # too few images for stratified folds: plain grouped split
        cv = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, val = next(cv.split(np.zeros(len(y)), y, groups))
    out.iloc[train_pos[np.sort(val)], out.columns.get_loc("subset")] = "val"
    return out


def cross_validation_folds(train: pd.DataFrame, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out row positions of each of `folds` patient-grouped, label-stratified folds of `train`
    (scikit-learn's StratifiedGroupKFold, shuffled by `seed`): no patient is in two folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = pneumonia_codes(train["label"])
    groups = train["patient"].to_numpy()
    fewest = min(int(np.bincount(y, minlength=2).min()), len(set(groups)))
    if folds < 2 or fewest < folds:
        raise InputError(f"folds={folds}: needs 2 to {fewest} (each class and patient count of the training split)")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [np.sort(val) for _, val in cv.split(np.zeros(len(y)), y, groups)]


def limit_subsets(index: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows per subset (or split), label proportions kept, whole patients first; n=0: unchanged.
    The test subset is drawn the same way whatever the seed, so that runs of several seeds share their test images."""
    if n <= 0:
        return index
    col = "subset" if "subset" in index.columns else "split"
    keep: list[int] = []
    for name, rows in index.groupby(col, sort=True):
        rng = np.random.default_rng(0 if name == "test" else seed)
        if len(rows) <= n:
            keep.extend(rows.index)
            continue
        counts = rows["label"].value_counts()
        quota = {lab: int(np.floor(n * c / len(rows))) for lab, c in counts.items()}
        for lab in sorted(counts.index, key=lambda lb: -(n * counts[lb] / len(rows) - quota[lb])):
            if sum(quota.values()) >= n:
                break
            quota[lab] += 1
        for lab in sorted(counts.index):
            want = min(quota[lab], counts[lab])
            part = rows[rows["label"] == lab]
            patients = list(part["patient"].unique())
            patients = [patients[i] for i in rng.permutation(len(patients))]
            by_patient = {p: list(ix) for p, ix in part.groupby("patient").groups.items()}
            taken: list[int] = []
            leftovers: list[int] = []
            for p in patients:
                ix = by_patient[p]
                if len(taken) + len(ix) <= want:
                    taken.extend(ix)
                else:
                    leftovers.extend(ix)
                if len(taken) == want:
                    break
            taken.extend(leftovers[: want - len(taken)])
            keep.extend(taken)
    return index.loc[sorted(keep, key=index.index.get_loc)]
