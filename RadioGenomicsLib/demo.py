"""`make demo`: the project's main job on built-in data.

For now: a real brain MRI with its tumour mask (from the PyRadiomics source archive,
fetched by `make testdata`) preprocessed into model-ready slices, with a preview.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from RadioGenomicsLib.cli import main as cli


def _data_root() -> Path:
    default = Path.home() / ".cache" / "radiogenomics-testdata"
    return Path(os.environ.get("RADIOGENOMICS_TESTDATA", default))


def run(out: Path) -> int:
    data = _data_root() / "pyradiomics"
    if not (data / "brain1_image.nrrd").exists():
        print(f"demo: {data}: the demo data is not fetched; run `make testdata`", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print("1/1 preprocessing a real brain MRI (T1 with contrast) and its tumour mask")
    code = cli(["preprocess", "--image", f"t1gd={data / 'brain1_image.nrrd'}",
                "--segmentation", str(data / "brain1_label.nrrd"),
                "--out", str(out / "brain1_slices.npz"), "--preview", str(out / "brain1_preview.png")])
    if code == 0:
        print(f"\nopen {out / 'brain1_preview.png'} to see the chosen tumour slices")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    sys.exit(run(parser.parse_args().out))


if __name__ == "__main__":
    main()
