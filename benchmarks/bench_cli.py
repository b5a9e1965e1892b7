"""How long `radiogenomics --help` takes: the command line's parser alone, in fresh processes.

`python -m RadioGenomicsLib --help` and `... predict --help` (what the `radiogenomics`
entry point runs), each in a new process, against the baseline of a bare interpreter
(`python -c pass`) measured in the same run; for scale, a process importing the library
modules the parser used to load at start (report, expression, cohort, synth, preprocess).
Median of `--repeats` runs each, with the load average of the machine.

    python -m benchmarks.bench_cli [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ("import RadioGenomicsLib.report, RadioGenomicsLib.expression, RadioGenomicsLib.cohort, "
          "RadioGenomicsLib.synth, RadioGenomicsLib.preprocess")
COMMANDS = {
    "`python -c pass` (baseline)": ["-c", "pass"],
    "`radiogenomics --help`": ["-m", "RadioGenomicsLib", "--help"],
    "`radiogenomics predict --help`": ["-m", "RadioGenomicsLib", "predict", "--help"],
    "the modules `--help` loaded before": ["-c", BEFORE],
}


def median_seconds(arguments: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *arguments], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="runs per command (median)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}; "
          f"median of {args.repeats}")
    print("| command (fresh process) | seconds | ratio to `python -c pass` |")
    print("|---|---|---|")
    baseline = None
    for name, arguments in COMMANDS.items():
        seconds = median_seconds(arguments, args.repeats)
        baseline = baseline or seconds
        print(f"| {name} | {seconds:.3f} | {seconds / baseline:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
