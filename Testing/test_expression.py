"""The target matrix from real TCGA values (Debian's r-bioc-tcgabiolinks data).

`dataBRCA` holds real RSEM read counts of 10 TCGA-BRCA samples (5 primary tumours,
5 solid-tissue normals) under `SYMBOL|entrez` ids; `gbm.exp.harmonized` real GDC
HTSeq FPKM-UQ values of 100 Ensembl genes in 2 recurrent TCGA-GBM tumours. The tests
write them in the GDC, Xena and plain layouts and check what comes back.
"""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest

from RadioGenomicsLib import gdc, gencode
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.expression import (ExpressionMatrix, apply_transform, build_matrix,
                                         drop_median_zero, genes_path, read_matrix,
                                         write_matrix)


def _lazy_load(folder, name: str):
    """One object of an R lazy-load database (Rdata.rdx index, Rdata.rdb zlib blobs)."""
    import rdata

    # rdata warns about the .rdx extension and about Bioconductor S4 classes it has no
    # constructor for (it returns their slots, which is what the tests read)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_file(folder / "Rdata.rdx"))
        offset, length = (int(v) for v in index["variables"][name])
        with open(folder / "Rdata.rdb", "rb") as handle:
            handle.seek(offset)
            blob = handle.read(length)
        assert struct.unpack(">I", blob[:4])[0] > 0  # uncompressed size, then a zlib stream
        parsed = rdata.parser.parse_data(zlib.decompress(blob[4:]), extension=".rds")
        return rdata.conversion.convert(parsed)


@pytest.fixture(scope="session")
def brca_counts(testdata) -> pd.DataFrame:
    """dataBRCA: genes (SYMBOL|entrez) × 10 samples of real RSEM read counts."""
    table = _lazy_load(testdata / "tcgabiolinks", "dataBRCA")
    table.columns = [str(c) for c in table.columns]
    table.index = [str(i) for i in table.index]
    return table


@pytest.fixture(scope="session")
def gbm_fpkm_uq(testdata) -> pd.DataFrame:
    """gbm.exp.harmonized: 100 Ensembl genes × 2 recurrent GBM samples, GDC FPKM-UQ."""
    experiment = _lazy_load(testdata / "tcgabiolinks", "gbm.exp.harmonized")
    values = np.asarray(experiment.assays.data.listData["HTSeq - FPKM-UQ"])
    genes = experiment.rowRanges.elementMetadata.listData
    barcodes = experiment.colData.listData["barcode"]
    table = pd.DataFrame(values, index=[str(g) for g in genes["original_ensembl_gene_id"]],
                         columns=[str(b) for b in barcodes])
    table.attrs["symbols"] = [str(s) for s in genes["external_gene_name"]]
    return table


@pytest.fixture(scope="session")
def brca_star(brca_counts):
    """The BRCA counts under their real GENCODE v36 ids and lengths, with GDC units.

    Every fifth gene of those with a unique symbol in both (about 3,500), to stay fast.
    """
    symbols = pd.Series([i.split("|")[0] for i in brca_counts.index], index=brca_counts.index)
    unique = symbols[(symbols != "?") & ~symbols.duplicated(keep=False)]
    table = gencode.gene_table()
    table = table[~table["gene_name"].duplicated(keep=False)]
    genes = table[table["gene_name"].isin(set(unique))].iloc[::5].reset_index(drop=True)
    by_symbol = pd.Series(unique.index, index=unique.to_numpy())
    counts = np.rint(brca_counts.loc[by_symbol[genes["gene_name"]].to_numpy()].to_numpy().T)
    coding = (genes["gene_type"] == "protein_coding").to_numpy()
    units = gdc.star_units(counts, genes["length_bp"].to_numpy(), coding)
    return genes, counts, units, list(brca_counts.columns)


