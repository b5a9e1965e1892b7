"""`radiogenomics compare`: two evaluation reports side by side, gene by gene."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="two evaluation reports side by side, gene by gene",
        description="Compare two evaluation reports of the same patients and genes (e.g. "
                    "`train`'s BUNDLE/report and `baseline`'s OUT/report with the same "
                    "--config, --folds and --seed): significant genes, FDR, n-free measures, "
                    "genes beating the mean predictor, and per gene Steiger's test of the two "
                    "correlations with the same truth (Benjamini-Hochberg), counted both ways. "
                    "Writes compare.tsv, compare.md and scatter.png into --out.")
    parser.add_argument("report_a", metavar="REPORT_A", help="a report folder")
    parser.add_argument("report_b", metavar="REPORT_B", help="another report of the same cohort")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the comparison")
    parser.add_argument("--labels", nargs=2, metavar=("A", "B"),
                        help="names of the two methods (default: the report folders' parents)")
    parser.add_argument("--truth", metavar="truth.json",
                        help="a synthetic cohort's truth: also count the truly linked genes "
                             "each method found, per latent factor")
    parser.add_argument("--alpha", type=float, default=0.05, metavar="A",
                        help="level of the Steiger tests after Benjamini-Hochberg (default 0.05)")
    parser.set_defaults(run=run)


def _label(folder: str) -> str:
    path = Path(folder).resolve()
    return path.parent.name if path.name == "report" else path.name


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.compare import compare_reports, write_comparison
    from RadioGenomicsLib.errors import InputError

    if not 0.0 < args.alpha < 1.0:
        raise InputError(None, f"--alpha {args.alpha}: expected a level between 0 and 1")
    from RadioGenomicsLib.outputs import Output, check_outputs

    check_outputs("compare", [Output(args.out, "folder")],
                  [args.report_a, args.report_b, args.truth])
    labels = args.labels or [_label(args.report_a), _label(args.report_b)]
    if labels[0] == labels[1]:
        labels = [f"{labels[0]} (A)", f"{labels[1]} (B)"]
    table, text = compare_reports(args.report_a, args.report_b, labels, args.truth, args.alpha)
    write_comparison(args.out, table, text, labels)
    print(text, end="")
    print(f"wrote {args.out}/ (compare.tsv, compare.md, scatter.png)")
    return 0
