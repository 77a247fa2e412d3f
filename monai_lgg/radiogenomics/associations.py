"""Statistics of the radiogenomic analysis: feature x variable association tests and mask agreement.

Primary test (the paper's): each shape feature is split at its median over the patients of the test
(``> median`` = high), and the 2 x K table of high/low against the K categories of a genomic or
clinical variable is tested with Fisher's exact test (Freeman-Halton for K > 2: the p-value sums the
probabilities of every table with the same margins that is no more likely than the observed one, as
R's ``fisher.test``). 2 x 2 tables use ``scipy.stats.fisher_exact``; larger ones are enumerated
exactly, or, past ``MAX_EXACT_TABLES`` tables, estimated by scipy's Monte-Carlo version (seeded).
Age (continuous) is split at its median too. Secondary tests keep the feature continuous:
Kruskal-Wallis across categories, Spearman's rho against age. Blank cells are excluded per test and
counted. p-values are adjusted within each family (Bonferroni and Benjamini-Hochberg FDR).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.special import gammaln

from monai_lgg.radiogenomics.features import PAPER_FEATURES

__all__ = [
    "GENOMIC_VARIABLES",
    "CLINICAL_VARIABLES",
    "CONTINUOUS_VARIABLES",
    "MAX_EXACT_TABLES",
    "ASSOCIATION_COLUMNS",
    "fisher_exact_2xk",
    "median_split",
    "is_missing",
    "category_label",
    "category_order",
    "association_tests",
    "adjust_p_values",
    "icc_absolute_agreement",
    "agreement",
    "chi2_power",
    "detectable_effect",
]

GENOMIC_VARIABLES = (
    "RNASeqCluster",
    "MethylationCluster",
    "miRNACluster",
    "CNCluster",
    "RPPACluster",
    "OncosignCluster",
    "COCCluster",
)
CLINICAL_VARIABLES = (
    "histological_type",
    "neoplasm_histologic_grade",
    "gender",
    "age_at_initial_pathologic",
    "death01",
)
CONTINUOUS_VARIABLES = ("age_at_initial_pathologic",)
MAX_EXACT_TABLES = 2_000_000
MONTE_CARLO_RESAMPLES = 100_000
_RELATIVE_TIE = 1.0 + 1e-7  # tables this close to the observed probability count as "as extreme" (R's fisher.test)

ASSOCIATION_COLUMNS = (
    "feature",
    "variable",
    "family",
    "test",
    "statistic",
    "effect",
    "effect_name",
    "p",
    "p_bonferroni",
    "p_fdr",
    "n",
    "n_missing_variable",
    "n_missing_feature",
    "groups",
    "note",
)


def _log_choose(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    return gammaln(np.asarray(n) + 1) - gammaln(np.asarray(k) + 1) - gammaln(np.asarray(n) - np.asarray(k) + 1)


def _count_tables(columns: Sequence[int], row: int) -> int:
    """Number of first rows ``x`` with ``0 <= x_j <= c_j`` and ``sum(x) = row`` (a bounded composition count)."""
    ways = np.zeros(row + 1, dtype=float)
    ways[0] = 1.0
    for c in columns:
        ways = np.convolve(ways, np.ones(c + 1))[: row + 1]
    return int(ways[row])


def fisher_exact_2xk(table: np.ndarray, seed: int = 0) -> tuple[float, str]:
    """Two-sided Fisher(-Freeman-Halton) exact test of a 2 x K contingency table.

    Args:
        table: non-negative integer counts, shape ``(2, K)``; empty columns are dropped.
        seed: seed of the Monte-Carlo fallback (used only past :data:`MAX_EXACT_TABLES` tables).

    Returns:
        ``(p, method)``: method ``"exact"`` or ``"monte-carlo"``.
    """
    table = np.asarray(table, dtype=np.int64)
    if table.ndim != 2 or table.shape[0] != 2 or (table < 0).any():
        raise ValueError(f"expected a 2 x K table of counts, got {table.tolist()}")
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0, "exact"  # only one table has these margins
    if table.shape == (2, 2):
        return float(stats.fisher_exact(table).pvalue), "exact"
    columns = [int(c) for c in table.sum(axis=0)]
    first_row, total = int(table[0].sum()), int(table.sum())
    if _count_tables(columns, first_row) > MAX_EXACT_TABLES:
        method = stats.MonteCarloMethod(n_resamples=MONTE_CARLO_RESAMPLES, rng=np.random.default_rng(seed))
        return float(stats.fisher_exact(table, method=method).pvalue), "monte-carlo"
    # enumerate first rows column by column, keeping only partial sums that can still reach the row total
    sums, logp = np.zeros(1, dtype=np.int64), np.zeros(1)
    remaining = sum(columns)
    for c in columns:
        remaining -= c
        values = np.arange(c + 1)
        sums = (sums[:, None] + values[None]).ravel()
        logp = (logp[:, None] + _log_choose(c, values)[None]).ravel()
        keep = (sums <= first_row) & (sums + remaining >= first_row)
        sums, logp = sums[keep], logp[keep]
    logp -= _log_choose(total, first_row)
    observed = float((_log_choose(np.array(columns), table[0]).sum()) - _log_choose(total, first_row))
    p = np.exp(logp[logp <= observed + math.log(_RELATIVE_TIE)]).sum()
    return float(min(1.0, p)), "exact"


def median_split(values: np.ndarray) -> tuple[np.ndarray, float]:
    """``values > median`` (high) and the median; ties at the median go low."""
    threshold = float(np.median(values))
    return values > threshold, threshold


def is_missing(value: object) -> bool:
    """A blank clinical cell (``None``, NaN or an empty string)."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def category_label(value: object) -> str:
    """A category as text (``2.0`` -> ``"2"``)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def category_order(label: str) -> tuple:
    """Sort key: numeric categories by value, then the others alphabetically."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def _row(feature: str, variable: str, family: str, test: str, **values) -> dict:
    row = {name: "" for name in ASSOCIATION_COLUMNS}
    row.update(feature=feature, variable=variable, family=family, test=test, p=float("nan"))
    row.update(values)
    return row


