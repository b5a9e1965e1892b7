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
hundreds of trainings. The fits' penalties are chosen per gene, each gene's fit alone, so
several permutations go through one fit as extra columns: each fold's features are
decomposed once per batch, not once per permutation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from RadioGenomicsLib.progress import ProgressBar
from RadioGenomicsLib.stats import pearson_columns

# p = (1 + exceeded) / (permutations + 1) reaches 0.05 only from 19 permutations on
MIN_PERMUTATIONS = 19
BATCH_VALUES = 8_000_000  # target values per fit (patients x genes x permutations)


def permutation_null(refit: Callable[[np.ndarray], np.ndarray], targets: np.ndarray,
                     permutations: int, seed: int, description: str) -> np.ndarray:
    """(permutations, genes) out-of-fold r of `refit` (targets, patients x columns ->
    out-of-fold predictions of the same shape, on fixed folds and features) on
    `targets` with its rows permuted, seeded by `seed`."""
    targets = np.asarray(targets, dtype=np.float64)
    patients, genes = targets.shape
    rng = np.random.default_rng([seed, 104729])
    orders = [rng.permutation(patients) for _ in range(permutations)]
    batch = max(1, BATCH_VALUES // (patients * genes))
    null = np.empty((permutations, genes))
    with ProgressBar(permutations, description) as bar:
        for start in range(0, permutations, batch):
            chosen = orders[start:start + batch]
            shuffled = np.concatenate([targets[order] for order in chosen], axis=1)
            r, _ = pearson_columns(refit(shuffled), shuffled)
            null[start:start + len(chosen)] = r.reshape(len(chosen), genes)
            bar.update(len(chosen))
    return null
