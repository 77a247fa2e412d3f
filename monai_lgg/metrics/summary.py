"""Cohort summaries of per-patient scores with percentile-bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_numpy

__all__ = ["DEFAULT_SUMMARY_KEYS", "bootstrap_ci", "summarize", "summarize_scores"]

# resampled values held in memory at once; bounds memory for pooled per-slice scores (thousands of values)
_MAX_RESAMPLED_VALUES = 2_000_000

DEFAULT_SUMMARY_KEYS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "f1", "accuracy", "hd95")


def _as_float_array(values: Iterable[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, (np.ndarray, torch.Tensor)):
        return convert_to_numpy(values).astype(float).ravel()
    return np.asarray(list(values), dtype=float).ravel()


def _apply_statistic(statistic: Callable[..., Any], samples: np.ndarray) -> np.ndarray:
    """Statistic of every row of ``samples``, vectorised when ``statistic`` accepts ``axis``."""
    try:
        result = np.asarray(statistic(samples, axis=-1), dtype=float)
        if result.shape == (samples.shape[0],):
            return result
    except TypeError:
        pass
    return np.array([float(statistic(row)) for row in samples])


def bootstrap_ci(
    values: Iterable[float] | np.ndarray | torch.Tensor,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` over ``values``.

    The finite-sample values :math:`x_1..x_n` (NaNs removed; :func:`summarize` reports how many)
    are resampled with replacement ``n_resamples`` times; the interval is the
    :math:`(1-c)/2` and :math:`(1+c)/2` quantiles of the resampled statistics, :math:`c` = ``confidence``.

    Args:
        values: per-patient (or per-slice) scores; NaNs are excluded.
        statistic: reduces a 1D array to a number; used vectorised as ``statistic(x, axis=-1)``
            when it supports ``axis`` (``np.mean``, ``np.median``), else row by row.
        n_resamples: number of bootstrap resamples, at least 1.
        confidence: coverage of the interval, in (0, 1).
        seed: seed of ``numpy.random.default_rng``; ``None`` draws a fresh one.

    Returns:
        ``(ci_low, ci_high)``; ``(nan, nan)`` when no value is left after dropping NaNs, and
        ``(x, x)`` for a single value.

    Raises:
        ValueError: when ``n_resamples`` < 1 or ``confidence`` is outside (0, 1).
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}.")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    data = _as_float_array(values)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    statistics = np.empty(int(n_resamples), dtype=float)
    chunk = max(1, _MAX_RESAMPLED_VALUES // data.size)
    for start in range(0, int(n_resamples), chunk):
        stop = min(start + chunk, int(n_resamples))
        indices = rng.integers(0, data.size, size=(stop - start, data.size))
        statistics[start:stop] = _apply_statistic(statistic, data[indices])
    tail = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(statistics, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize(
    values: Iterable[float] | np.ndarray | torch.Tensor,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int | None = 0,
) -> dict[str, float]:
    """Descriptive statistics of a set of scores plus a bootstrap CI of the mean.

    NaNs (e.g. HD95 when exactly one mask is empty) are excluded from every statistic and counted
    in ``n_nan``, never replaced by 0.

    Args:
        values: scores, one per patient (or per slice).
        confidence: coverage of the bootstrap interval of the mean, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: bootstrap seed (see :func:`bootstrap_ci`).

    Returns:
        dict with ``n`` (values used), ``n_nan`` (values dropped), ``mean``, ``median``, ``std``
        (sample standard deviation, ``ddof=1``; ``nan`` below 2 values), ``min``, ``max``,
        ``ci_low`` and ``ci_high`` (percentile bootstrap of the mean). Statistics of an empty set
        are ``nan``.
    """
    data = _as_float_array(values)
    is_nan = np.isnan(data)
    data = data[~is_nan]
    summary: dict[str, float] = {"n": int(data.size), "n_nan": int(is_nan.sum())}
    if data.size == 0:
        summary.update(dict.fromkeys(("mean", "median", "std", "min", "max", "ci_low", "ci_high"), math.nan))
        return summary
    ci_low, ci_high = bootstrap_ci(data, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)
    summary.update(
        {
            "mean": float(np.mean(data)),
            "median": float(np.median(data)),
            "std": float(np.std(data, ddof=1)) if data.size > 1 else math.nan,
            "min": float(np.min(data)),
            "max": float(np.max(data)),
            "ci_low": ci_low,
            "ci_high": ci_high,
        }
    )
    return summary


def summarize_scores(
    scores: Sequence[Mapping[str, float]],
    keys: Sequence[str] = DEFAULT_SUMMARY_KEYS,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int | None = 0,
) -> dict[str, dict[str, float]]:
    """:func:`summarize` every score of a list of per-patient score dicts.

    Args:
        scores: one dict per patient, e.g. from :func:`monai_lgg.metrics.volume_scores`.
        keys: score names to summarise; each must be present in every dict.
        confidence: see :func:`summarize`.
        n_resamples: see :func:`summarize`.
        seed: see :func:`summarize`.

    Returns:
        ``{key: summary}`` with the summaries of :func:`summarize`.

    Raises:
        KeyError: when a dict lacks one of ``keys``.
    """
    summaries: dict[str, dict[str, float]] = {}
    for key in keys:
        missing = [i for i, patient in enumerate(scores) if key not in patient]
        if missing:
            raise KeyError(f"score {key!r} is missing for patients at positions {missing[:10]}.")
        summaries[key] = summarize(
            [patient[key] for patient in scores], confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return summaries
