"""Radiomics baseline on a synthetic cohort: extraction time per patient, the whole run, genes found.

    python -m benchmarks.bench_baseline [--patients 40] [--genes 500] [--modality mri] [--jobs 1]

Runs `radiogenomics baseline`'s function twice on one `synth` cohort: with an empty
feature cache (extraction and all) and again with the cache filled (the ridge folds and
the report alone). The difference per patient is the extraction's cost. The significant
genes are compared with the genes truth.json says are linked to the tumour.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from RadioGenomicsLib.synth import score_against_truth, synthesize_cohort
from RadioGenomicsLib.training.baseline import baseline_recipe, run_baseline


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(function) -> tuple[object, float, float]:
    cpu, start = _cpu_seconds(), time.perf_counter()
    result = function()
    return result, time.perf_counter() - start, _cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--modality", default="mri")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args([] if __name__ != "__main__" else None)
    with tempfile.TemporaryDirectory() as tmp:
        cohort = synthesize_cohort(Path(tmp) / "cohort", args.patients, args.genes,
                                   args.modality, seed=0)
        recipe = baseline_recipe("paper", None, None, None)

        def run(out: str) -> dict:
            return run_baseline(str(cohort / "manifest.csv"), str(cohort / "expression"),
                                str(cohort / "gdc_sample_sheet.tsv"), Path(tmp) / out, recipe,
                                cache_dir=Path(tmp) / "cache", jobs=args.jobs)

        load = os.getloadavg()[0]
        summary, cold_wall, cold_cpu = _timed(lambda: run("cold"))
        _, warm_wall, warm_cpu = _timed(lambda: run("warm"))
        score = score_against_truth(cohort / "truth.json", Path(tmp) / "cold" / "report")
        features = pd.read_csv(Path(tmp) / "cold" / "features.tsv", sep="\t").shape[1] - 1
        per_patient = (cold_wall - warm_wall) / args.patients
        print(f"{args.modality}: {args.patients} patients, {features} features, "
              f"{summary['genes']} genes evaluated ({score['linked']} truly linked), "
              f"jobs {args.jobs}, load average {load:.1f} before / {os.getloadavg()[0]:.1f} after\n"
              f"  cold (extraction + ridge + report): wall {cold_wall:.1f} s, CPU {cold_cpu:.1f} s\n"
              f"  warm (cached features): wall {warm_wall:.1f} s, CPU {warm_cpu:.1f} s\n"
              f"  extraction: {per_patient:.2f} s per patient (wall), "
              f"{(cold_cpu - warm_cpu) / args.patients:.2f} s CPU\n"
              f"  significant at 0.05: {score['significant']}, of them truly linked "
              f"{score['significant_linked']}, null {score['null_significant']}; "
              f"significant at 0.01: {summary['significant_genes_0.01']}; "
              f"mean r {summary['pearson_mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
