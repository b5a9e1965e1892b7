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
    parser.add_argument("--run", metavar="DIR", dest="run_folder",
                        help="keep the prediction run here (the table, the tumour slices, the "
                             "token embeddings: any gene's map later with `radiogenomics map`); "
                             "default: beside --out, named after it (genes.csv -> genes.run)")
    parser.add_argument("--runs", metavar="DIR",
                        help="with --manifest: keep each patient's prediction run in DIR/PATIENT "
                             "(default: not kept)")
    parser.add_argument("--maps", metavar="DIR", help="write the maps of --map-gene genes here")
    parser.add_argument("--map-gene", action="append", metavar="SYMBOL", default=[],
                        help="a gene (symbol or Ensembl id) to map; repeat")
    parser.add_argument("--map-format", choices=("nrrd", "nii.gz"), default="nrrd",
                        help="file format of the maps (default nrrd)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the fold models run (auto: the GPU when there is one)")
    parser.add_argument("--folds", choices=("all", "first"), default="all",
                        help="the ensemble of fold models, or the first alone (faster)")
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "openvino"),
                        default="auto",
                        help="torch, or the bundle's exported fold models (`radiogenomics "
                             "export`) on ONNX Runtime or OpenVINO, without PyTorch; auto: the "
                             "fastest installed and exported (torch on a CUDA machine)")
    parser.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                        help="bf16 (OpenVINO on a CPU with AVX-512 BF16 or AMX): the transformer "
                             "and the head, once it passed a check against float32 on this "
                             "machine; auto: bf16 where it passed, else float32")
    parser.set_defaults(run=run)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.manifest:
        if args.image or args.segmentation:
            raise InputError(args.manifest, "give either --manifest or --image/--segmentation")
        if args.maps or args.map_gene or args.run_folder:
            raise InputError(args.manifest, "--maps, --map-gene and --run are for one study; "
                                            "with --manifest keep the runs with --runs DIR")
    elif args.runs:
        raise InputError(None, "--runs DIR is for --manifest; for one study use --run DIR")
    elif not (args.image and args.segmentation):
        raise InputError(None, "give --image NAME=PATH (per channel) and --segmentation, "
                               "or --manifest")
    if args.map_gene and not args.maps:
        raise InputError(None, "--map-gene needs --maps DIR to write the maps to")


def default_run_folder(out: str) -> Path:
    """genes.csv -> genes.run beside it."""
    path = Path(out)
    return path.with_name(path.name.split(".")[0] + ".run")


def study_inputs(args: argparse.Namespace):
    from RadioGenomicsLib.run import StudyInputs

    return StudyInputs(parse_named_paths(args.image, "--image"), args.segmentation,
                       label=args.label, segment=args.segment, brain_mask=args.brain_mask,
                       series=parse_named_paths(args.series, "--series"))


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.predict import map_gene_indices, table_separator

    _check_arguments(args)
    bundle = load_bundle(args.model)
    if args.manifest:
        return _predict_cohort(args, bundle)
    table_separator(args.out)
    map_gene_indices(bundle, args.map_gene)  # a misspelt gene fails before the work
    return _predict_study(args, bundle)


def _predict_study(args, bundle) -> int:
    from RadioGenomicsLib.predict import write_table
    from RadioGenomicsLib.run import predict_study, run_maps, write_maps

    run_folder = Path(args.run_folder or default_run_folder(args.out))
    result = predict_study(bundle, study_inputs(args), run_folder, args.device, args.folds,
                           runtime=args.runtime, precision=args.precision)
    write_table(result.table, args.out)
    written = []
    if args.map_gene:
        written = write_maps(run_maps(result, bundle, args.map_gene), args.maps,
                             "." + args.map_format)
    settings = result.info["settings"]
    print(f"{len(result.table)} genes from {len(result.folds)} fold model(s) on "
          f"{result.info['slices']} tumour slices ({settings['runtime']}, "
          f"{settings['precision']}) -> {args.out}")
    print(f"prediction run -> {run_folder} (any gene's map: radiogenomics map --run "
          f"{run_folder} --gene SYMBOL --out DIR)")
    print_top(result.table)
    for path in written:
        print(f"map -> {path}")
    return 0


def print_top(table, count: int = 10) -> None:
    top = table.head(count)
    print("top genes against the training cohort (z):")
    for row in top.itertuples():
        flag = "reliable" if row.reliable else "not validated"
        print(f"  {row.rank:>3}  {row.gene_name or row.gene_id:<12} z={row.cohort_z:+.2f}  "
              f"{row.predicted:.3f} [{row.lower:.3f}, {row.upper:.3f}]  {flag}")


def _predict_cohort(args, bundle) -> int:
    import shutil
    import tempfile

    import pandas as pd

    from RadioGenomicsLib.atomic import atomic_path
    from RadioGenomicsLib.cohort import LABEL_COLUMN, channel_columns, validate_cohort
    from RadioGenomicsLib.expression import write_values
    from RadioGenomicsLib.predict import ensure_writable_folder, write_table
    from RadioGenomicsLib.progress import progress
    from RadioGenomicsLib.run import StudyInputs, predict_study, settled_runners

    cohort = validate_cohort(args.manifest)
    channels = channel_columns(cohort.reset_index())
    runners, runtime, precision = None, args.runtime, args.precision  # settled by the first
    out = ensure_writable_folder(args.out)
    runs = ensure_writable_folder(args.runs) if args.runs else Path(tempfile.mkdtemp(
        prefix=".runs-", dir=out))
    predicted, failures = {}, []
    try:
        for patient, row in progress(list(cohort.iterrows()), "patients"):
            label = row.get(LABEL_COLUMN)
            inputs = StudyInputs({c: row[c] for c in channels}, row["segmentation"],
                                 label=None if pd.isna(label) else int(label))
            try:
                result = predict_study(bundle, inputs, runs / str(patient), args.device,
                                       args.folds, runners, runtime, precision)
            except InputError as error:
                failures.append((patient, str(error)))
                print(f"radiogenomics predict: {patient}: skipped: {error}", file=sys.stderr)
                continue
            if runners is None:  # the fold models kept loaded for the other patients
                runners = settled_runners(bundle, result, args.device)
                runtime, precision = (result.info["settings"][k] for k in ("runtime", "precision"))
            write_table(result.table, out / f"{patient}.csv")
            predicted[patient] = result.table.set_index("gene_id")["predicted"]
    finally:
        if not args.runs:
            shutil.rmtree(runs, ignore_errors=True)
    if predicted:
        matrix = pd.DataFrame(predicted).T.loc[:, bundle.genes["gene_id"].tolist()]
        with atomic_path(out / "predictions.tsv") as tmp:
            write_values(tmp, matrix, digits=6)
    if failures:
        with atomic_path(out / "failures.tsv") as tmp:
            pd.DataFrame(failures, columns=["patient_id", "problem"]).to_csv(tmp, sep="\t",
                                                                             index=False)
    print(f"{len(predicted)} of {len(cohort)} patients predicted -> {Path(out)}"
          + (f"; {len(failures)} skipped (see failures.tsv)" if failures else ""))
    return 0 if predicted else 2
