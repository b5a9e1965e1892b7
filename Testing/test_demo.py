"""`make demo` at a reduced size: the method works on its synthetic cohort, and shows it."""

from __future__ import annotations

import json

import pytest

from RadioGenomicsLib.synth import score_against_truth
from Testing.conftest import coloured_outside_outline

PATIENTS = 30  # the demo trains on 40; fewer keep the suite short and still find genes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from RadioGenomicsLib.demo import run

    out = tmp_path_factory.mktemp("demo")
    run(out, patients=PATIENTS)
    return out


def test_the_demo_model_finds_truly_linked_genes_and_no_null_gene(demo):
    """Scored against truth.json, which no step of the demo reads: at least one gene found
    is truly linked to a tumour factor, and no noise gene is called significant."""
    score = score_against_truth(demo / "cohort" / "truth.json", demo / "model" / "report")
    assert score["significant_linked"] >= 1, score
    assert score["null_significant"] == 0, score
    summary = json.loads((demo / "model" / "report" / "summary.json").read_text())
    assert summary["patients"] == PATIENTS
    assert "| model |" in (demo / "compare" / "compare.md").read_text()
    # exported as trained: the prediction ran without torch (mean pooling, geometry, masks)
    settings = json.loads((demo / "prediction" / "run" / "run.json").read_text())["settings"]
    assert settings["runtime"] in ("openvino", "onnxruntime"), settings


def test_the_demo_map_picture_colours_only_the_tumour(demo, tmp_path):
    from PIL import Image

    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.run import open_run, run_maps, save_run_picture

    picture = demo / "prediction" / "maps.png"
    run, _ = open_run(demo / "prediction" / "run")
    panels = save_run_picture(run, run_maps(run, load_bundle(demo / "model"), ["EGFR", "KRAS"]),
                              tmp_path / "again.png")
    assert {p["gene"] for p in panels} == {"EGFR", "KRAS"}
    assert Image.open(picture).size == Image.open(tmp_path / "again.png").size
    total, outside = coloured_outside_outline(picture, [p["box"] for p in panels])
    assert total > 1000 and outside < 0.002 * total
