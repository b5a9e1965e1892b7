"""End-to-end `predict` of a demo-like bundle (the `frozen-ridge` shape: the `small`
encoder, mean pooling and geometry) on torch, ONNX Runtime and OpenVINO.

A synthetic study (`radiogenomics synth --patients 2 --genes 500`, its first patient), a
5-fold untrained bundle of the `frozen-ridge` recipe's model and preprocessing with 500
genes (speed does not depend on the weights), exported once. Every run is a fresh process
writing the table and one map; the settings are interleaved round by round, the median
reported; the first run of each light setting (compiling, and for bf16 the precision
check) is timed apart, as in `bench_runtime`.

    python -m benchmarks.bench_light_heads [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.bench_runtime import SETTINGS, override_refusal, run_predict
from RadioGenomicsLib.runtime import cpu_has_bf16, cpu_name

FOLDS, GENES = 5, 500


def make_study(folder: Path) -> dict[str, Path]:
    from RadioGenomicsLib.cli import main

    main(["synth", "--out", str(folder / "cohort"), "--patients", "2", "--genes", str(GENES),
          "--seed", "0", "--jobs", "1"])
    row = pd.read_csv(folder / "cohort" / "manifest.csv").iloc[0]
    return {**{c: folder / "cohort" / row[c] for c in ("t1", "t1gd", "t2", "flair")},
            "seg": folder / "cohort" / row["segmentation"]}


def make_bundle(folder: Path) -> Path:
    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.gencode import gene_table
    from RadioGenomicsLib.training.recipe import PRESETS

    genes = gene_table()
    genes = genes[genes["gene_type"] == "protein_coding"]
    genes = pd.concat([genes[genes["gene_name"] == "EGFR"], genes[genes["gene_name"] != "EGFR"]])
    recipe = PRESETS["frozen-ridge"]
    path = folder / "frozen_ridge_shape"
    make_untrained_bundle(path, recipe.model, ["t1", "t1gd", "t2", "flair"],
                          genes.head(GENES)[["gene_id", "gene_name"]].reset_index(drop=True),
                          recipe.preprocessing.to_dict(), folds=FOLDS)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    from RadioGenomicsLib.runtime.export import export_bundle

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
    settings = [s for s in SETTINGS if s[1] == "float32" or cpu_has_bf16()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study, bundle = make_study(folder), make_bundle(folder)
        export_bundle(bundle)
        first, times, overridden = {}, {s: [] for s in settings}, set()
        for setting in settings:
            runtime, precision = setting
            cache = folder / "cache" / f"{runtime}-{precision}"
            try:
                first[setting] = run_predict(bundle, study, folder / "out", "all", runtime,
                                             precision, cache)[0]
            except RuntimeError as refused:  # bf16 failing the precision check
                print(f"refused: {refused}", flush=True)
                override_refusal(bundle, cache, "all")
                overridden.add(setting)
                first[setting] = run_predict(bundle, study, folder / "out", "all", runtime,
                                             precision, cache)[0]
        for _ in range(args.repeats):
            for setting in settings:
                runtime, precision = setting
                cache = folder / "cache" / f"{runtime}-{precision}"
                times[setting].append(run_predict(bundle, study, folder / "out", "all",
                                                  runtime, precision, cache))
        base = statistics.median(w for w, _ in times[("torch", "float32")])
        print(f"\n| frozen-ridge shape, {FOLDS} folds, {GENES} genes | median s (min-max) | "
              f"ratio to torch | first run s | peak RSS GB |")
        print("|---|---|---|---|---|")
        for setting in settings:
            walls = [w for w, _ in times[setting]]
            note = " (check overridden)" if setting in overridden else ""
            print(f"| {' '.join(setting)}{note} | {statistics.median(walls):.2f} "
                  f"({min(walls):.2f}-{max(walls):.2f}) | {base / statistics.median(walls):.2f}x | "
                  f"{first[setting]:.2f} | {max(m for _, m in times[setting]):.2f} |", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - start:.0f} s")
