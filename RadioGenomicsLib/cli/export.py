"""`radiogenomics export`: a bundle's fold models as ONNX, for the torch-free runtimes."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a bundle's fold models as ONNX (fold_<i>.onnx, checksummed)",
        description="Export each fold model's encoder to ONNX inside the bundle, checked against "
                    "torch, so that `predict --runtime onnxruntime|openvino` runs without PyTorch.")
    parser.add_argument("bundle", metavar="BUNDLE", help="a model bundle folder")
    parser.add_argument("--folds", choices=("all", "first"), default="all",
                        help="export every fold model (default) or the first alone")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.runtime.export import export_bundle

    for name, error in export_bundle(args.bundle, args.folds).items():
        print(f"{name}: tokens within {error:.1e} (relative) of torch's")
    return 0
