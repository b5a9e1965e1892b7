"""Per-gene Pearson r and p, Holm-Sidak, significance, per-fold statistics, bad tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from RadioGenomicsLib import stats
from RadioGenomicsLib.errors import InputError


def _tables(values_x: np.ndarray, values_y: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    patients = pd.Index([f"TCGA-{i:02d}-{i:04d}" for i in range(values_x.shape[0])], name="patient_id")
    genes = [f"ENSG{j:011d}.{j % 7 + 1}" for j in range(values_x.shape[1])]
    return (pd.DataFrame(values_x, index=patients, columns=genes),
            pd.DataFrame(values_y, index=patients, columns=genes))


def _scipy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    results = [scipy_stats.pearsonr(x[:, j], y[:, j]) for j in range(x.shape[1])]
    return (np.array([result.statistic for result in results]),
            np.array([result.pvalue for result in results]))


@pytest.fixture
def correlated() -> tuple[np.ndarray, np.ndarray]:
    """40 patients x 300 genes on very different scales, from no to strong (and negative) correlation."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 300)) * rng.uniform(0.01, 100, 300) + rng.uniform(-50, 50, 300)
    y = x * rng.normal(size=300) * 0.05 + rng.normal(size=(40, 300))
    return x, y


def test_r_and_p_equal_scipy_pearsonr_per_gene(correlated):
    x, y = correlated
    r, p = stats.pearson_columns(x, y)
    expected_r, expected_p = _scipy(x, y)
    np.testing.assert_allclose(r, expected_r, rtol=0, atol=1e-10)
    np.testing.assert_allclose(p, expected_p, rtol=1e-8, atol=1e-10)
    assert expected_p.min() < 1e-20 and expected_p.max() > 0.5  # the range was covered


def test_perfect_correlation_gives_p_zero():
    x = np.arange(10.0)[:, np.newaxis]
    r, p = stats.pearson_columns(np.hstack([x, x]), np.hstack([2 * x + 1, -x]))
    np.testing.assert_allclose(r, [1.0, -1.0])
    np.testing.assert_allclose(p, [0.0, 0.0], atol=1e-300)


def test_constant_and_missing_genes_get_nan_and_leave_the_family(correlated):
    x, y = (a[:, :50].copy() for a in correlated)
    x[:, 3] = 0.1          # constant prediction; its mean is off 0.1 by rounding
    y[:, 7] = 5.0          # constant truth
    x[4, 11] = np.nan      # a missing value
    predictions, truth = _tables(x, y)
    table = stats.gene_statistics(predictions, truth)
    undefined = table.index[[3, 7, 11]]
    assert table.loc[undefined, ["pearson_r", "p_value", "p_adj"]].isna().all().all()
    assert not table.loc[undefined, "significant"].any()
    defined = table.drop(undefined)
    expected = multipletests(defined["p_value"].to_numpy(), method="holm-sidak")[1]
    np.testing.assert_allclose(defined["p_adj"], expected, rtol=1e-12)
    others = np.delete(np.arange(50), [3, 7, 11])
    np.testing.assert_allclose(defined["pearson_r"], _scipy(x[:, others], y[:, others])[0], atol=1e-10)
    summary = stats.summarize(table, patients=40)
    assert summary["genes"] == 50 and summary["genes_without_r"] == 3
    assert summary["pearson_mean"] == pytest.approx(defined["pearson_r"].mean())


def test_holm_sidak_equals_statsmodels_by_hand_with_nans_left_out():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=500) ** 4
    p[[10, 20, 30]] = np.nan
    adjusted = stats.holm_sidak(p)
    kept = ~np.isnan(p)
    np.testing.assert_allclose(adjusted[kept], multipletests(p[kept], method="holm-sidak")[1],
                               rtol=1e-12)
    assert np.isnan(adjusted[~kept]).all()


def test_holm_sidak_tiny_case_by_hand():
    # sorted 0.01, 0.03, 0.04 over m = 3: 1 - 0.99**3, 1 - 0.97**2, 1 - 0.96, then step-down maximum
    adjusted = stats.holm_sidak(np.array([0.01, 0.04, 0.03]))
    np.testing.assert_allclose(adjusted, [0.029701, 0.0591, 0.0591], rtol=1e-12)


