"""A gene's map from a prediction run, against predicting again to get it.

The study and the untrained paper/small bundles (31,793 genes) of `bench_predict`. For
each model and fold count: one `predict --run` (a fresh process: what getting a map not
asked for up front cost before prediction runs, since it meant predicting again), then
`radiogenomics map --run` for one gene in a fresh process (imports included) and
`run_maps` + writing in this process (what the Slicer module and the viewer do on a
click), each the median of `--repeats`. Also the size of the run folder.

    python -m benchmarks.bench_map [--folds 1 5] [--models paper] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_predict import GENES, make_bundle, make_study


def predict(bundle: Path, study: dict[str, Path], out: Path) -> float:
    command = [sys.executable, "-m", "RadioGenomicsLib", "predict", "--model", str(bundle),
               *[f"--image={c}={study[c]}" for c in ("t1", "t1gd", "t2", "flair")],
               "--segmentation", str(study["seg"]), "--out", str(out / "genes.csv"),
               "--run", str(out / "run"), "--maps", str(out / "maps"), "--map-gene", "EGFR",
               "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def map_process(run: Path, out: Path, gene: str) -> float:
    command = [sys.executable, "-m", "RadioGenomicsLib", "map", "--run", str(run), "--gene",
               gene, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def map_in_process(run_folder: Path, bundle_path: Path, out: Path, gene: str) -> float:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.run import open_run, run_maps, write_maps

    bundle = load_bundle(bundle_path, verify_checksums=False)
    run, bundle = open_run(run_folder, bundle)
    run.slices  # a viewer holds the run open: the first click reads the slices once
    start = time.perf_counter()
    write_maps(run_maps(run, bundle, [gene]), out)
    return time.perf_counter() - start


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["paper"])
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    genes = ["MGMT", "PTEN", "IDH1", "ATRX", "TP53", "NF1", "KRAS"][:args.repeats]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = make_study(folder)
        print(f"{os.cpu_count()} CPU cores; load {os.getloadavg()[0]:.1f}; {GENES} genes")
        for preset in args.models:
            for folds in args.folds:
                bundle = make_bundle(folder, preset, folds)
                out = folder / f"out_{preset}_{folds}"
                rerun = predict(bundle, study, out)
                fresh = statistics.median(map_process(out / "run", out / "maps_cli", g)
                                          for g in genes)
                warm = statistics.median(map_in_process(out / "run", bundle, out / "maps_lib", g)
                                         for g in genes)
                print(f"{preset:>5}, {folds} fold(s): predict again {rerun:.1f} s; map from the "
                      f"run: `map` process {fresh:.2f} s, in-process {warm:.3f} s "
                      f"({rerun / warm:.0f}x faster than predicting again); run folder "
                      f"{folder_mb(out / 'run'):.1f} MB (tokens "
                      f"{(out / 'run' / 'tokens.safetensors').stat().st_size / 2**20:.1f} MB)",
                      flush=True)


if __name__ == "__main__":
    main()
