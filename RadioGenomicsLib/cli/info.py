"""`radiogenomics info BUNDLE`: what a model bundle holds, checked, before anyone uses it."""

from __future__ import annotations

import argparse
import json
import shutil


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="what a model bundle holds",
        description="Check a model bundle (format, files, checksums) and show its card: "
                    "channels, preprocessing, model, target and units, genes, folds, training "
                    "cohort, validation and the marker genes.")
    parser.add_argument("bundle", metavar="BUNDLE", help="model bundle folder")
    parser.add_argument("--json", action="store_true",
                        help="print the whole card as JSON (with the training recipe)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.card import card_text

    from RadioGenomicsLib.integrity import check_weight_shapes

    bundle = load_bundle(args.bundle)  # every file against manifest.json, every weight's sha256
    check_weight_shapes(bundle)  # what `predict` would refuse is refused here
    integrity = {**bundle.integrity.to_dict(), "note": bundle.integrity.note}
    if args.json:
        print(json.dumps({**bundle.card.to_dict(), "integrity": integrity}, indent=2))
    else:
        width = min(100, shutil.get_terminal_size((80, 24)).columns)
        print(card_text(bundle.card, width, weights_checked=True))
        label = len("Training cohort") + 2  # card_text's label column
        for name, value in (("Weights", "shapes fit the model (safetensors headers)"),
                            ("Integrity", integrity["note"]),
                            ("Signature", integrity["provenance"])):
            print(f"{name:<{label}}{value}")
    return 0
