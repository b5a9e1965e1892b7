"""The permutation test's null: the same cross-validation re-run on permuted expression."""

from __future__ import annotations

import numpy as np

from RadioGenomicsLib.stats import pearson_columns
from RadioGenomicsLib.training import permutation


def _fit(y: np.ndarray) -> np.ndarray:
    """A stand-in fit whose r depends on which patient a value lands on (a weight per row)."""
    return y * np.linspace(-1.0, 2.0, len(y))[:, None] + np.sin(3 * y)


def test_the_null_permutes_whole_rows_and_is_seeded():
    """Every gene of one permuted run moves by the same row order (genes keep their
    correlation, which the step-down needs); each run's r is the fit's on its rows; the
    seed fixes the orders and another seed draws others."""
    targets = np.random.default_rng(0).normal(size=(30, 4))
    seen = []

    def recording(y: np.ndarray) -> np.ndarray:
        seen.append(y.copy())
        return _fit(y)

    null = permutation.permutation_null(recording, targets, 25, seed=3, description="test")
    assert null.shape == (25, 4) and len(seen) == 25
    by_first_gene = np.argsort(targets[:, 0])
    for run, shuffled in enumerate(seen):
        order = by_first_gene[np.argsort(np.argsort(shuffled[:, 0]))]  # the rows it moved
        np.testing.assert_array_equal(shuffled, targets[order])
        np.testing.assert_allclose(null[run], pearson_columns(_fit(shuffled), shuffled)[0])
    assert len({tuple(s[:, 0]) for s in seen}) == 25  # 25 different orders
    again = permutation.permutation_null(_fit, targets, 25, 3, "test")
    np.testing.assert_array_equal(again, null)
    assert not np.allclose(permutation.permutation_null(_fit, targets, 25, 4, "test"), null)
