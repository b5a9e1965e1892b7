"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse

from RadioGenomicsLib.errors import InputError


def parse_named_paths(items: list[str] | None, option: str) -> dict[str, str]:
    """`["t1=a.nii.gz", "flair=b.nii.gz"]` -> `{"t1": "a.nii.gz", "flair": "b.nii.gz"}`."""
    named: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        name = name.strip().lower()
        if not sep or not name or not path:
            raise InputError(None, f"{option} {item!r}: expected NAME=PATH")
        if name in named:
            raise InputError(path, f"{option} names channel {name!r} twice")
        named[name] = path
    return named


def add_segmentation_arguments(parser: argparse.ArgumentParser) -> None:
    """--segmentation with --label N | --segment NAME, as preprocess and predict take them."""
    parser.add_argument("--segmentation", required=True, metavar="PATH",
                        help="tumour labelmap (NIfTI, NRRD, DICOM folder), Slicer .seg.nrrd or "
                             "DICOM SEG")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--label", type=int, metavar="N",
                        help="label value of the tumour in a labelmap (default: any non-zero)")
    choice.add_argument("--segment", metavar="NAME",
                        help="segment name in a .seg.nrrd or label in a DICOM SEG "
                             "(default: all segments)")


def add_cohort_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """The cohort, its expression and the recipe, as `train` and `baseline` take them:
    the same --config, --folds and --seed give both the same folds and genes."""
    parser.add_argument("--manifest", required=True, metavar="CSV", help="the cohort manifest")
    parser.add_argument("--expression", required=True, metavar="PATH",
                        help="GDC STAR-Counts folder (with --sample-sheet), a Xena or plain "
                             "table, or a matrix from `radiogenomics expression`")
    parser.add_argument("--sample-sheet", metavar="TSV", help="the GDC sample sheet")
    parser.add_argument("--out", required=True, metavar="PATH", help=out_help)
    parser.add_argument("--config", default="paper", metavar="PRESET|FILE",
                        help="a preset (paper: the paper's method; small: the same on a CPU; "
                             "frozen-ridge: frozen encoder, mask geometry, ridge per gene; "
                             "frozen-ridge-brats: the same reading the tumour and BraTS "
                             "sub-region masks as channels, with each sub-region's volume "
                             "and share in the geometry; frozen-ridge-ct: for CT, the "
                             "tumour's tokens pooled, a 40/100 HU window and the mask as "
                             "channels, the texture of the encoder's stem over the tumour "
                             "and its core, the tumour's 3-D shape and the HU statistics of "
                             "it and of a 4 mm shell around it in the geometry, the "
                             "transformer token left out of the ridge, at the study's "
                             "own spacing) or "
                             "a JSON recipe (see training/)")
    parser.add_argument("--folds", type=int, help="cross-validation folds (recipe: 5)")
    parser.add_argument("--seed", type=int, help="seed of the folds, batches and weights")
    parser.add_argument("--group-by", choices=("patient", "site"),
                        help="folds by patient (recipe default) or keeping each TCGA "
                             "tissue-source site (the barcode's second field) in one fold")
    parser.add_argument("--permute-targets", action="store_true", default=None,
                        help="a control: shuffle the expression rows across patients first "
                             "(seeded); a sound method then finds no gene")
    parser.add_argument("--permutations", type=int, metavar="N",
                        help="the permutation test: re-run the cross-validation on N "
                             "permutations of the expression rows (200 is plenty; at least "
                             "19) for a family-wise p per gene (gene_stats' p_perm) that "
                             "does not assume independent out-of-fold predictions; the "
                             "baseline and the frozen-ridge presets only")


def add_sr_genes_argument(parser) -> None:
    """--sr-genes N|all: how many genes the DICOM SR lists (export-dicom, predict)."""
    from RadioGenomicsLib.genetable import SR_GENES

    def count_or_all(text: str) -> int | None:
        if text == "all":
            return None
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: a positive number or 'all'")
        return int(text)

    parser.add_argument("--sr-genes", type=count_or_all, default=SR_GENES, metavar="N|all",
                        help=f"genes in the DICOM SR: the N highest ranked and the markers, or "
                             f"all (default {SR_GENES}; a genome-wide SR takes minutes)")
