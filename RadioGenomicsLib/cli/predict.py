"""`radiogenomics predict`: one study or a cohort -> ranked gene table(s) and gene maps."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from RadioGenomicsLib.cli.common import add_sr_genes_argument, parse_named_paths
from RadioGenomicsLib.errors import InputError


def add_map_view_arguments(parser) -> None:
    """--map-margin and --picture, shared with `radiogenomics map`."""
    parser.add_argument("--map-margin", type=float, default=0.0, metavar="MM",
                        help="also map this many mm around the tumour (default 0: the tumour "
                             "only; no value, NaN, elsewhere)")
    parser.add_argument("--picture", metavar="PNG",
                        help="draw the maps over the study on slices through the tumour, "
                             "with its outline and a colour bar, as a PNG")


def check_map_margin(margin: float) -> None:
    if not margin >= 0:
        raise InputError(None, f"--map-margin {margin}: give a distance in mm, 0 or more")


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
                        help="tumour labelmap (NIfTI, NRRD, DICOM folder), Slicer .seg.nrrd or "
                             "DICOM SEG")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--label", type=int, metavar="N", help="tumour label value in a labelmap")
    choice.add_argument("--segment", metavar="NAME",
                        help="segment name in a .seg.nrrd or label in a DICOM SEG")
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
    cohort = parser.add_argument_group(
        "large cohorts", "with --manifest: worker processes on this machine, and ranks across "
        "machines (torchrun's RANK and WORLD_SIZE are read when set)")
    cohort.add_argument("--workers", type=int, default=1, metavar="N",
                        help="predict the patients in N worker processes, each with its share "
                             "of the cores (default 1: in this process)")
    cohort.add_argument("--rank", type=int, metavar="R",
                        help="predict the patients i with i %% W == R into OUT/rank-R-of-W "
                             "(default: $RANK under torchrun); then `predict --merge`")
    cohort.add_argument("--world-size", type=int, metavar="W",
                        help="the number of ranks (default: $WORLD_SIZE under torchrun)")
    cohort.add_argument("--merge", nargs="+", metavar="PART",
                        help="assemble the rank-R-of-W folders of every rank into the cohort "
                             "outputs in --out (with --model, nothing else)")
    parser.add_argument("--maps", metavar="DIR", help="write the maps of --map-gene genes here")
    parser.add_argument("--map-gene", action="append", metavar="SYMBOL", default=[],
                        help="a gene (symbol or Ensembl id) to map; repeat")
    parser.add_argument("--map-format", choices=("nrrd", "nii.gz"), default="nrrd",
                        help="file format of the maps (default nrrd)")
    add_map_view_arguments(parser)
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
    dicom = parser.add_argument_group(
        "DICOM and PACS", "results as DICOM objects in the source study, and a PACS over "
        "DICOMweb; credentials from RADIOGENOMICS_PACS_USER and RADIOGENOMICS_PACS_PASSWORD "
        "or from the 0600 file named by RADIOGENOMICS_PACS_CREDENTIALS, never from here")
    dicom.add_argument("--dicom-out", metavar="DIR",
                       help="also write the results as DICOM (SEG, a Parametric Map per "
                            "--map-gene, SR, PDF and its Secondary Capture); needs a study "
                            "read from DICOM")
    dicom.add_argument("--pacs", metavar="URL",
                       help="the DICOMweb root of a PACS (e.g. http://pacs:8042/dicom-web): "
                            "read the study's image series from it (into a folder beside "
                            "--out, genes.csv -> genes.study) instead of --image; its DICOM "
                            "SEG is the tumour unless --segmentation says otherwise")
    dicom.add_argument("--study-uid", metavar="UID", help="the study to read from --pacs")
    dicom.add_argument("--send", action="store_true",
                       help="store the DICOM results on --pacs (STOW-RS); --dicom-out "
                            "defaults to a folder beside --out (genes.csv -> genes.dicom)")
    add_sr_genes_argument(dicom)
    parser.set_defaults(run=run)


def _check_merge_arguments(args: argparse.Namespace) -> None:
    others = [f"--{name.replace('_', '-')}" for name in (
        "manifest", "image", "segmentation", "pacs", "runs", "maps", "map_gene", "picture",
        "dicom_out", "rank", "world_size") if getattr(args, name) not in (None, [])]
    if args.run_folder or args.workers != 1:
        others.append("--run" if args.run_folder else "--workers")
    if others:
        raise InputError(None, f"--merge assembles the parts of a cohort: give only --model, "
                               f"the part folders and --out (not {others[0]})")


def _cohort_ranks(args: argparse.Namespace) -> None:
    """--rank and --world-size, else RANK and WORLD_SIZE as torchrun (and other launchers)
    set them, else a single rank."""
    if args.rank is None and args.world_size is None and "RANK" in os.environ \
            and "WORLD_SIZE" in os.environ:
        try:
            args.rank, args.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except ValueError:
            raise InputError(None, f"RANK={os.environ['RANK']!r} WORLD_SIZE="
                                   f"{os.environ['WORLD_SIZE']!r}: not whole numbers") from None
    if (args.rank is None) != (args.world_size is None):
        raise InputError(None, "--rank R and --world-size W go together")
    if args.rank is None:
        args.rank, args.world_size = 0, 1
    if not 0 <= args.rank < args.world_size:
        raise InputError(None, f"rank {args.rank} of world size {args.world_size}: give "
                               f"0 <= R < W")


def cohort_out(args: argparse.Namespace, folder: str | None) -> Path | None:
    """--out or --runs, or their rank-R-of-W folder for one rank of several."""
    from RadioGenomicsLib.cohort_workers import part_name

    if folder is None or args.world_size == 1:
        return None if folder is None else Path(folder)
    return Path(folder) / part_name(args.rank, args.world_size)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.merge:
        return _check_merge_arguments(args)
    if not args.manifest and (args.workers != 1 or args.rank is not None
                              or args.world_size is not None):
        raise InputError(None, "--workers, --rank and --world-size are for --manifest")
    if args.workers < 1:
        raise InputError(None, f"--workers {args.workers}: give 1 or more")
    if args.manifest:
        _cohort_ranks(args)
    if args.manifest and (args.dicom_out or args.pacs or args.send):
        raise InputError(args.manifest, "--dicom-out, --pacs and --send are for one study")
    if bool(args.pacs) != bool(args.study_uid):
        raise InputError(None, "--pacs URL and --study-uid UID go together")
    if args.send and not args.pacs:
        raise InputError(None, "--send stores the results on the --pacs server: give --pacs")
    if args.pacs and args.image:
        raise InputError(None, "--pacs reads the images from the study: drop --image (choose "
                               "a series with --series NAME=UID_OR_DESCRIPTION)")
    if args.manifest:
        if args.image or args.segmentation:
            raise InputError(args.manifest, "give either --manifest or --image/--segmentation")
        if args.maps or args.map_gene or args.run_folder:
            raise InputError(args.manifest, "--maps, --map-gene and --run are for one study; "
                                            "with --manifest keep the runs with --runs DIR")
    elif args.runs:
        raise InputError(None, "--runs DIR is for --manifest; for one study use --run DIR")
    elif not (args.pacs or (args.image and args.segmentation)):
        raise InputError(None, "give --image NAME=PATH (per channel) and --segmentation, "
                               "or --manifest")
    if args.map_gene and not (args.maps or args.dicom_out or args.send or args.picture):
        raise InputError(None, "--map-gene needs --maps DIR (or --picture PNG, --dicom-out "
                               "DIR) to write the maps to")
    if args.picture and not args.map_gene:
        raise InputError(args.picture, "--picture draws the maps of --map-gene: name a gene")
    if args.manifest and args.picture:
        raise InputError(args.manifest, "--picture is for one study")
    check_map_margin(args.map_margin)


def _check_dicom_source(args: argparse.Namespace, bundle) -> None:
    """DICOM output is refused before the work when the study is not read from DICOM."""
    if args.dicom_out and args.image:
        images = parse_named_paths(args.image, "--image")
        first = images.get(bundle.channels[0])
        if first is not None and not Path(first).is_dir():
            raise InputError(first, "is not a DICOM series folder: --dicom-out needs the "
                                    "study's images read from DICOM")


def default_run_folder(out: str, suffix: str = ".run") -> Path:
    """genes.csv -> genes.run (or genes<suffix>) beside it."""
    path = Path(out)
    return path.with_name(path.name.split(".")[0] + suffix)


def study_inputs(args: argparse.Namespace, images: dict | None = None):
    from RadioGenomicsLib.run import StudyInputs

    return StudyInputs(images or parse_named_paths(args.image, "--image"), args.segmentation,
                       label=args.label, segment=args.segment, brain_mask=args.brain_mask,
                       series=parse_named_paths(args.series, "--series"))


def _check_outputs(args: argparse.Namespace) -> None:
    from RadioGenomicsLib.cli.preprocess import study_paths
    from RadioGenomicsLib.outputs import Output, check_outputs

    if args.merge:
        return check_outputs("predict", [Output(args.out, "folder")], [args.model, *args.merge])
    if args.manifest:
        outputs = [Output(cohort_out(args, args.out), "folder"),
                   Output(cohort_out(args, args.runs), "folder", "--runs")]
    else:
        outputs = [Output(args.out, "file"), Output(args.maps, "folder", "--maps"),
                   Output(args.picture, "file", "--picture"),
                   Output(args.run_folder or default_run_folder(args.out), "folder",
                          "--run" if args.run_folder else "--out (its .run folder)")]
        if args.pacs:
            outputs.append(Output(default_run_folder(args.out, ".study"), "folder",
                                  "--pacs (its .study folder beside --out)"))
    inputs = [args.model, args.manifest] + ([] if args.manifest else study_paths(args))
    check_outputs("predict", outputs, inputs)
    dicom_out = args.dicom_out or (default_run_folder(args.out, ".dicom") if args.send else None)
    if dicom_out and not args.manifest:  # the folder `export-dicom` also writes
        check_outputs("export-dicom", [Output(dicom_out, "folder", "--dicom-out")], inputs)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.predict import map_gene_indices, table_separator

    _check_arguments(args)
    _check_outputs(args)
    if args.merge:
        return _merge_parts(args)
    bundle = load_bundle(args.model)
    print(f"model {bundle.path}: {bundle.integrity.provenance}")
    if args.manifest:
        return _predict_cohort(args, bundle)
    table_separator(args.out)
    map_gene_indices(bundle, args.map_gene)  # a misspelt gene fails before the work
    _check_dicom_source(args, bundle)
    if args.send and not args.dicom_out:
        args.dicom_out = str(default_run_folder(args.out, ".dicom"))
    return _predict_study(args, bundle)


def _predict_study(args, bundle) -> int:
    from RadioGenomicsLib.predict import write_table
    from RadioGenomicsLib.run import (TABLE_FILE, predict_study, run_maps, save_run_picture,
                                      write_maps)

    run_folder = Path(args.run_folder or default_run_folder(args.out))
    images = None
    if args.pacs:
        from RadioGenomicsLib.pacs import fetch_study, study_segmentation

        study = default_run_folder(args.out, ".study")
        fetched = fetch_study(args.pacs, args.study_uid, study)
        print(f"{sum(s.instances for s in fetched)} instances of {len(fetched)} series from "
              f"the PACS -> {study}")
        images = {channel: study for channel in bundle.channels}
        if not args.segmentation:
            args.segmentation = str(study_segmentation(study))
            print(f"tumour: the study's DICOM SEG {args.segmentation}")
    result = predict_study(bundle, study_inputs(args, images), run_folder, args.device,
                           args.folds, runtime=args.runtime, precision=args.precision)
    write_table(result.table, args.out, written=run_folder / TABLE_FILE)
    written, maps = [], {}
    if args.map_gene:
        maps = run_maps(result, bundle, args.map_gene, args.map_margin)
    if args.maps:
        written = write_maps(maps, args.maps, "." + args.map_format)
    settings = result.info["settings"]
    print(f"{len(result.table)} genes from {len(result.folds)} fold model(s) on "
          f"{result.info['slices']} tumour slices ({settings['runtime']}, "
          f"{settings['precision']}) -> {args.out}")
    print(f"prediction run -> {run_folder} (any gene's map: radiogenomics map --run "
          f"{run_folder} --gene SYMBOL --out DIR)")
    print_top(result.table)
    for path in written:
        print(f"map -> {path}")
    if args.picture:
        save_run_picture(result, maps, args.picture)
        print(f"picture -> {args.picture}")
    if args.dicom_out:
        _dicom_results(args, result, bundle)
    return 0


def _dicom_results(args, result, bundle) -> None:
    from RadioGenomicsLib.dicom_export import export_run

    written = export_run(result, bundle, args.dicom_out, args.map_gene, args.sr_genes)
    print(f"DICOM results (research use only) -> {args.dicom_out}: "
          + ", ".join(path.name for path in written))
    if args.send:
        from RadioGenomicsLib.pacs import store

        stored = store(args.pacs, [path for path in written if path.suffix == ".dcm"])
        print(f"{stored} DICOM objects stored on the PACS {args.pacs}")


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

    from RadioGenomicsLib import cohort_workers as workers
    from RadioGenomicsLib.cohort import validate_cohort
    from RadioGenomicsLib.predict import ensure_writable_folder
    from RadioGenomicsLib.progress import progress

    studies = workers.cohort_studies(validate_cohort(args.manifest))
    mine = workers.share(studies, args.rank, args.world_size)
    settings = workers.settle(bundle, studies, workers.CohortSettings(
        args.device, args.folds, args.runtime, args.precision))
    count = min(args.workers, max(len(mine), 1))
    ranks_here = _ranks_on_this_machine(args)
    print(f"{len(mine)} of {len(studies)} patients" + (
        f" (rank {args.rank} of {args.world_size})" if args.world_size > 1 else "")
        + f": {settings.runtime}, {settings.precision}"
        + (f", {count} workers of {workers.threads_per_worker(count, ranks_here)} thread(s)"
           if count > 1 else ""))
    out = ensure_writable_folder(cohort_out(args, args.out))
    runs = (ensure_writable_folder(cohort_out(args, args.runs)) if args.runs
            else Path(tempfile.mkdtemp(prefix=".runs-", dir=out)))
    finished = {}
    try:
        for outcome in progress(workers.predict_patients(bundle, mine, settings, out, runs,
                                                         args.workers, ranks_here),
                                "patients", len(mine)):
            finished[outcome.patient] = outcome
            if outcome.problem is not None:
                print(f"radiogenomics predict: {outcome.patient}: skipped: {outcome.problem}",
                      file=sys.stderr)
    finally:
        if not args.runs:
            shutil.rmtree(runs, ignore_errors=True)
    outcomes = [finished[patient] for patient, _ in mine]  # the manifest's order
    workers.write_cohort_tables(out, bundle.genes["gene_id"].tolist(), outcomes)
    if args.world_size > 1:
        workers.write_part(out, rank=args.rank, world_size=args.world_size,
                           manifest=args.manifest, studies=studies, outcomes=outcomes,
                           bundle=bundle, settings=settings)
    return _cohort_summary(outcomes, out, part=args.world_size > 1)


def _ranks_on_this_machine(args) -> int:
    """torchrun's LOCAL_WORLD_SIZE: the ranks that share this machine's cores."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1") if args.world_size > 1 else "1"
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _cohort_summary(outcomes, out: Path, part: bool = False) -> int:
    """Exit 2 when no patient was predicted; a rank's part exits 0 (the merge judges), as a
    launcher stops every rank when one fails."""
    predicted = sum(o.values is not None for o in outcomes)
    failures = len(outcomes) - predicted
    print(f"{predicted} of {len(outcomes)} patients predicted -> {out}"
          + (f"; {failures} skipped (see failures.tsv)" if failures else "")
          + ("; merge the ranks' parts with `radiogenomics predict --merge`" if part else ""))
    return 0 if predicted or part else 2


def _merge_parts(args) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.cohort_workers import merge_parts

    bundle = load_bundle(args.model, verify_checksums=False)  # for its genes and fingerprint
    outcomes = merge_parts(bundle, args.merge, Path(args.out))
    print(f"{len(args.merge)} parts merged")
    return _cohort_summary(outcomes, Path(args.out))
