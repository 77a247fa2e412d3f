"""Rank statistics for per-patient scores: Spearman correlation with a bootstrap CI and a permutation p-value,
partial Spearman correlation, and the AUC of a score at picking out a group of patients.

Used to check whether a per-case quantity (e.g. the uncertainty ``monai-lgg predict --uncertainty`` reports)
tracks per-patient accuracy (``tools/uncertainty_report.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["spearman", "partial_spearman", "correlation_test", "detection_auc"]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (``(B, n)``); NaN for a constant row."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    scale = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 1e-12, (a * b).sum(axis=-1) / np.where(scale > 1e-12, scale, 1.0), np.nan)


def _residual_rows(values: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Each row of ``values`` minus its least-squares line (slope and intercept) on the same row of ``control``."""
    v = values - values.mean(axis=-1, keepdims=True)
    c = control - control.mean(axis=-1, keepdims=True)
    variance = (c * c).sum(axis=-1, keepdims=True)
    slope = np.where(variance > 0, (v * c).sum(axis=-1, keepdims=True) / np.where(variance > 0, variance, 1.0), 0.0)
    return v - slope * c


def _rank_correlation_rows(ranks: Sequence[np.ndarray]) -> np.ndarray:
    """Spearman (two rank arrays) or partial Spearman (three: the third is regressed out) of every row."""
    if len(ranks) == 2:
        return _pearson_rows(*ranks)
    return _pearson_rows(_residual_rows(ranks[0], ranks[2]), _residual_rows(ranks[1], ranks[2]))


def _ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return rankdata(np.asarray(values, dtype=float), axis=-1)


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks, ties averaged); NaN if either is constant.

    Example::

        >>> spearman([1, 2, 3, 4], [0.9, 0.8, 0.5, 0.1])
        -1.0
    """
    return float(_rank_correlation_rows([_ranks(x), _ranks(y)]))


def partial_spearman(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray
) -> float:
    """Spearman correlation of ``x`` and ``y`` with a third variable's ranks regressed out of both.

    E.g. whether an uncertainty tracks Dice beyond what tumour size alone explains (small tumours have both
    lower Dice and a larger share of uncertain border voxels).
    """
    return float(_rank_correlation_rows([_ranks(x), _ranks(y), _ranks(control)]))


def correlation_test(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Spearman (or, with ``control``, partial Spearman) correlation with its uncertainty.

    * ``ci``: percentile bootstrap over the pairs (patients resampled with replacement, ranks recomputed in
      each resample; resamples where a variable is constant are dropped);
    * ``p_value``: two-sided permutation test (``y`` shuffled ``n_resamples`` times; ``(1 + hits) / (1 + n)``,
      so never 0).

    Args:
        x, y: paired values, one per patient (pairs with a NaN are left out and counted in ``n_dropped``).
        control: a third variable to regress out of both ranks (partial correlation).
        n_resamples: bootstrap resamples and permutations.
        confidence: coverage of the interval.
        seed: seed of the random generator (results are reproducible).

    Returns:
        ``{"rho", "ci": [low, high], "p_value", "n", "n_dropped", "n_resamples"}`` (the smallest possible
        ``p_value`` is ``1 / (1 + n_resamples)``).
    """
    columns = [np.asarray(v, dtype=float) for v in ([x, y] if control is None else [x, y, control])]
    if len({c.shape for c in columns}) != 1 or columns[0].ndim != 1:
        raise ValueError("x, y (and control) must be 1D sequences of the same length")
    keep = np.all([np.isfinite(c) for c in columns], axis=0)
    columns = [c[keep] for c in columns]
    n = int(keep.sum())
    rho = float(_rank_correlation_rows([_ranks(c) for c in columns])) if n >= 3 else math.nan
    result = {
        "rho": rho,
        "ci": [math.nan, math.nan],
        "p_value": math.nan,
        "n": n,
        "n_dropped": int((~keep).sum()),
        "n_resamples": int(n_resamples),
    }
    if not np.isfinite(rho):
        return result
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_resamples, n))
    boot = _rank_correlation_rows([_ranks(c[index]) for c in columns])
    boot = boot[np.isfinite(boot)]
    tail = (1 - confidence) / 2
    if boot.size:
        result["ci"] = [float(v) for v in np.quantile(boot, [tail, 1 - tail])]
    ranks = [_ranks(c) for c in columns]
    shuffled = rng.permuted(np.tile(ranks[1], (n_resamples, 1)), axis=1)  # ranks of a shuffle = shuffled ranks
    fixed = [np.tile(r, (n_resamples, 1)) for r in ranks]
    null = _rank_correlation_rows([fixed[0], shuffled, *fixed[2:]])
    hits = int((np.abs(null) >= abs(rho) - 1e-12).sum())
    result["p_value"] = (1 + hits) / (1 + n_resamples)
    return result


def detection_auc(scores: Sequence[float] | np.ndarray, positives: Sequence[bool] | np.ndarray) -> float:
    """Probability that a random positive scores higher than a random negative (ties count half): the ROC AUC
    of ``scores`` at picking out ``positives`` (e.g. the low-Dice patients by their uncertainty). NaN if either
    group is empty.

    Example::

        >>> detection_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False])
        1.0
    """
    scores, positives = np.asarray(scores, dtype=float), np.asarray(positives, dtype=bool)
    pos, neg = scores[positives], scores[~positives]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater) / (pos.size * neg.size)
