"""False-positive rates on tumour-free slices and tumour-free patients."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy

from monai_lgg.metrics._binary import as_spatial_binary_array, check_same_shape

__all__ = [
    "FalsePositiveRate",
    "false_positive_rate",
    "slice_flags",
    "slice_false_positive_rate",
    "patient_false_positive_rate",
]


class FalsePositiveRate(NamedTuple):
    """Share of tumour-free units (slices or patients) where the prediction has any voxel.

    Attributes:
        rate: ``n_false_positive / n_tumour_free``; ``nan`` when there is no tumour-free unit.
        n_false_positive: tumour-free units with at least one predicted voxel.
        n_tumour_free: units whose ground truth is empty.
    """

    rate: float
    n_false_positive: int
    n_tumour_free: int


def _as_flags(flags: Iterable[bool] | NdarrayOrTensor) -> np.ndarray:
    if isinstance(flags, (np.ndarray, torch.Tensor)):
        return convert_to_numpy(flags).astype(bool).ravel()
    return np.asarray(list(flags), dtype=bool).ravel()


def false_positive_rate(
    pred_positive: Iterable[bool] | NdarrayOrTensor, gt_positive: Iterable[bool] | NdarrayOrTensor
) -> FalsePositiveRate:
    r"""False-positive rate from per-unit flags.

    .. math::

        \mathrm{FPR} = \frac{|\{u : \neg g_u \wedge p_u\}|}{|\{u : \neg g_u\}|}

    Args:
        pred_positive: for each unit (slice or patient), whether the prediction has any voxel.
        gt_positive: for each unit, whether the ground truth has any voxel; same length.

    Returns:
        :class:`FalsePositiveRate`; ``rate`` is ``nan`` when no unit is tumour-free.

    Raises:
        ValueError: when the two flag sequences differ in length.
    """
    pred_flags, gt_flags = _as_flags(pred_positive), _as_flags(gt_positive)
    if pred_flags.shape != gt_flags.shape:
        raise ValueError(
            f"pred_positive and gt_positive must have one flag per unit, got {pred_flags.size} and {gt_flags.size}."
        )
    tumour_free = ~gt_flags
    n_tumour_free = int(tumour_free.sum())
    n_false_positive = int((pred_flags & tumour_free).sum())
    rate = n_false_positive / n_tumour_free if n_tumour_free else math.nan
    return FalsePositiveRate(rate, n_false_positive, n_tumour_free)


def slice_flags(pred: NdarrayOrTensor, gt: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice "has any voxel" flags of one volume.

    Args:
        pred: binary prediction ``(H, W, D)`` or ``(1, H, W, D)`` with the slice axis last;
            a 2D ``(H, W)`` mask is one slice.
        gt: binary ground truth with the same shape.

    Returns:
        ``(pred_positive, gt_positive)``, two boolean arrays of shape ``(D,)``.
    """
    pred_array = as_spatial_binary_array(pred, "pred")
    gt_array = as_spatial_binary_array(gt, "gt")
    check_same_shape(pred_array, gt_array, ("pred", "gt"))
    if pred_array.ndim == 2:
        pred_array, gt_array = pred_array[..., None], gt_array[..., None]
    return pred_array.any(axis=(0, 1)), gt_array.any(axis=(0, 1))


def slice_false_positive_rate(volumes: Iterable[tuple[NdarrayOrTensor, NdarrayOrTensor]]) -> FalsePositiveRate:
    """Fraction of tumour-free slices, over all volumes, where the prediction has any voxel.

    Args:
        volumes: ``(pred, gt)`` pairs, one per patient, each as accepted by :func:`slice_flags`;
            depths may differ between patients.

    Returns:
        :class:`FalsePositiveRate` over all slices of all volumes.
    """
    pred_flags: list[np.ndarray] = []
    gt_flags: list[np.ndarray] = []
    for pred, gt in volumes:
        pred_positive, gt_positive = slice_flags(pred, gt)
        pred_flags.append(pred_positive)
        gt_flags.append(gt_positive)
    if not pred_flags:
        return false_positive_rate(np.zeros(0, bool), np.zeros(0, bool))
    return false_positive_rate(np.concatenate(pred_flags), np.concatenate(gt_flags))


def patient_false_positive_rate(volumes: Iterable[tuple[NdarrayOrTensor, NdarrayOrTensor]]) -> FalsePositiveRate:
    """Fraction of tumour-free patients (empty ground-truth volume) with any predicted voxel.

    Args:
        volumes: ``(pred, gt)`` pairs, one per patient, ``(H, W[, D])`` or ``(1, H, W, D)``.

    Returns:
        :class:`FalsePositiveRate` over patients.
    """
    pred_flags: list[bool] = []
    gt_flags: list[bool] = []
    for pred, gt in volumes:
        pred_array = as_spatial_binary_array(pred, "pred")
        gt_array = as_spatial_binary_array(gt, "gt")
        check_same_shape(pred_array, gt_array, ("pred", "gt"))
        pred_flags.append(bool(pred_array.any()))
        gt_flags.append(bool(gt_array.any()))
    return false_positive_rate(pred_flags, gt_flags)
