"""`radiogenomics predict`: one study or a cohort -> ranked gene table(s) and gene maps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from RadioGenomicsLib.cli.common import parse_named_paths
from RadioGenomicsLib.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="one study or a cohort -> ranked gene table(s) and gene maps",
        description="Predict every gene of a model bundle for one study (--image ... "
                    "--segmentation ... --out genes.csv) or for every patient of a cohort "
                    "manifest (--manifest cohort.csv --out DIR).")
    parser.add_argument("--model", required=True, metavar="BUNDLE", help="a model bundle folder")
    parser.add_argument("--image", action="append", metavar="NAME=PATH",
                        help="a channel the model needs and its file or DICOM folder; repeat")
    parser.add_argument("--series", action="append", metavar="NAME=UID_OR_DESCRIPTION",
                        help="which DICOM series to read for a channel whose folder holds several")
    parser.add_argument("--segmentation", metavar="PATH",
                        help="tumour labelmap (NIfTI, NRRD, DICOM folder) or Slicer .seg.nrrd")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--label", type=int, metavar="N", help="tumour label value in a labelmap")
    choice.add_argument("--segment", metavar="NAME", help="segment name in a .seg.nrrd")
    parser.add_argument("--brain-mask", metavar="PATH", help="brain mask instead of skull stripping")
    parser.add_argument("--manifest", metavar="CSV", help="predict every patient of a cohort")
    parser.add_argument("--out", required=True,
                        help="gene table (.csv or .tsv) for a study; a folder for a cohort")
    parser.add_argument("--maps", metavar="DIR", help="write the maps of --map-gene genes here")
    parser.add_argument("--map-gene", action="append", metavar="SYMBOL", default=[],
                        help="a gene (symbol or Ensembl id) to map; repeat")
    parser.add_argument("--map-format", choices=("nrrd", "nii.gz"), default="nrrd")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--folds", choices=("all", "first"), default="all",
                        help="the ensemble of fold models, or the first alone (faster)")
    parser.set_defaults(run=run)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.manifest:
        if args.image or args.segmentation:
            raise InputError(args.manifest, "give either --manifest or --image/--segmentation")
        if args.maps or args.map_gene:
            raise InputError(args.manifest, "maps are written for one study at a time")
    elif not (args.image and args.segmentation):
        raise InputError(None, "give --image NAME=PATH (per channel) and --segmentation, "
                               "or --manifest")
    if args.map_gene and not args.maps:
        raise InputError(None, "--map-gene needs --maps DIR to write the maps to")


def _check_outputs(args: argparse.Namespace) -> None:
    from RadioGenomicsLib.cli.preprocess import study_inputs
    from RadioGenomicsLib.outputs import Output, check_outputs

    out = Output(args.out, "folder" if args.manifest else "file")
    inputs = [args.model, args.manifest] + ([] if args.manifest else study_inputs(args))
    check_outputs("predict", [out, Output(args.maps, "folder", "--maps")], inputs)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.predict import choose_device, map_gene_indices, table_separator

    _check_arguments(args)
    _check_outputs(args)
    bundle = load_bundle(args.model)
    print(f"model {bundle.path}: {bundle.integrity.provenance}")
    device = choose_device(args.device)
    if args.manifest:
        return _predict_cohort(args, bundle, device)
    table_separator(args.out)
    map_genes = map_gene_indices(bundle, args.map_gene)
    return _predict_study(args, bundle, device, map_genes)


def _predict_study(args, bundle, device, map_genes: list[int]) -> int:
    from RadioGenomicsLib.imaging import load_study
    from RadioGenomicsLib.maps import write_volume
    from RadioGenomicsLib.predict import (check_bundle_fits, ensure_writable_folder, gene_table,
                                          map_file_name, map_volumes, one_at_a_time, run_models,
                                          write_table)
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess

    study = load_study(parse_named_paths(args.image, "--image"), args.segmentation,
                       label=args.label, segment=args.segment, brain_mask=args.brain_mask,
                       channels=tuple(bundle.channels),
                       series=parse_named_paths(args.series, "--series"))
    slices = preprocess(study, PreprocessSettings.from_dict(bundle.metadata.preprocessing))
    check_bundle_fits(bundle, slices)
    count = len(bundle.fold_indices(args.folds))
    prediction = run_models(one_at_a_time(bundle, device, args.folds), slices, device, map_genes,
                            count)
    table = gene_table(bundle, prediction)
    write_table(table, args.out)
    written = []
    if map_genes:
        folder = ensure_writable_folder(args.maps)
        for name, volume in map_volumes(bundle, prediction, slices).items():
            written.append(folder / map_file_name(name, "." + args.map_format))
            write_volume(volume, written[-1])
    print(f"{len(table)} genes from {count} fold model(s) on {len(slices.images)} "
          f"tumour slices -> {args.out}")
    _print_top(table)
    for path in written:
        print(f"map -> {path}")
    return 0


def _print_top(table, count: int = 10) -> None:
    top = table.head(count)
    print("top genes against the training cohort (z):")
    for row in top.itertuples():
        flag = "reliable" if row.reliable else "not validated"
        print(f"  {row.rank:>3}  {row.gene_name or row.gene_id:<12} z={row.cohort_z:+.2f}  "
              f"{row.predicted:.3f} [{row.lower:.3f}, {row.upper:.3f}]  {flag}")


def _predict_cohort(args, bundle, device) -> int:
    import pandas as pd

    from RadioGenomicsLib.cohort import LABEL_COLUMN, channel_columns, validate_cohort
    from RadioGenomicsLib.expression import write_values
    from RadioGenomicsLib.imaging import load_study
    from RadioGenomicsLib.predict import (check_bundle_fits, ensure_writable_folder, gene_table,
                                          run_models, write_table)
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess
    from RadioGenomicsLib.progress import progress
    from RadioGenomicsLib.atomic import atomic_path

    cohort = validate_cohort(args.manifest)
    channels = channel_columns(cohort.reset_index())
    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    models = bundle.models(device, args.folds)
    out = ensure_writable_folder(args.out)
    predicted, failures = {}, []
    for patient, row in progress(list(cohort.iterrows()), "patients"):
        try:
            label = row.get(LABEL_COLUMN)
            study = load_study({c: row[c] for c in channels}, row["segmentation"],
                               label=None if pd.isna(label) else int(label),
                               channels=tuple(bundle.channels))
            slices = preprocess(study, settings)
            check_bundle_fits(bundle, slices)
            prediction = run_models(models, slices, device)
        except InputError as error:
            failures.append((patient, str(error)))
            print(f"radiogenomics predict: {patient}: skipped: {error}", file=sys.stderr)
            continue
        write_table(gene_table(bundle, prediction), out / f"{patient}.csv")
        predicted[patient] = prediction.values
    if predicted:
        matrix = pd.DataFrame.from_dict(predicted, orient="index",
                                        columns=bundle.genes["gene_id"].tolist())
        with atomic_path(out / "predictions.tsv") as tmp:
            write_values(tmp, matrix, digits=6)
    if failures:
        with atomic_path(out / "failures.tsv") as tmp:
            pd.DataFrame(failures, columns=["patient_id", "problem"]).to_csv(tmp, sep="\t",
                                                                             index=False)
    print(f"{len(predicted)} of {len(cohort)} patients predicted -> {Path(out)}"
          + (f"; {len(failures)} skipped (see failures.tsv)" if failures else ""))
    return 0 if predicted else 2
