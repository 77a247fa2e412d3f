"""Log-cosh Dice loss (Jadon 2020)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.losses import DiceLoss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["LogCoshDiceLoss", "log_cosh"]


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    r"""Numerically stable :math:`\log(\cosh(x)) = |x| + \log(1 + e^{-2|x|}) - \log 2`."""
    abs_x = x.abs()
    return abs_x + torch.log1p(torch.exp(-2.0 * abs_x)) - math.log(2.0)


class LogCoshDiceLoss(_Loss):
    r"""Log-cosh of MONAI's Dice loss.

    .. math::

        \mathcal{L} = \log\left(\cosh\left(\mathcal{L}_{\mathrm{Dice}}\right)\right)

    applied to the unreduced Dice loss of every item and channel (or of the whole batch when
    ``batch=True``) before ``reduction``. Because :math:`0 \le \log\cosh x \le x` for :math:`x \ge 0`
    and its gradient :math:`\tanh x` vanishes at 0, the loss is a smoothed, never larger version of
    the Dice loss that damps the gradient of nearly-solved items.

    Reference: Jadon, S. (2020) A survey of loss functions for semantic segmentation. IEEE CIBCB.

    The arguments are those of ``monai.losses.DiceLoss``:

    Args:
        include_background: if False, channel 0 (background) is excluded.
        to_onehot_y: convert ``target`` to one-hot with ``input.shape[1]`` classes.
        sigmoid: apply a sigmoid to ``input`` (logits of a binary / multi-label task).
        softmax: apply a softmax to ``input``.
        other_act: other activation applied to ``input``.
        squared_pred: use squared predictions and targets in the denominator.
        jaccard: use the soft Jaccard (IoU) loss instead of Dice.
        reduction: ``"none"`` keeps the broadcastable shape of ``DiceLoss(reduction="none")``
            (``(B, N, 1, ...)`` when ``batch=False``); ``"mean"``/``"sum"`` reduce the log-cosh values.
        smooth_nr: constant added to the numerator.
        smooth_dr: constant added to the denominator.
        batch: sum intersection and union over the batch before dividing.
        weight: per-class weights of the Dice loss.
        soft_label: whether ``target`` holds soft labels.
        ignore_index: label value excluded from the loss.

    Raises:
        ValueError: for the invalid combinations rejected by ``DiceLoss`` and an unknown ``reduction``.
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: LossReduction | str = LossReduction.MEAN,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        soft_label: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=LossReduction.NONE,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight,
            soft_label=soft_label,
            ignore_index=ignore_index,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, N, H, W[, D])`` logits or probabilities (see the activation arguments).
            target: ``(B, N, H, W[, D])`` or ``(B, 1, H, W[, D])`` ground truth.

        Returns:
            the reduced loss, or the unreduced ``(B, N, 1, ...)`` values with ``reduction="none"``.
        """
        loss = log_cosh(self.dice(input, target))
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
