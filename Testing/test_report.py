"""The evaluation report (files, keys, Figure 2) and `radiogenomics evaluate`."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from RadioGenomicsLib import report, stats
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.outputs import COMPLETE_MARKER

IDH1, EGFR, TP53 = "ENSG00000138413.14", "ENSG00000146648.20", "ENSG00000141510.18"
SIGNIFICANT_RED = np.array([0xd1, 0x49, 0x5b])
PER_FOLD_KEYS = {"patients", "genes", "significant_genes_0.05", "significant_genes_0.01",
                 "fdr_significant_genes_0.05", "pearson_mean", "pearson_median", "pearson_min",
                 "pearson_max", "genes_without_r", "genes_r_above_0.4", "best_decile_median_r"}
SUMMARY_KEYS = PER_FOLD_KEYS | {"folds", "per_fold", "markers", "alpha",
                                "genes_beating_mean_predictor"}


@pytest.fixture
def cohort() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """30 patients x 40 genes (IDH1 and genes 3-11 predicted well; gene 20 constant), 3 folds."""
    rng = np.random.default_rng(7)
    patients = pd.Index([f"TCGA-06-{i:04d}" for i in range(30)], name="patient_id")
    genes = [IDH1, EGFR, TP53] + [f"ENSG{j:011d}.1" for j in range(3, 40)]
    truth = rng.normal(size=(30, 40))
    predictions = rng.normal(size=(30, 40))
    linked = [0] + list(range(3, 12))
    predictions[:, linked] += 2.0 * truth[:, linked]
    predictions[:, 20] = 1.5
    folds = pd.Series(np.arange(30) % 3, index=patients)
    return (pd.DataFrame(predictions, index=patients, columns=genes),
            pd.DataFrame(truth, index=patients, columns=genes), folds)


def _red_pixels(path: Path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    return int((np.abs(pixels - SIGNIFICANT_RED).sum(axis=2) < 30).sum())


def test_report_files_and_contents(cohort, tmp_path):
    predictions, truth, folds = cohort
    out = tmp_path / "report"
    names = {IDH1: "IDH1", EGFR: "EGFR", TP53: "TP53"}
    summary = report.write_report(out, predictions, truth, names, folds=folds,
                                  markers=report.MARKER_GENES + ("ENSG00000000007.1", "NOPE"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [report.SUMMARY_FILE, report.GENE_STATS_FILE, report.PREDICTIONS_FILE,
         report.MEASURED_FILE, report.FIGURE_FILE, COMPLETE_MARKER])
    assert json.loads((out / report.SUMMARY_FILE).read_text()) == summary
    assert set(summary) == SUMMARY_KEYS

    gene_stats = pd.read_csv(out / report.GENE_STATS_FILE, sep="\t", keep_default_na=False,
                             na_values={c: [""] for c in ("pearson_r", "p_value", "p_adj", "q_bh",
                                                          "p_perm")})
    assert list(gene_stats.columns) == list(report.GENE_STATS_COLUMNS)
    assert gene_stats["gene_id"].tolist() == list(predictions.columns)
    assert gene_stats["gene_name"].tolist()[:4] == ["IDH1", "EGFR", "TP53", ""]
    expected = stats.gene_statistics(predictions, truth)
    np.testing.assert_allclose(gene_stats["pearson_r"], expected["pearson_r"], rtol=1e-14)
    np.testing.assert_allclose(gene_stats["p_adj"], expected["p_adj"], rtol=1e-14)
    assert gene_stats["significant"].tolist() == expected["significant"].tolist()
    assert gene_stats["significant"].sum() == 10 == summary["significant_genes_0.05"]
    assert gene_stats["pearson_r"].isna().tolist() == [i == 20 for i in range(40)]  # the constant gene

    assert summary["patients"] == 30 and summary["genes"] == 40 and summary["folds"] == 3
    assert summary["genes_without_r"] == 1
    defined = expected["pearson_r"].dropna()
    assert summary["pearson_max"] == pytest.approx(defined.max())
    assert summary["pearson_min"] == pytest.approx(defined.min())
    assert summary["pearson_median"] == pytest.approx(defined.median())
    assert summary["significant_genes_0.01"] == stats.count_significant(expected, 0.01)

    markers = summary["markers"]
    assert list(markers)[:8] == list(report.MARKER_GENES)
    assert markers["IDH1"] == pytest.approx(expected.loc[IDH1, "pearson_r"])
    assert markers["TP53"] == pytest.approx(expected.loc[TP53, "pearson_r"])
    assert markers["ENSG00000000007.1"] == pytest.approx(expected.iloc[7]["pearson_r"])  # by id
    assert markers["MGMT"] is None and markers["NOPE"] is None

    assert [fold["fold"] for fold in summary["per_fold"]] == [0, 1, 2]
    for fold in summary["per_fold"]:
        assert set(fold) == PER_FOLD_KEYS | {"fold"}
        members = folds.index[folds == fold["fold"]]
        fold_stats = stats.gene_statistics(predictions.loc[members], truth.loc[members])
        assert fold["patients"] == 10
        assert fold["significant_genes_0.05"] == stats.count_significant(fold_stats, 0.05)
        assert fold["pearson_mean"] == pytest.approx(fold_stats["pearson_r"].mean())

    written = pd.read_csv(out / report.PREDICTIONS_FILE, sep="\t", index_col=0)
    assert written.index.name == "patient_id" and written.index.tolist() == list(predictions.index)
    assert written.columns.tolist() == list(predictions.columns)
    np.testing.assert_allclose(written.to_numpy(), predictions.to_numpy(), rtol=1e-5)
    measured = pd.read_csv(out / report.MEASURED_FILE, sep="\t", index_col=0)
    np.testing.assert_allclose(measured.to_numpy(), truth.to_numpy(), rtol=1e-5)

    # beside Holm-Sidak: BH q-values, n-free measures, the mean predictor
    np.testing.assert_allclose(gene_stats["q_bh"], expected["q_bh"], rtol=1e-12)
    assert summary["fdr_significant_genes_0.05"] >= summary["significant_genes_0.05"]
    assert summary["genes_r_above_0.4"] == int((defined > 0.4).sum()) >= 10
    top = np.sort(defined.to_numpy())[-3:]  # 39 defined r: the best decile is 3 genes
    assert summary["best_decile_median_r"] == pytest.approx(np.median(top))
    # the 10 linked genes (prediction = 2 x truth + noise) are scaled wrong: they lose to
    # the mean in squared error though their r is high; a well-scaled copy wins
    assert summary["genes_beating_mean_predictor"] == int(gene_stats["beats_mean"].sum())


def test_figure_is_a_png_that_shows_the_significant_genes(cohort, tmp_path):
    predictions, truth, _ = cohort
    report.write_report(tmp_path / "with", predictions, truth)
    report.write_report(tmp_path / "without", predictions.iloc[:, 12:], truth.iloc[:, 12:])
    with Image.open(tmp_path / "with" / report.FIGURE_FILE) as image:
        image.verify()
        assert image.format == "PNG"
        assert 1000 <= image.width <= 2000 and 500 <= image.height <= 1200
    # the legend's swatch is red in both; the bars of the 10 significant genes only in one
    legend_only = _red_pixels(tmp_path / "without" / report.FIGURE_FILE)
    assert _red_pixels(tmp_path / "with" / report.FIGURE_FILE) > legend_only + 1000


def test_no_gene_with_a_defined_r(cohort, tmp_path):
    predictions, truth, _ = cohort
    summary = report.write_report(tmp_path / "flat", predictions * 0.0, truth)
    assert summary["genes_without_r"] == 40 and summary["significant_genes_0.05"] == 0
    assert summary["pearson_mean"] is None and set(summary["markers"].values()) == {None}
    Image.open(tmp_path / "flat" / report.FIGURE_FILE).verify()


def test_bad_input_writes_nothing_and_a_report_is_replaced_whole(cohort, tmp_path):
    predictions, truth, folds = cohort
    out = tmp_path / "report"
    with pytest.raises(InputError, match="fold 2 has 1 patient"):
        report.write_report(out, predictions, truth, folds=folds.where(folds < 2, 1).mask(
            folds.index == folds.index[-1], 2))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "stale.txt").write_text("old")
    report.write_report(out, predictions, truth)
    assert not (out / "stale.txt").exists() and (out / report.SUMMARY_FILE).is_file()


def test_alpha_sets_the_significant_column_and_adds_its_count(cohort, tmp_path):
    predictions, truth, _ = cohort
    summary = report.write_report(tmp_path / "r", predictions, truth, alpha=0.2)
    assert summary["alpha"] == 0.2 and "significant_genes_0.2" in summary
    expected = stats.gene_statistics(predictions, truth, alpha=0.2)
    table = pd.read_csv(tmp_path / "r" / report.GENE_STATS_FILE, sep="\t")
    assert table["significant"].tolist() == expected["significant"].tolist()


def test_print_summary(cohort, tmp_path):
    predictions, truth, folds = cohort
    summary = report.write_report(tmp_path / "r", predictions, truth, {IDH1: "IDH1"}, folds)
    text = io.StringIO()
    report.print_summary(summary, text)
    lines = text.getvalue().splitlines()
    assert lines[0] == "30 patients, 40 genes, 3 folds"
    assert f"{summary['significant_genes_0.05']} at α = 0.05" in lines[1]
    assert sum(line.startswith("  fold ") for line in lines) == 3
    markers = next(line for line in lines if line.startswith("markers: "))
    assert f"IDH1 {summary['markers']['IDH1']:.3f}" in markers and "EGFR n/a" in markers
    assert f"Benjamini-Hochberg q < 0.05 of r > 0 (one-sided): {summary['fdr_significant_genes_0.05']}" in lines[2]
    assert lines[-1] == report.NEGATIVE_LEAN  # cross-validated: why null genes lean < 0


PERMUTATION_ORANGE = np.array([0xe0, 0x8e, 0x0b])


def test_a_permutation_null_adds_p_perm_its_counts_and_its_line(cohort, tmp_path):
    """With the null of 99 permuted runs: gene_stats' p_perm is stats.permutation_p, the
    summary counts the genes at p_perm <= 0.05 and holds the 95th percentile of the runs'
    largest r, print_summary says both, and Figure 2 draws that r as an orange line."""
    predictions, truth, folds = cohort
    null = np.random.default_rng(1).normal(0, 0.18, (99, 40))
    summary = report.write_report(tmp_path / "tested", predictions, truth, folds=folds,
                                  null_r=null)
    table = pd.read_csv(tmp_path / "tested" / report.GENE_STATS_FILE, sep="\t")
    r = table["pearson_r"].to_numpy()
    np.testing.assert_allclose(table["p_perm"], stats.permutation_p(r, null), equal_nan=True)
    assert np.isnan(table["p_perm"][20])  # the constant gene: no r, no p
    assert summary["permutations"] == 99
    assert summary["permutation_significant_genes_0.05"] == 10  # IDH1 and genes 3-11
    assert summary["null_max_r_95"] == pytest.approx(np.quantile(null.max(axis=1), 0.95))
    text = io.StringIO()
    report.print_summary(summary, text)
    assert (f"permutation test (99 permuted cross-validations, family-wise p <= 0.05, r > 0): "
            f"10; the permuted runs' largest r: {summary['null_max_r_95']:.3f}") in text.getvalue()
    plain = report.write_report(tmp_path / "plain", predictions, truth, folds=folds)
    assert "permutations" not in plain

    def orange(folder: str) -> int:
        pixels = np.asarray(Image.open(tmp_path / folder / report.FIGURE_FILE).convert("RGB"), int)
        return int((np.abs(pixels - PERMUTATION_ORANGE).sum(axis=2) < 30).sum())

    assert orange("plain") == 0 and orange("tested") > 200


# ---------------------------------------------------------------- radiogenomics evaluate

def _write(table: pd.DataFrame, path: Path) -> Path:
    table.rename_axis("patient_id").to_csv(path, sep="," if path.suffix == ".csv" else "\t")
    return path


def _with_text(table: pd.DataFrame, row: int, column: int, text: str) -> pd.DataFrame:
    table = table.astype(object)
    table.iat[row, column] = text
    return table


@pytest.fixture
def files(cohort, tmp_path) -> dict[str, Path]:
    predictions, truth, folds = cohort
    folds_path = tmp_path / "folds.tsv"
    folds.rename("fold").rename_axis("patient_id").reset_index().to_csv(folds_path, sep="\t", index=False)
    return {"predictions": _write(predictions, tmp_path / "pred.tsv"),
            "truth": _write(truth, tmp_path / "truth.csv"), "folds": folds_path}


def test_evaluate_cli(files, run_cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("evaluate", "--predictions", files["predictions"], "--truth",
                                   files["truth"], "--out", out, "--folds", files["folds"],
                                   "--marker", "ENSG00000000004.1")
    assert code == 0, stderr
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert summary["folds"] == 3 and summary["significant_genes_0.05"] == 10
    # no sidecar and no --genes: the symbols come from GENCODE v36
    assert summary["markers"]["IDH1"] is not None and summary["markers"]["EGFR"] is not None
    assert "ENSG00000000004.1" in summary["markers"]
    assert "30 patients, 40 genes, 3 folds" in stdout and "IDH1 " in stdout


def test_evaluate_gene_names_from_sidecar_or_option(files, run_cli, tmp_path):
    genes = pd.read_csv(files["truth"], nrows=0).columns[1:]
    sidecar = pd.DataFrame({"gene_id": genes, "gene_name": [f"SYM{i}" for i in range(len(genes))],
                            "gene_type": "protein_coding"})
    sidecar.to_csv(tmp_path / "truth.genes.tsv", sep="\t", index=False)
    code, _, stderr = run_cli("evaluate", "--predictions", files["predictions"], "--truth",
                              files["truth"], "--out", tmp_path / "a")
    assert code == 0, stderr
    names = pd.read_csv(tmp_path / "a" / report.GENE_STATS_FILE, sep="\t")["gene_name"]
    assert names.tolist() == sidecar["gene_name"].tolist()

    option = pd.DataFrame({"gene_id": [g.split(".")[0] for g in genes[:2]], "gene_name": ["X1", "X2"]})
    option.to_csv(tmp_path / "names.tsv", sep="\t", index=False)
    code, _, stderr = run_cli("evaluate", "--predictions", files["predictions"], "--truth",
                              files["truth"], "--out", tmp_path / "b", "--genes", tmp_path / "names.tsv")
    assert code == 0, stderr
    names = pd.read_csv(tmp_path / "b" / report.GENE_STATS_FILE, sep="\t",
                        keep_default_na=False)["gene_name"]
    assert names.tolist() == ["X1", "X2"] + [""] * (len(genes) - 2)  # matched without the version


@pytest.mark.parametrize("change, message", [
    (lambda p: p.iloc[:, :-3], r"different genes: 3 only in \S*truth.csv \(.*\); --shared-only "
                               r"evaluates the 30 patients and 37 genes both hold"),
    (lambda p: p.iloc[2:], r"different patients: 2 only in \S*truth.csv \(TCGA-06-0000, TCGA-06-0001\); "
                           r"--shared-only evaluates the 28 patients"),
    (lambda p: pd.concat([p, p.iloc[[4]]]), r"pred.tsv: patient TCGA-06-0004 appears twice"),
    (lambda p: p.iloc[:, [0, *range(40)]], r"pred.tsv: gene ENSG00000138413.14 appears twice"),
    (lambda p: _with_text(p, 3, 5, "n/a"),
     r"pred.tsv: patient TCGA-06-0003, column \S+: 'n/a' is not a number"),
])
def test_evaluate_bad_tables(cohort, files, run_cli, tmp_path, change, message):
    predictions, _, _ = cohort
    _write(change(predictions), files["predictions"])
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("evaluate", "--predictions", files["predictions"],
                                   "--truth", files["truth"], "--out", out)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    assert re.search(message, stderr), stderr
    assert not out.exists() and stdout == ""


def test_evaluate_shared_only_keeps_what_both_tables_hold(cohort, files, run_cli, tmp_path):
    predictions, truth, _ = cohort
    _write(predictions.iloc[2:, :-3], files["predictions"])  # 2 patients, 3 genes fewer
    _write(truth.drop(index=truth.index[10]), files["truth"])  # another patient fewer
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("evaluate", "--predictions", files["predictions"], "--truth",
                                   files["truth"], "--out", out, "--folds", files["folds"],
                                   "--shared-only")
    assert code == 0, stderr
    assert re.search(r"--shared-only: 27 patients and 37 genes in both tables; dropped 1 "
                     r"patient\(s\) and 0 gene\(s\) from \S*pred.tsv; 2 patient\(s\) and 3 "
                     r"gene\(s\) from \S*truth.csv", stdout), stdout
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert (summary["patients"], summary["genes"], summary["folds"]) == (27, 37, 3)
    shared = predictions.index[2:].drop(truth.index[10])
    gene_stats = pd.read_csv(out / report.GENE_STATS_FILE, sep="\t").set_index("gene_id")
    assert gene_stats.index.tolist() == predictions.columns[:-3].tolist()
    expected = np.corrcoef(predictions.loc[shared, IDH1], truth.loc[shared, IDH1])[0, 1]
    assert gene_stats.loc[IDH1, "pearson_r"] == pytest.approx(expected, abs=1e-6)


def test_evaluate_bad_arguments(cohort, files, run_cli, tmp_path):
    predictions, truth, folds = cohort
    out = tmp_path / "out"
    few = _write(predictions.iloc[:2], tmp_path / "few.tsv")
    few_truth = _write(truth.iloc[:2], tmp_path / "few_truth.tsv")
    bad_folds = tmp_path / "bad_folds.tsv"
    bad_folds.write_text("patient_id\tfold\n" + "".join(f"{p}\t0\n" for p in folds.index[:-1]))
    cases = [
        (["--predictions", tmp_path / "missing.tsv", "--truth", files["truth"]], "missing.tsv: no such"),
        (["--predictions", few, "--truth", few_truth], "2 patient(s); a p-value needs at least 3"),
        (["--predictions", files["predictions"], "--truth", files["truth"], "--folds", bad_folds],
         "bad_folds.tsv: not the same patients as the tables: 1 only in the tables (TCGA-06-0029)"),
        (["--predictions", files["predictions"], "--truth", files["truth"], "--folds",
          tmp_path / "nofolds.tsv"], "nofolds.tsv: no such folds file"),
        (["--predictions", files["predictions"], "--truth", files["truth"], "--genes",
          files["folds"]], "folds.tsv: the genes table needs the columns gene_id, gene_name"),
        (["--predictions", files["predictions"], "--truth", files["truth"], "--alpha", "1.5"],
         "--alpha 1.5: expected a level between 0 and 1"),
    ]
    for arguments, message in cases:
        code, stdout, stderr = run_cli("evaluate", *arguments, "--out", out)
        assert code == 2, (arguments, stderr)
        assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not out.exists()


def test_model_card_shows_figure_2_and_the_markers_r(cohort, tmp_path):
    predictions, truth, folds = cohort
    out = tmp_path / "report"
    names = {IDH1: "IDH1", EGFR: "EGFR", TP53: "TP53"}
    summary = report.write_report(out, predictions, truth, names, folds=folds,
                                  markers=("IDH1", "EGFR", "NOPE"))
    report.write_model_card(out, "demo bundle")
    with Image.open(out / report.MODEL_CARD_FILE) as image:
        assert image.size[0] > 600
    stats = pd.read_csv(out / report.GENE_STATS_FILE, sep="\t")
    figure = report.model_card_figure(stats, summary, "demo bundle")
    histogram, markers = figure.axes
    bars = [patch.get_width() for patch in markers.patches]
    assert bars == pytest.approx([summary["markers"]["IDH1"], summary["markers"]["EGFR"], 0.0])
    labels = [label.get_text() for label in markers.get_yticklabels()]
    assert labels == ["IDH1", "EGFR", "NOPE (n/a)"]
    # every gene with an r is counted once in the stacked histogram
    assert sum(patch.get_height() for patch in histogram.patches) == stats["pearson_r"].notna().sum()
    assert figure._suptitle.get_text() == "demo bundle"
