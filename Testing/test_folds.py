"""The shared fold assignment: seeded, order-independent, balanced, and refusing tiny cohorts."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.training.folds import assign_folds, inner_validation_split

PATIENTS = [f"TCGA-02-{i:04d}" for i in range(23)]


def test_folds_cover_every_patient_once_with_balanced_sizes():
    folds = assign_folds(PATIENTS, 5, seed=0)
    assert sorted(folds.index) == sorted(PATIENTS)
    assert set(folds) == set(range(5))
    assert sorted(folds.value_counts()) == [4, 4, 5, 5, 5]


def test_folds_do_not_depend_on_input_order_but_on_the_seed():
    shuffled = PATIENTS[:]
    random.Random(7).shuffle(shuffled)
    first = assign_folds(PATIENTS, 5, seed=3)
    again = assign_folds(shuffled, 5, seed=3)
    assert first.to_dict() == again.to_dict()
    assert first.to_dict() != assign_folds(PATIENTS, 5, seed=4).to_dict()


def test_fewer_patients_than_folds_names_the_manifest():
    with pytest.raises(InputError, match=r"cohort\.csv: 3 patient\(s\) are fewer than the 5 folds"):
        assign_folds(PATIENTS[:3], 5, seed=0, source="cohort.csv")


def test_duplicate_patient_refused():
    with pytest.raises(InputError, match="more than once"):
        assign_folds(PATIENTS + PATIENTS[:1], 5, seed=0)


def test_inner_split_holds_back_a_tenth_deterministically():
    train, val = inner_validation_split(PATIENTS[::-1], 0.1, seed=1)
    assert len(val) == 2 and len(train) == 21
    assert sorted(train + val) == sorted(PATIENTS)
    assert (train, val) == inner_validation_split(PATIENTS, 0.1, seed=1)
    small_train, small_val = inner_validation_split(PATIENTS[:4], seed=0)
    assert len(small_val) == 1 and len(small_train) == 3


def test_folds_by_site_keep_each_site_together():
    patients = [f"TCGA-{site:02d}-{i:04d}" for site in range(1, 9) for i in range(site + 2)]
    folds = assign_folds(patients, 4, seed=1, group_by="site")
    sites = pd.Series([p.split("-")[1] for p in folds.index], index=folds.index)
    assert (folds.groupby(sites).nunique() == 1).all()  # no site split across folds
    assert sorted(folds.unique()) == [0, 1, 2, 3]
    assert folds.equals(assign_folds(list(reversed(patients)), 4, seed=1, group_by="site"))
    with pytest.raises(InputError, match="need TCGA barcodes as patient ids"):
        assign_folds(["P1", "P2", "P3", "P4"], 2, seed=0, group_by="site")
