"""`radiogenomics expression`: GDC / Xena / plain files -> patients × genes target matrix."""

from __future__ import annotations

import argparse

from RadioGenomicsLib.choices import TRANSFORMS, VALUES
from RadioGenomicsLib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "expression", help="GDC / Xena / plain files -> patients × genes target matrix",
        description="Build the patients × genes target matrix (TSV: patient_id, then one "
                    "column per gene id; symbols in <stem>.genes.tsv beside it) and print "
                    "what was read, kept, dropped and averaged.")
    parser.add_argument("--expression", required=True, nargs="+", metavar="PATH",
                        help="a folder or list of GDC STAR - Counts files (with "
                             "--sample-sheet), a UCSC Xena genes × samples matrix, or a "
                             "samples × genes CSV/TSV")
    parser.add_argument("--sample-sheet", metavar="PATH",
                        help="the GDC sample sheet of the STAR - Counts files")
    parser.add_argument("--out", required=True, metavar="matrix.tsv",
                        help="the patients × genes table to write (TSV; gene symbols in "
                             "<stem>.genes.tsv beside it)")
    parser.add_argument("--value", choices=tuple(VALUES), default="fpkm_uq",
                        help="which quantity (default fpkm_uq)")
    parser.add_argument("--transform", choices=TRANSFORMS, default="log10p1",
                        help="log10(1+x) (default, as HE2RNA), log2(1+x), or none")
    parser.add_argument("--sample-types", default="01", metavar="01,...",
                        help="TCGA sample types to keep (default 01, primary tumour; "
                             "'all' keeps every one)")
    parser.add_argument("--keep-all-genes", action="store_true",
                        help="do not drop the genes whose median is zero (leave it to "
                             "training, which drops them per fold)")
    parser.add_argument("--xena-pseudocount", type=float, default=1.0, metavar="P",
                        help="Xena values are log2(x + P) (default 1; 0.001 for Toil TPM)")
    parser.set_defaults(run=run)


def _sample_types(text: str) -> tuple[str, ...] | None:
    if text.strip().lower() == "all":
        return None
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in types if not (len(t) == 2 and t.isdigit())]
    if bad or not types:
        raise InputError(None, f"--sample-types {text!r}: expected two-digit codes like 01,02")
    return types


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.expression import (NO_SAMPLE_LEFT, build_matrix, genes_path,
                                             write_matrix)
    from RadioGenomicsLib.outputs import Output, check_outputs

    check_outputs("expression", [Output(args.out, "file"),
                                 Output(genes_path(args.out), "file", "--out (its .genes.tsv)")],
                  [*args.expression, args.sample_sheet])
    expression = args.expression[0] if len(args.expression) == 1 else args.expression
    try:
        matrix, summary = build_matrix(
            expression, args.sample_sheet, value=args.value, transform=args.transform,
            sample_types=_sample_types(args.sample_types),
            drop_median_zero_genes=not args.keep_all_genes,
            xena_pseudocount=args.xena_pseudocount)
    except InputError as error:
        if not error.problem.startswith(NO_SAMPLE_LEFT):
            raise
        raise InputError(error.path, f"{error.problem}; --sample-types names the types to keep "
                                     "(e.g. 01,02; 'all' keeps every one)") from None
    write_matrix(args.out, matrix)
    print(summary)
    print(f"wrote {args.out} ({matrix.values.shape[0]} patients × {matrix.values.shape[1]} "
          f"genes, {args.transform} of {args.value}) and {genes_path(args.out)}")
    return 0
