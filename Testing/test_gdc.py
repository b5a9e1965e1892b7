"""GDC formats: STAR - Counts files, the mRNA pipeline's units, sample sheets, barcodes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from RadioGenomicsLib import gdc, gencode
from RadioGenomicsLib.errors import InputError


# ---------------------------------------------------------------- barcodes

def test_barcode_parts():
    assert gdc.case_id("TCGA-02-0047-01A-01R-1849-01") == "TCGA-02-0047"
    assert gdc.sample_type("TCGA-02-0047-01A-01R-1849-01") == "01"
    assert gdc.sample_type("TCGA-BH-A0DK-11A") == "11"
    assert gdc.case_id("tcga-bh-a0dk") == "TCGA-BH-A0DK"


@pytest.mark.parametrize("barcode", ["TARGET-20-PADZCG-04A", "C3L-00104", "TCGA-02", ""])
def test_non_tcga_barcode_is_input_error(barcode):
    with pytest.raises(InputError, match="not a TCGA barcode"):
        gdc.case_id(barcode, "sheet.tsv")


def test_case_barcode_has_no_sample_type():
    with pytest.raises(InputError, match="without a sample type"):
        gdc.sample_type("TCGA-02-0047")


# ---------------------------------------------------------------- units

def test_star_units_follow_the_gdc_formulas():
    counts = np.array([100.0, 0.0, 50.0, 300.0, 20.0])
    lengths = np.array([1000.0, 2000.0, 500.0, 3000.0, 400.0])
    coding = np.array([True, True, False, True, True])
    tpm, fpkm, fpkm_uq = gdc.star_units(counts, lengths, coding)
    per_base = counts / lengths
    np.testing.assert_allclose(tpm, per_base / per_base.sum() * 1e6)
    # FPKM divides by the reads on protein-coding genes (420), not all reads (470)
    np.testing.assert_allclose(fpkm, counts * 1e9 / (420.0 * lengths))
    # 75th percentile of the protein-coding counts [100, 0, 300, 20] is 150
    np.testing.assert_allclose(fpkm_uq, counts * 1e9 / (150.0 * lengths))
    assert tpm.sum() == pytest.approx(1e6)


def test_star_units_per_sample_rows():
    rng = np.random.default_rng(3)
    counts = rng.poisson(40, size=(3, 50)).astype(float)
    lengths = rng.integers(300, 9000, 50).astype(float)
    coding = rng.random(50) < 0.6
    batched = gdc.star_units(counts, lengths, coding)
    for row in range(3):
        single = gdc.star_units(counts[row], lengths, coding)
        for a, b in zip(batched, single):
            np.testing.assert_allclose(a[row], b)


def test_star_units_refuse_a_zero_upper_quartile():
    with pytest.raises(ValueError, match="75th percentile"):
        gdc.star_units(np.array([5.0, 0, 0, 0, 0, 0]), np.ones(6) * 100, np.ones(6, bool))


# ---------------------------------------------------------------- STAR - Counts files

def _star_table(n_genes: int = 300, seed: int = 0) -> pd.DataFrame:
    """Real GENCODE v36 genes (the _PAR_Y ones included) with count-like values."""
    genes = gencode.gene_table()
    chosen = pd.concat([genes.head(n_genes - 2),
                        genes[genes["gene_id"].str.endswith("_PAR_Y")].head(2)])
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(2, 0.02, len(chosen))
    coding = (chosen["gene_type"] == "protein_coding").to_numpy()
    tpm, fpkm, fpkm_uq = gdc.star_units(counts, chosen["length_bp"].to_numpy(), coding)
    first = rng.binomial(counts, 0.05)
    return pd.DataFrame({
        "gene_id": chosen["gene_id"].to_numpy(), "gene_name": chosen["gene_name"].to_numpy(),
        "gene_type": chosen["gene_type"].to_numpy(), "unstranded": counts,
        "stranded_first": first, "stranded_second": counts - first,
        "tpm_unstranded": tpm, "fpkm_unstranded": fpkm, "fpkm_uq_unstranded": fpkm_uq})


@pytest.fixture
def star_file(tmp_path):
    path = tmp_path / "0a1b.rna_seq.augmented_star_gene_counts.tsv"
    table = _star_table()
    gdc.write_star_counts(path, table, {"N_unmapped": 2557568, "N_noFeature": 2462147})
    return path, table


def test_star_counts_layout(star_file):
    path, table = star_file
    lines = path.read_text().split("\n")
    assert lines[0] == "# gene-model: GENCODE v36"
    assert lines[1].split("\t") == list(gdc.STAR_COLUMNS)
    assert lines[2] == "N_unmapped\t\t\t2557568\t2557568\t2557568\t\t\t"
    assert [line.split("\t")[0] for line in lines[2:6]] == list(gdc.SUMMARY_ROWS)
    assert lines[6].split("\t")[:4] == [table["gene_id"].iat[0], table["gene_name"].iat[0],
                                        table["gene_type"].iat[0], str(table["unstranded"].iat[0])]
    assert len(lines) == 6 + len(table) + 1 and lines[-1] == ""
    assert not list(path.parent.glob(".*partial*"))


def test_star_counts_round_trip(star_file):
    path, table = star_file
    read = gdc.read_star_counts(path)
    assert list(read.columns) == list(gdc.STAR_COLUMNS)
    assert read["gene_id"].tolist() == table["gene_id"].tolist()
    assert read["gene_id"].str.endswith("_PAR_Y").sum() == 2
    for column in gdc.COUNT_COLUMNS:
        assert read[column].dtype == np.int64
        np.testing.assert_array_equal(read[column], table[column])
    for column in gdc.UNIT_COLUMNS:  # four decimals, as the GDC writes them
        np.testing.assert_allclose(read[column], table[column], atol=5e-5, rtol=0)
    assert read.attrs["summary"] == {"N_unmapped": 2557568, "N_multimapping": 0,
                                     "N_noFeature": 2462147, "N_ambiguous": 0}


def test_write_star_counts_wants_exact_columns(tmp_path):
    with pytest.raises(ValueError, match="exactly"):
        gdc.write_star_counts(tmp_path / "x.tsv", _star_table().drop(columns="gene_type"))
    assert not list(tmp_path.iterdir())


def _damage(path, how: str) -> None:
    lines = path.read_text().split("\n")
    if how == "truncated mid-line":
        path.write_text("\n".join(lines)[:-40])
    elif how == "truncated before the genes":
        path.write_text("\n".join(lines[:4]) + "\n")
    elif how == "wrong header":
        lines[1] = lines[1].replace("fpkm_uq_unstranded", "fpkm_uq")
        path.write_text("\n".join(lines))
    elif how == "duplicated gene":
        lines[20] = lines[21]
        path.write_text("\n".join(lines))
    elif how == "non-numeric":
        fields = lines[30].split("\t")
        fields[6] = "12,5"
        lines[30] = "\t".join(fields)
        path.write_text("\n".join(lines))
    elif how == "NA value":
        fields = lines[31].split("\t")
        fields[3] = "NA"
        lines[31] = "\t".join(fields)
        path.write_text("\n".join(lines))
    elif how == "short row":
        lines[40] = "\t".join(lines[40].split("\t")[:5])
        path.write_text("\n".join(lines))


@pytest.mark.parametrize("how, message", [
    ("truncated mid-line", "truncated"),
    ("truncated before the genes", "truncated or damaged"),
    ("wrong header", "header"),
    ("duplicated gene", "line 22: gene id .* appears twice"),
    ("non-numeric", "line 31, column tpm_unstranded: '12,5' is not a number"),
    ("NA value", "line 32, column unstranded: 'NA' is not a number"),
    ("short row", "line 41 has 5 fields"),
])
def test_damaged_star_counts(star_file, how, message):
    path, _ = star_file
    _damage(path, how)
    with pytest.raises(InputError, match=message) as caught:
        gdc.read_star_counts(path)
    assert caught.value.path == str(path)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- sample sheets

NEW_SHEET = pd.DataFrame({
    "File ID": ["4d2b-01", "9c1e-02"],
    "File Name": ["a.rna_seq.augmented_star_gene_counts.tsv", "b.wxs.aliquot_ensemble_masked.maf.gz"],
    "Data Category": ["Transcriptome Profiling", "Simple Nucleotide Variation"],
    "Data Type": ["Gene Expression Quantification", "Masked Somatic Mutation"],
    "Project ID": ["TCGA-GBM", "TCGA-GBM"],
    "Case ID": ["TCGA-02-0047", "TCGA-06-0125, TCGA-06-0125"],
    "Sample ID": ["TCGA-02-0047-01A", "TCGA-06-0125-01A, TCGA-06-0125-10A"],
    "Tissue Type": ["Tumor", "Tumor, Normal"],
    "Tumor Descriptor": ["Primary", "Primary, Not Applicable"],
    "Specimen Type": ["Solid Tissue", "Solid Tissue, Peripheral Blood Components NOS"],
    "Preservation Method": ["Unknown", "Unknown, Unknown"],
})

OLD_SHEET = pd.DataFrame({
    "File ID": ["4d2b-01", "77aa-03"],
    "File Name": ["a.rna_seq.augmented_star_gene_counts.tsv", "c.rna_seq.augmented_star_gene_counts.tsv"],
    "Data Category": ["Transcriptome Profiling"] * 2,
    "Data Type": ["Gene Expression Quantification"] * 2,
    "Project ID": ["TCGA-GBM"] * 2,
    "Case ID": ["TCGA-02-0047", "TCGA-06-0125"],
    "Sample ID": ["TCGA-02-0047-01A", "TCGA-06-0125-11A"],
    "Sample Type": ["Primary Tumor", "Solid Tissue Normal"],
})


def test_new_sheet_layout_round_trip(tmp_path):
    path = tmp_path / "gdc_sample_sheet.2025-05-22.tsv"
    gdc.write_sample_sheet(path, NEW_SHEET)
    assert path.read_text().split("\n")[0].split("\t") == list(gdc.SHEET_COLUMNS)
    sheet = gdc.read_sample_sheet(path)
    assert sheet["sample_id"].tolist() == ["TCGA-02-0047-01A", "TCGA-06-0125-01A",
                                           "TCGA-06-0125-10A"]
    assert sheet["sample_type"].tolist() == ["01", "01", "10"]
    assert sheet["case_id"].tolist() == ["TCGA-02-0047", "TCGA-06-0125", "TCGA-06-0125"]
    assert sheet["file_id"].tolist() == ["4d2b-01", "9c1e-02", "9c1e-02"]
    assert sheet["description"].iat[2] == ("Normal, Not Applicable, "
                                           "Peripheral Blood Components NOS, Unknown")


def test_old_sheet_layout(tmp_path):
    path = tmp_path / "gdc_sample_sheet.2021-01-05.tsv"
    gdc.write_sample_sheet(path, OLD_SHEET)
    assert path.read_text().split("\n")[0].split("\t") == list(gdc.OLD_SHEET_COLUMNS)
    sheet = gdc.read_sample_sheet(path)
    assert sheet["description"].tolist() == ["Primary Tumor", "Solid Tissue Normal"]
    assert sheet["sample_type"].tolist() == ["01", "11"]


@pytest.mark.parametrize("column, value, message", [
    ("Sample ID", "C3L-00104-01", "line 3: 'C3L-00104-01' is not a TCGA barcode"),
    ("Case ID", "TCGA-06-0999", "line 3: sample TCGA-06-0125-11A is not of case TCGA-06-0999"),
])
def test_bad_sheet_rows(tmp_path, column, value, message):
    rows = OLD_SHEET.copy()
    rows.loc[1, column] = value
    path = tmp_path / "sheet.tsv"
    gdc.write_sample_sheet(path, rows)
    with pytest.raises(InputError, match=message):
        gdc.read_sample_sheet(path)


def test_not_a_sheet(tmp_path):
    path = tmp_path / "sheet.tsv"
    path.write_text("id\tname\n1\tx\n")
    with pytest.raises(InputError, match="not a GDC sample sheet: no column File ID"):
        gdc.read_sample_sheet(path)
