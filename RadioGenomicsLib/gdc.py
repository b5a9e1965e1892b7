"""The GDC file formats: STAR - Counts files, sample sheets and TCGA barcodes.

A GDC "STAR - Counts" file (`*.rna_seq.augmented_star_gene_counts.tsv`) is one
`# gene-model: GENCODE v36` line, the header `STAR_COLUMNS`, four `N_*` summary rows
(counts only) and then one row per GENCODE v36 gene (`_PAR_Y` ids included). The
sample sheet the GDC portal writes maps each downloaded file to its case and sample.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError

GENE_MODEL_LINE = "# gene-model: GENCODE v36"
STAR_COLUMNS = ("gene_id", "gene_name", "gene_type", "unstranded", "stranded_first",
                "stranded_second", "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded")
COUNT_COLUMNS = ("unstranded", "stranded_first", "stranded_second")
UNIT_COLUMNS = ("tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded")
SUMMARY_ROWS = ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous")

# the sample sheet as the GDC portal writes it: one layout before the 2023 portal, one after
SHEET_COLUMNS = ("File ID", "File Name", "Data Category", "Data Type", "Project ID",
                 "Case ID", "Sample ID", "Tissue Type", "Tumor Descriptor", "Specimen Type",
                 "Preservation Method")
OLD_SHEET_COLUMNS = ("File ID", "File Name", "Data Category", "Data Type", "Project ID",
                     "Case ID", "Sample ID", "Sample Type")
_SAMPLE_DESCRIPTION_COLUMNS = ("Sample Type", "Tissue Type", "Tumor Descriptor",
                               "Specimen Type", "Preservation Method")

_BARCODE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}(-(\d{2})[A-Z]?)?")


# ---------------------------------------------------------------- TCGA barcodes

def _barcode_match(barcode: str, source: str | os.PathLike | None) -> re.Match:
    match = _BARCODE.match(str(barcode).strip().upper())
    if match is None:
        raise InputError(source, f"{barcode!r} is not a TCGA barcode (TCGA-XX-XXXX...)")
    return match


def case_id(barcode: str, source: str | os.PathLike | None = None) -> str:
    """The TCGA case of a barcode: its first 12 characters (also the TCIA subject id)."""
    return _barcode_match(barcode, source).group(0)[:12]


def sample_type(barcode: str, source: str | os.PathLike | None = None) -> str:
    """The two-digit sample type of a barcode (characters 14-15; "01" primary tumour)."""
    match = _barcode_match(barcode, source)
    if match.group(2) is None:
        raise InputError(source, f"{barcode!r} is a case barcode without a sample type")
    return match.group(2)


# ---------------------------------------------------------------- expression units

def star_units(counts: np.ndarray, lengths_bp: np.ndarray, protein_coding: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TPM, FPKM and FPKM-UQ from unstranded counts, as the GDC mRNA pipeline computes them.

    counts: (genes,) or (samples, genes); lengths_bp: (genes,) gene lengths (union of
    exons); protein_coding: (genes,) bool.
      TPM     = (C_g / L_g) / sum_j(C_j / L_j) * 1e6      (all genes)
      FPKM    = C_g * 1e9 / (C_pc * L_g)    C_pc: reads on all protein-coding genes
      FPKM-UQ = C_g * 1e9 / (C_75 * L_g)    C_75: 75th percentile of protein-coding counts
    """
    counts = np.asarray(counts, dtype=np.float64)
    lengths = np.asarray(lengths_bp, dtype=np.float64)
    coding = np.asarray(protein_coding, dtype=bool)
    if counts.shape[-1] != lengths.shape[0] or lengths.shape != coding.shape:
        raise ValueError(f"counts {counts.shape}, lengths {lengths.shape} and "
                         f"protein_coding {coding.shape} disagree on the gene count")
    if not coding.any() or (lengths <= 0).any():
        raise ValueError("star_units needs positive gene lengths and protein-coding genes")
    per_base = counts / lengths
    tpm = per_base / per_base.sum(axis=-1, keepdims=True) * 1e6
    coding_total = counts[..., coding].sum(axis=-1, keepdims=True)
    upper_quartile = np.percentile(counts[..., coding], 75, axis=-1, keepdims=True)
    if (upper_quartile <= 0).any():
        raise ValueError("the 75th percentile of protein-coding counts is zero: FPKM-UQ undefined")
    fpkm = counts * 1e9 / (coding_total * lengths)
    fpkm_uq = counts * 1e9 / (upper_quartile * lengths)
    return tpm, fpkm, fpkm_uq