def _fisher_row(feature, variable, family, x, y_values, continuous, base, seed) -> dict:
    high, threshold = median_split(x)
    if high.all() or not high.any():
        return _row(
            feature, variable, family, "fisher", note=f"not testable: the feature has one value ({threshold:g})", **base
        )
    if continuous:
        y = np.asarray(y_values, dtype=float)
        y_high, y_threshold = median_split(y)
        labels = np.where(y_high, f">{y_threshold:g}", f"<={y_threshold:g}")
    else:
        labels = np.array([category_label(v) for v in y_values])
    categories = sorted(set(labels.tolist()), key=category_order)
    if len(categories) < 2:
        return _row(feature, variable, family, "fisher", note="not testable: one category", **base)
    table = np.array(
        [[np.sum((labels == c) & ~high) for c in categories], [np.sum((labels == c) & high) for c in categories]]
    )
    p, method = fisher_exact_2xk(table, seed)
    odds = ""
    if table.shape == (2, 2):
        # (high / low odds in the 2nd category) / (high / low odds in the 1st)
        odds = float(stats.contingency.odds_ratio(table, kind="sample").statistic)
    cramer = (
        float(stats.contingency.association(table, method="cramer")) if (table.sum(axis=1) > 0).all() else float("nan")
    )
    groups = "; ".join(f"{c}: {lo}/{hi}" for c, lo, hi in zip(categories, table[0], table[1], strict=True))
    return _row(
        feature,
        variable,
        family,
        f"fisher ({method}, median split at {threshold:.4g})",
        statistic=odds,
        effect=cramer,
        effect_name="cramer_v",
        p=p,
        groups=f"low/high per category: {groups}",
        **base,
    )


