"""Synthetic cohort: 200 patients × 2,000 genes (MRI, and CT), wall and CPU time.

    python -m benchmarks.bench_synth [--patients 200] [--genes 2000] [--modality mri ct]

Wall time is what a user waits; CPU time (this process and its workers) says what the
run costs when the cores are shared. Aim: 200 × 2,000 under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from RadioGenomicsLib.synth import synthesize_cohort


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--modality", nargs="+", default=["mri", "ct"])
    args = parser.parse_args([] if __name__ != "__main__" else None)
    for modality in args.modality:
        with tempfile.TemporaryDirectory() as tmp:
            load_before = os.getloadavg()[0]
            cpu, start = _cpu_seconds(), time.perf_counter()
            out = synthesize_cohort(Path(tmp) / "cohort", args.patients, args.genes, modality)
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"{modality}: {args.patients} patients × {args.genes} genes on "
                  f"{os.cpu_count()} cores: wall {wall:.1f} s, CPU {cpu:.1f} s "
                  f"({cpu / args.patients:.2f} s per patient), {size / 1e6:.0f} MB, "
                  f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after",
                  flush=True)


if __name__ == "__main__":
    main()
