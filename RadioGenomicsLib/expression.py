"""The patients × genes target matrix, from GDC STAR - Counts files, Xena or plain tables.

Every source is first turned into samples × genes values on the linear scale (counts,
TPM or FPKM-UQ), then the same steps follow: keep the chosen sample types (01 primary
tumour by default), average the samples of one case, transform (log10(1 + x) by
default, as HE2RNA) and drop the genes whose median over the patients is zero.

The matrix file is a TSV: `patient_id`, then one column per gene id. The genes' symbols
and types travel beside it in `<stem>.genes.tsv` (gene_id, gene_name, gene_type).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from RadioGenomicsLib import gdc
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.choices import TRANSFORMS, VALUES
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.progress import progress

GENE_COLUMNS = ("gene_id", "gene_name", "gene_type")
PATIENT_COLUMN = "patient_id"
XENA_FIRST_HEADERS = ("sample", "Ensembl_ID")
EXPRESSION_DATA_TYPE = "Gene Expression Quantification"
NO_SAMPLE_LEFT = "no sample left"  # every sample of another type than asked for

# the unit a Xena file name announces (TCGA-GBM.star_fpkm-uq.tsv.gz, ...star_tpm...)
_XENA_UNITS = (("fpkm_uq", re.compile(r"fpkm[-_]?uq", re.I)),
               ("fpkm", re.compile(r"fpkm", re.I)),
               ("tpm", re.compile(r"tpm", re.I)),
               ("counts", re.compile(r"count", re.I)))


@dataclass
class ExpressionMatrix:
    """values: patients × genes (index patient_id, columns gene ids); genes: indexed
    by gene_id in the same order, columns gene_name and gene_type ("" when unknown)."""

    values: pd.DataFrame
    genes: pd.DataFrame


@dataclass
class ExpressionSummary:
    """What building the matrix read, kept, dropped and averaged."""

    source: str
    files_read: int = 0
    samples_kept: list[str] = field(default_factory=list)
    samples_dropped: dict[str, str] = field(default_factory=dict)  # sample -> why
    averaged: dict[str, list[str]] = field(default_factory=dict)  # patient -> its samples
    patients: int = 0
    genes_read: int = 0
    genes_kept: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"source: {self.source}", f"files read: {self.files_read}",
                 f"samples kept: {len(self.samples_kept)}",
                 f"samples dropped: {len(self.samples_dropped)}"]
        reasons = pd.Series(self.samples_dropped, dtype=object)
        for reason, count in reasons.value_counts(sort=False).items():
            lines.append(f"  {count} × {reason}")
        lines.append(f"patients (cases): {self.patients}")
        lines.append(f"patients with several samples, averaged: {len(self.averaged)}")
        lines += [f"  {patient}: {', '.join(samples)}"
                  for patient, samples in self.averaged.items()]
        lines.append(f"genes: {self.genes_kept} kept of {self.genes_read}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class _Samples:
    """Samples × genes on the linear scale, before selection and averaging."""

    values: np.ndarray  # (samples, genes) float64
    sample_ids: list[str]
    patient_ids: list[str]
    sample_types: list[str | None]  # None: the id carries no sample type
    genes: pd.DataFrame  # gene_id, gene_name, gene_type


# ---------------------------------------------------------------- the steps

def apply_transform(values: pd.DataFrame, transform: str) -> pd.DataFrame:
    """log10(1 + x), log2(1 + x) or x itself."""
    if transform == "log10p1":
        return np.log10(values + 1.0)
    if transform == "log2p1":
        return np.log2(values + 1.0)
    if transform == "none":
        return values
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


def drop_median_zero(values: pd.DataFrame) -> pd.DataFrame:
    """Keep the genes whose median over these patients is not zero.

    Call it on the training patients of each fold; select the same columns in the
    validation patients (`validation[train.columns]`).
    """
    return values.loc[:, values.median(axis=0) != 0]


def _select_and_average(samples: _Samples, sample_types: Sequence[str] | None,
                        summary: ExpressionSummary, source: Path) -> pd.DataFrame:
    keep = []
    for index, (sample, kind) in enumerate(zip(samples.sample_ids, samples.sample_types)):
        if sample_types is not None and kind is not None and kind not in sample_types:
            summary.samples_dropped[sample] = f"sample type {kind} not in {','.join(sample_types)}"
        else:
            keep.append(index)
    summary.samples_kept = [samples.sample_ids[i] for i in keep]
    if not keep:
        raise InputError(source, f"{NO_SAMPLE_LEFT}: every one of the {len(samples.sample_ids)} "
                               f"samples has a sample type other than {','.join(sample_types or [])}")
    frame = pd.DataFrame(samples.values[keep], columns=samples.genes["gene_id"].to_numpy())
    patients = pd.Series([samples.patient_ids[i] for i in keep])
    for patient, rows in patients.groupby(patients, sort=False).groups.items():
        if len(rows) > 1:
            summary.averaged[patient] = [samples.sample_ids[keep[r]] for r in rows]
    averaged = frame.groupby(patients.to_numpy(), sort=True).mean()
    averaged.index.name = PATIENT_COLUMN
    averaged.columns.name = None
    summary.patients = len(averaged)
    return averaged


def _symbols(gene_ids: Sequence[str]) -> list[str]:
    """Symbols of Ensembl ids from GENCODE v36; a non-Ensembl id (a symbol) names itself."""
    from RadioGenomicsLib.gencode import gene_names

    names = gene_names(list(gene_ids))
    return [name or ("" if gene_id.startswith("ENSG") else gene_id)
            for gene_id, name in zip(gene_ids, names)]


# ---------------------------------------------------------------- GDC STAR - Counts

def _star_files(expression: Sequence[Path], wanted: set[str]) -> tuple[dict[str, Path], bool]:
    """File name -> path; True when a folder was given (so every sheet file must be in it).
    In a folder only the `wanted` names count (other files are not looked at)."""
    is_folder = len(expression) == 1 and expression[0].is_dir()
    files = sorted(p for p in expression[0].rglob("*") if p.is_file() and p.name in wanted) \
        if is_folder else list(expression)
    by_name: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise InputError(path, "no such file")
        if path.name in by_name:  # the sample sheet knows files by name only
            raise InputError(path, f"the same file name as {by_name[path.name]}")
        by_name[path.name] = path
    return by_name, is_folder


def _read_star_samples(expression: Sequence[Path], sheet_path: Path, value: str,
                       summary: ExpressionSummary,
                       sample_types: Sequence[str] | None = None) -> _Samples:
    """The STAR - Counts files of the sheet's samples of the chosen types: the files of the
    other samples (normals, ...) are never opened, so a damaged one cannot stop the run."""
    sheet = gdc.read_sample_sheet(sheet_path)
    other = sheet["data_type"] != EXPRESSION_DATA_TYPE
    if other.any():
        summary.notes.append(f"{other.sum()} sample-sheet rows of other data types ignored")
    sheet = sheet[~other]
    if sheet.empty:
        raise InputError(sheet_path, f"no {EXPRESSION_DATA_TYPE} files in the sample sheet")
    several = sheet.groupby("file_name")["sample_id"].nunique()
    if (several > 1).any():
        name = several[several > 1].index[0]
        raise InputError(sheet_path, f"{name} maps to several samples; "
                                     "an expression file has exactly one")
    in_sheet = set(sheet["file_name"])
    if sample_types is not None:
        other_type = (sheet["sample_type"] != "") & ~sheet["sample_type"].isin(sample_types)
        for sample, kind in zip(sheet["sample_id"][other_type], sheet["sample_type"][other_type]):
            summary.samples_dropped[sample] = f"sample type {kind} not in {','.join(sample_types)}"
        sheet = sheet[~other_type]
        if sheet.empty:
            raise InputError(sheet_path, f"{NO_SAMPLE_LEFT}: every sample of the sheet has a "
                                         f"sample type other than {','.join(sample_types)}")
    available, is_folder = _star_files(expression, set(sheet["file_name"]))
    listed = set(sheet["file_name"])
    if is_folder:
        absent = sorted(listed - set(available))
        if absent:
            raise InputError(sheet_path, f"lists {absent[0]} which is not in {expression[0]} "
                                         f"({len(absent)} listed files missing)")
        available = {name: path for name, path in available.items() if name in listed}
    else:
        unlisted = sorted(set(available) - in_sheet)
        if unlisted:
            raise InputError(available[unlisted[0]], f"not in the sample sheet {sheet_path}")
        available = {name: path for name, path in available.items() if name in listed}
        not_given = len(listed - set(available))
        if not_given:
            summary.notes.append(f"{not_given} files of the sample sheet were not given")
    by_name = sheet.drop_duplicates("file_name").set_index("file_name")
    genes, rows, sample_ids = None, [], []
    for name, path in progress(sorted(available.items()), "reading STAR - Counts files"):
        table = gdc.read_star_counts(path)
        if genes is None:
            genes, first = table.loc[:, list(GENE_COLUMNS)].reset_index(drop=True), path
        elif not np.array_equal(table["gene_id"].to_numpy(), genes["gene_id"].to_numpy()):
            sizes = {path: len(table), first: len(genes)}
            odd, other = (path, first) if len(table) <= len(genes) else (first, path)
            raise InputError(odd, f"its {sizes[odd]} genes differ from the {sizes[other]} of "
                                  f"{other.name}: truncated, or another gene model")
        rows.append(table[VALUES[value]].to_numpy(dtype=np.float64))
        sample_ids.append(by_name.loc[name, "sample_id"])
    duplicated = pd.Series(sample_ids).duplicated()
    if duplicated.any():
        summary.notes.append(f"{duplicated.sum()} samples have several files (averaged)")
    summary.files_read = len(rows)
    return _Samples(np.vstack(rows), sample_ids,
                    [gdc.case_id(s, sheet_path) for s in sample_ids],
                    [gdc.sample_type(s, sheet_path) for s in sample_ids], genes)


# ---------------------------------------------------------------- Xena and plain tables

def _separator(path: Path) -> str:
    return "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"


def _rows(path: Path) -> Iterator[list[str]]:
    """The fields of each line of a CSV / TSV (gzipped or not)."""
    try:
        with (gzip.open(path, "rt", newline="") if path.name.endswith(".gz")
              else open(path, newline="")) as handle:
            yield from csv.reader(handle, delimiter=_separator(path))
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as error:
        raise InputError(path, f"cannot read the table ({error})") from None


def _header(path: Path) -> list[str]:
    return [field.strip() for field in next(_rows(path), [])]


def _read_table(path: Path, row_kind: str, column_kind: str) -> pd.DataFrame:
    """A numeric table with ids in its first column: unique row and column labels, every
    value a finite number, or an InputError naming the first bad label or cell."""
    rows = _rows(path)
    header = [field.strip() for field in next(rows, [])]
    if len(header) < 2:
        raise InputError(path, "the table needs an id column and at least one value column")
    _unique(pd.Index(header[1:]), path, column_kind)
    ids, values = [], []
    for number, fields in enumerate(rows, start=2):
        if len(fields) != len(header):
            raise InputError(path, f"line {number} has {len(fields)} fields, expected "
                                   f"{len(header)} (truncated or damaged)")
        ids.append(fields[0].strip())
        try:
            row = np.array(fields[1:], dtype=np.float64)
        except ValueError:
            row = np.array([np.nan if _not_a_number(f) else float(f) for f in fields[1:]])
        if not np.isfinite(row).all():
            column = int(np.flatnonzero(~np.isfinite(row))[0])
            raise InputError(path, f"{row_kind} {ids[-1]}, column {header[column + 1]}: "
                                   f"{fields[column + 1]!r} is not a number")
        values.append(row)
    if not values:
        raise InputError(path, "the table has no rows")
    _unique(pd.Index(ids), path, row_kind)
    return pd.DataFrame(np.vstack(values), index=ids, columns=header[1:])


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def _unique(labels: pd.Index, path: Path, what: str) -> None:
    duplicated = labels.duplicated()
    if duplicated.any():
        raise InputError(path, f"{what} {labels[duplicated][0]} appears twice")


def _patients_of(ids: Sequence[str], path: Path) -> tuple[list[str], list[str | None], bool]:
    """(patient ids, sample types, whether the ids are TCGA barcodes).

    Ids that are all not TCGA are patient ids as they are; 12-character case barcodes
    carry no sample type (None).
    """
    tcga = [bool(re.match(r"^TCGA-", i, re.I)) for i in ids]
    if not any(tcga):
        return list(ids), [None] * len(ids), False
    if not all(tcga):
        raise InputError(path, f"{ids[tcga.index(False)]!r} is not a TCGA barcode "
                               "(the other ids are)")
    patients = [gdc.case_id(i, path) for i in ids]
    types = [gdc.sample_type(i, path) if len(i) > 12 else None for i in ids]
    return patients, types, True


def _xena_unit(path: Path) -> str | None:
    return next((unit for unit, pattern in _XENA_UNITS if pattern.search(path.name)), None)


def _read_xena(path: Path, value: str, pseudocount: float, summary: ExpressionSummary
               ) -> _Samples:
    table = _read_table(path, "gene", "sample")
    logged = table.to_numpy()
    unit = _xena_unit(path)
    if unit is not None and unit != value:
        raise InputError(path, f"the file name says it holds {unit}, not the requested {value}")
    summary.notes.append(f"Xena values read as log2(x + {pseudocount:g}) and turned back into x"
                         + ("" if unit else f"; the file name does not say its unit: "
                                            f"taken to be {value}"))
    linear = np.exp2(logged) - pseudocount
    sample_ids = [str(s).strip() for s in table.columns]
    patients, types, _ = _patients_of(sample_ids, path)
    gene_ids = [str(g) for g in table.index]
    genes = pd.DataFrame({"gene_id": gene_ids, "gene_name": _symbols(gene_ids),
                          "gene_type": ""})
    summary.files_read = 1
    return _Samples(np.clip(linear.T, 0.0, None), sample_ids, patients, types, genes)


def _read_plain(path: Path, value: str, summary: ExpressionSummary) -> _Samples:
    table = _read_table(path, "sample", "gene")
    values = table.to_numpy()
    sample_ids = list(table.index)
    patients, types, tcga = _patients_of(sample_ids, path)
    summary.notes.append(f"table values used as they are, taken to be {value}")
    if not tcga:
        summary.notes.append("ids are not TCGA barcodes: used as patient ids, "
                             "no sample-type selection")
    gene_ids = [str(g) for g in table.columns]
    genes = pd.DataFrame({"gene_id": gene_ids, "gene_name": _symbols(gene_ids),
                          "gene_type": ""})
    summary.files_read = 1
    return _Samples(values, sample_ids, patients, types, genes)


def _is_star_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        start = handle.read(4096).decode("utf-8", errors="replace")
    return start.startswith("# gene-model") or start.startswith("\t".join(gdc.STAR_COLUMNS))


def _is_xena(path: Path) -> bool:
    """Genes × samples: first header `sample` or `Ensembl_ID`, then TCGA barcodes."""
    header = _header(path)
    return (len(header) > 1 and header[0] in XENA_FIRST_HEADERS
            and all(re.match(r"^TCGA-", h, re.I) for h in header[1:]))


# ---------------------------------------------------------------- building the matrix

def build_matrix(expression: str | os.PathLike | Sequence[str | os.PathLike],
                 sample_sheet: str | os.PathLike | None = None, *, value: str = "fpkm_uq",
                 transform: str = "log10p1", sample_types: Sequence[str] | None = ("01",),
                 drop_median_zero_genes: bool = True, xena_pseudocount: float = 1.0
                 ) -> tuple[ExpressionMatrix, ExpressionSummary]:
    """Patients × genes targets from STAR - Counts files (a folder or a list, with the
    GDC sample sheet), a UCSC Xena genes × samples matrix, or a samples × genes table.

    sample_types: barcode sample types to keep (None keeps all). Samples of one case
    are averaged on the linear scale, before the transform.
    """
    if value not in VALUES:
        raise ValueError(f"value must be one of {tuple(VALUES)}, got {value!r}")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    paths = ([Path(expression)] if isinstance(expression, (str, os.PathLike))
             else [Path(p) for p in expression])
    if not paths or not all(p.exists() for p in paths):
        missing = next((p for p in paths if not p.exists()), None)
        raise InputError(missing, "no such file or folder")
    star = (sample_sheet is not None or paths[0].is_dir() or len(paths) > 1
            or _is_star_file(paths[0]))
    if star:
        if sample_sheet is None:
            raise InputError(paths[0], "GDC STAR - Counts files need their --sample-sheet")
        summary = ExpressionSummary(source=f"GDC STAR - Counts ({value})")
        samples = _read_star_samples(paths, Path(sample_sheet), value, summary, sample_types)
    elif _is_xena(paths[0]):
        summary = ExpressionSummary(source="UCSC Xena genes × samples matrix")
        samples = _read_xena(paths[0], value, xena_pseudocount, summary)
    else:
        summary = ExpressionSummary(source="samples × genes table")
        samples = _read_plain(paths[0], value, summary)
    summary.genes_read = len(samples.genes)
    if transform != "none" and (samples.values < 0).any():
        raise InputError(paths[0], f"negative {value} values: already transformed? "
                                   "(then use --transform none)")
    source = Path(sample_sheet) if sample_sheet is not None else paths[0]
    values = apply_transform(_select_and_average(samples, sample_types, summary, source),
                             transform)
    if drop_median_zero_genes:
        values = drop_median_zero(values)
    summary.genes_kept = values.shape[1]
    genes = samples.genes.set_index("gene_id").loc[values.columns, ["gene_name", "gene_type"]]
    return ExpressionMatrix(values, genes), summary


# ---------------------------------------------------------------- the matrix file

def genes_path(matrix_path: str | os.PathLike) -> Path:
    """`matrix.tsv` -> `matrix.genes.tsv` (the gene symbols beside the matrix)."""
    path = Path(matrix_path)
    return path.with_name(path.name.split(".")[0] + ".genes.tsv")


def write_matrix(path: str | os.PathLike, matrix: ExpressionMatrix) -> None:
    """Write the matrix TSV and its `<stem>.genes.tsv`; both appear or neither."""
    genes = matrix.genes.loc[matrix.values.columns].reset_index()
    genes.columns = list(GENE_COLUMNS)
    with atomic_path(path) as matrix_tmp, atomic_path(genes_path(path)) as genes_tmp:
        genes.to_csv(genes_tmp, sep="\t", index=False, lineterminator="\n")
        write_values(matrix_tmp, matrix.values)


def write_values(path: str | os.PathLike, values: pd.DataFrame, digits: int = 7) -> None:
    """A patients x genes table as TSV (`patient_id`, then one column per gene), as
    `read_matrix` reads it. Row by row: pandas' to_csv is ten times slower for tens of
    thousands of columns."""
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join([PATIENT_COLUMN, *map(str, values.columns)]) + "\n")
        for patient, row in zip(values.index, values.to_numpy(dtype=np.float64)):
            out.write(f"{patient}\t" + "\t".join(f"{v:.{digits}g}" for v in row) + "\n")


def _read_symbols(sidecar: Path) -> pd.DataFrame:
    """The `<stem>.genes.tsv` beside a matrix: gene_id, gene_name, gene_type; ids unique."""
    try:
        genes = pd.read_csv(sidecar, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        problem = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(sidecar, f"cannot read the gene symbols table ({problem})") from None
    if tuple(genes.columns) != GENE_COLUMNS:
        raise InputError(sidecar, f"the columns must be {', '.join(GENE_COLUMNS)}")
    repeated = genes["gene_id"][genes["gene_id"].duplicated()]
    if len(repeated):
        raise InputError(sidecar, f"gene {repeated.iloc[0]} is listed twice")
    return genes


def read_matrix(path: str | os.PathLike) -> ExpressionMatrix:
    """Read a matrix written by `write_matrix` (gene names "" when the sidecar is absent)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such expression matrix")
    first = (_header(path) or [""])[0]
    if first != PATIENT_COLUMN:
        raise InputError(path, f"the first column must be {PATIENT_COLUMN}, not {first!r}")
    values = _read_table(path, "patient", "gene")
    values.index.name = PATIENT_COLUMN
    sidecar = genes_path(path)
    if sidecar.is_file():
        genes = _read_symbols(sidecar)
        genes = genes.set_index("gene_id")
        absent = values.columns.difference(genes.index)
        if len(absent):
            raise InputError(sidecar, f"gene {absent[0]} of {path.name} is not listed")
        genes = genes.loc[values.columns]
    else:
        genes = pd.DataFrame({"gene_name": "", "gene_type": ""}, index=values.columns)
    genes.index.name = "gene_id"
    return ExpressionMatrix(values, genes)