# ---------------------------------------------------------------- STAR - Counts files

def write_star_counts(path: str | os.PathLike, table: pd.DataFrame,
                      summary: dict[str, int] | None = None) -> None:
    """Write a GDC STAR - Counts file: gene-model line, header, N_* rows, genes."""
    if tuple(table.columns) != STAR_COLUMNS:
        raise ValueError(f"table columns must be exactly {STAR_COLUMNS}, got {tuple(table.columns)}")
    summary = summary or {}
    unknown = set(summary) - set(SUMMARY_ROWS)
    if unknown:
        raise ValueError(f"unknown summary rows {sorted(unknown)}; expected {SUMMARY_ROWS}")
    genes = table.copy()
    for column in COUNT_COLUMNS:
        genes[column] = genes[column].astype(np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="\n") as out:
            out.write(GENE_MODEL_LINE + "\n")
            out.write("\t".join(STAR_COLUMNS) + "\n")
            for name in SUMMARY_ROWS:  # counts in the three count columns, the rest empty
                count = int(summary.get(name, 0))
                out.write(f"{name}\t\t\t{count}\t{count}\t{count}\t\t\t\n")
            genes.to_csv(out, sep="\t", header=False, index=False, float_format="%.4f",
                         lineterminator="\n")


_GENE_DTYPES = {c: (str if c in STAR_COLUMNS[:3] else np.float64) for c in STAR_COLUMNS}