def _continuous_row(feature, variable, family, x, y_values, continuous, base) -> dict:
    if continuous:
        y = np.asarray(y_values, dtype=float)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            return _row(feature, variable, family, "spearman", note="not testable: constant values", **base)
        result = stats.spearmanr(x, y)
        rho = float(result.statistic)
        return _row(
            feature,
            variable,
            family,
            "spearman",
            statistic=rho,
            effect=rho,
            effect_name="rho",
            p=float(result.pvalue),
            **base,
        )
    labels = np.array([category_label(v) for v in y_values])
    categories = sorted(set(labels.tolist()), key=category_order)
    samples = [x[labels == c] for c in categories]
    if len(samples) < 2 or np.ptp(x) == 0:
        return _row(
            feature, variable, family, "kruskal-wallis", note="not testable: one category or constant feature", **base
        )
    h, p = stats.kruskal(*samples)
    n, k = len(x), len(samples)
    epsilon = (h - k + 1) / (n - k) if n > k else float("nan")  # epsilon-squared effect size
    medians = "; ".join(f"{c}: {np.median(s):.4g} (n={len(s)})" for c, s in zip(categories, samples, strict=True))
    return _row(
        feature,
        variable,
        family,
        "kruskal-wallis",
        statistic=float(h),
        effect=float(epsilon),
        effect_name="epsilon_squared",
        p=float(p),
        groups=f"median per category: {medians}",
        **base,
    )


def association_tests(
    features: Sequence[Mapping[str, object]],
    clinical: Mapping[str, Mapping[str, object]],
    feature_names: Iterable[str],
    variables: Iterable[str],
    continuous_variables: Iterable[str] = CONTINUOUS_VARIABLES,
    primary_features: Iterable[str] = PAPER_FEATURES,
    primary_variables: Iterable[str] = GENOMIC_VARIABLES,
    seed: int = 0,
) -> list[dict]:
    """Every feature x variable test, with p-values adjusted within each family.

    Args:
        features: one row per patient with a ``patient`` key and the feature values (NaN = not measurable).
        clinical: ``{patient: {variable: value or None}}``; patients absent from it are left out.
        feature_names: features to test.
        variables: clinical / genomic variables to test (absent or all-blank ones give a "not testable" row).
        continuous_variables: variables kept numeric (median split for Fisher, Spearman as secondary test).
        primary_features, primary_variables: the primary family (the paper's hypotheses): Fisher tests of
            these features against these variables. Every other test is in the ``exploratory`` family.
        seed: seed of the Monte-Carlo Fisher fallback.

    Returns:
        rows with :data:`ASSOCIATION_COLUMNS`.
    """
    continuous_variables, primary_features = set(continuous_variables), set(primary_features)
    primary_variables = set(primary_variables)
    patients = [row for row in features if row["patient"] in clinical]
    rows = []
    for feature in feature_names:
        values = np.array([float(row[feature]) for row in patients], dtype=float)
        for variable in variables:
            answers = [clinical[row["patient"]].get(variable) for row in patients]
            has_value = np.array([not is_missing(a) for a in answers], dtype=bool)
            has_feature = np.isfinite(values)
            used = has_value & has_feature
            base = {
                "n": int(used.sum()),
                "n_missing_variable": int((~has_value).sum()),
                "n_missing_feature": int((has_value & ~has_feature).sum()),
            }
            x, y = values[used], [a for a, u in zip(answers, used, strict=True) if u]
            continuous = variable in continuous_variables
            fisher_family = (
                "primary" if feature in primary_features and variable in primary_variables else "exploratory"
            )
            if continuous:
                try:
                    y = [float(v) for v in y]
                except (TypeError, ValueError):
                    rows.append(
                        _row(
                            feature, variable, "exploratory", "fisher", note="not testable: non-numeric values", **base
                        )
                    )
                    continue
            if base["n"] < 3:
                note = "not testable: fewer than 3 patients with both values"
                rows += [
                    _row(feature, variable, fisher_family, "fisher", note=note, **base),
                    _row(
                        feature,
                        variable,
                        "exploratory",
                        "spearman" if continuous else "kruskal-wallis",
                        note=note,
                        **base,
                    ),
                ]
                continue
            rows.append(_fisher_row(feature, variable, fisher_family, x, y, continuous, base, seed))
            rows.append(_continuous_row(feature, variable, "exploratory", x, y, continuous, base))
    adjust_p_values(rows)
    return rows


