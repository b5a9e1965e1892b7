"""`radiogenomics synth`: a synthetic cohort in the real formats, with its truth."""

from __future__ import annotations

import argparse
import json
import time



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="a synthetic cohort in the real formats, with its truth",
        description="Write a synthetic cohort: per-patient NIfTI channels and tumour "
                    "segmentation (real anatomy, varied), GDC STAR - Counts files with a "
                    "sample sheet (GENCODE v36 genes, a known share linked to latent tumour "
                    "factors), manifest.csv and truth.json. The same seed gives the same "
                    "files byte for byte.")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="a new or empty folder (an earlier synthetic cohort is replaced)")
    parser.add_argument("--patients", required=True, type=int, metavar="N")
    parser.add_argument("--genes", required=True, type=int, metavar="G")
    # checked by the library, so that a wrong value gets the one-line error of bad input
    parser.add_argument("--modality", default="mri", metavar="mri|ct",
                        help="mri (T1, T1Gd, T2, FLAIR; BraTS labels) or ct (default mri)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None, metavar="J",
                        help="worker processes for the images (default: one per CPU)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.synth import synthesize_cohort  # not at start: every command pays it

    started = time.perf_counter()
    out = synthesize_cohort(args.out, args.patients, args.genes, args.modality.lower(),
                            args.seed, args.jobs)
    truth = json.loads((out / "truth.json").read_text())
    files = sum(len(p["samples"]) for p in truth["patients"])
    print(f"wrote {out}: {args.patients} {args.modality.upper()} patients, {files} STAR - Counts "
          f"files of {args.genes} genes ({truth['expression']['linked_genes']} linked), "
          f"manifest.csv, truth.json in {time.perf_counter() - started:.1f} s")
    return 0
