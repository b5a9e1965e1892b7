"""`radiogenomics compare`: two reports of one cohort, gene by gene."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from RadioGenomicsLib import report

GENES = [f"ENSG{i:011d}.1" for i in range(40)]


@pytest.fixture
def reports(tmp_path):
    """Method A predicts genes 0-9 well, B genes 10-19; both 20-24; nobody the rest."""
    rng = np.random.default_rng(3)
    patients = pd.Index([f"TCGA-02-{i:04d}" for i in range(90)], name="patient_id")
    truth = pd.DataFrame(rng.normal(size=(90, 40)), index=patients, columns=GENES)
    folds = pd.Series(np.arange(90) % 5, index=patients)
    gain_a = np.r_[np.full(10, 2.0), np.full(10, 0.1), np.full(5, 1.0), np.zeros(15)]
    gain_b = np.r_[np.full(10, 0.1), np.full(10, 2.0), np.full(5, 1.0), np.zeros(15)]
    a = truth * gain_a + rng.normal(size=truth.shape)
    b = truth * gain_b + rng.normal(size=truth.shape)
    names = {g: f"G{i}" for i, g in enumerate(GENES)}
    report.write_report(tmp_path / "model" / "report", a, truth, names, folds)
    report.write_report(tmp_path / "baseline" / "report", b, truth, names, folds)
    linked = [{"gene_id": GENES[i], "factor": "size" if i < 15 else "texture"} for i in range(25)]
    (tmp_path / "truth.json").write_text(json.dumps({"expression": {"linked": linked}}))
    return tmp_path


def test_compare_counts_both_ways_and_draws_the_scatter(reports, run_cli):
    code, out, err = run_cli("compare", reports / "model" / "report", reports / "baseline" / "report",
                             "--truth", reports / "truth.json", "--out", reports / "cmp")
    assert code == 0, err
    table = pd.read_csv(reports / "cmp" / "compare.tsv", sep="\t", keep_default_na=False)
    better = table.set_index("gene_id")["better"]
    assert set(better[GENES[:10]]) == {"model"} and set(better[GENES[10:20]]) == {"baseline"}
    assert (better[GENES[20:25]] == "").all()  # equally good: no difference found
    assert (better[GENES[25:]] != "").sum() <= 2  # noise genes: FDR-controlled false calls
    text = (reports / "cmp" / "compare.md").read_text()
    assert text == out.split("wrote ")[0]
    first_table = text.split("Against the synthetic")[0]
    rows = {line.split("|")[1].strip(): line for line in first_table.splitlines()
            if line.startswith("| ")}
    assert int(rows["model"].rstrip(" |").rsplit("|", 1)[1]) == (better == "model").sum()
    # per factor: "size" = genes 0-14 (A finds 0-9 and not 10-14), "texture" = 15-24
    assert "| model | 15 of 25 | 0 of 15 | 10 of 15 | 5 of 10 |" in text
    assert "| baseline | 15 of 25 | 0 of 15 | 5 of 15 | 10 of 10 |" in text
    pixels = np.asarray(Image.open(reports / "cmp" / "scatter.png").convert("RGB"), dtype=int)
    for colour in ([0xd1, 0x49, 0x5b], [0x2e, 0x86, 0xab]):
        assert (np.abs(pixels - colour).sum(axis=2) < 30).sum() > 50


def test_compare_refuses_reports_of_other_cohorts(reports, run_cli, tmp_path):
    other = pd.read_csv(reports / "model" / "report" / "oof_predictions.tsv", sep="\t",
                        index_col=0).iloc[:60]
    measured = pd.read_csv(reports / "model" / "report" / "measured.tsv", sep="\t",
                           index_col=0).iloc[:60]
    report.write_report(tmp_path / "small", other, measured)
    code, out, err = run_cli("compare", reports / "model" / "report", tmp_path / "small",
                             "--out", tmp_path / "cmp")
    assert code == 2 and "not the same patients and genes" in err and out == ""
    (tmp_path / "small" / "measured.tsv").unlink()
    code, _, err = run_cli("compare", reports / "model" / "report", tmp_path / "small",
                           "--out", tmp_path / "cmp")
    assert code == 2 and "no measured.tsv" in err and "evaluate them again" in err
    assert not (tmp_path / "cmp").exists()


def test_compare_reports_a_method_permutation_test_where_it_ran(reports, run_cli, tmp_path):
    """A model report with a permutation null (39 runs): compare.md gives its count and
    threshold and, against the truth, the linked and null genes it passed; nothing for
    the baseline, which ran no test."""
    from RadioGenomicsLib.compare import read_report

    _, _, predicted, measured = read_report(reports / "model" / "report")
    folds = pd.Series(np.arange(90) % 5, index=predicted.index)
    null = np.random.default_rng(4).normal(0, 0.1, (39, 40))
    report.write_report(tmp_path / "tested", predicted, measured, folds=folds, null_r=null)
    code, _, err = run_cli("compare", tmp_path / "tested", reports / "baseline" / "report",
                           "--truth", reports / "truth.json", "--labels", "model", "baseline",
                           "--out", tmp_path / "cmp")
    assert code == 0, err
    text = (tmp_path / "cmp" / "compare.md").read_text()
    stats = pd.read_csv(tmp_path / "tested" / "gene_stats.tsv", sep="\t")
    passed = stats["gene_id"][(stats["p_perm"] <= 0.05) & (stats["pearson_r"] > 0)]
    linked = int(passed.isin(GENES[:25]).sum())
    assert set(GENES[:10]) | set(GENES[20:25]) <= set(passed) and linked == len(passed)
    threshold = np.quantile(null.max(axis=1), 0.95)
    assert (f"model {len(passed)} genes (39 permuted runs, 95 % of whose largest r stay "
            f"below {threshold:.3f})." in text)
    assert f"By the permutation test, model found {linked} linked and 0 null genes." in text
    assert "baseline" not in text.split("Permutation test")[1].split("\n")[0]
    assert "By the permutation test, baseline" not in text