def _write_star_cohort(folder, brca_star, layout: str, extra_aliquot: bool = True):
    """One GDC-style folder per file (<file id>/<file name>) and its sample sheet."""
    genes, counts, (tpm, fpkm, fpkm_uq), barcodes = brca_star
    samples = [(barcode[:16], i) for i, barcode in enumerate(barcodes)]
    if extra_aliquot:  # a second primary-tumour aliquot of the first case
        samples.append((barcodes[0][:15] + "B", 7))
    rows = []
    for number, (sample, source) in enumerate(samples):
        first = counts[source] // 3
        table = pd.DataFrame({
            "gene_id": genes["gene_id"], "gene_name": genes["gene_name"],
            "gene_type": genes["gene_type"], "unstranded": counts[source],
            "stranded_first": first, "stranded_second": counts[source] - first,
            "tpm_unstranded": tpm[source], "fpkm_unstranded": fpkm[source],
            "fpkm_uq_unstranded": fpkm_uq[source]})
        file_id = f"5d0a{number:04d}-7e1c-4b2f-9c3d-a1b2c3d4e5f6"
        name = f"{number:02d}e4b7c1.rna_seq.augmented_star_gene_counts.tsv"
        gdc.write_star_counts(folder / file_id / name, table, {"N_unmapped": 1000 + number})
        row = {"File ID": file_id, "File Name": name,
               "Data Category": "Transcriptome Profiling",
               "Data Type": "Gene Expression Quantification", "Project ID": "TCGA-BRCA",
               "Case ID": sample[:12], "Sample ID": sample}
        tumour = sample[13:15] == "01"
        if layout == "old":
            row["Sample Type"] = "Primary Tumor" if tumour else "Solid Tissue Normal"
        else:
            row.update({"Tissue Type": "Tumor" if tumour else "Normal",
                        "Tumor Descriptor": "Primary" if tumour else "Not Applicable",
                        "Specimen Type": "Solid Tissue", "Preservation Method": "Unknown"})
        rows.append(row)
    sheet = folder.parent / "gdc_sample_sheet.tsv"
    gdc.write_sample_sheet(sheet, pd.DataFrame(rows))
    return sheet, samples


def _expected(brca_star, samples, units_index: int, transform) -> pd.DataFrame:
    """Primary tumours, aliquots of one case averaged on the linear scale, transformed."""
    genes, counts, units, _ = brca_star
    linear = counts if units_index is None else units[units_index]
    frame = pd.DataFrame([linear[source] for _, source in samples],
                         index=[s for s, _ in samples], columns=genes["gene_id"])
    frame = frame[[s[13:15] == "01" for s in frame.index]]
    frame = frame.groupby([s[:12] for s in frame.index]).mean()
    return transform(frame)


@pytest.mark.parametrize("layout", ["old", "new"])
def test_star_counts_cohort_through_the_cli(tmp_path, run_cli, brca_star, layout):
    downloads = tmp_path / "gdc_download"
    sheet, samples = _write_star_cohort(downloads, brca_star, layout)
    out = tmp_path / "out" / "matrix.tsv"
    code, stdout, stderr = run_cli("expression", "--expression", downloads,
                                   "--sample-sheet", sheet, "--out", out)
    assert code == 0, stderr
    assert "files read: 6" in stdout  # the 5 normals are never opened
    assert "samples kept: 6" in stdout and "5 × sample type 11 not in 01" in stdout
    first = samples[0][0][:12]
    assert f"{first}: {samples[0][0]}, {samples[-1][0]}" in stdout  # averaged, and said so
    expected = _expected(brca_star, samples, 2, lambda v: np.log10(1.0 + v))
    expected = expected.loc[:, expected.median() != 0]
    assert f"genes: {expected.shape[1]} kept of {len(brca_star[0])}" in stdout
    matrix = read_matrix(out)
    assert matrix.values.index.tolist() == sorted(expected.index)
    assert matrix.values.columns.tolist() == expected.columns.tolist()
    # the GDC files hold four decimals, the matrix seven significant digits
    np.testing.assert_allclose(matrix.values.to_numpy(), expected.to_numpy(), rtol=0,
                               atol=3e-5)
    assert matrix.genes["gene_name"].tolist() == gencode.gene_names(expected.columns)
    assert (matrix.genes["gene_type"] != "").all()
    assert out.read_text().split("\t", 1)[0] == "patient_id"
    assert genes_path(out).read_text().split("\n")[0] == "gene_id\tgene_name\tgene_type"


