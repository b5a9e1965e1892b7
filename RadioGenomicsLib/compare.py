"""Two evaluation reports side by side: which genes each method finds, gene by gene.

A report folder (`train`'s BUNDLE/report, `baseline`'s OUT/report, `evaluate`'s) holds the
out-of-fold predictions and the measured values they were judged against. For two reports
on the same patients and genes this gives, per gene, Steiger's test of the two
correlations with the same truth (Benjamini-Hochberg across genes), counted both ways;
a summary table; and a scatter plot of per-gene r. With a synthetic cohort's truth.json
it also says which of the genes each method found are truly linked, per latent factor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.outputs import mark_complete
from RadioGenomicsLib.errors import InputError, read_json_object

TABLE_FILE = "compare.tsv"
SUMMARY_FILE = "compare.md"
SCATTER_FILE = "scatter.png"


def read_report(folder: str | os.PathLike) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, gene_stats, predictions, measured) of a report folder."""
    from RadioGenomicsLib.expression import read_matrix
    from RadioGenomicsLib.report import (GENE_STATS_FILE, MEASURED_FILE, PREDICTIONS_FILE,
                                         SUMMARY_FILE as REPORT_SUMMARY)

    folder = Path(folder)
    missing = [name for name in (REPORT_SUMMARY, GENE_STATS_FILE, PREDICTIONS_FILE, MEASURED_FILE)
               if not (folder / name).is_file()]
    if missing:
        hint = (" (reports written before measured.tsv existed: evaluate them again)"
                if missing == [MEASURED_FILE] else "")
        raise InputError(folder, f"not an evaluation report: no {', '.join(missing)}{hint}")
    summary = read_json_object(folder / REPORT_SUMMARY)
    stats = pd.read_csv(folder / GENE_STATS_FILE, sep="\t", keep_default_na=False,
                        na_values={c: [""] for c in ("pearson_r", "p_value", "p_adj", "q_bh",
                                                         "p_perm")})
    return (summary, stats.set_index("gene_id"), read_matrix(folder / PREDICTIONS_FILE).values,
            read_matrix(folder / MEASURED_FILE).values)


def compare_reports(a: str | os.PathLike, b: str | os.PathLike, labels: Sequence[str],
                    truth_json: str | os.PathLike | None = None, alpha: float = 0.05
                    ) -> tuple[pd.DataFrame, str]:
    """The per-gene comparison table and a Markdown summary of two reports."""
    from RadioGenomicsLib.stats import compare_methods

    summary_a, stats_a, predicted_a, measured_a = read_report(a)
    summary_b, stats_b, predicted_b, measured_b = read_report(b)
    if set(predicted_a.index) != set(predicted_b.index) or \
            set(predicted_a.columns) != set(predicted_b.columns):
        raise InputError(b, f"not the same patients and genes as {a}: compare reports of one "
                            "cohort, genes and folds (train and baseline with the same "
                            "--config, --folds and --seed)")
    measured_b = measured_b.loc[measured_a.index, measured_a.columns]
    if not np.allclose(measured_a.to_numpy(), measured_b.to_numpy(), rtol=1e-4, atol=1e-6,
                       equal_nan=True):
        raise InputError(b, f"measured values differ from those of {a}: not the same targets")
    table = compare_methods(predicted_a, predicted_b, measured_a, alpha, (*labels, "measured"))
    table.insert(0, "gene_name", stats_a["gene_name"].reindex(table.index).fillna(""))
    table["significant_a"] = stats_a["significant"].reindex(table.index).astype(bool)
    table["significant_b"] = stats_b["significant"].reindex(table.index).astype(bool)
    rows = [_method_row(labels[0], summary_a, table, "a", labels[0]),
            _method_row(labels[1], summary_b, table, "b", labels[1])]
    text = _markdown(rows, truth_json, (a, b), labels, len(measured_a), alpha)
    return table, text


def _method_row(label: str, summary: dict, table: pd.DataFrame, side: str, name: str) -> dict:
    return {"method": label, "significant": summary.get("significant_genes_0.05"),
            "fdr": summary.get("fdr_significant_genes_0.05"),
            "r_above_0.4": summary.get("genes_r_above_0.4"),
            "best_decile": summary.get("best_decile_median_r"),
            "beats_mean": summary.get("genes_beating_mean_predictor"),
            "better": int((table["better"] == name).sum()),
            "median_r": float(np.nanmedian(table[f"r_{side}"])),
            "permutations": summary.get("permutations"),
            "permutation": summary.get("permutation_significant_genes_0.05"),
            "null_max_r": summary.get("null_max_r_95")}


