"""The patient-level fold assignment that the deep model and the baseline share.

Both are computed from the sorted patient ids, so the same cohort and seed give the
same folds whatever the order of the manifest rows.
"""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd
from sklearn.model_selection import KFold, train_test_split

from RadioGenomicsLib.errors import InputError


def _sorted_unique(patients: Sequence[str], source: str | os.PathLike | None) -> list[str]:
    ids = [str(p) for p in patients]
    duplicated = sorted(pd.Index(ids)[pd.Index(ids).duplicated()].unique())
    if duplicated:
        raise InputError(source, f"patient {duplicated[0]!r} is listed more than once")
    return sorted(ids)


def assign_folds(patients: Sequence[str], n_folds: int, seed: int,
                 source: str | os.PathLike | None = None) -> pd.Series:
    """Patient id -> fold (0..n_folds-1), by seeded shuffled KFold of the sorted ids.

    `source` (the manifest) is named in the error when the cohort is too small.
    """
    ids = _sorted_unique(patients, source)
    if n_folds < 2:
        raise InputError(source, f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(ids) < n_folds:
        raise InputError(source, f"{len(ids)} patient(s) are fewer than the {n_folds} folds")
    fold = pd.Series(-1, index=pd.Index(ids, name="patient_id"), name="fold", dtype=int)
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(ids)):
        fold.iloc[held_out] = k
    return fold


def inner_validation_split(train_patients: Sequence[str], fraction: float = 0.1,
                           seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold back `fraction` of a training fold (at least one patient): (train, validation).

    Both lists are sorted. Needs at least two patients.
    """
    ids = _sorted_unique(train_patients, None)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if len(ids) < 2:
        raise InputError(None, f"a training fold of {len(ids)} patient(s) cannot hold any back "
                               "for validation")
    n_val = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    train, val = train_test_split(ids, test_size=n_val, random_state=seed, shuffle=True)
    return sorted(train), sorted(val)
