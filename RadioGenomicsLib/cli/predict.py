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
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "openvino"),
                        default="auto",
                        help="torch, or a bundle's exported fold models (`radiogenomics export`) "
                             "on ONNX Runtime or OpenVINO without PyTorch; auto: the fastest "
                             "installed and exported")
    parser.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                        help="bf16 (OpenVINO, CPUs with AVX-512 BF16 or AMX): the transformer and "
                             "the head, once checked against float32 on this machine; auto: bf16 "
                             "where it passed, else float32")
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


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.predict import choose_device, map_gene_indices, table_separator

    from RadioGenomicsLib.runtime import pick_runtime

    _check_arguments(args)
    # each fold's files are checked when read: `--folds first` does not hash the others
    bundle = load_bundle(args.model, verify_checksums=False)
    runtime = pick_runtime(bundle, args.runtime, args.device, args.folds)
    # the light runtimes run on the CPU, and importing torch to ask would cost seconds
    device = choose_device(args.device) if runtime == "torch" else "cpu"
    predictor = Predictor(bundle, runtime, device, args.precision, args.folds)
    if args.manifest:
        return _predict_cohort(args, bundle, predictor)
    table_separator(args.out)
    map_genes = map_gene_indices(bundle, args.map_gene)
    return _predict_study(args, bundle, predictor, map_genes)


class Predictor:
    """The fold models on the chosen runtime; the precision is settled at the first study
    (its slices serve the precision check when the bundle keeps no reference slices)."""

    def __init__(self, bundle, runtime: str, device, precision: str, folds: str):
        self.bundle, self.runtime, self.device = bundle, runtime, device
        self.requested, self.folds = precision, folds
        self.precision: str | None = None
        self.count = len(bundle.fold_indices(folds))

    def describe(self) -> str:
        return f"{self.runtime}, {self.precision or 'float32'}"

    def settle(self, slices) -> None:
        from RadioGenomicsLib.runtime import pick_precision

        if self.precision is None:
            self.precision = pick_precision(self.bundle, self.runtime, self.requested, self.folds,
                                            slices.images)

    def __call__(self, slices, map_genes: list[int], keep: list | None = None):
        """-> predict.Prediction of one study; `keep`: models from `kept_models`."""
        from RadioGenomicsLib.predict import one_at_a_time, run_models
        from RadioGenomicsLib.runtime import fold_runners, run_fold_runners

        self.settle(slices)
        if self.runtime == "torch":
            models = keep if keep is not None else one_at_a_time(self.bundle, self.device, self.folds)
            return run_models(models, slices, self.device, map_genes, self.count)
        runners = keep if keep is not None else fold_runners(self.bundle, self.runtime,
                                                              self.precision, self.folds)
        return run_fold_runners(runners, slices.images, map_genes, self.count)

    def kept_models(self) -> list:
        """All fold models at once, for a cohort (after `settle`)."""
        from RadioGenomicsLib.runtime import fold_runners

        if self.runtime == "torch":
            return self.bundle.models(self.device, self.folds)
        return list(fold_runners(self.bundle, self.runtime, self.precision, self.folds))


def _predict_study(args, bundle, predictor: Predictor, map_genes: list[int]) -> int:
    from RadioGenomicsLib.imaging import load_study
    from RadioGenomicsLib.maps import write_volume
    from RadioGenomicsLib.predict import (check_bundle_fits, ensure_writable_folder, gene_table,
                                          map_file_name, map_volumes, write_table)
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess

    study = load_study(parse_named_paths(args.image, "--image"), args.segmentation,
                       label=args.label, segment=args.segment, brain_mask=args.brain_mask,
                       channels=tuple(bundle.channels),
                       series=parse_named_paths(args.series, "--series"))
    slices = preprocess(study, PreprocessSettings.from_dict(bundle.metadata.preprocessing))
    check_bundle_fits(bundle, slices)
    prediction = predictor(slices, map_genes)
    table = gene_table(bundle, prediction)
    write_table(table, args.out)
    written = []
    if map_genes:
        folder = ensure_writable_folder(args.maps)
        for name, volume in map_volumes(bundle, prediction, slices).items():
            written.append(folder / map_file_name(name, "." + args.map_format))
            write_volume(volume, written[-1])
    print(f"{len(table)} genes from {predictor.count} fold model(s) on {len(slices.images)} "
          f"tumour slices ({predictor.describe()}) -> {args.out}")
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


def _predict_cohort(args, bundle, predictor: Predictor) -> int:
    import pandas as pd

    from RadioGenomicsLib.cohort import LABEL_COLUMN, channel_columns, validate_cohort
    from RadioGenomicsLib.expression import write_values
    from RadioGenomicsLib.imaging import load_study
    from RadioGenomicsLib.predict import (check_bundle_fits, ensure_writable_folder, gene_table,
                                          write_table)
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess
    from RadioGenomicsLib.progress import progress
    from RadioGenomicsLib.atomic import atomic_path

    cohort = validate_cohort(args.manifest)
    channels = channel_columns(cohort.reset_index())
    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    models = None
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
            if models is None:
                predictor.settle(slices)
                models = predictor.kept_models()
            prediction = predictor(slices, [], keep=models)
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
