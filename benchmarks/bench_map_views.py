"""What maps restricted to the tumour and the map picture add to `run_maps`.

The brain study of `bench_predict` (a 41-slice tumour on a 1 mm grid) through an
untrained small bundle (1 fold, 31,793 genes). In one process, for one gene, each the
median of `--repeats`: the map as before (token grids onto the study grid, zero outside
the slabs), the map in the tumour only (NaN outside, gaps between the encoded slabs
filled from the nearest slab), the same with a 5 mm margin, without filling, and the
PNG picture (`save_run_picture`, which reads the study again). Also how many of the
tumour's slices the encoded slabs reach.

    python -m benchmarks.bench_map_views [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.bench_predict import make_bundle, make_study


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.maps import values_to_volume
    from RadioGenomicsLib.predict import map_gene_indices
    from RadioGenomicsLib.run import (StudyInputs, predict_study, run_maps, save_run_picture,
                                      token_maps)

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        study = make_study(folder)
        bundle = load_bundle(make_bundle(folder, "small", 1))
        inputs = StudyInputs({c: study[c] for c in ("t1", "t1gd", "t2", "flair")}, study["seg"])
        run = predict_study(bundle, inputs, folder / "run", "cpu")
        run.slices, run.tumour  # read once, as a viewer holding the run open
        gene = "EGFR"

        def before():
            grid = token_maps(run, bundle, map_gene_indices(bundle, [gene]))[0]
            return values_to_volume(grid, run.slices)

        rows = [("before: zero outside the slabs", median_seconds(before, args.repeats))]
        for label, options in (("tumour only, gaps filled (default)", {}),
                               ("tumour + 5 mm, gaps filled", {"margin_mm": 5.0}),
                               ("tumour only, gaps left NaN", {"fill_gaps": False})):
            rows.append((label, median_seconds(lambda: run_maps(run, bundle, [gene], **options),
                                               args.repeats)))
        maps = run_maps(run, bundle, [gene])
        rows.append(("picture (PNG, 1 gene, 6 slices)", median_seconds(
            lambda: save_run_picture(run, maps, folder / "map.png"), args.repeats)))
        tumour = sitk.GetArrayFromImage(run.tumour) > 0
        gaps = sitk.GetArrayFromImage(run_maps(run, bundle, [gene], fill_gaps=False)[gene])
        tumour_slices = np.flatnonzero(tumour.any(axis=(1, 2)))
        reached = np.flatnonzero((np.isfinite(gaps) & tumour).any(axis=(1, 2)))
        print(f"tumour: {len(tumour_slices)} slices, {int(tumour.sum())} voxels; encoded slabs "
              f"reach {len(reached)} slices and {np.isfinite(gaps[tumour]).mean():.0%} of its "
              f"voxels; the model saw {run.info['slices']} slices")
        base = rows[0][1]
        print("| map of one gene | seconds | vs before |\n|---|---|---|")
        for label, seconds in rows:
            print(f"| {label} | {seconds:.3f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
