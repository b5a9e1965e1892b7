"""Cohort prediction with 1 and 2 worker processes: `predict --manifest --workers N`.

A synthetic CT cohort (`radiogenomics synth`, 100 patients by default) and an untrained
`small` bundle (1 fold, 1,000 genes, preprocessed at 2 mm and up to 8 tumour slices: small
images), exported to ONNX; each setting runs as a fresh `radiogenomics predict` process,
in turn, `--rounds` times. Reported: wall time, time per study, CPU time per study (the
CLI and its workers), the ratio 1 worker / N workers (> 1: faster), and that the tables
are the same (largest difference).

    python -m benchmarks.bench_cohort_predict [--patients 100] [--workers 1 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
GENES = 1_000


def make_inputs(folder: Path, patients: int) -> tuple[Path, Path]:
    """(the exported bundle, the cohort manifest)."""
    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.gencode import gene_table
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.runtime.export import export_bundle
    from RadioGenomicsLib.synth import synthesize_cohort

    cohort = synthesize_cohort(folder / "cohort", patients, 50, "ct", seed=0)
    genes = gene_table().head(GENES).loc[:, ["gene_id", "gene_name"]]
    bundle = folder / "bundle"
    make_untrained_bundle(bundle, ModelConfig.preset("small"), ["ct"], genes,
                          PreprocessSettings(spacing_mm=2.0, max_slices=8).to_dict(), folds=1)
    export_bundle(bundle)
    return bundle, cohort / "manifest.csv"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CLI and its workers, waited for
    return usage.ru_utime + usage.ru_stime


def predict(bundle: Path, manifest: Path, out: Path, workers: int,
            runtime: str) -> tuple[float, float]:
    """(wall s, CPU s of the CLI and its workers)."""
    command = [sys.executable, "-m", "RadioGenomicsLib", "predict", "--model", str(bundle),
               "--manifest", str(manifest), "--out", str(out), "--runtime", runtime,
               "--workers", str(workers)]
    started, cpu = time.perf_counter(), _children_cpu_s()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "RADIOGENOMICS_PROGRESS": "lines"})
    elapsed, cpu = time.perf_counter() - started, _children_cpu_s() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runtime", default="onnxruntime")
    args = parser.parse_args(argv)
    print(f"CPU: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        bundle, manifest = make_inputs(folder, args.patients)
        print(f"{args.patients} synthetic CT studies and a small exported bundle in "
              f"{time.perf_counter() - started:.0f} s")
        times: dict[int, list[float]] = {n: [] for n in args.workers}
        cpus: dict[int, list[float]] = {n: [] for n in args.workers}
        for round_ in range(args.rounds):
            for workers in args.workers:  # interleaved
                out = folder / f"out-{workers}-{round_}"
                wall, cpu = predict(bundle, manifest, out, workers, args.runtime)
                times[workers].append(wall)
                cpus[workers].append(cpu)
                print(f"  round {round_ + 1}, {workers} worker(s): {wall:.1f} s "
                      f"({cpu:.1f} CPU s; load average {os.getloadavg()[0]:.1f})", flush=True)
        tables = {n: pd.read_csv(folder / f"out-{n}-0" / "predictions.tsv", sep="\t",
                                 index_col=0) for n in args.workers}
        base = args.workers[0]
        print(f"\n{'workers':>8} {'wall s':>8} {'per study s':>12} {'CPU s/study':>12} "
              f"{'ratio':>6}  table vs {base}")
        for n in args.workers:
            wall = statistics.median(times[n])
            same = (tables[n].index.equals(tables[base].index)
                    and tables[n].columns.equals(tables[base].columns))
            diff = float(np.max(np.abs(tables[n].to_numpy() - tables[base].to_numpy()))) if same else float("nan")
            ratio = statistics.median(times[base]) / wall
            cpu = statistics.median(cpus[n]) / args.patients
            print(f"{n:>8} {wall:>8.1f} {wall / args.patients:>12.2f} {cpu:>12.2f} {ratio:>6.2f}  "
                  f"{'same rows and genes' if same else 'DIFFERENT'}, max |diff| {diff:.1e}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
