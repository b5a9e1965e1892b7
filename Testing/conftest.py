"""Shared fixtures: where the fetched real data lies, and the CLI run in-process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from Testing.fetch_data import SOURCES, data_root

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Root of the fetched data (`make testdata`); fails loudly when it was not fetched."""
    missing = [s.name for s in SOURCES if not (s.folder / ".complete").exists()]
    if missing:
        pytest.fail(f"test data not fetched ({', '.join(missing)}): run `make testdata`")
    return data_root()


@pytest.fixture(scope="session")
def slicerio_data() -> Path:
    """slicerio's own test CT (CTChest4.nrrd) and segmentation (Segmentation.seg.nrrd)."""
    import slicerio

    return Path(slicerio.__file__).parent / "data"


def lung_files(testdata: Path) -> tuple[Path, Path]:
    """The PyRadiomics lung CT and its tumour labelmap."""
    data = testdata / "pyradiomics"
    return data / "lung1_image.nrrd", data / "lung1_label.nrrd"


@pytest.fixture(scope="session")
def lung(testdata):
    """The lung study as files (test files that want other lung fixtures define their own)."""
    return lung_files(testdata)


@pytest.fixture(scope="session")
def lung_study(testdata):
    """The PyRadiomics lung CT and its tumour, read once for the whole session."""
    from RadioGenomicsLib.imaging import load_study

    image, label = lung_files(testdata)
    return load_study({"ct": image}, label)


@pytest.fixture
def run_cli(capsys):
    """Run `radiogenomics ARGS...` in-process: returns (exit code, stdout, stderr)."""
    from RadioGenomicsLib.cli import main

    def run(*args: str | os.PathLike):
        try:
            code = main([os.fspath(a) for a in args])
        except SystemExit as exit_:  # argparse usage errors
            code = exit_.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def coloured_outside_outline(png, boxes) -> tuple[int, int]:
    """(coloured map pixels, those outside the filled red outline) over the panels."""
    from PIL import Image
    from scipy.ndimage import binary_dilation, binary_fill_holes

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    total = outside = 0
    for left, top, right, bottom in boxes:
        part = rgb[top:bottom, left:right]
        red, green, blue = part[..., 0], part[..., 1], part[..., 2]
        outline = (red > 150) & (red - np.maximum(green, blue) > 60)
        coloured = (part.max(axis=-1) - part.min(axis=-1) > 40) & ~outline
        inside = binary_dilation(binary_fill_holes(outline), iterations=2)
        total += int(coloured.sum())
        outside += int((coloured & ~inside).sum())
    return total, outside


def lung_cohort(testdata: Path, path: Path, labels: list[str]) -> Path:
    """A 3-patient manifest of the two PyRadiomics lung studies (lung1 twice) with these
    labels ("9" is not in the segmentation: that patient fails)."""
    import pandas as pd

    image, label = lung_files(testdata)
    other = testdata / "pyradiomics"
    pd.DataFrame({
        "patient_id": ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"],
        "ct": [image, other / "lung2_image.nrrd", image],
        "segmentation": [label, other / "lung2_label.nrrd", label],
        "label": labels,
    }).to_csv(path, index=False)
    return path
