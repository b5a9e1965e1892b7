"""`radiogenomics map`: any gene's map from a prediction run, without predicting again."""

from __future__ import annotations

import argparse
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "map", help="any gene's map from a prediction run",
        description="Draw the maps of genes from a prediction run (`radiogenomics predict "
                    "--run DIR`): the gene layer of each fold model applied to the run's saved "
                    "token embeddings, averaged over the fold models and carried onto the "
                    "study's grid. Nothing is read, preprocessed or encoded again.")
    parser.add_argument("--run", required=True, metavar="DIR", dest="run_folder", help="a prediction run folder")
    parser.add_argument("--gene", action="append", default=[], metavar="SYMBOL",
                        help="a gene (symbol or Ensembl id) to map; repeat")
    parser.add_argument("--attention", action="store_true",
                        help="also the attention map of an attention-pooling model (where it "
                             "looked), as attention.nrrd")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the maps")
    parser.add_argument("--model", metavar="BUNDLE",
                        help="the bundle that made the run, if it moved since (default: the "
                             "path that run.json records); refused if its content changed")
    parser.add_argument("--map-format", choices=("nrrd", "nii.gz"), default="nrrd",
                        help="file format of the maps (default nrrd)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.errors import InputError
    from RadioGenomicsLib.outputs import Output, check_outputs
    from RadioGenomicsLib.run import attention_map, open_run, run_maps, write_maps

    if not args.gene and not args.attention:
        raise InputError(None, "give --gene SYMBOL (repeatable) and/or --attention")
    # maps folders are the prediction's: `predict --maps` and `map --out` share them
    check_outputs("predict", [Output(args.out, "folder")], [args.run_folder, args.model])
    started = time.perf_counter()
    bundle = load_bundle(args.model, verify_checksums=False) if args.model else None
    result, bundle = open_run(args.run_folder, bundle)
    maps = run_maps(result, bundle, args.gene)
    if args.attention:
        maps["attention"] = attention_map(result, bundle)
    written = write_maps(maps, args.out, "." + args.map_format)
    for path in written:
        print(f"map -> {path}")
    print(f"{len(written)} map(s) from {len(result.folds)} fold model(s) in "
          f"{time.perf_counter() - started:.2f} s")
    return 0
