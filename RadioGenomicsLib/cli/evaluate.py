"""`radiogenomics evaluate`: predictions vs truth tables -> per-gene statistics, summary, Figure 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.expression import genes_path, read_matrix
from RadioGenomicsLib.genetable import MARKER_GENES
from RadioGenomicsLib.outputs import Output, check_outputs

FOLD_COLUMNS = ("patient_id", "fold")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="predictions vs truth tables -> per-gene statistics, summary, Figure 2",
        description="Per-gene Pearson r and p between two patients × genes tables (TSV/CSV: "
                    "patient_id, then one column per gene id), Holm-Sidak across genes, "
                    "significant genes (adjusted p < alpha, r > 0), the histogram of r. "
                    "Writes summary.json, gene_stats.tsv, oof_predictions.tsv and "
                    "pearson_hist.png into --out.")
    parser.add_argument("--predictions", required=True, metavar="P.tsv",
                        help="predicted values, one row per patient (each predicted once)")
    parser.add_argument("--truth", required=True, metavar="T.tsv",
                        help="measured values of the same patients and genes")
    parser.add_argument("--out", required=True, metavar="DIR", help="the report folder")
    parser.add_argument("--alpha", type=float, default=0.05, metavar="A",
                        help="family-wise level for the significant column (default 0.05; "
                             "the counts at 0.05 and 0.01 are always reported)")
    parser.add_argument("--folds", metavar="FOLDS.tsv",
                        help="patient_id, fold: the statistics are also computed inside each fold")
    parser.add_argument("--genes", metavar="GENES.tsv",
                        help="gene_id, gene_name (default: <truth stem>.genes.tsv beside the "
                             "truth table, else GENCODE v36)")
    parser.add_argument("--marker", action="append", default=[], metavar="SYMBOL",
                        help=f"a marker gene to list besides {', '.join(MARKER_GENES)} (repeatable)")
    parser.set_defaults(run=run)


def _separator(path: Path) -> str:
    return "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"


def _read_columns(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A small table with the named columns (others ignored), every cell a string."""
    if not path.is_file():
        raise InputError(path, f"no such {what} file")
    try:
        table = pd.read_csv(path, sep=_separator(path), dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        raise InputError(path, f"cannot read the {what} table ({error})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"the {what} table needs the columns {', '.join(columns)} "
                               f"(missing {', '.join(missing)})")
    return table.loc[:, list(columns)]


def read_folds(path: Path) -> pd.Series:
    """patient_id -> fold label (an integer when every label is one)."""
    table = _read_columns(path, FOLD_COLUMNS, "folds").set_index("patient_id")["fold"]
    labels = pd.to_numeric(table, errors="coerce")
    return labels.astype(int) if labels.notna().all() else table.replace("", None)


def read_gene_names(path: Path, gene_ids: pd.Index) -> dict[str, str]:
    """gene id -> symbol from a gene_id, gene_name table; an id matches with or without its version."""
    from RadioGenomicsLib.gencode import unversioned

    table = _read_columns(path, ("gene_id", "gene_name"), "genes")
    repeated = table["gene_id"][table["gene_id"].duplicated()]
    if len(repeated):
        raise InputError(path, f"gene {repeated.iloc[0]} is listed twice")
    exact = dict(zip(table["gene_id"], table["gene_name"]))
    loose = dict(zip(table["gene_id"].map(unversioned), table["gene_name"]))
    return {gene: exact.get(gene, loose.get(unversioned(gene), "")) for gene in gene_ids}


def gene_names_for(truth_path: Path, truth_genes: pd.DataFrame,
                   genes_option: str | None) -> dict[str, str]:
    """Symbols from --genes, else the truth table's sidecar, else GENCODE v36 ("" when unknown)."""
    gene_ids = truth_genes.index
    if genes_option:
        return read_gene_names(Path(genes_option), gene_ids)
    if genes_path(truth_path).is_file():
        return truth_genes["gene_name"].to_dict()
    from RadioGenomicsLib.gencode import gene_names  # loads the GENCODE table: only when needed

    return dict(zip(gene_ids, gene_names(list(gene_ids))))


def run(args: argparse.Namespace) -> int:
    check_outputs("evaluate", [Output(args.out, "folder")],
                  [args.predictions, args.truth, args.folds, args.genes])
    from RadioGenomicsLib.report import print_summary, write_report  # matplotlib, scipy: slow

    predictions_path, truth_path = Path(args.predictions), Path(args.truth)
    if not 0.0 < args.alpha < 1.0:
        raise InputError(None, f"--alpha {args.alpha}: expected a level between 0 and 1")
    predictions = read_matrix(predictions_path).values
    truth = read_matrix(truth_path)
    folds = read_folds(Path(args.folds)) if args.folds else None
    names = gene_names_for(truth_path, truth.genes, args.genes)
    summary = write_report(args.out, predictions, truth.values, names, folds, args.alpha,
                           MARKER_GENES + tuple(args.marker),
                           names=(str(predictions_path), str(truth_path), str(args.folds)))
    print_summary(summary)
    print(f"wrote {args.out}/ (summary.json, gene_stats.tsv, oof_predictions.tsv, pearson_hist.png)")
    return 0
