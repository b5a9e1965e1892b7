"""End-to-end `radiogenomics predict` on each runtime and precision: time, peak memory.

The study and the bundle of `bench_predict` (Colin27 made into a 4-channel MRI with a
tumour, 32 model-ready slices; the `paper` model, 31,793 genes, untrained weights: speed
does not depend on them), exported once with `radiogenomics export`. Every run is a fresh
process writing the table and one map; 1 fold (`--folds first`) and 5 folds; the
settings are interleaved round by round and the median is reported. The first run of
each light setting is timed apart (it compiles and, for bf16, runs the precision check;
later runs use the cache). Where the check refuses bf16 (an untrained bundle's genes lie
close together, so the 50th and 51st may trade places), the refusal is printed and bf16
is timed with the verdict overridden, labelled so. Also: the CPU's instruction sets,
import times and installed sizes.

    python -m benchmarks.bench_runtime [--repeats 3] [--models paper] [--folds 1 5]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_predict import GENES, MEASURED, make_bundle, make_study
from RadioGenomicsLib.runtime import cpu_flags, cpu_has_bf16, cpu_name

SETTINGS = [("torch", "float32"), ("torch", "bf16"), ("onnxruntime", "float32"),
            ("openvino", "float32"), ("openvino", "bf16")]
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
         "amx_bf16", "amx_int8")
DISTRIBUTIONS = ("torch", "monai", "onnxruntime", "openvino", "onnx", "onnxscript")
IMPORTS = {"torch + MONAI": "import torch, monai.transforms, monai.networks",
           "onnxruntime": "import onnxruntime", "openvino": "import openvino",
           "CLI (parser built)": "from RadioGenomicsLib.cli import build_parser; build_parser()"}


def run_predict(bundle: Path, study: dict[str, Path], out: Path, folds: str, runtime: str,
                precision: str, cache: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GB) of one predict process."""
    command = [sys.executable, "-c", MEASURED, "predict", "--model", str(bundle),
               *[f"--image={c}={study[c]}" for c in ("t1", "t1gd", "t2", "flair")],
               "--segmentation", str(study["seg"]), "--out", str(out / "genes.csv"),
               "--maps", str(out / "maps"), "--map-gene", "EGFR", "--device", "cpu",
               "--folds", folds, "--runtime", runtime, "--precision", precision]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace",
                            env={**os.environ, "RADIOGENOMICS_CACHE": str(cache)})
    wall = time.perf_counter() - start
    if result.returncode:
        lines = [line for line in result.stderr.splitlines() if "error:" in line] or [result.stderr]
        raise RuntimeError(f"{runtime} {precision}: {lines[-1].split('radiogenomics ')[-1].strip()}")
    peak_kb = int(result.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    return wall, peak_kb / 1024 ** 2


def override_refusal(bundle: Path, cache: Path, folds: str, runtime: str = "openvino") -> None:
    """Record a passing bf16 verdict, so that bf16's speed can be measured anyway."""
    import json

    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.runtime import precision

    os.environ["RADIOGENOMICS_CACHE"] = str(cache)
    try:
        path = precision._verdict_path(load_bundle(bundle, verify_checksums=False), runtime,
                                       "bf16", folds, "first study")
    finally:
        del os.environ["RADIOGENOMICS_CACHE"]
    path.write_text(json.dumps({"problem": None, "note": "overridden by bench_runtime"}))


def installed_mb(name: str) -> float | None:
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return sum(f.size or 0 for f in files) / 1e6


def import_seconds(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
    return time.perf_counter() - start


def describe_machine() -> None:
    flags = cpu_flags()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; "
          + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS))
    print("installed (MB, the distribution alone): " + ", ".join(
        f"{name} {size:.0f}" for name in DISTRIBUTIONS if (size := installed_mb(name))))
    print("import (fresh process, s): " + ", ".join(
        f"{name} {import_seconds(code):.2f}" for name, code in IMPORTS.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["paper"])
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    from RadioGenomicsLib.runtime.export import export_bundle

    describe_machine()
    settings = [s for s in SETTINGS if s[1] == "float32" or cpu_has_bf16()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = make_study(folder)
        for preset in args.models:
            bundle = make_bundle(folder, preset, max(args.folds))
            start = time.perf_counter()
            export_bundle(bundle)
            print(f"{preset}: export of {max(args.folds)} fold models "
                  f"{time.perf_counter() - start:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
            cases = [(folds, runtime, precision) for folds in args.folds
                     for runtime, precision in settings]
            first, times, overridden = {}, {case: [] for case in cases}, set()
            for case in list(cases):  # cold: compiles, and for bf16 the precision check
                folds, runtime, precision = case
                cache = folder / "cache" / f"{runtime}-{precision}"
                try:
                    first[case] = run_predict(bundle, study, folder / "out",
                                              "first" if folds == 1 else "all", runtime,
                                              precision, cache)[0]
                except RuntimeError as refused:  # bf16 failing the precision check
                    print(f"{folds} fold(s): {refused}", flush=True)
                    override_refusal(bundle, cache, "first" if folds == 1 else "all", runtime)
                    overridden.add(case)
                    first[case] = run_predict(bundle, study, folder / "out",
                                              "first" if folds == 1 else "all", runtime,
                                              precision, cache)[0]
            for _ in range(args.repeats):
                for case in cases:
                    folds, runtime, precision = case
                    cache = folder / "cache" / f"{runtime}-{precision}"
                    times[case].append(run_predict(bundle, study, folder / "out",
                                                   "first" if folds == 1 else "all", runtime,
                                                   precision, cache))
            print(f"\n| {preset}, {GENES} genes | folds | median s (min-max) | ratio to torch | "
                  f"first run s | peak RSS GB |")
            print("|---|---|---|---|---|---|")
            for case in cases:
                folds, runtime, precision = case
                walls = [w for w, _ in times[case]]
                base = statistics.median(w for w, _ in times[(folds, "torch", "float32")])
                note = " (check overridden)" if case in overridden else ""
                print(f"| {runtime} {precision}{note} | {folds} | {statistics.median(walls):.1f} "
                      f"({min(walls):.1f}-{max(walls):.1f}) | "
                      f"{base / statistics.median(walls):.2f}x | {first[case]:.1f} | "
                      f"{max(m for _, m in times[case]):.2f} |", flush=True)
            print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
