"""The panel's sample: a synthetic study and a model bundle to try the module with.

The library makes it (`python -m RadioGenomicsLib.demo --sample`, as the web viewer's
"Load sample"): with the output of `make demo` in the checkout the module runs from, its
bundle (trained on 40 synthetic patients) and the study it kept out; otherwise, in
seconds, a 2-patient synthetic cohort and an untrained bundle (PyTorch makes it). The
models folder defaults to that `make demo` output when there is one. No Slicer here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

DEMO_VARIABLE = "RADIOGENOMICS_DEMO"  # another `make demo` output folder
SAMPLE_FILE = "sample.json"  # RadioGenomicsLib/demo.py


def demo_folder(library_folder: Path, environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """The `make demo` output (RADIOGENOMICS_DEMO, else demo-out beside the library's
    package, i.e. in its source checkout), when its bundle is complete; else None."""
    candidates = [Path(environ[DEMO_VARIABLE])] if environ.get(DEMO_VARIABLE) else []
    for folder in [*candidates, Path(library_folder) / "demo-out"]:
        if (folder / "model" / "metadata.json").is_file():
            return folder
    return None


def default_models_folder(demo: Optional[Path], home: Path) -> Path:
    """The demo's output (its bundle, model/, is then listed) or ~/.radiogenomics/models."""
    return demo if demo is not None else home / ".radiogenomics" / "models"


def sample_arguments(out: Path, demo: Optional[Path]) -> list[str]:
    """Arguments of `python -m RadioGenomicsLib.demo` that write the sample into `out`."""
    return ["--sample", "--out", str(out), *(["--from-demo", str(demo)] if demo else [])]


def read_sample(out: Path) -> dict[str, Any]:
    """The sample the library wrote (sample.json), its files checked."""
    path = Path(out) / SAMPLE_FILE
    sample = json.loads(path.read_text(encoding="utf-8"))
    files = [*sample["images"].values(), sample["segmentation"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing or not (Path(sample["bundle"]) / "metadata.json").is_file():
        raise ValueError(f"{path}: names files that are gone ({', '.join(missing) or sample['bundle']}): "
                         "delete the folder and load the sample again")
    return sample


def help_text(demo: Optional[Path]) -> str:
    """The panel's line on where a model to try comes from."""
    if demo is not None:
        return (f"The models folder shows the bundle `make demo` trained ({demo / 'model'}); "
                "Load sample opens the synthetic study it kept out.")
    return ("No model yet? In a source checkout, `make demo` trains one on synthetic patients "
            "(demo-out/model, a few minutes); the models folder then shows it. Load sample "
            "makes a synthetic study and an untrained bundle that only shows the flow.")
