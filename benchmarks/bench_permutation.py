"""The permutation test's cost: permuted cross-validations of the ridge head per second,
several permutations per fit (as `--permutations` runs them) against one per fit.

    python -m benchmarks.bench_permutation [--patients 200] [--features 120]
        [--genes 1348] [--permutations 20]

Random features and expression (the shapes of a 200-patient MRI cohort after the
median-zero filter: 1,348 genes; 120 pooled-token and geometry columns), 5 folds, the
frozen-ridge head's fit (`frozen.ridge_oof`, RidgeCV with a penalty per gene). Both ways
give the same null (checked); the ratio is what batching saves.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from RadioGenomicsLib.training import permutation
from RadioGenomicsLib.training.frozen import ridge_oof


def _timed(count: int, x: np.ndarray, targets: np.ndarray, folds: np.ndarray
           ) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    null = permutation.permutation_null(lambda y: ridge_oof(x, y, folds, (0,)), targets, count,
                                        seed=0, description="permuted cross-validations")
    return null, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--features", type=int, default=120)
    parser.add_argument("--genes", type=int, default=1348)
    parser.add_argument("--permutations", type=int, default=20)
    args = parser.parse_args([] if __name__ != "__main__" else None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.patients, args.features))
    targets = x[:, :10] @ rng.normal(size=(10, args.genes)) * 0.1 + rng.normal(
        size=(args.patients, args.genes))
    folds = np.arange(args.patients) % 5
    load = os.getloadavg()[0]
    batched, batched_s = _timed(args.permutations, x, targets, folds)
    default = permutation.BATCH_VALUES
    permutation.BATCH_VALUES = 1  # one permutation per fit
    try:
        single, single_s = _timed(args.permutations, x, targets, folds)
    finally:
        permutation.BATCH_VALUES = default
    per_fit = max(1, default // (args.patients * args.genes))
    print(f"{args.patients} patients x {args.features} features x {args.genes} genes, 5 folds, "
          f"{args.permutations} permutations, load {load:.1f}")
    print(f"  {per_fit} permutations per fit: {batched_s / args.permutations:.3f} s each")
    print(f"  one permutation per fit:  {single_s / args.permutations:.3f} s each "
          f"({single_s / batched_s:.2f}x the batched time)")
    print(f"  same null: {np.allclose(batched, single, atol=1e-8)}")


if __name__ == "__main__":
    main()