def test_significant_needs_positive_r_and_adjusted_p_below_alpha():
    rng = np.random.default_rng(8)
    signal = rng.normal(size=(60, 1))
    x = np.hstack([signal, signal, signal * 0.1 + rng.normal(size=(60, 1)), rng.normal(size=(60, 1))])
    y = np.hstack([signal + 0.3 * rng.normal(size=(60, 1)), -signal, signal, rng.normal(size=(60, 1))])
    table = stats.gene_statistics(*_tables(x, y), alpha=0.05)
    r, p_adj = table["pearson_r"].to_numpy(), table["p_adj"].to_numpy()
    assert r[1] < 0 and p_adj[1] < 1e-10           # strongly anti-correlated
    assert r[3] > 0 and p_adj[3] > 0.05            # positive, not enough
    assert 0.001 < p_adj[2] < 0.01 and r[2] > 0
    assert table["significant"].tolist() == [True, False, True, False]
    strict = stats.gene_statistics(*_tables(x, y), alpha=0.001)
    assert strict["significant"].tolist() == [True, False, False, False]
    assert stats.count_significant(table, 0.01) == 2
    assert stats.count_significant(table, 0.001) == 1


def test_null_genes_stay_within_the_family_wise_level():
    """Over 200 cohorts of 500 pure-noise genes, a false positive in at most ~5 % of them."""
    rng = np.random.default_rng(2024)
    cohorts, genes, patients, alpha = 200, 500, 30, 0.05
    any_false_positive, raw_below_alpha = 0, 0
    for _ in range(cohorts):
        r, p = stats.pearson_columns(rng.normal(size=(patients, genes)), rng.normal(size=(patients, genes)))
        any_false_positive += bool(((stats.holm_sidak(p) < alpha) & (r > 0)).any())
        raw_below_alpha += int((p < alpha).sum())
    # raw p-values of null genes are uniform: wrong degrees of freedom or a one-sided p fail this
    tests = cohorts * genes
    low, high = scipy_stats.binom.ppf([0.0005, 0.9995], tests, alpha)
    assert low <= raw_below_alpha <= high
    # family-wise error <= alpha: the count of cohorts with any false positive is at most binomial
    assert any_false_positive <= scipy_stats.binom.ppf(0.999, cohorts, alpha)


def test_planted_genes_are_found_and_null_genes_are_not():
    rng = np.random.default_rng(11)
    patients, planted, null = 100, 100, 2000
    truth = rng.normal(size=(patients, planted + null))
    predictions = rng.normal(size=truth.shape)
    predictions[:, :planted] += 0.8 * truth[:, :planted]   # r about 0.6
    table = stats.gene_statistics(*_tables(predictions, truth))
    assert table["significant"].iloc[:planted].all()
    # Holm-Sidak holds P(any null gene significant) <= 0.05; two or more: well below 0.01
    assert table["significant"].iloc[planted:].sum() <= 1


def test_truth_is_aligned_to_the_predictions_order(correlated):
    predictions, truth = _tables(*(a[:, :20] for a in correlated))
    shuffled = truth.sample(frac=1.0, random_state=1).iloc[:, ::-1]
    pd.testing.assert_frame_equal(stats.gene_statistics(predictions, shuffled),
                                  stats.gene_statistics(predictions, truth))