def adjust_p_values(rows: list[dict]) -> None:
    """Fill ``p_bonferroni`` and ``p_fdr`` (Benjamini-Hochberg) within each ``family``, in place."""
    for family in sorted({row["family"] for row in rows}):
        members = [row for row in rows if row["family"] == family and np.isfinite(row["p"])]
        if not members:
            continue
        p = np.array([row["p"] for row in members])
        bonferroni = np.minimum(1.0, p * len(p))
        fdr = stats.false_discovery_control(p, method="bh")
        for row, b, f in zip(members, bonferroni, fdr, strict=True):
            row.update(p_bonferroni=float(b), p_fdr=float(f))


def icc_absolute_agreement(ratings: np.ndarray) -> float:
    """ICC(A,1) (McGraw & Wong 1996; Shrout & Fleiss ICC(2,1)): two-way random effects, absolute
    agreement, single measurement.

    Args:
        ratings: ``(subjects, raters)`` array without missing values.
    """
    ratings = np.asarray(ratings, dtype=float)
    n, k = ratings.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = ratings.mean()
    ms_rows = k * ((ratings.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((ratings.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    residual = ratings - ratings.mean(axis=1, keepdims=True) - ratings.mean(axis=0, keepdims=True) + grand
    ms_error = (residual**2).sum() / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    return float((ms_rows - ms_error) / denominator) if denominator > 0 else float("nan")


def agreement(
    rows: Sequence[Mapping[str, object]], reference: Sequence[Mapping[str, object]], feature_names: Iterable[str]
) -> list[dict]:
    """Per feature: how the features of ``rows`` (e.g. automatic masks) agree with ``reference`` ones.

    Columns: ``n`` (patients with the feature in both), ``icc`` (ICC(A,1)), ``spearman_rho`` / ``spearman_p``,
    ``mean_reference`` / ``mean_masks``, Bland-Altman ``bias`` (masks - reference) and 95 % limits of
    agreement ``loa_low`` / ``loa_high`` (bias +- 1.96 SD of the differences), and ``same_median_side``:
    the fraction of patients on the same side of the median in both, i.e. in the same row of the
    Fisher tables.
    """
    by_patient = {row["patient"]: row for row in reference}
    paired = [(row, by_patient[row["patient"]]) for row in rows if row["patient"] in by_patient]
    out = []
    for feature in feature_names:
        a = np.array([float(m[feature]) for m, _ in paired], dtype=float)
        b = np.array([float(r[feature]) for _, r in paired], dtype=float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        row = {"feature": feature, "n": int(ok.sum())}
        if len(a) >= 3:
            diff = a - b
            rho = stats.spearmanr(a, b) if np.ptp(a) > 0 and np.ptp(b) > 0 else None
            row.update(
                icc=icc_absolute_agreement(np.stack([b, a], axis=1)),
                spearman_rho=float(rho.statistic) if rho is not None else float("nan"),
                spearman_p=float(rho.pvalue) if rho is not None else float("nan"),
                mean_reference=float(b.mean()),
                mean_masks=float(a.mean()),
                bias=float(diff.mean()),
                loa_low=float(diff.mean() - 1.96 * diff.std(ddof=1)),
                loa_high=float(diff.mean() + 1.96 * diff.std(ddof=1)),
                same_median_side=float(np.mean(median_split(a)[0] == median_split(b)[0])),
            )
        out.append(row)
    return out


def chi2_power(effect: float, n: int, df: int, alpha: float) -> float:
    """Power of a test of independence for Cohen's effect size ``w`` (Cramér's V for a 2 x K table).

    The usual large-sample approximation (Cohen 1988): the statistic is non-central chi-square with
    ``df`` degrees of freedom and non-centrality ``n * w^2``. Fisher's exact test on small tables is
    somewhat more conservative, so this is an upper bound on its power.
    """
    critical = stats.chi2.ppf(1.0 - alpha, df)
    return float(stats.ncx2.sf(critical, df, n * effect**2))


def detectable_effect(n: int, df: int, alpha: float, power: float = 0.8) -> float:
    """The smallest Cohen's ``w`` (Cramér's V of a 2 x K table) detected with ``power`` at level ``alpha``."""
    from scipy.optimize import brentq

    return float(brentq(lambda w: chi2_power(w, n, df, alpha) - power, 1e-6, 10.0))