@pytest.mark.parametrize("value, index, transform, apply", [
    ("tpm", 0, "log2p1", lambda v: np.log2(1.0 + v)),
    ("counts", None, "none", lambda v: v),
])
def test_star_values_and_transforms(tmp_path, brca_star, value, index, transform, apply):
    sheet, samples = _write_star_cohort(tmp_path / "dl", brca_star, "new", extra_aliquot=False)
    matrix, summary = build_matrix(tmp_path / "dl", sheet, value=value, transform=transform,
                                   drop_median_zero_genes=False)
    expected = _expected(brca_star, samples, index, apply)
    np.testing.assert_allclose(matrix.values.to_numpy(), expected.to_numpy(), rtol=1e-4,
                               atol=1e-4)
    assert summary.averaged == {}
    assert summary.genes_kept == summary.genes_read == len(brca_star[0])


def test_all_sample_types(tmp_path, brca_star):
    sheet, _ = _write_star_cohort(tmp_path / "dl", brca_star, "new", extra_aliquot=False)
    matrix, summary = build_matrix(tmp_path / "dl", sheet, sample_types=None)
    assert len(matrix.values) == 10 and summary.samples_dropped == {}


def test_listed_files(tmp_path, brca_star):
    sheet, _ = _write_star_cohort(tmp_path / "dl", brca_star, "old", extra_aliquot=False)
    files = sorted((tmp_path / "dl").rglob("*.tsv"))[:4]
    matrix, summary = build_matrix(files, sheet, sample_types=None)
    assert summary.files_read == 4 and len(matrix.values) == 4
    assert "6 files of the sample sheet were not given" in str(summary)


def _write_xena(path, table: pd.DataFrame, first_header: str) -> None:
    logged = np.log2(table + 1.0)
    logged.index.name = first_header
    logged.columns = [c[:16] for c in table.columns]
    logged.to_csv(path, sep="\t", float_format="%.10g")


@pytest.mark.parametrize("first_header", ["Ensembl_ID", "sample"])
def test_xena_matrix(tmp_path, run_cli, gbm_fpkm_uq, first_header):
    xena = tmp_path / "TCGA-GBM.htseq_fpkm-uq.tsv"
    _write_xena(xena, gbm_fpkm_uq, first_header)
    out = tmp_path / "matrix.tsv"
    code, stdout, stderr = run_cli("expression", "--expression", xena, "--out", out,
                                   "--sample-types", "02", "--keep-all-genes")
    assert code == 0, stderr
    assert "UCSC Xena" in stdout and "log2(x + 1)" in stdout
    matrix = read_matrix(out)
    expected = np.log10(1.0 + gbm_fpkm_uq.T.to_numpy())
    assert matrix.values.index.tolist() == sorted(c[:12] for c in gbm_fpkm_uq.columns)
    order = [sorted(c[:12] for c in gbm_fpkm_uq.columns).index(c[:12])
             for c in gbm_fpkm_uq.columns]
    np.testing.assert_allclose(matrix.values.to_numpy()[order], expected, rtol=1e-6, atol=1e-9)
    # symbols looked up in GENCODE v36 from the versioned ids the GDC gave (GENCODE v22)
    assert matrix.genes["gene_name"].tolist() == gbm_fpkm_uq.attrs["symbols"]


def test_xena_recurrent_samples_are_not_primary(tmp_path, run_cli, gbm_fpkm_uq):
    xena = tmp_path / "TCGA-GBM.htseq_fpkm-uq.tsv"
    _write_xena(xena, gbm_fpkm_uq, "Ensembl_ID")
    out = tmp_path / "matrix.tsv"
    code, stdout, stderr = run_cli("expression", "--expression", xena, "--out", out)
    assert code == 2 and "no sample left" in stderr and "01" in stderr
    assert "--sample-types names the types to keep" in stderr  # the option that fixes it
    assert not out.exists() and not genes_path(out).exists()
    code, _, stderr = run_cli("expression", "--expression", xena, "--out", out,
                              "--sample-types", "all")
    assert code == 0, stderr
    assert len(read_matrix(out).values) == len({c[:12] for c in gbm_fpkm_uq.columns})


def test_xena_unit_must_match(tmp_path, run_cli, gbm_fpkm_uq):
    xena = tmp_path / "TCGA-GBM.star_tpm.tsv"
    _write_xena(xena, gbm_fpkm_uq, "Ensembl_ID")
    code, _, stderr = run_cli("expression", "--expression", xena, "--out", tmp_path / "m.tsv",
                              "--sample-types", "02")
    assert code == 2 and "holds tpm, not the requested fpkm_uq" in stderr


