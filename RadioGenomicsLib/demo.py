"""`make demo`: the project's main job on built-in data, start to finish.

1. a synthetic MRI cohort in the real formats (NIfTI studies, GDC STAR-Counts files and
   sample sheet), whose true image-gene links are known (truth.json; no training step
   reads it);
2. the `frozen-ridge-brats` model (frozen encoder reading the images and the tumour's
   BraTS sub-region masks, mask and sub-region geometry, ridge per gene) cross-validated
   on it (5 folds), with its evaluation report and the paper's Figure 2, its fold models
   exported for the light runtimes;
3. the classic route on the same folds and genes: PyRadiomics features and a ridge;
4. the two side by side, gene by gene, and against the truth (`radiogenomics compare`);
5. `predict` on a study the model never saw (`--runtime auto`: OpenVINO or ONNX Runtime):
   the ranked gene table and a gene map.
Every step is the ordinary command line; the paths of what it wrote are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from RadioGenomicsLib.cli import main as cli

TRAIN_PATIENTS, HELD_OUT, GENES = 40, 2, 500
DEMO_CONFIG = "frozen-ridge-brats"  # trains in seconds once the slices are encoded
STEPS = 5


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def _run(*args: object) -> None:
    code = cli([str(a) for a in args])
    if code != 0:
        raise SystemExit(code)


def run(out: Path, patients: int = TRAIN_PATIENTS, config: str = DEMO_CONFIG,
        epochs: int | None = None) -> None:
    start = time.perf_counter()
    cohort, model, baseline = out / "cohort", out / "model", out / "baseline"
    prediction = out / "prediction"
    _step(1, f"a synthetic MRI cohort: {patients + HELD_OUT} patients x {GENES} genes")
    _run("synth", "--out", cohort, "--patients", patients + HELD_OUT, "--genes", GENES,
         "--seed", 7)
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.iloc[:patients].to_csv(cohort / "training.csv", index=False)
    unseen = manifest.iloc[patients]
    # the kept-out patients' expression stays out of training too (their files unread)
    sheet = pd.read_csv(cohort / "gdc_sample_sheet.tsv", sep="\t", dtype=str,
                        keep_default_na=False)
    sheet[sheet["Case ID"].isin(manifest["patient_id"].iloc[:patients])].to_csv(
        cohort / "training_sample_sheet.tsv", sep="\t", index=False)
    data = ["--manifest", cohort / "training.csv", "--expression", cohort / "expression",
            "--sample-sheet", cohort / "training_sample_sheet.tsv", "--config", config]

    _step(2, f"cross-validated training of the {config} model on {patients} patients "
             f"(the last {HELD_OUT} are kept out)")
    # exported: the viewers and step 5 predict with ONNX Runtime / OpenVINO, no PyTorch
    _run("train", *data, "--out", model, "--cache", out / "cache", "--export",
         *(["--epochs", epochs] if epochs else []))

    _step(3, "the classic route on the same folds and genes: PyRadiomics + ridge")
    _run("baseline", *data, "--out", baseline, "--cache", out / "radiomics-cache")

    _step(4, "the model beside the baseline, and both against the cohort's truth")
    _run("compare", model / "report", baseline / "report", "--labels", "model", "baseline",
         "--truth", cohort / "truth.json", "--out", out / "compare")

    _step(5, f"predicting {unseen['patient_id']}, a study the model never saw")
    images = [f"--image={c}={cohort / unseen[c]}" for c in ("t1", "t1gd", "t2", "flair")]
    _run("predict", "--model", model, *images, "--segmentation", cohort / unseen["segmentation"],
         "--out", prediction / "genes.csv", "--run", prediction / "run", "--maps",
         prediction / "maps", "--map-gene", "EGFR", "--map-gene", "KRAS", "--picture",
         prediction / "maps.png", "--folds", "all")

    print(f"\ndone in {time.perf_counter() - start:.0f} s; look at:")
    for path, what in ((model / "report" / "pearson_hist.png", "Figure 2: per-gene r"),
                       (out / "compare" / "compare.md", "model vs baseline vs the truth"),
                       (out / "compare" / "scatter.png", "per-gene r, model vs baseline"),
                       (prediction / "genes.csv", "the ranked gene table"),
                       (prediction / "maps.png", "EGFR's and KRAS's maps over the tumour"),
                       (prediction / "maps" / "EGFR.nrrd", "EGFR's map on the study's grid"),
                       (prediction / "run", "the prediction run: any gene's map with "
                        "radiogenomics map --run " + str(prediction / "run") + " --gene SYMBOL "
                        "--out DIR"),
                       (model, "the model bundle (radiogenomics info " + str(model) + ")")):
        print(f"  {path}  ({what})")


# ---------------------------------------------------------------- the viewer's sample

SAMPLE_FILE = "sample.json"
SAMPLE_GENES, SAMPLE_SLICES, SAMPLE_FOLDS = 60, 8, 2


def _unseen_study(cohort: Path, row: int) -> dict:
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    unseen = manifest.iloc[row]
    channels = [c for c in ("t1", "t1gd", "t2", "flair") if c in manifest.columns]
    return {"patient": unseen["patient_id"],
            "images": {c: str((cohort / unseen[c]).resolve()) for c in channels},
            "segmentation": str((cohort / unseen["segmentation"]).resolve())}


def _untrained_sample_bundle(cohort: Path, path: Path) -> None:
    """A `small` bundle with random weights over the cohort's genes (seconds, not minutes)."""
    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.preprocess import PreprocessSettings

    star = next((cohort / "expression").rglob("*.tsv"))
    genes = pd.read_csv(star, sep="\t", comment="#", usecols=["gene_id", "gene_name"])
    genes = genes[genes["gene_id"].str.startswith("ENSG")].reset_index(drop=True)
    make_untrained_bundle(path, ModelConfig.preset("small"), ["t1", "t1gd", "t2", "flair"],
                          genes, PreprocessSettings(max_slices=SAMPLE_SLICES).to_dict(),
                          seed=7, folds=SAMPLE_FOLDS)