def _parse_genes(body: str, first_line: int, path: str | os.PathLike) -> pd.DataFrame:
    """The gene rows, parsed by pandas' C reader; on a bad value, find and name it."""
    def parse(dtypes: dict | type) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(body), sep="\t", header=None, names=list(STAR_COLUMNS),
                           dtype=dtypes, na_filter=False, quoting=csv.QUOTE_NONE)
    numeric = list(COUNT_COLUMNS + UNIT_COLUMNS)
    try:
        genes = parse(_GENE_DTYPES)
        if np.isfinite(genes[numeric].to_numpy()).all():
            return genes
        failure = ValueError("a value is not finite")
    except ValueError as error:
        failure = error
    text = parse(str)
    for column in numeric:
        bad = ~np.isfinite(pd.to_numeric(text[column], errors="coerce").to_numpy(np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(path, f"line {first_line + row}, column {column}: "
                                   f"{text[column].iloc[row]!r} is not a number")
    raise InputError(path, f"cannot parse the gene rows ({failure})")


def read_star_counts(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GDC STAR - Counts file: the genes with columns STAR_COLUMNS.

    The N_* summary counts (unstranded) are in `table.attrs["summary"]`.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read STAR - Counts file ({error})") from None
    if not text.endswith("\n"):
        raise InputError(path, "truncated: the last line is incomplete")
    lines = text.split("\n", 6)  # gene-model line, header, 4 summary rows, the genes
    header_line = 1 if lines[0].startswith("#") else 0
    if len(lines) <= header_line or tuple(lines[header_line].split("\t")) != STAR_COLUMNS:
        raise InputError(path, "not a GDC STAR - Counts file: the header is not "
                               + " ".join(STAR_COLUMNS))
    expected_tabs = len(STAR_COLUMNS) - 1
    if text.count("\t") != expected_tabs * (text.count("\n") - header_line):
        for number, line in enumerate(text.splitlines()[header_line:], start=header_line + 1):
            if line.count("\t") != expected_tabs:
                raise InputError(path, f"line {number} has {line.count(chr(9)) + 1} fields, "
                                       f"expected {len(STAR_COLUMNS)} (truncated or damaged)")
    summary_lines = text.split("\n", header_line + 1 + len(SUMMARY_ROWS))
    summary_rows = [line.split("\t") for line in summary_lines[header_line + 1:-1]]
    if tuple(row[0] for row in summary_rows) != SUMMARY_ROWS:
        raise InputError(path, f"truncated or damaged: expected the rows "
                               f"{', '.join(SUMMARY_ROWS)} before the genes")
    first_gene_line = header_line + 2 + len(SUMMARY_ROWS)
    body = summary_lines[-1]
    if not body:
        raise InputError(path, "truncated: no gene rows")
    genes = _parse_genes(body, first_gene_line, path)
    duplicated = genes["gene_id"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise InputError(path, f"line {first_gene_line + row}: gene id "
                               f"{genes['gene_id'].iloc[row]} appears twice")
    for column in COUNT_COLUMNS:
        counts = genes[column].to_numpy()
        if not np.array_equal(counts, np.round(counts)):
            raise InputError(path, f"column {column} holds values that are not whole counts")
        genes[column] = counts.astype(np.int64)
    try:
        genes.attrs["summary"] = {row[0]: int(row[3] or 0) for row in summary_rows}
    except ValueError:
        raise InputError(path, "a N_* summary row holds a count that is not a number") from None
    return genes


# ---------------------------------------------------------------- sample sheets

def write_sample_sheet(path: str | os.PathLike, rows: pd.DataFrame) -> None:
    """Write a GDC sample sheet TSV; `rows` has the columns of either portal layout."""
    for layout in (SHEET_COLUMNS, OLD_SHEET_COLUMNS):
        if set(rows.columns) == set(layout):
            with atomic_path(path) as tmp:
                rows.loc[:, list(layout)].to_csv(tmp, sep="\t", index=False,
                                                 lineterminator="\n")
            return
    raise ValueError(f"sample sheet columns must be {SHEET_COLUMNS} or {OLD_SHEET_COLUMNS}")


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in str(value).split(",")]


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GDC sample sheet (either portal layout): one row per (file, sample).

    Columns: file_id, file_name, data_category, data_type, project_id, case_id,
    sample_id, sample_type (the barcode's two digits, "01" primary tumour) and
    description (the sheet's own words: "Primary Tumor", or "Tumor, Primary, Solid
    Tissue, ..." in the newer layout). Files of several samples give several rows.
    """
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        raise InputError(path, f"cannot read the sample sheet ({error})") from None
    missing = [c for c in OLD_SHEET_COLUMNS[:7] if c not in sheet.columns]
    if missing:
        raise InputError(path, f"not a GDC sample sheet: no column {', '.join(missing)}")
    described_by = [c for c in _SAMPLE_DESCRIPTION_COLUMNS if c in sheet.columns]
    records = []
    for number, row in enumerate(sheet.itertuples(index=False), start=2):
        row = dict(zip(sheet.columns, row))
        samples = _split_list(row["Sample ID"])
        cases = _split_list(row["Case ID"])
        if len(cases) == 1:
            cases = cases * len(samples)
        if len(cases) != len(samples):
            raise InputError(path, f"line {number}: {len(cases)} case ids for "
                                   f"{len(samples)} sample ids")
        descriptions = [_split_list(row[c]) for c in described_by]
        for index, (case, sample) in enumerate(zip(cases, samples)):
            where = f"{path}, line {number}"
            if case_id(sample, where) != case_id(case, where):
                raise InputError(path, f"line {number}: sample {sample} is not of case {case}")
            words = [d[index] if len(d) == len(samples) else ", ".join(d) for d in descriptions]
            records.append({
                "file_id": row["File ID"], "file_name": row["File Name"],
                "data_category": row["Data Category"], "data_type": row["Data Type"],
                "project_id": row["Project ID"], "case_id": case_id(case, where),
                "sample_id": sample, "sample_type": sample_type(sample, where),
                "description": ", ".join(w for w in words if w),
            })
    if not records:
        raise InputError(path, "the sample sheet lists no files")
    return pd.DataFrame.from_records(records)