def test_plain_table(tmp_path, brca_counts):
    table = brca_counts.T
    table.index.name = "sample"
    path = tmp_path / "brca_counts.csv"
    table.to_csv(path)
    matrix, summary = build_matrix(path, value="counts", transform="none",
                                   drop_median_zero_genes=False)
    tumours = [c for c in brca_counts.columns if c[13:15] == "01"]
    expected = brca_counts[tumours].T
    expected.index = [c[:12] for c in tumours]
    expected = expected.sort_index()
    np.testing.assert_allclose(matrix.values.to_numpy(), expected.to_numpy())
    assert matrix.genes["gene_name"].iat[-1] == brca_counts.index[-1]  # a symbol names itself
    assert "samples × genes table" in str(summary) and "taken to be counts" in str(summary)


def test_plain_table_of_other_patients(tmp_path):
    path = tmp_path / "synthetic.tsv"
    path.write_text("patient_id\tENSG00000141510.18\tENSG00000146648.18\n"
                    "P001\t10\t0\nP002\t30\t0\nP003\t0\t5\n")
    matrix, summary = build_matrix(path)
    assert matrix.values.index.tolist() == ["P001", "P002", "P003"]
    assert matrix.values.columns.tolist() == ["ENSG00000141510.18"]  # median-zero EGFR dropped
    assert matrix.genes["gene_name"].tolist() == ["TP53"]
    np.testing.assert_allclose(matrix.values.iloc[:, 0], np.log10([11, 31, 1]))
    assert "not TCGA barcodes" in str(summary)


def test_drop_median_zero_per_fold():
    values = pd.DataFrame({"a": [0, 0, 1, 5], "b": [1, 2, 3, 4], "c": [0, 0, 0, 9]},
                          index=["p1", "p2", "p3", "p4"], dtype=float)
    assert drop_median_zero(values).columns.tolist() == ["a", "b"]
    assert drop_median_zero(values.loc[["p1", "p2", "p3"]]).columns.tolist() == ["b"]


def test_transforms():
    values = pd.DataFrame({"g": [0.0, 9.0, 99.0]})
    np.testing.assert_allclose(apply_transform(values, "log10p1")["g"], [0, 1, 2])
    np.testing.assert_allclose(apply_transform(values, "log2p1")["g"], np.log2([1, 10, 100]))
    np.testing.assert_allclose(apply_transform(values, "none")["g"], [0, 9, 99])


def test_matrix_round_trip_and_missing_sidecar(tmp_path):
    values = pd.DataFrame([[1.5, 2.25], [0.125, 3.0]], index=["TCGA-02-0047", "TCGA-06-0125"],
                          columns=["ENSG00000141510.18", "ENSG00000182378.14_PAR_Y"])
    genes = pd.DataFrame({"gene_name": ["TP53", "PLCXD1"],
                          "gene_type": ["protein_coding", "protein_coding"]},
                         index=values.columns)
    path = tmp_path / "m.tsv"
    write_matrix(path, ExpressionMatrix(values, genes))
    back = read_matrix(path)
    pd.testing.assert_frame_equal(back.values, values, check_names=False)
    assert back.genes["gene_name"].tolist() == ["TP53", "PLCXD1"]
    genes_path(path).unlink()
    assert read_matrix(path).genes["gene_name"].tolist() == ["", ""]


# ---------------------------------------------------------------- bad input: exit 2, no output

