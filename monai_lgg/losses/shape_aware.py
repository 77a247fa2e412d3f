"""Shape-aware (boundary-distance-weighted) cross-entropy loss (Jadon 2020)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.utils import LossReduction
from scipy.ndimage import distance_transform_edt
from torch.nn.modules.loss import _Loss

__all__ = ["ShapeAwareLoss", "normalized_contour_distance"]


def normalized_contour_distance(mask: np.ndarray) -> np.ndarray:
    r"""Distance of every pixel to the contour of a binary mask, scaled to [0, 1].

    :math:`D(x)` is the Euclidean distance (in pixels/voxels) from :math:`x` to the nearest pixel of the
    other class, so it is at least 1 and grows both inwards and outwards; the result is
    :math:`D(x) / \max_x D(x)`. A mask without contour (all background or all foreground) has no
    reference to be close to, so every pixel gets the maximal value 1.

    Args:
        mask: boolean array of any spatial dimensionality.

    Returns:
        float32 array with the shape of ``mask``.
    """
    if not mask.any() or mask.all():
        return np.ones(mask.shape, dtype=np.float32)
    distance = distance_transform_edt(mask) + distance_transform_edt(~mask)
    return (distance / distance.max()).astype(np.float32)


class ShapeAwareLoss(_Loss):
    r"""Cross-entropy weighted by the distance to the ground-truth contour, plus an optional Dice term.

    A simplified, documented form of the shape-aware loss of Jadon (2020), where each pixel's
    cross-entropy is weighted by how far the predicted contour strays from the ground-truth contour:

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_x w(x)\, \mathrm{CE}(x) + \lambda_{\mathrm{Dice}}\, \mathcal{L}_{\mathrm{Dice}},
        \qquad w(x) = 1 + \alpha\, \hat d(x)\, e(x),

    where :math:`\mathrm{CE}` is ``binary_cross_entropy_with_logits`` per element (``sigmoid=True``) or
    ``cross_entropy`` per pixel (``softmax=True``), :math:`\hat d` is
    :func:`normalized_contour_distance` of the ground truth (of the pixel's true class for softmax),
    and :math:`e(x) = 1` where the thresholded prediction (logit > 0, or arg-max) is wrong, else 0.
    Misclassified pixels lie between the predicted and the true contour, so their weight grows
    with the distance between the two contours, up to :math:`1 + \alpha`; a false positive on a
    tumour-free image gets the full :math:`1 + \alpha`. With ``errors_only=False``, :math:`e \equiv 1`
    and every pixel is weighted by its distance to the contour. The weight map carries no gradient.

    Distances are computed with ``scipy.ndimage.distance_transform_edt`` on the CPU, in voxel units,
    for 2D ``(B, C, H, W)`` and 3D ``(B, C, H, W, D)`` inputs.

    Reference: Jadon, S. (2020) A survey of loss functions for semantic segmentation. IEEE CIBCB.

    Args:
        alpha: strength of the distance weighting, :math:`\alpha \ge 0` (0 gives plain cross-entropy).
        sigmoid: ``input`` holds logits of independent (binary / multi-label) channels; ``target``
            has the same shape as ``input``.
        softmax: ``input`` holds logits of mutually exclusive classes (at least 2 channels); ``target``
            is either ``(B, 1, ...)`` class indices or a ``(B, C, ...)`` one-hot tensor.
        errors_only: weight only misclassified pixels (see above).
        lambda_dice: weight :math:`\lambda_{\mathrm{Dice}} \ge 0` of a MONAI ``DiceLoss`` term (0 disables it).
        include_background: passed to the Dice term; with ``softmax`` and False, channel 0 is left out of it.
        smooth_nr: numerator smoothing of the Dice term.
        smooth_dr: denominator smoothing of the Dice term.
        batch: Dice term computed over the whole batch.
        reduction: ``"mean"`` or ``"sum"`` over pixels of the weighted cross-entropy (the Dice term is
            reduced the same way over items and channels).

    Raises:
        ValueError: when ``alpha`` or ``lambda_dice`` is negative or not finite, when not exactly one of
            ``sigmoid``/``softmax`` is True, or when ``reduction`` is not ``"mean"``/``"sum"``.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        sigmoid: bool = True,
        softmax: bool = False,
        errors_only: bool = True,
        lambda_dice: float = 0.0,
        include_background: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        reduction = LossReduction(reduction).value
        if reduction == LossReduction.NONE.value:
            raise ValueError('ShapeAwareLoss supports reduction "mean" or "sum", got "none".')
        super().__init__(reduction=reduction)
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}.")
        if not math.isfinite(lambda_dice) or lambda_dice < 0:
            raise ValueError(f"lambda_dice must be a finite number >= 0, got {lambda_dice}.")
        if sigmoid == softmax:
            raise ValueError(
                f"exactly one of sigmoid and softmax must be True (input must be logits), got sigmoid={sigmoid}, "
                f"softmax={softmax}."
            )
        self.alpha = float(alpha)
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.errors_only = errors_only
        self.lambda_dice = float(lambda_dice)
        self.dice = DiceLoss(
            include_background=include_background,
            sigmoid=sigmoid,
            softmax=softmax,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            reduction=reduction,
        )

    def _check_and_encode_target(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Validate shapes and return the target as a ``(B, C, ...)`` 0/1 tensor matching ``input``."""
        if input.ndim not in (4, 5):
            raise ValueError(f"input must be (B, C, H, W) or (B, C, H, W, D), got shape {tuple(input.shape)}.")
        if not input.is_floating_point():
            raise ValueError(f"input must hold floating-point logits, got dtype {input.dtype}.")
        n_channels = input.shape[1]
        if self.sigmoid:
            if target.shape != input.shape:
                raise ValueError(
                    f"with sigmoid=True target must have the shape of input {tuple(input.shape)}, "
                    f"got {tuple(target.shape)}."
                )
            return target.to(input.dtype)
        if n_channels < 2:
            raise ValueError(
                "softmax=True needs at least 2 input channels; use sigmoid=True for one foreground channel."
            )
        if target.shape == input.shape:
            return target.to(input.dtype)
        if target.shape == (input.shape[0], 1, *input.shape[2:]):
            labels = target[:, 0].long()
            if labels.min() < 0 or labels.max() >= n_channels:
                raise ValueError(f"class indices in target must be in [0, {n_channels - 1}].")
            return F.one_hot(labels, n_channels).movedim(-1, 1).to(input.dtype)
        raise ValueError(
            f"with softmax=True target must be (B, 1, ...) class indices or one-hot {tuple(input.shape)}, "
            f"got {tuple(target.shape)}."
        )

    @torch.no_grad()
    def weight_map(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element weights :math:`w` applied to the cross-entropy.

        Args:
            input: logits, ``(B, C, H, W[, D])``.
            target: ground truth as described in the class arguments.

        Returns:
            ``(B, C, ...)`` weights for ``sigmoid=True``; ``(B, ...)`` per-pixel weights for
            ``softmax=True``. Values lie in ``[1, 1 + alpha]``; no gradient.
        """
        one_hot = self._check_and_encode_target(input, target)
        return self._weights(input.detach(), one_hot)

    def _weights(self, logits: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        truth = (one_hot > 0.5).cpu().numpy()
        distance = np.empty(truth.shape, dtype=np.float32)
        for index in np.ndindex(*truth.shape[:2]):
            distance[index] = normalized_contour_distance(truth[index])
        distance_t = torch.from_numpy(distance).to(device=logits.device, dtype=logits.dtype)
        truth_t = one_hot > 0.5
        if self.sigmoid:
            scale = distance_t
            wrong = (logits > 0) != truth_t
        else:
            labels = truth_t.float().argmax(dim=1, keepdim=True)
            scale = distance_t.gather(1, labels).squeeze(1)
            wrong = logits.argmax(dim=1) != labels.squeeze(1)
        if self.errors_only:
            scale = scale * wrong
        return 1.0 + self.alpha * scale

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits, ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
            target: ground truth; same shape as ``input`` (sigmoid), or class indices ``(B, 1, ...)`` /
                one-hot (softmax).

        Returns:
            scalar loss.

        Raises:
            ValueError: on invalid shapes, dtypes or class indices.
        """
        one_hot = self._check_and_encode_target(input, target)
        with torch.no_grad():
            weights = self._weights(input.detach(), one_hot)
        if self.sigmoid:
            cross_entropy = F.binary_cross_entropy_with_logits(input, one_hot, reduction="none")
        else:
            cross_entropy = F.cross_entropy(input, one_hot, reduction="none")
        weighted = weights * cross_entropy
        loss = weighted.mean() if self.reduction == LossReduction.MEAN.value else weighted.sum()
        if self.lambda_dice > 0:
            loss = loss + self.lambda_dice * self.dice(input, one_hot)
        return loss
