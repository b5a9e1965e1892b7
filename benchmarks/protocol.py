"""The honest protocol of the model-vs-baseline benchmark, on untouched synthetic cohorts.

    python -m benchmarks.protocol --cohort DIR [--cohort DIR ...] --work DIR
        [--config frozen-ridge] [--variant NAME=RECIPE ...] [--seeds 0 1 2]
        [--permutations N]

For every cohort (made by `radiogenomics synth` with a seed never used for tuning) and
every training seed: the radiomics baseline (its features cached once in WORK/cache, so
each seed costs a ridge) and each `--baseline-variant`, the model of `--config` with the fusion setting on (the model alone in
BUNDLE/report, embedding + radiomics in BUNDLE/fusion-report) and each `--variant` (an
ablation recipe). Training never reads truth.json; only the scoring below does.

Writes WORK/protocol.json (every run's score, wall and CPU time) and prints Markdown:
per cohort and method, the linked genes found (mean ± SD over the seeds), the null genes
called significant, the share of the baseline's count per latent factor, marker r, the
model / baseline ratio and the time; with --permutations, the baseline, the model and
the fusion also run the permutation test, and a second table counts what it passes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from RadioGenomicsLib.genetable import MARKER_GENES
from RadioGenomicsLib.synth import score_against_truth

BASELINE, MODEL, FUSION = "baseline", "model", "fusion"


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], log: Path) -> tuple[float, float]:
    """Run a radiogenomics command (its output to `log`): (wall s, CPU s)."""
    started, cpu = time.perf_counter(), _cpu_children()
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "RadioGenomicsLib", *command],
                              stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: see {log}")
    return time.perf_counter() - started, _cpu_children() - cpu


def _cohort_args(cohort: Path) -> list[str]:
    return ["--manifest", str(cohort / "manifest.csv"), "--expression", str(cohort / "expression"),
            "--sample-sheet", str(cohort / "gdc_sample_sheet.tsv")]


def _markers(report: Path) -> dict[str, float]:
    stats = pd.read_csv(report / "gene_stats.tsv", sep="\t")
    stats = stats[stats["gene_name"].isin(MARKER_GENES)]
    return {str(name): round(float(r), 3) for name, r in zip(stats["gene_name"], stats["pearson_r"])}


def _score(cohort: Path, report: Path, spent: dict) -> dict:
    return {**score_against_truth(cohort / "truth.json", report), "markers": _markers(report),
            "wall_s": round(spent["wall_s"], 1), "cpu_s": round(spent["cpu_s"], 1)}


def _fusion_recipe(config: str, work: Path, name: str) -> Path:
    """`config` (a preset or a recipe file) with the fusion setting on, as a recipe file."""
    document = json.loads(Path(config).read_text()) if Path(config).is_file() else {"base": config}
    document = {**document, "name": name,
                "training": {**document.get("training", {}), "fusion": True}}
    path = work / f"{name}.recipe.json"
    path.write_text(json.dumps(document))
    return path


def _run_once(command: list[str], out: Path) -> dict:
    """Run a command writing `out` unless an earlier run finished it: its wall and CPU time."""
    if not (out / "report").exists():
        wall, cpu = _run(command, out.with_name(f"{out.name}.log"))
        (out / "time.json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu}))
    return json.loads((out / "time.json").read_text())


def run_cohort(cohort: Path, work: Path, config: str, variants: dict[str, str],
               baselines: dict[str, str], seeds: list[int],
               variant_seeds: list[int] | None = None, permutations: int = 0) -> list[dict]:
    rows = []
    work.mkdir(parents=True, exist_ok=True)
    recipe = _fusion_recipe(config, work, "model")
    cache = work.parent / "cache"

    def tested(method: str) -> list[str]:  # the variants may train by gradient
        return ["--permutations", str(permutations)] if permutations and method in (
            BASELINE, MODEL) else []

    for seed in seeds:
        with_variants = variant_seeds is None or seed in variant_seeds
        runs = []
        for name, path in {BASELINE: config, **(baselines if with_variants else {})}.items():
            out = work / f"{name}_s{seed}"
            runs.append((name, out, ["baseline", *_cohort_args(cohort), "--config", path,
                                     "--seed", str(seed), "--out", str(out), "--jobs", "2",
                                     "--cache", str(cache / "radiomics"), *tested(name)]))
        for name, path in {MODEL: str(recipe), **(variants if with_variants else {})}.items():
            out = work / f"{name}_s{seed}"
            runs.append((name, out, ["train", *_cohort_args(cohort), "--config", path,
                                     "--seed", str(seed), "--out", str(out), "--device", "cpu",
                                     "--cache", str(cache), *tested(name)]))
        for name, out, command in runs:
            spent = _run_once(command, out)
            rows.append({"cohort": cohort.name, "method": name, "seed": seed,
                         **_score(cohort, out / "report", spent)})
            if (out / "fusion-report").exists():
                rows.append({"cohort": cohort.name, "method": f"{name} + radiomics (fusion)",
                             "seed": seed, **_score(cohort, out / "fusion-report",
                                                    {"wall_s": 0.0, "cpu_s": 0.0})})
    return rows


def _mean_sd(values) -> str:
    values = np.asarray(list(values), float)
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.0f}"


def markdown(rows: list[dict]) -> str:
    table = pd.DataFrame(rows)
    lines = []
    for cohort, part in table.groupby("cohort", sort=False):
        base = part[part["method"] == BASELINE]
        base_found = base["significant_linked"].mean()
        factors = sorted(base.iloc[0]["per_factor"])
        lines += [f"**{cohort}** ({int(part.iloc[0]['linked'])} linked of "
                  f"{int(part.iloc[0]['genes'])} genes; seeds "
                  f"{', '.join(map(str, sorted(part['seed'].unique())))})", "",
                  "| method | linked found | null significant | / baseline | "
                  + " | ".join(f"{f} (found / baseline's)" for f in factors)
                  + " | markers r (mean) | wall per run |",
                  "|---|---|---|---|" + "---|" * len(factors) + "---|---|"]
        for method, runs in part.groupby("method", sort=False):
            per_factor = []
            for factor in factors:
                found = np.mean([r[factor]["found"] for r in runs["per_factor"]])
                theirs = np.mean([r[factor]["found"] for r in base["per_factor"]])
                per_factor.append(f"{found:.1f} / {theirs:.1f}")
            markers = pd.DataFrame(list(runs["markers"])).mean().round(2)
            lines.append(
                f"| {method} | {_mean_sd(runs['significant_linked'])} | "
                f"{_mean_sd(runs['null_significant'])} | "
                f"{runs['significant_linked'].mean() / max(base_found, 1e-9):.2f} | "
                + " | ".join(per_factor) + " | "
                + ", ".join(f"{k} {v:.2f}" for k, v in markers.items()) + " | "
                + (f"{runs['wall_s'].mean() / 60:.1f} min" if runs["wall_s"].mean() else "(in model's)")
                + " |")
        lines.append("")
        if "permutation_linked" in part:
            lines += _permutation_table(part)
    return "\n".join(lines)


def _permutation_table(part: pd.DataFrame) -> list[str]:
    """Per method, the genes Holm-Sidak and the permutation test pass, linked and null,
    and per factor what the permutation test passed against the baseline's."""
    tested = part[part["permutation_linked"].notna()]
    base = tested[tested["method"] == BASELINE]
    factors = sorted(tested.iloc[0]["permutation_per_factor"])

    def found(runs: pd.DataFrame, factor: str) -> float:
        return float(np.mean([r[factor] for r in runs["permutation_per_factor"]]))

    lines = ["| method | Holm–Šidák: linked | null | permutation test: linked | null | "
             "/ baseline | " + " | ".join(factors) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(factors)]
    for method, runs in tested.groupby("method", sort=False):
        ratio = (runs["permutation_linked"].mean() / base["permutation_linked"].mean()
                 if len(base) else float("nan"))
        lines.append(f"| {method} | {_mean_sd(runs['significant_linked'])} | "
                     f"{_mean_sd(runs['null_significant'])} | "
                     f"{_mean_sd(runs['permutation_linked'])} | "
                     f"{_mean_sd(runs['permutation_null'])} | {ratio:.2f} | "
                     + " | ".join(f"{found(runs, f):.1f} / {found(base, f):.1f}"
                                  if len(base) else f"{found(runs, f):.1f}" for f in factors)
                     + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, action="append", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--config", default="frozen-ridge")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=RECIPE")
    parser.add_argument("--baseline-variant", action="append", default=[], metavar="NAME=RECIPE",
                        help="another baseline (e.g. a recipe with region_labels: sub-region "
                             "features)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant-seeds", type=int, nargs="+",
                        help="run the variants on these seeds only (default: every seed)")
    parser.add_argument("--permutations", type=int, default=0,
                        help="the permutation test's permuted runs for the baseline, the "
                             "model and the fusion (default 0: none)")
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant)
    baselines = dict(item.split("=", 1) for item in args.baseline_variant)
    rows = []
    for cohort in args.cohort:
        rows += run_cohort(cohort, args.work / cohort.name, args.config, variants, baselines,
                           args.seeds, args.variant_seeds, args.permutations)
        (args.work / "protocol.json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
