"""`radiogenomics manifest`: BraTS-TCGA or TCIA download layout -> cohort manifest; check one."""

from __future__ import annotations

import argparse
import sys

from RadioGenomicsLib.choices import TCIA_PATTERNS
from RadioGenomicsLib.cli.common import parse_named_paths
from RadioGenomicsLib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "manifest", help="BraTS-TCGA or TCIA download layout -> cohort manifest",
        description="Write a cohort manifest (CSV: patient_id, one column per channel, "
                    "segmentation, paths relative to the manifest) from a download, or "
                    "check a manifest before training.")
    layouts = parser.add_subparsers(dest="layout", metavar="LAYOUT", required=True)

    brats = layouts.add_parser("brats", help="BraTS-TCGA NIfTI folders "
                               "(TCGA-02-0006_1996.08.23_t1Gd.nii.gz, ..._GlistrBoost*.nii.gz)")
    brats.add_argument("folder", metavar="FOLDER",
                       help="where the BraTS-TCGA files lie (searched with its subfolders)")
    brats.add_argument("--out", required=True, metavar="cohort.csv", help="the manifest to write")

    tcia = layouts.add_parser("tcia", help="a TCIA download (metadata.csv of the NBIA "
                              "Data Retriever)")
    tcia.add_argument("folder", metavar="FOLDER",
                      help="the download folder, holding the Data Retriever's metadata.csv")
    tcia.add_argument("--segmentations", metavar="DIR",
                      help="folder of tumour segmentations, one per patient")
    tcia.add_argument("--segmentation-pattern", default="{patient_id}*", metavar="GLOB",
                      help="file name pattern in --segmentations (default {patient_id}*)")
    tcia.add_argument("--pattern", action="append", metavar="CHANNEL=REGEX",
                      help="series description -> channel, replacing the default for that "
                           "channel (case-insensitive; defaults: " +
                           "; ".join(f"{c}={r}" for c, r in TCIA_PATTERNS.items()) + ")")
    tcia.add_argument("--out", required=True, metavar="cohort.csv", help="the manifest to write")

    check = layouts.add_parser("check", help="validate a manifest (and its expression "
                               "matrix): every problem listed at once")
    check.add_argument("manifest", metavar="cohort.csv", help="the manifest to check")
    check.add_argument("--expression", metavar="matrix.tsv",
                       help="the patients × genes matrix (`radiogenomics expression`): every "
                            "patient of the manifest needs a row")
    check.add_argument("--allow-extra-expression", action="store_true",
                       help="expression of patients without images is not a problem")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.cohort import (EXTRA_EXPRESSION, CohortError, read_brats, read_tcia,
                                         validate_cohort, write_manifest)
    from RadioGenomicsLib.outputs import Output, check_outputs

    if args.layout == "check":
        try:
            table = validate_cohort(args.manifest, args.expression,
                                    allow_extra_expression=args.allow_extra_expression)
        except CohortError as error:
            print(error.report(), file=sys.stderr)
            extra = sum(p.startswith(f"{EXTRA_EXPRESSION}:") for p in error.problems)
            if extra:
                raise InputError(error.path, f"{error.problem}; --allow-extra-expression "
                                             f"accepts the {extra} patient(s) with expression "
                                             "but no images") from None
            raise
        print(f"{args.manifest}: {len(table)} patients, every file present"
              + (", every patient with expression" if args.expression else ""))
        return 0
    check_outputs("manifest", [Output(args.out, "file")], [args.folder])
    if args.layout == "brats":
        report = read_brats(args.folder)
    else:
        patterns = {**TCIA_PATTERNS, **parse_named_paths(args.pattern, "--pattern")}
        report = read_tcia(args.folder, args.segmentations,
                           segmentation_pattern=args.segmentation_pattern, patterns=patterns)
    write_manifest(args.out, report.table)
    print(report)
    print(f"wrote {args.out}")
    return 0
