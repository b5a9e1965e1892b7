"""The shipped GENCODE v36 gene table, against its real Debian source."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from RadioGenomicsLib.gencode import COLUMNS, gene_names, gene_table, unversioned

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "Resources" / "build_gencode_table.py"


@pytest.fixture(scope="module")
def build_script():
    spec = importlib.util.spec_from_file_location("build_gencode_table", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_table_is_the_gdc_gene_model():
    table = gene_table()
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 60660  # the gene rows of every GDC STAR - Counts file
    assert table["gene_id"].is_unique
    assert table["gene_id"].str.fullmatch(r"ENSG\d{11}\.\d+(_PAR_Y)?").all()
    assert table["gene_id"].str.endswith("_PAR_Y").sum() == 44
    assert (table["gene_type"] == "protein_coding").sum() == 19962
    assert (table["length_bp"] > 0).all()
    tp53 = table.set_index("gene_name").loc["TP53"]
    assert tp53["gene_id"] == "ENSG00000141510.18"
    assert tp53["gene_type"] == "protein_coding"
    assert 2000 < tp53["length_bp"] < 25760  # exonic length, shorter than its genomic span


def test_gene_names_with_or_without_version():
    ids = ["ENSG00000141510.18", "ENSG00000141510", "ENSG00000141510.16",
           "ENSG00000182378.14_PAR_Y", "ENSG00000182378_PAR_Y", "ENSG00000182378.14",
           " ENSG00000146648.19 ", "ENSG99999999999.1", "TP53", ""]
    assert gene_names(ids) == ["TP53", "TP53", "TP53", "PLCXD1", "PLCXD1", "PLCXD1",
                               "EGFR", "", "", ""]


def test_unversioned_keeps_the_par_suffix():
    assert unversioned("ENSG00000182378.14_PAR_Y") == "ENSG00000182378_PAR_Y"
    assert unversioned("ENSG00000141510.18") == "ENSG00000141510"
    assert unversioned("ENSG00000141510") == "ENSG00000141510"


def test_lengths_are_tcgabiolinks_exonic_lengths(testdata, build_script):
    """The shipped lengths agree with geneInfoHT read from the real R lazy-load database."""
    lengths = build_script.read_lazyload_object(testdata / "tcgabiolinks" / "Rdata",
                                                "geneInfoHT")["geneLength"]
    table = gene_table()
    base = table["gene_id"].map(unversioned).str.replace("_PAR_Y", "")
    known = base.isin(lengths.index).to_numpy()
    assert known.mean() > 0.99
    expected = lengths.reindex(base[known]).to_numpy()
    np.testing.assert_array_equal(table["length_bp"].to_numpy()[known], expected)
