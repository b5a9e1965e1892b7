"""The module's sample and the demo's bundle (RadioGenomicsLogic/sample.py): where the
`make demo` output is found, the models folder's default, and the sample the library
makes through the module's job arguments. No Slicer needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "RadioGenomics"))
from RadioGenomicsLogic.library import child_environment  # noqa: E402
from RadioGenomicsLogic.sample import (default_models_folder, demo_folder, help_text,  # noqa: E402
                                       read_sample, sample_arguments)


def _demo(folder: Path) -> Path:
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "metadata.json").write_text("{}")
    return folder


def test_demo_output_is_the_default_models_folder_when_its_bundle_is_there(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "demo-out" / "model").mkdir(parents=True)  # a demo still training: no bundle yet
    assert demo_folder(checkout, {}) is None
    assert default_models_folder(None, tmp_path / "home") == tmp_path / "home" / ".radiogenomics" / "models"
    assert "`make demo` trains one" in help_text(None)

    _demo(checkout / "demo-out")
    assert demo_folder(checkout, {}) == checkout / "demo-out"
    assert default_models_folder(checkout / "demo-out", tmp_path / "home") == checkout / "demo-out"
    elsewhere = _demo(tmp_path / "elsewhere")
    assert demo_folder(checkout, {"RADIOGENOMICS_DEMO": str(elsewhere)}) == elsewhere
    assert str(elsewhere / "model") in help_text(elsewhere)
    assert sample_arguments(tmp_path / "s", elsewhere) == ["--sample", "--out", str(tmp_path / "s"),
                                                           "--from-demo", str(elsewhere)]


def test_sample_made_by_the_library_through_the_module_arguments(tmp_path):
    out = tmp_path / "sample"
    result = subprocess.run([sys.executable, "-m", "RadioGenomicsLib.demo",
                             *sample_arguments(out, None)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, **child_environment(ROOT, {})})
    assert result.returncode == 0, result.stderr[-2000:]
    sample = read_sample(out)
    assert sorted(sample["images"]) == ["flair", "t1", "t1gd", "t2"]
    assert (Path(sample["bundle"]) / "genes.tsv").is_file()
    assert "untrained" in sample["label"] and "not a patient" in sample["label"]
    Path(sample["images"]["t2"]).unlink()
    with pytest.raises(ValueError, match="names files that are gone .*_t2.nii.gz"):
        read_sample(out)
