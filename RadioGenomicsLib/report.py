"""The evaluation report: per-gene statistics, a summary, the out-of-fold predictions, Figure 2.

A report folder holds
- `summary.json`: patients, genes, folds, significant_genes_0.05, significant_genes_0.01
  (Holm-Sidak), fdr_significant_genes_0.05 (Benjamini-Hochberg, one-sided), pearson_mean,
  pearson_median, pearson_min, pearson_max, genes_r_above_0.4, best_decile_median_r (these
  two do not grow with n), genes_without_r, alpha, markers ({symbol: r}), with folds
  genes_beating_mean_predictor, and per_fold (one dict of the same numbers per fold); with
  a permutation null also permutations, permutation_significant_genes_0.05 (p_perm <= 0.05,
  r > 0) and null_max_r_95 (the 95th percentile of each permuted run's largest r);
- `gene_stats.tsv`: gene_id, gene_name, pearson_r, p_value, p_adj, significant, q_bh,
  beats_mean, p_perm (one row per gene, in the tables' column order; significant at the
  report's alpha; beats_mean: out-of-fold squared error below the mean predictor's, empty
  without folds; p_perm: `stats.permutation_p`, empty without a permutation null);
- `oof_predictions.tsv`: the predictions, patients x genes, first column patient_id;
- `measured.tsv`: the measured values they were judged against, same layout (so that
  `radiogenomics compare` can test two reports gene by gene);
- `pearson_hist.png`: the distribution of per-gene r with its minimum, mean and maximum
  marked and the significant genes counted (the paper's Figure 2);
- in a trained bundle's report also `model_card.png` (`write_model_card`): Figure 2 small
  beside the marker genes' validation r, the model at a glance.
The folder appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import TextIO

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from RadioGenomicsLib.expression import write_values
from RadioGenomicsLib.genetable import MARKER_GENES
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.outputs import mark_complete
from RadioGenomicsLib.stats import (ALPHAS, beats_mean_predictor, fold_statistics,
                                    gene_statistics, permutation_threshold, significant_key,
                                    summarize)

SUMMARY_FILE = "summary.json"
GENE_STATS_FILE = "gene_stats.tsv"
PREDICTIONS_FILE = "oof_predictions.tsv"
MEASURED_FILE = "measured.tsv"
FIGURE_FILE = "pearson_hist.png"
MODEL_CARD_FILE = "model_card.png"
GENE_STATS_COLUMNS = ("gene_id", "gene_name", "pearson_r", "p_value", "p_adj", "significant",
                      "q_bh", "beats_mean", "p_perm")
# why genes that cannot be predicted lean to negative r under cross-validation
NEGATIVE_LEAN = ("Genes the model cannot predict lean to negative r: their out-of-fold "
                 "predictions stay near the training folds' mean, which is lower when the "
                 "held-out patients' values are higher, since it leaves them out.")


def marker_correlations(stats: pd.DataFrame, markers: Sequence[str]) -> dict[str, float | None]:
    """r of each marker symbol (None when the tables lack it or its r is undefined).

    A marker is looked up by gene_name, then by gene_id (tables whose columns are symbols);
    of several genes with one symbol the first with a defined r counts.
    """
    found: dict[str, float | None] = {}
    for marker in dict.fromkeys(markers):
        rows = stats[stats["gene_name"] == marker]
        if rows.empty:
            rows = stats[stats.index == marker]
        defined = rows["pearson_r"].dropna()
        found[marker] = float(defined.iloc[0]) if len(defined) else None
    return found


def _alphas(alpha: float) -> list[float]:
    return sorted(set(ALPHAS) | {alpha}, reverse=True)


def _summary(stats: pd.DataFrame, patients: int, per_fold: Mapping[object, pd.DataFrame],
             fold_sizes: Mapping[object, int], alpha: float, markers: Sequence[str]) -> dict:
    alphas = _alphas(alpha)
    overall = summarize(stats, patients, alphas)
    return {"patients": overall.pop("patients"), "genes": overall.pop("genes"),
            "folds": len(per_fold), **overall, "alpha": alpha,
            "markers": marker_correlations(stats, markers),
            "per_fold": [{"fold": label, **summarize(fold_stats, fold_sizes[label], alphas)}
                         for label, fold_stats in per_fold.items()]}


def plot_pearson_histogram(pearson_r: np.ndarray, significant: np.ndarray, summary: Mapping,
                           path: str | os.PathLike) -> None:
    """Figure 2: histogram of per-gene r, the significant genes (a boolean mask) stacked in red."""
    pearson_r = np.asarray(pearson_r, dtype=np.float64)
    significant = np.asarray(significant, dtype=bool)
    defined = ~np.isnan(pearson_r)
    figure = Figure(figsize=(9.0, 4.6), layout="constrained")
    axes = figure.subplots()
    alpha = summary["alpha"]
    counts = "\n".join(f"{summary[significant_key(a)]:,} at α = {a:g}" for a in _alphas(alpha))
    heading = (f"{summary['patients']:,} patients, {summary['genes']:,} genes\n"
               f"significant (Holm–Šidák, r > 0):\n{counts}")
    if defined.any():
        bins = np.histogram_bin_edges(pearson_r[defined],
                                      bins=int(np.clip(np.sqrt(defined.sum()), 10, 80)))
        axes.hist([pearson_r[defined & ~significant], pearson_r[defined & significant]], bins=bins,
                  stacked=True, color=["#9db4cf", "#d1495b"],
                  label=["not significant", f"significant (α = {alpha:g})"])
        for key, label, style in (("pearson_min", "min", ":"), ("pearson_mean", "mean", "-"),
                                  ("pearson_max", "max", "--")):
            axes.axvline(summary[key], color="#222222", linestyle=style, linewidth=1.3,
                         label=f"{label} r = {summary[key]:.3f}")
        if "null_max_r_95" in summary:
            axes.axvline(summary["null_max_r_95"], color="#e08e0b", linestyle="-.",
                         linewidth=1.3, label=f"r = {summary['null_max_r_95']:.3f}: what 5 % "
                         f"of {summary['permutations']:,}\npermuted runs reach "
                         f"({summary['permutation_significant_genes_0.05']:,} genes\n"
                         "family-wise significant by permutation)")
        # beside the axes, with the counts as its heading: it never hides a bar or a line
        axes.legend(title=heading, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                    title_fontsize=8.5, alignment="left", frameon=False)
    else:
        axes.set_xlim(-1.0, 1.0)
        axes.text(1.01, 1.0, f"{heading}\n\nno gene has a defined r", transform=axes.transAxes,
                  va="top", fontsize=8.5)
    if defined.any() and summary.get("folds"):
        axes.axvline(0.0, color="#777777", linewidth=0.8)
        axes.annotate("null genes lean < 0\n(see the note)", xy=(0.0, 0.0),
                      xycoords=("data", "axes fraction"), xytext=(-6, 8),
                      textcoords="offset points", ha="right", fontsize=7.5, color="#555555")
        axes.text(1.01, 0.0, textwrap.fill(NEGATIVE_LEAN, 40), transform=axes.transAxes,
                  va="bottom", fontsize=7.5, color="#555555")
    axes.set_xlabel("Pearson r, predicted vs measured expression (per gene, across patients)")
    axes.set_ylabel("genes")
    axes.set_title("Per-gene correlation of the predictions")
    axes.margins(x=0.04, y=0.1)
    figure.savefig(path, dpi=150)


def model_card_figure(stats: pd.DataFrame, summary: Mapping, title: str) -> Figure:
    """Figure 2 (per-gene r, significant genes in red) beside the markers' validation r."""
    figure = Figure(figsize=(8.0, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    r = stats["pearson_r"].to_numpy(dtype=float)
    significant = stats["significant"].astype(bool).to_numpy()
    defined = ~np.isnan(r)
    if defined.any():
        bins = np.histogram_bin_edges(r[defined], bins=int(np.clip(np.sqrt(defined.sum()), 10, 60)))
        left.hist([r[defined & ~significant], r[defined & significant]], bins=bins, stacked=True,
                  color=["#9db4cf", "#d1495b"], label=["not significant", "significant"])
        left.axvline(summary["pearson_mean"], color="#222222", linewidth=1.0,
                     label=f"mean r = {summary['pearson_mean']:.3f}")
        left.legend(fontsize=7, frameon=False)
    left.set_xlabel("validation r per gene", fontsize=8)
    left.set_ylabel("genes", fontsize=8)
    left.set_title(f"{summary['genes']:,} genes, {summary['patients']:,} patients: "
                   f"{summary[significant_key(summary['alpha'])]:,} significant", fontsize=8)
    markers = dict(summary.get("markers", {}))
    values = [np.nan if v is None else v for v in markers.values()]
    positions = np.arange(len(markers))
    bars = right.barh(positions, np.nan_to_num(values), color="#4a6fa5")
    right.bar_label(bars, labels=["" if np.isnan(v) else f"{v:+.2f}" for v in values],
                    fontsize=7, padding=2)
    right.set_yticks(positions, [f"{m} (n/a)" if np.isnan(v) else m
                                 for m, v in zip(markers, values)], fontsize=7)
    right.invert_yaxis()
    right.axvline(0.0, color="#777777", linewidth=0.8)
    right.set_xlim(-1, 1)
    right.set_xlabel("validation r", fontsize=8)
    right.set_title("marker genes", fontsize=8)
    figure.suptitle(title, fontsize=9)
    return figure


def write_model_card(report_dir: str | os.PathLike, title: str) -> None:
    """model_card.png from a report folder's gene statistics and summary."""
    folder = os.fspath(report_dir)
    stats = pd.read_csv(os.path.join(folder, GENE_STATS_FILE), sep="\t")
    summary = json.loads(open(os.path.join(folder, SUMMARY_FILE), encoding="utf-8").read())
    figure = model_card_figure(stats, summary, title)
    with atomic_path(os.path.join(folder, MODEL_CARD_FILE)) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


def write_report(out_dir: str | os.PathLike, predictions: pd.DataFrame, truth: pd.DataFrame,
                 gene_names: Mapping[str, str] | None = None, folds: pd.Series | None = None,
                 alpha: float = 0.05, markers: Sequence[str] = MARKER_GENES,
                 names: Sequence[str] = ("predictions", "truth", "folds"),
                 command: str | None = "evaluate", null_r: np.ndarray | None = None) -> dict:
    """Evaluate `predictions` against `truth` (patients x genes, indexed by patient id) into `out_dir`.

    gene_names: gene id -> symbol ("" for ids it lacks); folds: patient id -> fold label, for
    the per-fold statistics; names: how error messages call the two tables and the folds;
    command: whose complete output the folder is (None inside another command's output);
    null_r: the out-of-fold r of the same cross-validation on permuted expression
    (permutations x genes, the predictions' column order), for p_perm. Everything is
    checked before anything is written. Returns the summary dict.
    """
    stats = gene_statistics(predictions, truth, alpha, names[:2], null_r)
    per_fold = {} if folds is None else fold_statistics(predictions, truth, folds, alpha, names)
    fold_sizes = {} if folds is None else folds.value_counts().to_dict()
    symbols = dict(gene_names or {})
    stats.insert(0, "gene_name", [symbols.get(gene, "") for gene in stats.index])
    stats["beats_mean"] = pd.Series(pd.NA, index=stats.index, dtype="boolean")
    summary = _summary(stats, len(predictions), per_fold, fold_sizes, alpha, markers)
    if null_r is None:
        stats["p_perm"] = np.nan
    else:
        summary["permutations"] = int(len(null_r))
        summary["null_max_r_95"] = permutation_threshold(null_r)
    if folds is not None:
        beats = beats_mean_predictor(predictions, truth.loc[predictions.index,
                                                            predictions.columns], folds)
        stats["beats_mean"] = beats.reindex(stats.index).astype("boolean")
        summary["genes_beating_mean_predictor"] = int(beats.sum())
    with atomic_path(out_dir) as folder:
        folder.mkdir()
        stats.reset_index().loc[:, list(GENE_STATS_COLUMNS)].to_csv(
            folder / GENE_STATS_FILE, sep="\t", index=False, lineterminator="\n")
        write_values(folder / PREDICTIONS_FILE, predictions, digits=6)
        write_values(folder / MEASURED_FILE, truth.loc[predictions.index, predictions.columns],
                     digits=6)
        plot_pearson_histogram(stats["pearson_r"].to_numpy(), stats["significant"].to_numpy(),
                               summary, folder / FIGURE_FILE)
        (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        if command:
            mark_complete(folder, command)
    return summary


def print_summary(summary: Mapping, file: TextIO | None = None) -> None:
    """A few lines for people: counts, the spread of r, each fold, the markers."""
    file = file or sys.stdout
    alphas = _alphas(summary["alpha"])

    def counts(numbers: Mapping) -> str:
        return ", ".join(f"{numbers[significant_key(a)]:,} at α = {a:g}" for a in alphas)

    def spread(numbers: Mapping) -> str:
        if numbers["pearson_mean"] is None:
            return "no gene has a defined r"
        return (f"mean {numbers['pearson_mean']:.3f}, median {numbers['pearson_median']:.3f}, "
                f"min {numbers['pearson_min']:.3f}, max {numbers['pearson_max']:.3f}")

    folds = f", {summary['folds']} folds" if summary["folds"] else ""
    lines = [f"{summary['patients']:,} patients, {summary['genes']:,} genes{folds}",
             f"significant genes (Holm-Sidak, r > 0): {counts(summary)}"]
    if "fdr_significant_genes_0.05" in summary:
        lines.append(f"  Benjamini-Hochberg q < 0.05 of r > 0 (one-sided): "
                     f"{summary['fdr_significant_genes_0.05']:,};"
                     f" genes with r > 0.4: {summary.get('genes_r_above_0.4', 0):,}")
    if "permutations" in summary:
        lines.append(f"  permutation test ({summary['permutations']:,} permuted cross-validations,"
                     f" family-wise p <= 0.05, r > 0): "
                     f"{summary['permutation_significant_genes_0.05']:,}; the permuted runs' "
                     f"largest r: {summary['null_max_r_95']:.3f} at their 95th percentile")
    lines.append(f"Pearson r: {spread(summary)}")
    if "genes_beating_mean_predictor" in summary:
        lines.append(f"genes predicted better than by the training patients' mean: "
                     f"{summary['genes_beating_mean_predictor']:,}")
    if summary["genes_without_r"]:
        lines.append(f"{summary['genes_without_r']:,} genes without a defined r "
                     "(constant or missing values): never significant")
    lines += [f"  fold {fold['fold']} ({fold['patients']} patients): {counts(fold)}; r {spread(fold)}"
              for fold in summary["per_fold"]]
    lines.append("markers: " + ", ".join(
        f"{symbol} {'n/a' if r is None else f'{r:.3f}'}" for symbol, r in summary["markers"].items()))
    if summary["folds"]:
        lines.append(NEGATIVE_LEAN)
    print("\n".join(lines), file=file)

