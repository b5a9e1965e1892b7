"""The patient-level fold assignment that the deep model and the baseline share.

Both are computed from the sorted patient ids, so the same cohort and seed give the
same folds whatever the order of the manifest rows.
"""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, train_test_split

from RadioGenomicsLib.errors import InputError


def _sorted_unique(patients: Sequence[str], source: str | os.PathLike | None) -> list[str]:
    ids = [str(p) for p in patients]
    duplicated = sorted(pd.Index(ids)[pd.Index(ids).duplicated()].unique())
    if duplicated:
        raise InputError(source, f"patient {duplicated[0]!r} is listed more than once")
    return sorted(ids)


def tissue_source_site(patient: str) -> str | None:
    """The TCGA tissue-source site of a barcode (TCGA-06-0125 -> "06"), else None."""
    parts = patient.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] == "TCGA" and parts[1] else None


def assign_folds(patients: Sequence[str], n_folds: int, seed: int,
                 source: str | os.PathLike | None = None, group_by: str = "patient") -> pd.Series:
    """Patient id -> fold (0..n_folds-1), by seeded shuffled KFold of the sorted ids; with
    `group_by="site"`, every tissue-source site's patients in one fold (GroupKFold).

    `source` (the manifest) is named in the error when the cohort is too small.
    """
    ids = _sorted_unique(patients, source)
    if n_folds < 2:
        raise InputError(source, f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(ids) < n_folds:
        raise InputError(source, f"{len(ids)} patient(s) are fewer than the {n_folds} folds")
    fold = pd.Series(-1, index=pd.Index(ids, name="patient_id"), name="fold", dtype=int)
    if group_by == "site":
        sites = [tissue_source_site(p) for p in ids]
        if None in sites:
            raise InputError(source, f"folds by site need TCGA barcodes as patient ids "
                                     f"(TCGA-SS-PPPP); {ids[sites.index(None)]!r} is not one")
        if len(set(sites)) < n_folds:
            raise InputError(source, f"{len(set(sites))} tissue-source site(s) cannot fill "
                                     f"{n_folds} folds kept apart by site")
        splits = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            ids, groups=sites)
    else:
        splits = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(ids)
    for k, (_, held_out) in enumerate(splits):
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
