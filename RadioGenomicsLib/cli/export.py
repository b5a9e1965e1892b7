"""`radiogenomics export`: a bundle's fold models as ONNX, for the torch-free runtimes; and
the reference studies of the precision check, kept in the bundle."""

from __future__ import annotations

import argparse

from RadioGenomicsLib.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a bundle's fold models as ONNX (fold_<i>.onnx, checksummed)",
        description="Export each fold model's encoder to ONNX inside the bundle, checked against "
                    "torch, so that `predict --runtime onnxruntime|openvino` runs without PyTorch; "
                    "with --reference-manifest also keep reference studies in the bundle.")
    parser.add_argument("bundle", metavar="BUNDLE", help="a model bundle folder")
    parser.add_argument("--folds", choices=("all", "first"), default="all",
                        help="export every fold model (default) or the first alone")
    parser.add_argument("--reference-manifest", metavar="CSV",
                        help="a cohort manifest (e.g. the report's patients): keep their "
                             "model-ready slices in the bundle (reference_slices.npz, in its "
                             "checksums) as the studies a reduced precision (bf16) is checked "
                             "on; without them the check uses the first study predicted")
    parser.add_argument("--references-only", action="store_true",
                        help="with --reference-manifest: keep the references, leave the "
                             "exported fold models as they are")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.runtime.export import export_bundle

    if args.references_only and not args.reference_manifest:
        raise InputError(None, "--references-only needs --reference-manifest CSV")
    references = None
    if args.reference_manifest:  # every study read before anything is written
        from RadioGenomicsLib.runtime.precision import manifest_reference_slices

        references = manifest_reference_slices(args.bundle, args.reference_manifest)
    if not args.references_only:
        for name, error in export_bundle(args.bundle, args.folds).items():
            print(f"{name}: tokens within {error:.1e} (relative) of torch's")
    if references is not None:
        from RadioGenomicsLib.runtime.precision import store_reference_slices

        path = store_reference_slices(args.bundle, [images for _, images in references])
        print(f"{len(references)} reference studies ({', '.join(p for p, _ in references)}; "
              f"{sum(len(i) for _, i in references)} slices) -> {path}, checksummed")
    return 0
