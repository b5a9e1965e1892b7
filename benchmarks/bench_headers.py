"""What checking an image against its header costs, beside reading it.

A CT-sized volume (512 x 512 x SLICES int16, smooth values so that gzip compresses it as
it does a real CT) written as `.nii`, `.nii.gz` and gzip `.nrrd`, and as a DICOM series of
the same slices. For each: `headers.check_image_file` (for DICOM: `series_geometry`, every
slice header and its pixel-data length) against `SimpleITK.ReadImage` (the series reader
for DICOM), the baseline; each the median of `--repeats`. A `.gz` check streams the
whole decompressed voxel data once to count it: that is its cost.

    python -m benchmarks.bench_headers [--slices 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import locale
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib.headers import check_image_file, series_geometry


def volume(slices: int) -> sitk.Image:
    z, y, x = np.ogrid[:slices, :512, :512]
    values = (1000 * np.sin(x / 40.0) * np.cos(y / 50.0) + 3 * z).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.7, 1.25))
    return image


def write_dicom(image: sitk.Image, folder: Path) -> list[str]:
    folder.mkdir()
    before = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.8.498.99"
    files = []
    for k in range(image.GetDepth()):
        plane = image[:, :, k:k + 1]
        tags = {"0008|0060": "CT", "0020|000e": uid, "0020|000d": uid + ".1",
                "0008|0018": f"{uid}.{k + 1}", "0020|0013": str(k + 1),
                "0020|0032": f"0\\0\\{k * 1.25:.4f}", "0020|0037": "1\\0\\0\\0\\1\\0"}
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        files.append(str(folder / f"{k:04d}.dcm"))
        writer.SetFileName(files[-1])
        writer.Execute(plane)
    locale.setlocale(locale.LC_ALL, before)
    return files


def median_time(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    image = volume(args.slices)
    print(f"512 x 512 x {args.slices} int16 ({image.GetNumberOfPixels() * 2 / 2**20:.0f} MiB)")
    print("| file | size | header check | ITK read (baseline) | check / read |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("ct.nii", "ct.nii.gz", "ct.nrrd"):
            path = Path(tmp) / name
            sitk.WriteImage(image, str(path), useCompression=name != "ct.nii")
            check = median_time(lambda: check_image_file(path), args.repeats)
            read = median_time(lambda: sitk.ReadImage(str(path)), args.repeats)
            print(f"| `{name}` | {path.stat().st_size / 2**20:.0f} MiB | {check:.3f} s | "
                  f"{read:.3f} s | {check / read:.2f} |")
        files = write_dicom(image, Path(tmp) / "dicom")
        check = median_time(lambda: series_geometry(files, "bench"), args.repeats)

        def read_series():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            reader.Execute()

        read = median_time(read_series, args.repeats)
        print(f"| DICOM, {len(files)} files | "
              f"{sum(Path(f).stat().st_size for f in files) / 2**20:.0f} MiB | {check:.3f} s | "
              f"{read:.3f} s | {check / read:.2f} |")


if __name__ == "__main__":
    main()
