"""Per-gene Pearson correlation between predicted and measured expression, as the paper judges it.

Everything here is patient-level: the tables are patients x genes, indexed by patient id,
one row per patient. Counting slices or tokens as samples would inflate n and shrink p.

Per gene: Pearson r and the two-sided p from the t distribution with n - 2 degrees of
freedom, for all genes at once; Holm-Sidak across genes (statsmodels). A gene is
significant when its adjusted p < alpha and r > 0. A gene whose r is undefined (a constant
column, a missing value) gets r = p = NaN, stays out of the Holm-Sidak family and is never
significant. Beside Holm-Sidak: Benjamini-Hochberg q-values (of the one-sided p of r > 0),
measures that do not depend on the number of patients (genes with r > 0.4, the median r
of the best decile), Steiger's test of two methods' correlations with the same truth, and
a comparison with the predictor that knows only the training patients' mean, and a
permutation test against the cross-validation's own null (`permutation_p`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special, stats as distributions
from statsmodels.stats.multitest import multipletests

from RadioGenomicsLib.errors import InputError

MIN_PATIENTS = 3  # a p-value needs n - 2 >= 1 degrees of freedom
ALPHAS = (0.05, 0.01)


def pearson_columns(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and two-sided p of each column of `x` (n x g) with the same column of `y`.

    A column that is constant in either array, or holds a NaN, gets r = p = NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two n x g arrays of one shape, got {x.shape} and {y.shape}")
    n = x.shape[0]
    x_centred = x - x.mean(axis=0)
    y_centred = y - y.mean(axis=0)
    # exact equality, as scipy tests it: a centred constant column can be off zero by rounding
    constant = (x == x[0]).all(axis=0) | (y == y[0]).all(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.einsum("ij,ij->j", x_centred, y_centred) / np.sqrt(
            np.einsum("ij,ij->j", x_centred, x_centred) * np.einsum("ij,ij->j", y_centred, y_centred))
        r = np.clip(r, -1.0, 1.0)
        r[constant] = np.nan
        df = n - 2
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
    # 2 * P(T_df <= -|t|); stdtr keeps the precision of tiny p-values
    p = 2.0 * special.stdtr(df, -np.abs(t)) if df > 0 else np.full_like(r, np.nan)
    return r, p


def _adjusted(p_values: np.ndarray, method: str) -> np.ndarray:
    """statsmodels' multiple-testing adjustment; NaN p-values are left out of the family
    and stay NaN."""
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    defined = ~np.isnan(p_values)
    if defined.any():
        adjusted[defined] = multipletests(p_values[defined], method=method)[1]
    return adjusted


def holm_sidak(p_values: np.ndarray) -> np.ndarray:
    """Holm-Sidak adjusted p-values (family-wise error)."""
    return _adjusted(p_values, "holm-sidak")


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (false discovery rate)."""
    return _adjusted(p_values, "fdr_bh")


