"""Skull stripping against a reference brain mask: Colin27 `ch2` vs its BET mask `ch2bet`.

    python -m benchmarks.bench_skullstrip      (after `make testdata`)
"""

from __future__ import annotations

import time

import SimpleITK as sitk

from RadioGenomicsLib import masks
from RadioGenomicsLib.imaging import read_volume
from Testing.fetch_data import data_root


def main() -> None:
    folder = data_root() / "mricron"
    head = read_volume(folder / "ch2.nii.gz")
    reference = sitk.ReadImage(str(folder / "ch2bet.nii.gz")) > 0
    print(f"Colin27 ch2: {head.GetSize()} at {head.GetSpacing()} mm; "
          f"BET brain {sitk.GetArrayViewFromImage(reference).sum() / 1e6:.3f} L")
    for working_mm in (1.0, 1.5, 2.0):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            brain = masks.strip_skull(head, working_mm)
            times.append(time.perf_counter() - start)
        print(f"working grid {working_mm} mm: Dice {masks.dice(brain, reference):.4f}, "
              f"best of 3 {min(times):.2f} s")


if __name__ == "__main__":
    main()
