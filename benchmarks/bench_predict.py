"""End-to-end `radiogenomics predict` on a realistic study: time and peak memory.

A 4-channel brain MRI of 240 x 240 x 155 at 1 mm (Colin27 from `make testdata`, padded,
with four contrasts made from it) and a tumour of about 40 axial slices; bundles of the
`paper` and `small` models with 31,793 genes (untrained weights: speed does not depend
on them). Each run is a fresh process (reading, preprocessing, encoding, the head,
writing the table and one map), timed with its peak resident memory.

    python -m benchmarks.bench_predict [--folds 1 5] [--models paper small]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from RadioGenomicsLib.bundle import make_untrained_bundle
from RadioGenomicsLib.gencode import gene_table
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.preprocess import PreprocessSettings
from Testing.fetch_data import data_root

GENES = 31_793
SIZE = (240, 240, 155)
# the CLI in a child that reports its peak resident memory (VmHWM: ru_maxrss would carry the
# parent's from before the exec) when it exits
MEASURED = ("import atexit, runpy, sys; atexit.register(lambda: print('PEAK_RSS_KB', [line.split()[1]"
            " for line in open('/proc/self/status') if line.startswith('VmHWM')][0], file=sys.stderr)); "
            "sys.argv = ['radiogenomics'] + sys.argv[1:]; "
            "runpy.run_module('RadioGenomicsLib', run_name='__main__')")


def make_study(folder: Path) -> dict[str, Path]:
    head = sitk.Cast(sitk.ReadImage(str(data_root() / "mricron" / "ch2.nii.gz")), sitk.sitkFloat32)
    head = sitk.Resample(head, SIZE, sitk.Transform(), sitk.sitkLinear,
                         [90.0 + 30.0, 125.0 + 12.0, -71.0 + 13.0], [1.0] * 3,
                         head.GetDirection(), 0.0, sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(head)
    z, y, x = np.indices(values.shape)
    tumour = ((z - 85) / 20.0) ** 2 + ((y - 110) / 22.0) ** 2 + ((x - 150) / 18.0) ** 2 <= 1
    contrasts = {"t1": values, "t1gd": values + 60.0 * tumour, "t2": values.max() - values,
                 "flair": np.sqrt(np.clip(values, 0, None)) * 10 + 40.0 * tumour}
    paths = {}
    for name, array in {**contrasts, "seg": tumour.astype(np.uint8)}.items():
        image = sitk.GetImageFromArray(array.astype(np.uint8 if name == "seg" else np.float32))
        image.CopyInformation(head)
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    return paths


def make_bundle(folder: Path, preset: str, folds: int) -> Path:
    genes = gene_table()
    genes = genes[genes["gene_type"] == "protein_coding"].head(GENES)
    extra = gene_table().drop(genes.index).head(GENES - len(genes))
    chosen = pd.concat([genes, extra])[["gene_id", "gene_name"]].reset_index(drop=True)
    path = folder / f"{preset}_{folds}"
    make_untrained_bundle(path, ModelConfig.preset(preset), ["t1", "t1gd", "t2", "flair"],
                          chosen, PreprocessSettings().to_dict(), folds=folds)
    return path


def run_predict(bundle: Path, study: dict[str, Path], out: Path, folds: str) -> tuple[float, float]:
    """(wall seconds, peak RSS GB) of one predict process."""
    command = [sys.executable, "-c", MEASURED, "predict", "--model", str(bundle),
               *[f"--image={c}={study[c]}" for c in ("t1", "t1gd", "t2", "flair")],
               "--segmentation", str(study["seg"]), "--out", str(out / "genes.csv"),
               "--maps", str(out / "maps"), "--map-gene", "EGFR", "--device", "cpu",
               "--folds", folds]
    start = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, encoding="utf-8",
                            errors="replace")
    wall = time.perf_counter() - start
    peak_kb = int(result.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    return wall, peak_kb / 1024 ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["paper", "small"])
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = make_study(folder)
        print(f"study: 4 channels {SIZE} at 1 mm, tumour of "
              f"{int(sitk.GetArrayViewFromImage(sitk.ReadImage(str(study['seg']))).sum())} voxels;"
              f" {os.cpu_count()} CPU cores; load {os.getloadavg()[0]:.1f}")
        for preset in args.models:
            for folds in args.folds:
                bundle = make_bundle(folder, preset, folds)
                times = [run_predict(bundle, study, folder / "out", "all")
                         for _ in range(args.repeats)]
                best = min(t for t, _ in times)
                print(f"{preset:>5}, {folds} fold model(s), {GENES} genes: best of "
                      f"{args.repeats} {best:.1f} s, peak RSS {max(m for _, m in times):.2f} GB",
                      flush=True)


if __name__ == "__main__":
    main()
