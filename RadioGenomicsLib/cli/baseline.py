"""`radiogenomics baseline`: PyRadiomics features + ridge regression on the training folds."""

from __future__ import annotations

import argparse
from pathlib import Path

from RadioGenomicsLib.choices import REGIONS
from RadioGenomicsLib.cli.common import add_cohort_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "baseline", help="PyRadiomics features + ridge on the same folds, same report",
        description="The classic radiogenomics baseline beside the deep model: PyRadiomics "
                    "features of the tumour (cached per patient) and a ridge regression "
                    "whose penalty is chosen per gene by leave-one-out on each training "
                    "fold, on the same folds, genes and targets as `train` with the same "
                    "--config, --folds and --seed. Writes DIR/features.tsv, folds.tsv, "
                    "baseline.json and the evaluation report DIR/report/.")
    add_cohort_arguments(parser, "the folder to write")
    parser.add_argument("--alphas", type=float, nargs="+", metavar="A",
                        help="ridge penalties to choose from (default 15 on a log grid, "
                             "0.01 to 100000)")
    parser.add_argument("--region", choices=REGIONS,
                        help="where MRI is z-scored before feature extraction (recipe: auto, "
                             "the brain, skull-stripped when needed)")
    parser.add_argument("--cache", metavar="DIR", type=Path,
                        help="where features are cached (~/.cache/radiogenomics/radiomics)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="processes extracting features (default 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.errors import InputError
    from RadioGenomicsLib.training.baseline import (DEFAULT_ALPHAS, baseline_recipe,
                                                   run_baseline)

    if args.jobs < 1:
        raise InputError(None, f"--jobs {args.jobs}: need at least 1")
    recipe = baseline_recipe(args.config, args.folds, args.seed, args.region, args.group_by,
                             args.permute_targets, args.permutations)
    run_baseline(args.manifest, args.expression, args.sample_sheet, Path(args.out), recipe,
                 args.alphas or DEFAULT_ALPHAS, args.cache, args.jobs)
    print(f"baseline -> {args.out} (report in {Path(args.out) / 'report'})")
    return 0
