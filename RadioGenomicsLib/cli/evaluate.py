"""`radiogenomics evaluate`: predictions vs truth tables -> per-gene statistics, summary, Figure 2."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.genetable import MARKER_GENES

if TYPE_CHECKING:  # pandas is loaded by `run` only: `--help` stays fast
    import pandas as pd

FOLD_COLUMNS = ("patient_id", "fold")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="predictions vs truth tables -> per-gene statistics, summary, Figure 2",
        description="Per-gene Pearson r and p between two patients × genes tables (TSV/CSV: "
                    "patient_id, then one column per gene id), Holm-Sidak across genes, "
                    "significant genes (adjusted p < alpha, r > 0), the histogram of r. "
                    "The tables must hold the same patients and genes, or give --shared-only. "
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
    parser.add_argument("--shared-only", action="store_true",
                        help="evaluate only the patients and genes both tables hold, saying how "
                             "many each loses (default: tables that differ are refused)")
    parser.set_defaults(run=run)


def _separator(path: Path) -> str:
    return "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"


def _read_columns(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A small table with the named columns (others ignored), every cell a string."""
    import pandas as pd

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
    import pandas as pd

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
    from RadioGenomicsLib.expression import genes_path

    gene_ids = truth_genes.index
    if genes_option:
        return read_gene_names(Path(genes_option), gene_ids)
    if genes_path(truth_path).is_file():
        return truth_genes["gene_name"].to_dict()
    from RadioGenomicsLib.gencode import gene_names  # loads the GENCODE table: only when needed

    return dict(zip(gene_ids, gene_names(list(gene_ids))))


def shared_tables(predictions: pd.DataFrame, truth: pd.DataFrame, names: tuple[str, str],
                  shared_only: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """With --shared-only the patients and genes both tables hold (one line says what each
    side lost); without it tables that differ are refused, the message naming the option."""
    from RadioGenomicsLib.stats import check_tables

    patients = predictions.index.intersection(truth.index)
    genes = predictions.columns.intersection(truth.columns)
    if (set(predictions.index) == set(truth.index)
            and set(predictions.columns) == set(truth.columns)):
        return predictions, truth
    if not shared_only:
        try:
            check_tables(predictions, truth, names)
        except InputError as error:
            if not error.problem.startswith("different "):
                raise
            raise InputError(error.path, f"{error.problem}; --shared-only evaluates the "
                                         f"{len(patients)} patients and {len(genes)} genes "
                                         "both hold") from None
    lost = [f"{(~table.index.isin(patients)).sum()} patient(s) and "
            f"{(~table.columns.isin(genes)).sum()} gene(s) from {name}"
            for table, name in zip((predictions, truth), names)]
    print(f"--shared-only: {len(patients)} patients and {len(genes)} genes in both tables; "
          f"dropped {lost[0]}; {lost[1]}")
    return tuple(table.loc[table.index.isin(patients), table.columns.isin(genes)]
                 for table in (predictions, truth))


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.expression import read_matrix
    from RadioGenomicsLib.outputs import Output, check_outputs
    from RadioGenomicsLib.report import print_summary, write_report

    check_outputs("evaluate", [Output(args.out, "folder")],
                  [args.predictions, args.truth, args.folds, args.genes])
    from RadioGenomicsLib.report import print_summary, write_report  # matplotlib, scipy: slow

    predictions_path, truth_path = Path(args.predictions), Path(args.truth)
    if not 0.0 < args.alpha < 1.0:
        raise InputError(None, f"--alpha {args.alpha}: expected a level between 0 and 1")
    truth = read_matrix(truth_path)
    predictions, truth_values = shared_tables(
        read_matrix(predictions_path).values, truth.values,
        (str(predictions_path), str(truth_path)), args.shared_only)
    folds = read_folds(Path(args.folds)) if args.folds else None
    if folds is not None and args.shared_only:
        folds = folds.loc[folds.index.isin(predictions.index)]
    names = gene_names_for(truth_path, truth.genes.loc[truth_values.columns], args.genes)
    summary = write_report(args.out, predictions, truth_values, names, folds, args.alpha,
                           MARKER_GENES + tuple(args.marker),
                           names=(str(predictions_path), str(truth_path), str(args.folds)))
    print_summary(summary)
    print(f"wrote {args.out}/ (summary.json, gene_stats.tsv, oof_predictions.tsv, pearson_hist.png)")
    return 0