def _number(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else f"{value:,}"


def _markdown(rows: list[dict], truth_json, reports, labels, patients: int, alpha: float) -> str:
    lines = [f"{patients} patients. Significant: Holm–Šidák adjusted p < {alpha:g}, r > 0; "
             f"FDR: Benjamini–Hochberg q < 0.05 of r > 0 (one-sided); "
             f"better: Steiger's test, BH q < {alpha:g}.",
             "", "| method | significant | FDR | r > 0.4 | median r, best decile | beats the "
             "mean predictor | median r | better than the other |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['method']} | {_number(row['significant'])} | {_number(row['fdr'])} "
                     f"| {_number(row['r_above_0.4'])} | {_number(row['best_decile'])} | "
                     f"{_number(row['beats_mean'])} | {row['median_r']:.3f} | {row['better']:,} |")
    tested = [row for row in rows if row["permutations"]]
    if tested:
        lines += ["", "Permutation test (each method against its own cross-validation re-run "
                  "on permuted expression; family-wise p <= 0.05, r > 0): " + "; ".join(
                      f"{row['method']} {row['permutation']:,} genes ({row['permutations']:,} "
                      f"permuted runs, 95 % of whose largest r stay below "
                      f"{row['null_max_r']:.3f})" for row in tested) + "."]
    if truth_json is not None:
        from RadioGenomicsLib.synth import score_against_truth

        scores = [score_against_truth(truth_json, report) for report in reports]
        factors = list(scores[0]["per_factor"])
        lines += ["", "Against the synthetic cohort's truth (linked genes found, per factor):", "",
                  "| method | linked found | null significant | "
                  + " | ".join(factors) + " |", "|---|---|---|" + "---|" * len(factors)]
        for label, score in zip(labels, scores):
            per_factor = " | ".join(f"{score['per_factor'][f]['found']} of "
                                    f"{score['per_factor'][f]['linked']}" for f in factors)
            lines.append(f"| {label} | {score['significant_linked']} of {score['linked']} | "
                         f"{score['null_significant']} of {score['null']:,} | {per_factor} |")
        for label, score in zip(labels, scores):
            if "permutation_linked" in score:
                lines += ["", f"By the permutation test, {label} found "
                              f"{score['permutation_linked']} linked and "
                              f"{score['permutation_null']} null genes."]
    return "\n".join(lines) + "\n"


def plot_scatter(table: pd.DataFrame, labels: Sequence[str], path: str | os.PathLike) -> None:
    """Per-gene r of A against B; genes one method finds better in its colour."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.4, 6.0), layout="constrained")
    axes = figure.subplots()
    size = 24 if len(table) < 500 else 4
    kinds = [("", "#b8c4d4", "no difference"),
             (labels[0], "#d1495b", f"{labels[0]} better"),
             (labels[1], "#2e86ab", f"{labels[1]} better")]
    for value, colour, name in kinds:
        chosen = table["better"] == value
        axes.scatter(table.loc[chosen, "r_b"], table.loc[chosen, "r_a"], s=size, color=colour,
                     label=f"{name} ({int(chosen.sum()):,} genes)", linewidths=0)
    axes.plot([-1, 1], [-1, 1], color="#444444", linewidth=0.8)
    finite = table[["r_a", "r_b"]].to_numpy()
    finite = finite[np.isfinite(finite)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    pad = 0.05 * (high - low or 1.0)
    axes.set_xlim(low - pad, high + pad)
    axes.set_ylim(low - pad, high + pad)
    axes.set_xlabel(f"r, {labels[1]}")
    axes.set_ylabel(f"r, {labels[0]}")
    axes.set_title("Per-gene Pearson r of the two methods (Steiger, BH)")
    axes.set_aspect("equal")
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                markerscale=max(1.0, 12 / size))
    figure.savefig(path, dpi=130)


def write_comparison(out: str | os.PathLike, table: pd.DataFrame, text: str,
                     labels: Sequence[str]) -> None:
    """compare.tsv, compare.md and scatter.png in `out`, all of them or none."""
    with atomic_path(out) as folder:
        folder.mkdir()
        table.reset_index().to_csv(folder / TABLE_FILE, sep="\t", index=False,
                                   float_format="%.6g")
        (folder / SUMMARY_FILE).write_text(text, encoding="utf-8")
        plot_scatter(table, labels, folder / SCATTER_FILE)
        (folder / "labels.json").write_text(json.dumps(list(labels)) + "\n")
        mark_complete(folder, "compare")
