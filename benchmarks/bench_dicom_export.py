"""The DICOM export: the structured report's cost per gene, and a whole export of a CT.

`python -m benchmarks.bench_dicom_export [--genes N ...]` prints Markdown tables:
1. the Comprehensive SR of an N-gene table built by `dicom_export.gene_report` (gene
   entries added after highdicom's constructor) against the same tree handed whole to
   highdicom's constructor (which copies and re-parses it), and the seconds to save it;
2. `dicom_export.export_study` of a 512 x 512 x 64 CT series with a ball tumour, two gene
   maps and a 1000-gene table: SEG, 2 Parametric Maps, SR, PDF and Secondary Capture.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk

from RadioGenomicsLib import dicom_export as export
from RadioGenomicsLib.imaging import read_volume

CARD = export.ModelCard("bench", "0.1.0", "log10(1+x) of FPKM-UQ", "bench")


def _table(genes: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    predicted = np.sort(rng.uniform(0, 3, genes))[::-1]
    return pd.DataFrame({"rank": np.arange(1, genes + 1),
                         "gene_id": [f"ENSG{i:011d}.1" for i in range(genes)],
                         "gene_name": [f"G{i}" for i in range(genes)], "predicted": predicted,
                         "lower": predicted - 0.2, "upper": predicted + 0.2,
                         "cohort_z": np.linspace(3, -3, genes), "cohort_percentile": 50.0,
                         "validation_r": 0.3, "validation_p_adj": 0.01,
                         "reliable": np.arange(genes) % 2 == 0})


def _whole_tree_report(sources, table: pd.DataFrame) -> hd.sr.ComprehensiveSR:
    """The baseline: every gene entry inside the tree given to highdicom's constructor."""
    unit = export.unit_code(CARD.units)
    root = hd.sr.ContainerContentItem(export.REPORT_TITLE)
    root.ContentSequence = [export._gene_entry(row, unit) for row in table.itertuples()]
    return hd.sr.ComprehensiveSR(evidence=list(sources), content=root,
                                 series_instance_uid=hd.UID(), series_number=1,
                                 sop_instance_uid=hd.UID(), instance_number=1,
                                 manufacturer="bench")


def _seconds(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _ct_series(folder: Path, size: int = 512, planes: int = 64) -> tuple[sitk.Image, sitk.Image]:
    from Testing.dicom_series import sphere, write_ct_series

    rng = np.random.default_rng(1)
    volume = sitk.GetImageFromArray(rng.normal(0, 200, (planes, size, size)).astype(np.int16))
    volume.SetSpacing((0.7, 0.7, 2.5))
    volume.SetOrigin((-180.0, -180.0, -80.0))
    write_ct_series(volume, folder)
    grid = read_volume(folder)
    return grid, sphere(grid, 30.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, nargs="+", default=[500, 2000])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        grid, tumour = _ct_series(folder / "ct")
        sources = [pydicom.dcmread(p, stop_before_pixels=True)
                   for p in sorted((folder / "ct").iterdir())]
        print("| genes | whole tree to highdicom (baseline) | entries added after (ours) "
              "| ratio | save | file |\n|---|---|---|---|---|---|")
        for genes in args.genes:
            table = _table(genes)
            baseline, _ = _seconds(lambda: _whole_tree_report(sources, table))
            ours, report = _seconds(lambda: export.gene_report(sources, table, CARD))
            buffer = io.BytesIO()
            save, _ = _seconds(lambda: report.save_as(buffer, enforce_file_format=True))
            print(f"| {genes} | {baseline:.2f} s | {ours:.2f} s | {baseline / ours:.1f}x "
                  f"| {save:.2f} s | {len(buffer.getvalue()) / 2**20:.1f} MiB |")
        maps = {}
        for gene, slope in (("G0", 0.01), ("G1", -0.01)):
            values = sitk.GetArrayFromImage(tumour).astype(np.float32)
            z, y, x = np.indices(values.shape)
            planes = values.any(axis=(1, 2))
            maps[gene] = sitk.GetImageFromArray(np.where(planes[:, None, None],
                                                         1 + slope * x, 0).astype(np.float32))
            maps[gene].CopyInformation(grid)
        seconds, files = _seconds(lambda: export.export_study(
            folder / "out", folder / "ct", tumour, maps, _table(1000), CARD))
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in files)
        print(f"\nexport_study, 512x512x64 CT, 2 maps, 1000-gene SR: {seconds:.1f} s ({sizes})")


if __name__ == "__main__":
    main()
