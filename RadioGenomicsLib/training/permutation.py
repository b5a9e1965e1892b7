"""The permutation test's null: a method's own cross-validation re-run on expression rows
shuffled across patients.

The paper's test reads each gene's pooled out-of-fold r against the t distribution, as if
the patients' predictions were independent. They are not: the folds train on one another,
so a gene that by chance lines up with an image direction leans the same way in every
fold, and null r spreads wider than t says (at 200 patients an SD of 0.083-0.094 where t
gives 0.071; Holm-Sidak then passes 1-2 genes in a sixth of permuted cohorts). Re-running
the very same folds and fits on permuted rows draws every gene's r under that dependence;
`stats.permutation_p` turns those draws into family-wise p-values.

Whole rows are permuted, so genes keep their correlation with one another (the step-down
maxT needs it). Only closed-form fits can be re-run hundreds of times (the ridge head on
frozen tokens, the radiomics baseline, the fusion); a gradient-trained model would need
hundreds of trainings. One permutation per fit: passing several as extra columns of one
fit (the penalties are chosen gene by gene) was no faster (benchmarks/bench_permutation.py).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from RadioGenomicsLib.progress import progress
from RadioGenomicsLib.stats import pearson_columns

# p = (1 + exceeded) / (permutations + 1) reaches 0.05 only from 19 permutations on
MIN_PERMUTATIONS = 19


def permutation_null(refit: Callable[[np.ndarray], np.ndarray], targets: np.ndarray,
                     permutations: int, seed: int, description: str) -> np.ndarray:
    """(permutations, genes) out-of-fold r of `refit` (targets, patients x genes -> their
    out-of-fold predictions, on fixed folds and features) on `targets` with its rows
    permuted, seeded by `seed`."""
    targets = np.asarray(targets, dtype=np.float64)
    rng = np.random.default_rng([seed, 104729])
    null = np.empty((permutations, targets.shape[1]))
    for run in progress(range(permutations), description):
        shuffled = targets[rng.permutation(len(targets))]
        null[run], _ = pearson_columns(refit(shuffled), shuffled)
    return null
