"""The permutation test's cost: a permuted cross-validation of the ridge head against the
plain one, and (for the record) several permutations per fit against one.

    python -m benchmarks.bench_permutation [--patients 200] [--features 120]
        [--genes 1348] [--permutations 16] [--repeats 3]

Random features and expression (the shapes of a 200-patient MRI cohort after the
median-zero filter: 1,348 genes; 120 pooled-token and geometry columns), 5 folds, the
frozen-ridge head's fit (`frozen.ridge_oof`, RidgeCV with a penalty per gene). The
baseline is one cross-validation of the real targets, which training runs anyway; the
test costs `--permutations` times about that. "k per fit" passes k permutations to one
fit as extra columns (each gene's penalty is chosen alone, so the null is the same,
checked); it was measured no faster, and the library fits one at a time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from RadioGenomicsLib.stats import pearson_columns
from RadioGenomicsLib.training.frozen import ridge_oof


def _null(x: np.ndarray, targets: np.ndarray, folds: np.ndarray, count: int, per_fit: int
          ) -> tuple[np.ndarray, float]:
    """`count` permuted runs, `per_fit` of them in one fit: (null r, seconds per run)."""
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(targets)) for _ in range(count)]
    null = np.empty((count, targets.shape[1]))
    start = time.perf_counter()
    for first in range(0, count, per_fit):
        chosen = orders[first:first + per_fit]
        shuffled = np.concatenate([targets[order] for order in chosen], axis=1)
        r, _ = pearson_columns(ridge_oof(x, shuffled, folds, (0,)), shuffled)
        null[first:first + len(chosen)] = r.reshape(len(chosen), -1)
    return null, (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--features", type=int, default=120)
    parser.add_argument("--genes", type=int, default=1348)
    parser.add_argument("--permutations", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args([] if __name__ != "__main__" else None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.patients, args.features))
    targets = x[:, :10] @ rng.normal(size=(10, args.genes)) * 0.1 + rng.normal(
        size=(args.patients, args.genes))
    folds = np.arange(args.patients) % 5
    load = os.getloadavg()[0]
    plain, seconds, nulls = [], {1: [], 4: [], 16: []}, {}
    for _ in range(args.repeats):  # interleaved, so that drift in the machine hits all alike
        start = time.perf_counter()
        ridge_oof(x, targets, folds, (0,))
        plain.append(time.perf_counter() - start)
        for per_fit in seconds:
            nulls[per_fit], spent = _null(x, targets, folds, args.permutations, per_fit)
            seconds[per_fit].append(spent)
    print(f"{args.patients} patients x {args.features} features x {args.genes} genes, 5 folds, "
          f"{args.permutations} permutations x {args.repeats} repeats (medians), load {load:.1f}")
    print(f"  the plain cross-validation: {np.median(plain):.3f} s")
    for per_fit, spent in seconds.items():
        print(f"  {per_fit:>2} per fit: {np.median(spent):.3f} s per permutation "
              f"({np.median(spent) / np.median(plain):.2f}x the plain cross-validation)")
    print(f"  same null: {all(np.allclose(nulls[k], nulls[1], atol=1e-8) for k in nulls)}")


if __name__ == "__main__":
    main()
