"""`radiogenomics train`: cross-validated training -> model bundle + evaluation report."""

from __future__ import annotations

import argparse
from pathlib import Path

from RadioGenomicsLib.cli.common import add_cohort_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="cross-validated training -> model bundle + evaluation report",
        description="Train the gene predictor with k-fold cross-validation by patient; the "
                    "fold models are the bundle, their out-of-fold predictions the report "
                    "(BUNDLE/report). Several processes or GPUs: start it with torchrun.")
    add_cohort_arguments(parser, "the bundle folder to write")
    parser.add_argument("--epochs", type=int, help="most epochs per fold (default: the recipe's)")
    parser.add_argument("--pretrained", metavar="NPZ",
                        help="start the encoder from TransUNet's ImageNet-21k R50+ViT-B_16.npz")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where training runs (default auto: the GPU when there is one)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoints in BUNDLE.work after a crash or kill")
    parser.add_argument("--cache", metavar="DIR", type=Path,
                        help="where preprocessed slices are cached (~/.cache/radiogenomics/slices)"
                             "; with the fusion setting, radiomic features too (DIR/radiomics; "
                             "else the baseline's ~/.cache/radiogenomics/radiomics)")
    parser.add_argument("--export", action="store_true",
                        help="also write the fold models as ONNX (as `radiogenomics export`), "
                             "for predicting without PyTorch")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.predict import choose_device
    from RadioGenomicsLib.training.crossval import train
    from RadioGenomicsLib.training.loop import start_runtime
    from RadioGenomicsLib.training.recipe import load_recipe

    recipe = load_recipe(args.config).with_training(
        folds=args.folds, epochs=args.epochs, seed=args.seed, pretrained=args.pretrained,
        group_by=args.group_by, permute_targets=args.permute_targets,
        permutations=args.permutations)
    runtime = start_runtime(choose_device(args.device))
    train(args.manifest, args.expression, args.sample_sheet, Path(args.out), recipe, runtime,
          resume=args.resume, cache_dir=args.cache)
    if runtime.main and args.export:
        from RadioGenomicsLib.runtime.export import export_bundle

        export_bundle(args.out)
    if runtime.main:
        print(f"bundle -> {args.out} (report in {Path(args.out) / 'report'})"
              + (", fold models exported as ONNX" if args.export else ""))
    return 0
