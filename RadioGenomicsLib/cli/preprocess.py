"""`radiogenomics preprocess`: one study -> model-ready tumour slices (.npz) + a preview."""

from __future__ import annotations

import argparse
import sys

from RadioGenomicsLib.choices import REGIONS
from RadioGenomicsLib.cli.common import add_segmentation_arguments, parse_named_paths


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name one study (shared with `predict`)."""
    parser.add_argument("--image", action="append", metavar="NAME=PATH", required=True,
                        help="a channel (t1, t1gd, t2, flair, or ct) and its file or DICOM "
                             "folder; repeat for each channel")
    parser.add_argument("--series", action="append", metavar="NAME=UID_OR_DESCRIPTION",
                        help="which DICOM series to read for a channel whose folder holds several")
    add_segmentation_arguments(parser)
    parser.add_argument("--brain-mask", metavar="PATH",
                        help="a brain mask to use instead of automatic skull stripping")
    parser.add_argument("--regularize-dicom", action="store_true",
                        help="resample a DICOM series whose slices are unevenly spaced (a gap, "
                             "a duplicate, mixed spacing) onto a uniform grid instead of "
                             "refusing it; reported when done (or set "
                             "RADIOGENOMICS_REGULARIZE_DICOM=1)")


def load_study_from_args(args: argparse.Namespace, channels: tuple[str, ...] | None = None):
    from RadioGenomicsLib.imaging import load_study

    return load_study(parse_named_paths(args.image, "--image"), args.segmentation,
                      label=args.label, segment=args.segment, brain_mask=args.brain_mask,
                      channels=channels, series=parse_named_paths(args.series, "--series"),
                      regularize_dicom=args.regularize_dicom or None)


def study_paths(args: argparse.Namespace) -> list[str | None]:
    """The files a study's options name (for the output checks)."""
    images = parse_named_paths(args.image, "--image") if args.image else {}
    return [*images.values(), args.segmentation, args.brain_mask]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preprocess", help="one study -> model-ready tumour slices (.npz) and a preview",
        description="Resample to 1 mm, skull-strip / find the body, z-score, choose the axial "
                    "tumour slices, crop and resize them to 224 x 224.")
    add_study_arguments(parser)
    parser.add_argument("--out", required=True, metavar="slices.npz",
                        help="file to write: the 224 x 224 crops of every channel, the tumour "
                             "masks and their geometry (NumPy .npz)")
    parser.add_argument("--preview", metavar="PNG", help="montage of the chosen slices")
    parser.add_argument("--max-slices", type=int, default=32, metavar="N",
                        help="most tumour slices kept, the largest first (default 32)")
    parser.add_argument("--min-area", type=float, default=20.0, metavar="MM2",
                        help="least tumour area for a slice to be used (mm²)")
    parser.add_argument("--region", choices=REGIONS, default="auto",
                        help="where intensities are z-scored (auto: brain for MRI, body for CT)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess
    from RadioGenomicsLib.outputs import Output, check_outputs
    from RadioGenomicsLib.preview import save_montage

    check_outputs("preprocess", [Output(args.out, "file"), Output(args.preview, "file", "--preview")],
                  study_paths(args))
    settings = PreprocessSettings(max_slices=args.max_slices, min_tumour_area_mm2=args.min_area,
                                  region=args.region)
    study = load_study_from_args(args)
    slices = preprocess(study, settings)
    slices.save(args.out)
    print(f"{len(slices.images)} slices x {len(slices.channels)} channels "
          f"({', '.join(slices.channels)}) at {settings.size}x{settings.size}; "
          f"normalised in {slices.region} -> {args.out}")
    if args.preview:
        save_montage(slices, args.preview)
        print(f"preview -> {args.preview}")
    sys.stdout.flush()
    return 0
