"""The Slicer module predicts with the light runtime: a bundle with exported ONNX fold
models needs no PyTorch (the module's requirement check says so from metadata.json, as
the library's `--runtime auto` decides), and the module's prediction job and its
in-process map drawing import neither torch nor MONAI. Real CT (pyradiomics' lung1)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

pytest.importorskip("onnxruntime")

from RadioGenomicsLib import runtime  # noqa: E402
from RadioGenomicsLib.bundle import load_bundle, make_untrained_bundle  # noqa: E402
from RadioGenomicsLib.model import ModelConfig  # noqa: E402
from RadioGenomicsLib.preprocess import PreprocessSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "RadioGenomics"))
from RadioGenomicsLogic.jobs import predict_arguments  # noqa: E402
from RadioGenomicsLogic.library import child_environment  # noqa: E402
from RadioGenomicsLogic.requirements import runtime_text, torch_problem  # noqa: E402

# the module's job (PythonSlicer -m RadioGenomicsLib ARGS), then its map of a clicked gene
# (RadioGenomics.py: geneMapFile), in one fresh process that reports what it imported
PROBE = """
import sys
from RadioGenomicsLib.cli import main
code = main(sys.argv[2:])
from RadioGenomicsLib.bundle import load_bundle
from RadioGenomicsLib.run import open_run, run_maps, write_maps
run, bundle = open_run(sys.argv[1])
write_maps(run_maps(run, bundle, ["EGFR"]), run.path / "maps")
print("IMPORTED", [m for m in ("torch", "monai") if m in sys.modules])
sys.exit(code)
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A one-fold `small` CT bundle before (its metadata) and after `radiogenomics export`."""
    from RadioGenomicsLib.cli import main

    path = tmp_path_factory.mktemp("bundle") / "ct_small"
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(40)],
                          "gene_name": ["EGFR", *(f"GENE{i}" for i in range(1, 40))]})
    make_untrained_bundle(path, ModelConfig.preset("small"), ["ct"], genes,
                          PreprocessSettings(max_slices=4).to_dict(), seed=3, folds=1)
    before = json.loads((path / "metadata.json").read_text())
    assert main(["export", str(path)]) == 0
    return before, path


def test_requirement_check_follows_the_runtime_choice(bundles, monkeypatch):
    """PyTorch is demanded exactly where `--runtime auto` on the CPU would pick torch."""
    monkeypatch.setattr(runtime, "is_installed", lambda name: True)
    before, path = bundles
    exported = load_bundle(path)
    metadata = json.loads((path / "metadata.json").read_text())
    assert torch_problem(metadata) is None
    assert runtime.pick_runtime(exported, "auto", "cpu") in runtime.LIGHT_RUNTIMES
    assert "PyTorch is not needed" in runtime_text(None)

    # before the export `auto` picks torch (Testing/test_runtime.py): PyTorch is demanded
    assert "no exported fold models (fold_0.onnx)" in torch_problem(before)

    two_folds = {**metadata, "folds": 2}
    assert "fold_1.onnx" in torch_problem(two_folds) and torch_problem(two_folds, "first") is None

    for change in ({"pooling": "mean", "geometry": True}, {"pooling": "attention"},
                   {"pooling": "tumour"}):
        other = {**metadata, "model": {**metadata["model"], **change}}
        assert torch_problem(other) is None  # the light runtime runs every head
        config = dataclasses.replace(exported.config, **change)
        assert runtime.light_problem(SimpleNamespace(config=config)) is None
    future = {**metadata, "model": {**metadata["model"], "pooling": "transformer"}}
    assert "runs on PyTorch only" in torch_problem(future)
    assert runtime.light_problem(SimpleNamespace(config=SimpleNamespace(pooling="transformer")))
    assert runtime_text("x").startswith("Runtime: PyTorch, needed because x")


def test_module_predicts_an_exported_bundle_without_torch(bundles, lung, tmp_path):
    """The job's arguments as the module builds them on a Slicer without PyTorch: the
    prediction and then a gene's map, in a fresh process, import neither torch nor MONAI."""
    image, label = lung
    _, path = bundles
    run = tmp_path / "job" / "run"
    arguments = predict_arguments(str(path), ["--image", f"ct={image}", "--segmentation", str(label)],
                                  str(run), device="auto", folds="all", torch_installed=False)
    assert arguments[arguments.index("--device") + 1] == "cpu"
    assert arguments[arguments.index("--runtime") + 1] == "auto"
    environment = {**os.environ, **child_environment(ROOT, {}),
                   "RADIOGENOMICS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", PROBE, str(run), *arguments], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IMPORTED []" in result.stdout
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert settings["runtime"] in runtime.LIGHT_RUNTIMES and settings["device"] == "cpu"
    assert len(pd.read_csv(tmp_path / "job" / "genes.csv")) == 40
    assert (run / "maps" / "EGFR.nrrd").stat().st_size > 0