def test_fold_statistics_are_each_folds_own(correlated):
    x, y = (a[:, :30] for a in correlated)
    predictions, truth = _tables(x, y)
    labels = np.array([0, 1, 2, 3] * 10)
    folds = pd.Series(labels, index=predictions.index).sample(frac=1.0, random_state=2)
    per_fold = stats.fold_statistics(predictions, truth, folds)
    assert list(per_fold) == [0, 1, 2, 3]
    for label, table in per_fold.items():
        expected_r, expected_p = _scipy(x[labels == label], y[labels == label])
        np.testing.assert_allclose(table["pearson_r"], expected_r, atol=1e-10)
        np.testing.assert_allclose(table["p_value"], expected_p, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(table["p_adj"], multipletests(expected_p, method="holm-sidak")[1],
                                   rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("folds, message", [
    (lambda ids: pd.Series([0, 0, 1, 1] * 5, index=ids).iloc[:-1], "1 only in the tables"),
    (lambda ids: pd.concat([pd.Series([0, 1] * 10, index=ids), pd.Series([1], index=["X"])]),
     "1 only in folds (X)"),
    (lambda ids: pd.Series([0] * 18 + [1, 1], index=ids), "fold 1 has 2 patient(s)"),
    (lambda ids: pd.Series([0, 1] * 10, index=ids[:10].append(ids[:10])), "duplicated patient ids"),
])
def test_bad_folds(correlated, folds, message):
    predictions, truth = _tables(*(a[:20, :5] for a in correlated))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        stats.fold_statistics(predictions, truth, folds(predictions.index))


def test_bad_tables(correlated):
    predictions, truth = _tables(*(a[:10, :6] for a in correlated))
    with pytest.raises(InputError, match=r"predictions: duplicated patient ids: 1 \(TCGA-00-0000\)"):
        stats.gene_statistics(pd.concat([predictions, predictions.iloc[:1]]), truth)
    with pytest.raises(InputError, match="truth: duplicated gene ids"):
        stats.gene_statistics(predictions, truth.iloc[:, [0, 1, 1, 2, 3, 4, 5]])
    with pytest.raises(InputError, match=r"different genes: 2 only in truth \(ENSG"):
        stats.gene_statistics(predictions.iloc[:, :4], truth)
    with pytest.raises(InputError, match="different patients: 1 only in predictions"):
        stats.gene_statistics(predictions, truth.iloc[1:])
    with pytest.raises(InputError, match=r"2 patient\(s\); a p-value needs at least 3"):
        stats.gene_statistics(predictions.iloc[:2], truth.iloc[:2])
    text = predictions.astype(object)
    text.iloc[4, 2] = "high"
    with pytest.raises(InputError, match=r"non-numeric values in gene \S+ \(patient TCGA-04-0004: 'high'\)"):
        stats.gene_statistics(text, truth)


def test_benjamini_hochberg_matches_the_definition():
    from RadioGenomicsLib.stats import benjamini_hochberg

    p = np.array([0.001, 0.04, 0.03, np.nan, 0.5, 0.008])
    q = benjamini_hochberg(p)
    defined = p[~np.isnan(p)]
    order = np.argsort(defined)
    raw = defined[order] * len(defined) / np.arange(1, len(defined) + 1)
    expected = np.minimum.accumulate(raw[::-1])[::-1]
    np.testing.assert_allclose(q[~np.isnan(p)][order], np.minimum(expected, 1), rtol=1e-12)
    assert np.isnan(q[3])


def test_steiger_is_calibrated_under_the_null_and_finds_a_better_method():
    """Two equally good, correlated methods: |z| > 1.96 about 5 % of the time (an
    independent-samples test would be far off); a clearly better one is found."""
    from RadioGenomicsLib.stats import steiger_test

    rng = np.random.default_rng(1)
    n, trials = 50, 3000
    truth = rng.normal(size=(trials, n))
    shared = rng.normal(size=(trials, n))
    a = truth * 0.5 + shared + rng.normal(size=(trials, n)) * 0.5
    b = truth * 0.5 + shared + rng.normal(size=(trials, n)) * 0.5

    def r(x, y):
        x, y = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))

    z, p = steiger_test(r(a, truth), r(b, truth), r(a, b), n)
    assert 0.035 < np.mean(p < 0.05) < 0.065
    assert 0.9 < np.std(z) < 1.1
    better = truth * 1.5 + shared + rng.normal(size=(trials, n)) * 0.5
    z, p = steiger_test(r(better, truth), r(b, truth), r(better, b), n)
    assert np.mean((p < 0.05) & (z > 0)) > 0.9


def test_compare_methods_counts_both_ways_and_the_mean_predictor():
    from RadioGenomicsLib.stats import beats_mean_predictor, compare_methods, mean_predictor

    rng = np.random.default_rng(2)
    patients = pd.Index([f"P{i}" for i in range(80)])
    truth = pd.DataFrame(rng.normal(size=(80, 6)), index=patients, columns=list("abcdef"))
    noise = rng.normal(size=(80, 6))
    a = truth * [3, 3, 0.2, 0.2, 1, 0] + noise
    b = truth * [0.2, 0.2, 3, 3, 1, 0] + noise[:, ::-1]
    table = compare_methods(a, b, truth)
    assert table["better"].tolist() == ["A", "A", "B", "B", "", ""]
    folds = pd.Series(np.arange(80) % 4, index=patients)
    mean = mean_predictor(truth, folds)
    held_out = folds == 0
    np.testing.assert_allclose(mean.loc[held_out].iloc[0], truth.loc[~held_out].mean())
    scaled = truth * 0.9 + rng.normal(size=(80, 6)) * 0.3
    assert beats_mean_predictor(scaled, truth, folds).all()
    assert not beats_mean_predictor(truth * -1, truth, folds).any()


