"""`make demo`: the project's main job on built-in data, start to finish.

1. a synthetic MRI cohort in the real formats (NIfTI studies, GDC STAR-Counts files and
   sample sheet), whose true image-gene links are known;
2. the `small` model trained with 5-fold cross-validation, with its evaluation report
   and the paper's Figure 2;
3. `predict` on a study the model never saw: the ranked gene table and a gene map.
Every step is the ordinary command line; the paths of what it wrote are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from RadioGenomicsLib.cli import main as cli
from RadioGenomicsLib.synth import score_against_truth

TRAIN_PATIENTS, HELD_OUT, GENES = 40, 2, 500
# 5 folds x 8 epochs of the small model fit in the 10-minute budget on 2 CPU cores; the
# model barely starts to learn in that time (BENCHMARKS.md has a longer run)
DEMO_EPOCHS = 8


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/4] {text}", flush=True)


def _run(*args: object) -> None:
    code = cli([str(a) for a in args])
    if code != 0:
        raise SystemExit(code)


def _truly_linked(cohort: Path, report: Path) -> str:
    score = score_against_truth(cohort / "truth.json", report)
    return (f"{score['significant']} significant genes, {score['significant_linked']} of them "
            f"truly linked; {score['linked']} linked genes were in the model")


def run(out: Path, epochs: int) -> None:
    start = time.perf_counter()
    cohort, model, prediction = out / "cohort", out / "model", out / "prediction"
    _step(1, f"a synthetic MRI cohort: {TRAIN_PATIENTS + HELD_OUT} patients x {GENES} genes")
    _run("synth", "--out", cohort, "--patients", TRAIN_PATIENTS + HELD_OUT, "--genes", GENES,
         "--seed", 7)
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.iloc[:TRAIN_PATIENTS].to_csv(cohort / "training.csv", index=False)
    unseen = manifest.iloc[TRAIN_PATIENTS]

    _step(2, f"cross-validated training of the small model on {TRAIN_PATIENTS} patients "
             f"(the last {HELD_OUT} are kept out)")
    _run("train", "--manifest", cohort / "training.csv", "--expression", cohort / "expression",
         "--sample-sheet", cohort / "gdc_sample_sheet.tsv", "--out", model, "--config", "small",
         "--cache", out / "cache", "--epochs", epochs)
    print("against the truth:", _truly_linked(cohort, model / "report"))

    _step(3, f"predicting {unseen['patient_id']}, a study the model never saw")
    images = [f"--image={c}={cohort / unseen[c]}" for c in ("t1", "t1gd", "t2", "flair")]
    _run("predict", "--model", model, *images, "--segmentation", cohort / unseen["segmentation"],
         "--out", prediction / "genes.csv", "--run", prediction / "run", "--maps",
         prediction / "maps", "--map-gene", "EGFR", "--folds", "all")

    _step(4, f"done in {time.perf_counter() - start:.0f} s; look at:")
    for path, what in ((model / "report" / "pearson_hist.png", "Figure 2: per-gene r"),
                       (model / "report" / "summary.json", "the evaluation summary"),
                       (model / "report" / "gene_stats.tsv", "per-gene r and adjusted p"),
                       (prediction / "genes.csv", "the ranked gene table"),
                       (prediction / "maps" / "EGFR.nrrd", "EGFR's map on the study's grid"),
                       (prediction / "run", "the prediction run: any gene's map with "
                        "radiogenomics map --run " + str(prediction / "run") + " --gene SYMBOL "
                        "--out DIR"),
                       (model, "the model bundle (radiogenomics info " + str(model) + ")")):
        print(f"  {path}  ({what})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="most epochs per fold")
    args = parser.parse_args()
    run(args.out, args.epochs)
    sys.exit(0)


if __name__ == "__main__":
    main()
