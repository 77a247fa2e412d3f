"""Per-slice Dice over volumes with an explicit score for tumour-free slices."""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.config import NdarrayOrTensor
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from monai_lgg.metrics._binary import as_binary_tensor, check_same_shape

__all__ = ["compute_slice_dice", "SliceDiceMetric"]


def _check_empty_score(empty_score: float) -> float:
    empty_score = float(empty_score)
    if not math.isfinite(empty_score) or not 0.0 <= empty_score <= 1.0:
        # NaN would let empty slices drop out of the mean, which hides false positives.
        raise ValueError(f"empty_score must be a finite number in [0, 1], got {empty_score}.")
    return empty_score


def compute_slice_dice(y_pred: NdarrayOrTensor, y: NdarrayOrTensor, empty_score: float = 1.0) -> torch.Tensor:
    r"""Dice of every slice of every volume in a batch, scoring tumour-free slices explicitly.

    For slice :math:`s` with predicted set :math:`P_s` and ground-truth set :math:`G_s`:

    .. math::

        \mathrm{Dice}_s = \begin{cases}
            \dfrac{2 |P_s \cap G_s|}{|P_s| + |G_s|} & |P_s| + |G_s| > 0 \\
            \texttt{empty\_score} & |P_s| = |G_s| = 0
        \end{cases}

    so a slice with empty ground truth and any predicted voxel scores 0, and a slice where both
    are empty scores ``empty_score`` (1 by default). No slice is ever skipped.

    Args:
        y_pred: binarised prediction, batch-first and channel-first: ``(B, C, H, W, D)`` volumes whose
            slice axis is the last one, or ``(B, C, H, W)`` 2D images (each counts as one slice, ``D = 1``).
            Values must be 0/1 (or bool); numpy arrays and tensors are accepted.
        y: binarised ground truth with the same shape as ``y_pred``.
        empty_score: score of a slice whose prediction and ground truth are both empty; must be in [0, 1].

    Returns:
        float32 tensor of shape ``(B * D, C)`` on the device of ``y_pred``; row ``b * D + d`` holds slice
        ``d`` of volume ``b``. This "one row per slice" layout lets MONAI's cumulative buffers collect
        volumes of different depths.

    Raises:
        ValueError: when shapes differ, the layout is not 4D/5D, values are not binary or
            ``empty_score`` is out of range.
    """
    empty_score = _check_empty_score(empty_score)
    pred = as_binary_tensor(y_pred, "y_pred")
    gt = as_binary_tensor(y, "y").to(pred.device)
    check_same_shape(pred, gt, ("y_pred", "y"))
    if pred.ndim == 4:
        pred, gt = pred.unsqueeze(-1), gt.unsqueeze(-1)
    if pred.ndim != 5:
        raise ValueError(
            f"y_pred and y must be (B, C, H, W, D) volumes or (B, C, H, W) slices, got shape {tuple(y_pred.shape)}."
        )
    batch, channels, depth = pred.shape[0], pred.shape[1], pred.shape[-1]
    in_plane = (2, 3)
    intersection = (pred & gt).sum(dim=in_plane).float()
    total = (pred.sum(dim=in_plane) + gt.sum(dim=in_plane)).float()
    dice = torch.where(total > 0, 2.0 * intersection / total.clamp(min=1.0), torch.full_like(total, empty_score))
    return dice.permute(0, 2, 1).reshape(batch * depth, channels)


class SliceDiceMetric(CumulativeIterationMetric):
    """Pooled per-slice Dice: the mean Dice over all slices of all evaluated volumes.

    Every call adds one Dice per slice (see :func:`compute_slice_dice`) to the buffer, so batches of
    volumes with different depths ``D`` can be mixed freely; :meth:`aggregate` then averages over all
    buffered slices. **Empty slices are scored, never skipped**: a slice whose ground truth and
    prediction are both empty scores ``empty_score`` (default 1) and a tumour-free slice with any
    predicted voxel scores 0, so false positives on healthy slices lower the result (unlike
    ``monai.metrics.DiceMetric`` with its default ``ignore_empty=True``).

    Because every slice weighs the same, patients with more slices weigh more; report per-patient
    3D scores (:func:`monai_lgg.metrics.volume_scores`) alongside this pooled number.

    Example::

        from monai.handlers import IgniteMetricHandler, from_engine

        handler = IgniteMetricHandler(SliceDiceMetric(), output_transform=from_engine(["pred", "label"]))
        handler.attach(evaluator, "pooled_slice_dice")  # inputs: binarised (B, 1, H, W, D) volumes

    Args:
        empty_score: score of a slice whose prediction and ground truth are both empty; in [0, 1].
        reduction: MONAI metric reduction applied over the ``(n_slices, C)`` buffer by :meth:`aggregate`;
            the default ``"mean"`` gives the pooled per-slice Dice, ``"none"`` returns the buffer.
    """

    def __init__(self, empty_score: float = 1.0, reduction: MetricReduction | str = MetricReduction.MEAN) -> None:
        super().__init__()
        self.empty_score = _check_empty_score(empty_score)
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Return the ``(B * D, C)`` per-slice Dice of one batch (buffered by the base class)."""
        if y is None:
            raise ValueError("SliceDiceMetric needs the ground truth y.")
        return compute_slice_dice(y_pred, y, empty_score=self.empty_score)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        """Reduce the per-slice Dice of everything seen since the last :meth:`reset`.

        Args:
            reduction: overrides ``self.reduction`` for this call.

        Returns:
            with ``"mean"``, a 0-dim tensor with the pooled per-slice Dice; with ``"none"``, the
            ``(n_slices, C)`` buffer; other MONAI reductions as documented by ``do_metric_reduction``.

        Raises:
            ValueError: when no batch has been added yet.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("SliceDiceMetric has no data to aggregate; call it on at least one batch first.")
        result, _ = do_metric_reduction(data, reduction or self.reduction)
        return result