def test_negative_genes_do_not_lower_the_fdr_bar_for_positive_ones():
    # Cross-validated predictions of unpredictable genes lean negative; their small
    # two-sided p must not let weakly positive genes through BH (one-sided p of r > 0).
    from RadioGenomicsLib.stats import benjamini_hochberg, gene_statistics, summarize

    rng = np.random.default_rng(0)
    n, genes = 200, 1000
    truth = rng.standard_normal((n, genes))
    noise = rng.standard_normal((n, genes))
    truth -= truth.mean(axis=0)
    noise -= noise.mean(axis=0)
    noise -= truth * (noise * truth).sum(axis=0) / (truth * truth).sum(axis=0)  # orthogonal
    truth /= np.linalg.norm(truth, axis=0)
    noise /= np.linalg.norm(noise, axis=0)
    r_wanted = np.zeros(genes)
    r_wanted[:150] = -0.3    # the cross-validation lean of unpredictable genes
    r_wanted[150:155] = 0.2  # two-sided p 0.0045: passes two-sided BH behind the 150, not alone
    r_wanted[155] = 0.5      # a real link
    r_wanted[156:] = rng.uniform(-0.05, 0.05, genes - 156)
    predictions = r_wanted * truth + np.sqrt(1 - r_wanted ** 2) * noise
    stats = gene_statistics(*_tables(predictions, truth))
    np.testing.assert_allclose(stats["pearson_r"], r_wanted, atol=1e-9)
    two_sided = benjamini_hochberg(stats["p_value"].to_numpy())
    assert ((two_sided < 0.05) & (stats["pearson_r"] > 0)).sum() == 6  # the old count
    assert stats.index[(stats["q_bh"] < 0.05)].tolist() == [stats.index[155]]
    assert stats["q_bh"].iloc[155] == pytest.approx(stats["p_value"].iloc[155] / 2 * 1000)
    assert (stats["q_bh"].iloc[:150] > 0.99).all()
    assert summarize(stats, n)["fdr_significant_genes_0.05"] == 1


def _step_down_by_hand(r: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Westfall-Young step-down maxT written out gene by gene, for the test."""
    defined = [g for g in range(len(r)) if not np.isnan(r[g])]
    ranked = sorted(defined, key=lambda g: -r[g])
    p, running = np.full(len(r), np.nan), 0.0
    for position, gene in enumerate(ranked):
        below = ranked[position:]
        exceeded = sum(np.nanmax(np.r_[null[b, below], -np.inf]) >= r[gene]
                       for b in range(len(null)))
        running = max(running, (1 + exceeded) / (len(null) + 1))
        p[gene] = running
    return p


def test_permutation_p_is_westfall_young_step_down_on_r():
    """Against the definition written out: each gene's p counts the permuted runs whose
    largest r over it and the genes ranked below it reaches its r, made monotone; a gene
    with r NaN stays out of the family (its null r ignored), a NaN null r never counts."""
    rng = np.random.default_rng(11)
    r = rng.uniform(-0.3, 0.6, 40)
    r[[3, 17]] = np.nan
    null = rng.normal(0, 0.15, (59, 40))
    null[5, 3] = 0.99  # a gene outside the family: would reach every gene
    null[7, [0, 9]] = np.nan
    p = stats.permutation_p(r, null)
    np.testing.assert_allclose(p, _step_down_by_hand(r, null))
    assert np.isnan(p[[3, 17]]).all()
    best = np.nanargmax(r)
    assert p[best] == pytest.approx((1 + (np.nanmax(np.delete(null, [3, 17], axis=1), axis=1)
                                          >= r[best]).sum()) / 60)
    order = np.argsort(-np.nan_to_num(r, nan=-np.inf))[:-2]
    assert (np.diff(p[order]) >= 0).all()  # monotone down the ranking
    with pytest.raises(ValueError, match="permutations x 40"):
        stats.permutation_p(r, null[:, :39])


def test_permutation_p_holds_its_level_where_the_genes_are_null():
    """When the observed run is one more draw of the null (exchangeable with the permuted
    runs), any gene reaches p <= 0.05 in 5 % of cohorts: 19 permutations, 2,000 cohorts
    (binomial SD 10 around 100), and a true link far above the null reaches 1 / 20."""
    rng = np.random.default_rng(12)
    hits = 0
    for _ in range(2000):
        draws = rng.normal(0, 0.1, (20, 30)) + rng.normal(0, 0.05, (20, 1))  # correlated genes
        hits += (stats.permutation_p(draws[0], draws[1:]) <= 0.05).any()
    assert 70 <= hits <= 130
    draws[0, 4] = 0.9
    assert stats.permutation_p(draws[0], draws[1:])[4] == pytest.approx(1 / 20)


def test_the_permutation_count_joins_the_summary():
    """p_perm <= 0.05 with r > 0 counts (a permutation p is exact at its own level)."""
    x, y = _tables(np.eye(6, 3) + np.arange(6)[:, None], np.arange(18.0).reshape(6, 3))
    table = stats.gene_statistics(x, y, null_r=np.zeros((19, 3)))
    assert "p_perm" in table and "p_perm" not in stats.gene_statistics(x, y)
    table["p_perm"] = [0.05, 0.06, 0.05]
    table["pearson_r"] = [0.5, 0.5, -0.5]
    assert stats.summarize(table, 6)["permutation_significant_genes_0.05"] == 1
    assert "permutation_significant_genes_0.05" not in stats.summarize(
        stats.gene_statistics(x, y), 6)