def _break(kind: str, downloads, sheet) -> None:
    files = sorted(downloads.rglob("*.tsv"))
    if kind == "truncated file":
        text = files[3].read_text()
        files[3].write_text(text[: len(text) // 2])
    elif kind == "truncated at a line":
        lines = files[3].read_text().split("\n")
        files[3].write_text("\n".join(lines[:1000]) + "\n")
    elif kind == "missing file":
        files[2].unlink()
    elif kind == "non-TCGA barcode":
        text = sheet.read_text().split("\n")
        text[2] = text[2].replace("TCGA-", "CPTAC-", 2)
        sheet.write_text("\n".join(text))
    elif kind == "duplicated gene":
        lines = files[5].read_text().split("\n")
        lines[500] = lines[400]
        files[5].write_text("\n".join(lines))
    elif kind == "non-numeric":
        lines = files[1].read_text().split("\n")
        fields = lines[77].split("\t")
        fields[8] = "n/a"
        lines[77] = "\t".join(fields)
        files[1].write_text("\n".join(lines))


@pytest.mark.parametrize("kind, names, message", [
    ("truncated file", "file", "truncated"),
    ("truncated at a line", "file", "genes differ"),
    ("missing file", "sheet", "which is not in"),
    ("non-TCGA barcode", "sheet", "is not a TCGA barcode"),
    ("duplicated gene", "file", "appears twice"),
    ("non-numeric", "file", "line 78, column fpkm_uq_unstranded: 'n/a' is not a number"),
])
def test_bad_star_input_exits_2(tmp_path, run_cli, brca_star, kind, names, message):
    downloads = tmp_path / "dl"
    sheet, _ = _write_star_cohort(downloads, brca_star, "new", extra_aliquot=False)
    files = sorted(downloads.rglob("*.tsv"))
    _break(kind, downloads, sheet)
    out = tmp_path / "matrix.tsv"
    # every sample type: every file is read (files of unselected samples are not opened)
    code, stdout, stderr = run_cli("expression", "--expression", downloads,
                                   "--sample-sheet", sheet, "--out", out, "--sample-types", "all")
    assert code == 2
    line = stderr.strip().splitlines()[-1]  # after the progress bar's carriage returns
    assert line.startswith("radiogenomics expression: error: ") and message in line
    named = {"sheet": sheet, "file": files[{"truncated file": 3, "truncated at a line": 3,
                                            "duplicated gene": 5, "non-numeric": 1}.get(kind, 0)]}
    assert str(named[names]) in line
    assert "Traceback" not in stderr
    assert not out.exists() and not genes_path(out).exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("content, message", [
    ("sample,g1,g2\nTCGA-02-0047-01A,1,x\n", "sample TCGA-02-0047-01A, column g2: 'x' is not a number"),
    ("sample,g1,g1\nTCGA-02-0047-01A,1,2\n", "gene g1 appears twice"),
    ("sample,g1\nTCGA-02-0047-01A,1\nP-7,3\n", "'P-7' is not a TCGA barcode"),
    ("sample,g1\nTCGA-02-0047-01A,-1\n", "negative fpkm_uq values"),
])
def test_bad_table_exits_2(tmp_path, run_cli, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    out = tmp_path / "m.tsv"
    code, _, stderr = run_cli("expression", "--expression", path, "--out", out)
    assert code == 2 and message in stderr and str(path) in stderr
    assert not out.exists()


def test_star_file_without_sheet_exits_2(tmp_path, run_cli, brca_star):
    _write_star_cohort(tmp_path / "dl", brca_star, "new", extra_aliquot=False)
    one = sorted((tmp_path / "dl").rglob("*.tsv"))[0]
    code, _, stderr = run_cli("expression", "--expression", one, "--out", tmp_path / "m.tsv")
    assert code == 2 and "need their --sample-sheet" in stderr


def test_read_matrix_errors(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("sample\tg1\nA\t1\n")
    with pytest.raises(InputError, match="first column must be patient_id"):
        read_matrix(path)


def test_only_the_files_of_selected_samples_are_read(tmp_path, run_cli, brca_star):
    """A damaged file of a normal sample (left out by --sample-types 01) never stops the run."""
    downloads = tmp_path / "dl"
    sheet, samples = _write_star_cohort(downloads, brca_star, "new", extra_aliquot=False)
    table = gdc.read_sample_sheet(sheet)
    normal = table.loc[table["sample_type"] != "01", "file_name"].iloc[0]
    damaged = next(downloads.rglob(normal))
    damaged.write_bytes(b"\x00\xff not a STAR file")
    (downloads / "stray_notes.tsv").write_text("not listed in the sheet: never opened\n")
    out = tmp_path / "matrix.tsv"
    code, stdout, stderr = run_cli("expression", "--expression", downloads,
                                   "--sample-sheet", sheet, "--out", out)
    assert code == 0, stderr
    tumours = sum(sample[13:15] == "01" for sample, _ in samples)
    assert f"files read: {tumours}" in stdout
    code, _, stderr = run_cli("expression", "--expression", downloads, "--sample-sheet", sheet,
                              "--out", tmp_path / "all.tsv", "--sample-types", "all")
    assert code == 2 and str(damaged) in stderr  # selected, it is read and refused
