"""The permutation test's null: the same cross-validation re-run on permuted expression."""

from __future__ import annotations

import numpy as np

from RadioGenomicsLib.training import permutation


def _columnwise(y: np.ndarray) -> np.ndarray:
    """A stand-in fit that, like the ridges' per-gene penalties, treats each column alone,
    and whose r depends on which patient a value lands on (a weight per row)."""
    return y * np.linspace(-1.0, 2.0, len(y))[:, None] + np.sin(3 * y)


def test_the_null_permutes_whole_rows_batch_by_batch_and_reproducibly(monkeypatch):
    """Every gene of one permuted run moves by the same row order (genes keep their
    correlation, which the step-down needs); batching several runs into one fit gives
    what fitting them one by one gives; the seed fixes the orders."""
    targets = np.random.default_rng(0).normal(size=(30, 4))
    seen = []

    def recording(y: np.ndarray) -> np.ndarray:
        seen.append(y.copy())
        return _columnwise(y)

    batched = permutation.permutation_null(recording, targets, 25, seed=3, description="test")
    assert batched.shape == (25, 4) and len(seen) == 1  # 3,000 values: one fit
    runs = seen[0].reshape(30, 25, 4)
    for run in range(25):
        order = np.argsort(np.argsort(runs[:, run, 0]))  # the rank of each row's first gene
        np.testing.assert_array_equal(runs[:, run], targets[np.argsort(targets[:, 0])][order])
    assert len({tuple(runs[:, run, 0]) for run in range(25)}) == 25  # 25 different orders

    monkeypatch.setattr(permutation, "BATCH_VALUES", 30 * 4 * 2)  # two runs per fit
    seen.clear()
    two_by_two = permutation.permutation_null(recording, targets, 25, 3, "test")
    assert len(seen) == 13
    np.testing.assert_allclose(two_by_two, batched, rtol=1e-12)
    other_seed = permutation.permutation_null(_columnwise, targets, 25, 4, "test")
    assert not np.allclose(other_seed, batched)
