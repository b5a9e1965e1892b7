"""`radiogenomics info BUNDLE`: what a model bundle holds, checked, before anyone uses it."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from RadioGenomicsLib.bundle import Bundle, load_bundle

# genes a radiologist looks for first in brain (GBM/LGG), breast and lung tumours
MARKER_GENES = ("EGFR", "PTEN", "IDH1", "MGMT", "TP53", "ATRX", "CDKN2A", "PDGFRA", "NF1",
                "MKI67", "ESR1", "PGR", "ERBB2", "KRAS", "ALK", "MET", "VEGFA")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="what a model bundle holds",
        description="Check a model bundle (format, files, checksums) and show its channels, "
                    "preprocessing, model, genes, folds, training cohort and validation.")
    parser.add_argument("bundle", metavar="BUNDLE", help="model bundle folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def marker_genes(bundle: Bundle) -> list[dict[str, Any]]:
    genes = bundle.genes.assign(reliable=bundle.significant())
    present = genes[genes["gene_name"].isin(MARKER_GENES)]
    return [{"gene_name": row.gene_name, "gene_id": row.gene_id,
             "validation_r": None if math.isnan(row.validation_r) else row.validation_r,
             "validation_p_adj": None if math.isnan(row.validation_p_adj) else row.validation_p_adj,
             "reliable": bool(row.reliable)} for row in present.itertuples()]


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, (str, int, float)) else json.dumps(v)}"
                     for k, v in mapping.items()) or "(none given)"


def _marker_text(marker: dict[str, Any]) -> str:
    if marker["validation_r"] is None:
        return f"{marker['gene_name']} (not validated)"
    flag = ", reliable" if marker["reliable"] else ""
    return f"{marker['gene_name']} (r {marker['validation_r']:.2f}, p_adj {marker['validation_p_adj']:.2g}{flag})"


def _text(summary: dict[str, Any], markers: list[dict[str, Any]]) -> str:
    model = summary["model"]
    grid = model["image_size"] // 16
    significant = summary["significant_genes"]
    validation = (
        f"{significant['0.05']} genes significant at alpha 0.05, {significant['0.01']} at 0.01 "
        f"(Holm-Sidak, positive r); median r {summary['median_validation_r']:.3f}"
        if summary["validated"] else "none (no validation statistics in genes.tsv)")
    lines = [
        ("Bundle", f"{summary['path']} (format {summary['format_version']}, RadioGenomics "
                   f"{summary['library_version']}, created {summary['created']})"),
        ("Channels", f"{', '.join(summary['channels'])} (give each: --image NAME=PATH)"),
        ("Preprocessing", _pairs(summary["preprocessing"])),
        ("Model", f"{model['name']}: R50 stages {model['resnet_layers']} (width {model['resnet_width']}), "
                  f"{model['num_layers']} transformer layers of {model['hidden_size']} ({model['num_heads']} "
                  f"heads), {model['image_size']}x{model['image_size']} slices -> {grid}x{grid} tokens, "
                  f"top-k {model['top_k']}"),
        ("Target", f"{summary['target']['transform']} of {summary['target']['units']}"),
        ("Genes", str(summary["genes"])),
        ("Folds", f"{summary['folds']} (weights present, sha256 checked, shapes fit the model)"),
        ("Integrity", summary["integrity"]["note"]),
        ("Signature", summary["integrity"]["provenance"]),
        ("Training cohort", _pairs(summary["training_cohort"])),
        ("Validation", validation),
        ("Marker genes", ", ".join(_marker_text(m) for m in markers) or "none of " + ", ".join(MARKER_GENES)),
    ]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.integrity import check_weight_shapes

    bundle = load_bundle(args.bundle)
    check_weight_shapes(bundle)  # what `predict` would refuse is refused here
    summary, markers = bundle.summary(), marker_genes(bundle)
    summary["integrity"] = {**bundle.integrity.to_dict(), "note": bundle.integrity.note}
    if args.json:
        print(json.dumps({**summary, "marker_genes": markers}, indent=2))
    else:
        print(_text(summary, markers))
    return 0