def steiger_test(r_a: np.ndarray, r_b: np.ndarray, r_ab: np.ndarray, n: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Steiger's (1980) z and two-sided p for r_a = corr(A, truth) vs r_b = corr(B, truth)
    measured on the same n patients, r_ab = corr(A, B): two dependent correlations with
    the truth in common (Fisher z, pooled r in the covariance term)."""
    r_a, r_b, r_ab = (np.clip(np.asarray(v, np.float64), -0.999999, 0.999999)
                      for v in (r_a, r_b, r_ab))
    mean = (r_a + r_b) / 2
    psi = r_ab * (1 - 2 * mean**2) - 0.5 * mean**2 * (1 - 2 * mean**2 - r_ab**2)
    covariance = psi / (1 - mean**2) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (np.arctanh(r_a) - np.arctanh(r_b)) * np.sqrt(n - 3) / np.sqrt(2 - 2 * covariance)
    return z, 2 * distributions.norm.sf(np.abs(z))


def _first_five(labels: Sequence) -> str:
    return ", ".join(map(str, labels[:5])) + (", ..." if len(labels) > 5 else "")


def _duplicates(labels: pd.Index) -> str:
    repeated = labels[labels.duplicated()].unique()
    return f"{len(repeated)} ({_first_five(repeated)})"


def _differences(first: pd.Index, second: pd.Index, names: Sequence[str]) -> str:
    """What only one of two label sets holds: "3 only in a.tsv (x, y, z); 1 only in b.tsv (w)"."""
    return "; ".join(f"{len(only)} only in {name} ({_first_five(only)})"
                     for only, name in ((first.difference(second), names[0]),
                                        (second.difference(first), names[1])) if len(only))


def _is_number_dtype(dtype: np.dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _as_float(table: pd.DataFrame, name: str) -> pd.DataFrame:
    # dtypes are checked once per distinct dtype: 31,793 columns share one or two
    if all(_is_number_dtype(dtype) for dtype in table.dtypes.unique()):
        return table.astype(np.float64)
    numbers = table.apply(pd.to_numeric, errors="coerce")
    bad = (numbers.isna() & table.notna()).to_numpy()
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise InputError(name, f"non-numeric values in gene {table.columns[column]} "
                               f"(patient {table.index[row]}: {table.iat[row, column]!r})")
    return numbers.astype(np.float64)


def _check_table(table: pd.DataFrame, name: str) -> None:
    if table.index.has_duplicates:
        raise InputError(name, f"duplicated patient ids: {_duplicates(table.index)}")
    if table.columns.has_duplicates:
        raise InputError(name, f"duplicated gene ids: {_duplicates(table.columns)}")
    if table.shape[1] == 0:
        raise InputError(name, "no gene columns")
    if table.shape[0] < MIN_PATIENTS:
        raise InputError(name, f"{table.shape[0]} patient(s); a p-value needs at least {MIN_PATIENTS}")


def check_tables(predictions: pd.DataFrame, truth: pd.DataFrame,
                 names: Sequence[str] = ("predictions", "truth")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate two patients x genes tables and return them as float64, truth in the predictions' order.

    Raises InputError (naming the table by `names`) on duplicated patients or genes, non-numeric
    values, fewer than MIN_PATIENTS patients, or patients or genes that differ between the two.
    """
    for table, name in zip((predictions, truth), names):
        _check_table(table, name)
    for axis, what in ((0, "patients"), (1, "genes")):
        ours, theirs = predictions.axes[axis], truth.axes[axis]
        if not ours.equals(theirs) and set(ours) != set(theirs):
            raise InputError(f"{names[0]} vs {names[1]}",
                             f"different {what}: {_differences(ours, theirs, names)}")
    if not (truth.index.equals(predictions.index) and truth.columns.equals(predictions.columns)):
        truth = truth.loc[predictions.index, predictions.columns]
    return _as_float(predictions, names[0]), _as_float(truth, names[1])


def check_folds(folds: pd.Series, patients: pd.Index, name: str = "folds") -> pd.Series:
    """The fold label of each patient, in the order of `patients`.

    Every patient needs exactly one fold, the fold table names no other patient, and every
    fold holds at least MIN_PATIENTS patients.
    """
    if folds.index.has_duplicates:
        raise InputError(name, f"duplicated patient ids: {_duplicates(folds.index)}")
    if set(folds.index) != set(patients):
        raise InputError(name, "not the same patients as the tables: "
                         + _differences(patients, folds.index, ("the tables", name)))
    if folds.isna().any():
        raise InputError(name, f"no fold for patient {folds.index[folds.isna()][0]}")
    sizes = folds.value_counts()
    if (sizes < MIN_PATIENTS).any():
        small = sizes[sizes < MIN_PATIENTS]
        raise InputError(name, f"fold {small.index[0]} has {small.iloc[0]} patient(s); "
                         f"a p-value needs at least {MIN_PATIENTS}")
    return folds.loc[patients]


def positive_p(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One-sided p of r > 0 from the two-sided p: half of it for a positive r, 1 - half for
    a negative one (NaN stays NaN)."""
    return np.where(r > 0, p / 2, 1 - p / 2)


def _never_exceeding(null_r: np.ndarray) -> np.ndarray:
    """The null r with NaN (a gene constant in a permuted run) as -inf: it never exceeds."""
    null = np.asarray(null_r, dtype=np.float64)
    return np.where(np.isnan(null), -np.inf, null)


def permutation_threshold(null_r: np.ndarray, level: float = 0.95) -> float:
    """The r that `level` of the permuted runs' best genes stay below (their largest r's
    quantile): roughly the bar a gene's r must pass at family-wise 1 - level."""
    return float(np.quantile(_never_exceeding(null_r).max(axis=1), level))


def permutation_p(r: np.ndarray, null_r: np.ndarray) -> np.ndarray:
    """Family-wise adjusted p of r > 0 against the method's own null: Westfall and Young's
    (1993) step-down maxT on `null_r` (permutations x genes), the out-of-fold r of the
    same cross-validation re-run on expression rows permuted across patients.

    A gene's p is (1 + the permutations whose largest r, over it and every gene ranked
    below it, reaches its r) / (permutations + 1), made monotone down the ranking; the
    first gene's is the share of permuted runs with any gene as good. Unlike the t test
    it needs no independence of the out-of-fold predictions, which the folds' shared
    training breaks (null r spreads wider than the t distribution's, BENCHMARKS.md).
    Genes with r NaN stay NaN and out of the family; a NaN null r never exceeds."""
    r = np.asarray(r, dtype=np.float64)
    null = _never_exceeding(null_r)
    if null.ndim != 2 or null.shape[1] != r.shape[0] or null.shape[0] == 0:
        raise ValueError(f"expected a permutations x {r.shape[0]} null, got {null.shape}")
    p = np.full(r.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(r))
    order = defined[np.argsort(-r[defined], kind="stable")]
    ranked_null = null[:, order]
    at_or_below = np.maximum.accumulate(ranked_null[:, ::-1], axis=1)[:, ::-1]
    exceeded = (at_or_below >= r[order]).sum(axis=0)
    p[order] = np.maximum.accumulate((1 + exceeded) / (null.shape[0] + 1))
    return p


def gene_statistics(predictions: pd.DataFrame, truth: pd.DataFrame, alpha: float = 0.05,
                    names: Sequence[str] = ("predictions", "truth"),
                    null_r: np.ndarray | None = None) -> pd.DataFrame:
    """Per gene (index `gene_id`, in the predictions' column order): pearson_r, p_value,
    p_adj (Holm-Sidak), significant (p_adj < alpha, r > 0), q_bh (Benjamini-Hochberg) and,
    with `null_r` (permutations x genes, the same order), p_perm (`permutation_p`).

    Holm-Sidak runs on the two-sided p, as the paper. BH runs on the one-sided p of r > 0:
    under cross-validation a non-predictive model's genes lean negative, and their small
    two-sided p would raise BH's threshold for every gene ranked after them (a permuted
    cohort had 147 negative genes at q < 0.05 and let 4 positive ones through). Holm's
    step-down gains at most m / (m - k) from k rejected negative genes, less than the
    factor 2 the two-sided p costs while k < m / 2."""
    predictions, truth = check_tables(predictions, truth, names)
    r, p = pearson_columns(predictions.to_numpy(), truth.to_numpy())
    p_adj = holm_sidak(p)
    stats = pd.DataFrame({"pearson_r": r, "p_value": p, "p_adj": p_adj,
                          "significant": (p_adj < alpha) & (r > 0),
                          "q_bh": benjamini_hochberg(positive_p(r, p))},
                         index=pd.Index(predictions.columns, name="gene_id"))
    if null_r is not None:
        stats["p_perm"] = permutation_p(r, null_r)
    return stats


def mean_predictor(truth: pd.DataFrame, folds: pd.Series) -> pd.DataFrame:
    """Each patient predicted by the mean of the other folds' patients (SEQUOIA's control):
    what a model that learned nothing from the images would do at best."""
    folds = check_folds(folds, truth.index)
    predicted = pd.DataFrame(np.nan, index=truth.index, columns=truth.columns)
    for label in folds.unique():
        held_out = (folds == label).to_numpy()
        predicted.loc[held_out] = truth.loc[~held_out].mean(axis=0).to_numpy()
    return predicted


def beats_mean_predictor(predictions: pd.DataFrame, truth: pd.DataFrame,
                         folds: pd.Series) -> pd.Series:
    """Per gene: the out-of-fold squared error is lower than the mean predictor's."""
    predictions, truth = check_tables(predictions, truth)
    baseline = mean_predictor(truth, folds)
    ours = ((predictions - truth) ** 2).mean(axis=0)
    theirs = ((baseline - truth) ** 2).mean(axis=0)
    return ours < theirs


def compare_methods(a: pd.DataFrame, b: pd.DataFrame, truth: pd.DataFrame,
                    alpha: float = 0.05, names: Sequence[str] = ("A", "B", "truth")
                    ) -> pd.DataFrame:
    """Per gene, two methods' predictions of the same patients against the same truth:
    r_a, r_b, r_ab, Steiger's z and p, its Benjamini-Hochberg q, and `better` ("A", "B" or
    "" when q >= alpha)."""
    a, truth = check_tables(a, truth, (names[0], names[2]))
    b, _ = check_tables(b, truth, (names[1], names[2]))
    b = b.loc[a.index, a.columns]
    r_a, _ = pearson_columns(a.to_numpy(), truth.to_numpy())
    r_b, _ = pearson_columns(b.to_numpy(), truth.to_numpy())
    r_ab, _ = pearson_columns(a.to_numpy(), b.to_numpy())
    z, p = steiger_test(r_a, r_b, np.nan_to_num(r_ab), len(a))
    q = benjamini_hochberg(p)
    better = np.where(q < alpha, np.where(z > 0, names[0], names[1]), "")
    return pd.DataFrame({"r_a": r_a, "r_b": r_b, "r_ab": r_ab, "steiger_z": z, "p_value": p,
                         "q_bh": q, "better": better},
                        index=pd.Index(a.columns, name="gene_id"))


def count_significant(stats: pd.DataFrame, alpha: float) -> int:
    """Genes with Holm-Sidak adjusted p < alpha and a positive r."""
    return int(((stats["p_adj"] < alpha) & (stats["pearson_r"] > 0)).sum())


def significant_key(alpha: float) -> str:
    """The summary key of the count at `alpha`: 0.05 -> "significant_genes_0.05"."""
    return f"significant_genes_{alpha:g}"


def summarize(stats: pd.DataFrame, patients: int, alphas: Sequence[float] = ALPHAS) -> dict:
    """The numbers of one evaluation: patients, genes, significant counts, the spread of r.

    The r statistics cover the genes with a defined r; they are None when there is none.
    """
    r = stats["pearson_r"].to_numpy()
    defined = r[~np.isnan(r)]

    def of_r(function) -> float | None:
        return float(function(defined)) if defined.size else None

    summary: dict = {"patients": int(patients), "genes": int(len(stats)),
                     "genes_without_r": int(len(r) - defined.size)}
    for alpha in sorted(set(alphas), reverse=True):
        summary[significant_key(alpha)] = count_significant(stats, alpha)
    if "q_bh" in stats:
        summary["fdr_significant_genes_0.05"] = int(((stats["q_bh"] < 0.05)
                                                     & (stats["pearson_r"] > 0)).sum())
    if "p_perm" in stats:  # a permutation p is exact at p <= alpha (alpha * (B + 1) whole)
        summary["permutation_significant_genes_0.05"] = int(((stats["p_perm"] <= 0.05)
                                                             & (stats["pearson_r"] > 0)).sum())
    summary.update(pearson_mean=of_r(np.mean), pearson_median=of_r(np.median),
                   pearson_min=of_r(np.min), pearson_max=of_r(np.max))
    # measures that do not grow with the number of patients
    summary["genes_r_above_0.4"] = int((defined > 0.4).sum())
    summary["best_decile_median_r"] = of_r(lambda r: np.median(np.sort(r)[-max(1, len(r) // 10):]))
    return summary


def fold_statistics(predictions: pd.DataFrame, truth: pd.DataFrame, folds: pd.Series,
                    alpha: float = 0.05, names: Sequence[str] = ("predictions", "truth", "folds"),
                    ) -> dict:
    """gene_statistics inside each fold (its own Holm-Sidak family), keyed by fold label in sorted order.

    `folds` maps patient id -> fold label (a Series indexed by patient id).
    """
    predictions, truth = check_tables(predictions, truth, names[:2])
    folds = check_folds(folds, predictions.index, names[2])
    per_fold = {}
    for label in sorted(folds.unique().tolist()):
        members = (folds == label).to_numpy()
        per_fold[label] = gene_statistics(predictions.loc[members], truth.loc[members], alpha, names[:2])
    return per_fold