def make_sample(out: Path, demo_out: Path | None = None) -> dict:
    """The viewer's "Load sample": a synthetic study and a model bundle, labelled as such.

    With the output of `make demo` (`demo_out`): its bundle, trained on 40 synthetic
    patients, and the study it kept out. Otherwise, in seconds: a 2-patient synthetic
    cohort (the demo's seed) and an untrained `small` bundle over its genes. Writes
    sample.json in `out` and returns it.
    """
    if demo_out is not None and (demo_out / "model" / "metadata.json").is_file():
        sample = {**_unseen_study(demo_out / "cohort", TRAIN_PATIENTS),
                  "bundle": str((demo_out / "model").resolve()),
                  "label": f"Synthetic study (not a patient); model trained by `make demo` on "
                           f"{TRAIN_PATIENTS} synthetic patients: for trying the viewer only"}
    else:
        cohort = out / "cohort"
        cli(["synth", "--out", str(cohort), "--patients", "2", "--genes", str(SAMPLE_GENES),
             "--seed", "7", "--jobs", "1"])
        _untrained_sample_bundle(cohort, out / "untrained-small")
        sample = {**_unseen_study(cohort, 1), "bundle": str((out / "untrained-small").resolve()),
                  "label": "Synthetic study (not a patient); untrained model with random "
                           "weights: shows the flow, its values mean nothing"}
    from RadioGenomicsLib.atomic import atomic_path

    with atomic_path(out / SAMPLE_FILE) as partial:
        partial.write_text(json.dumps(sample, indent=2))
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--patients", type=int, default=TRAIN_PATIENTS,
                        help=f"training patients of the synthetic cohort (default {TRAIN_PATIENTS})")
    parser.add_argument("--config", default=DEMO_CONFIG,
                        help=f"the model's recipe (default {DEMO_CONFIG}; `small` trains the "
                             "whole encoder, for --epochs)")
    parser.add_argument("--epochs", type=int, help="most epochs per fold (recipes with epochs)")
    parser.add_argument("--sample", action="store_true",
                        help="only the viewer's sample (a synthetic study and a bundle) in --out")
    parser.add_argument("--from-demo", type=Path, default=None, metavar="DIR",
                        help="with --sample: use this `make demo` output when it is complete")
    args = parser.parse_args()
    if args.sample:
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(make_sample(args.out, args.from_demo)))
    else:
        run(args.out, args.patients, args.config, args.epochs)
    sys.exit(0)


if __name__ == "__main__":
    main()
