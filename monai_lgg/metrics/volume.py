"""Per-volume (per-patient) binary segmentation scores with explicit handling of empty masks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.metrics import compute_hausdorff_distance

from monai_lgg.metrics._binary import as_spatial_binary_array, check_same_shape

__all__ = ["VOLUME_SCORE_KEYS", "hausdorff_distance_95", "volume_scores"]

# MONAI 1.5-1.6's own surface-distance code passes get_mask_edges' deprecated `always_return_as_numpy`
# argument, so every Hausdorff distance (ours and the HD95 validation metric's) warns about an option no
# user of this package sets. Silence that one message once, here. (It used to be silenced per call with
# warnings.catch_warnings(), which resets Python's once-per-location registry on exit: the warning then
# repeated at every validation instead of appearing once.)
warnings.filterwarnings("ignore", message=r".*get_mask_edges:always_return_as_numpy.*", category=FutureWarning)

VOLUME_SCORE_KEYS: tuple[str, ...] = (
    "dice",
    "iou",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "hd95",
    "tp",
    "fp",
    "fn",
    "tn",
    "gt_empty",
    "pred_empty",
)


def _check_spacing(spacing: float | Sequence[float] | None, ndim: int) -> float | tuple[float, ...] | None:
    if spacing is None:
        return None
    values = (float(spacing),) if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(values) not in (1, ndim):
        raise ValueError(f"spacing must be one number or {ndim} numbers (one per spatial axis), got {spacing}.")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing values must be finite and positive, got {spacing}.")
    return values[0] if len(values) == 1 else values


def hausdorff_distance_95(
    pred: NdarrayOrTensor, gt: NdarrayOrTensor, spacing: float | Sequence[float] | None = None
) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the surfaces of two binary masks.

    Computed with ``monai.metrics.compute_hausdorff_distance(..., percentile=95)`` (Euclidean
    distances between the edge voxels of both masks, the larger of the two directed 95th
    percentiles).

    Empty masks:
        - both empty: 0.0 (nothing to mislocate);
        - exactly one empty: ``nan`` (undefined). Callers must count these cases separately
          (e.g. with ``gt_empty``/``pred_empty`` of :func:`volume_scores`) and never average them as 0.

    Args:
        pred: binary prediction, ``(H, W)``, ``(H, W, D)`` or ``(1, H, W, D)``.
        gt: binary ground truth with the same shape.
        spacing: voxel size, one number (isotropic) or one per spatial axis; ``None`` gives voxels.

    Returns:
        HD95 in voxels, or in the unit of ``spacing``.

    Raises:
        ValueError: on shape mismatch, non-binary values or invalid ``spacing``.
    """
    pred_array = as_spatial_binary_array(pred, "pred")
    gt_array = as_spatial_binary_array(gt, "gt")
    check_same_shape(pred_array, gt_array, ("pred", "gt"))
    spacing_checked = _check_spacing(spacing, pred_array.ndim)
    pred_empty, gt_empty = not pred_array.any(), not gt_array.any()
    if pred_empty and gt_empty:
        return 0.0
    if pred_empty or gt_empty:
        return math.nan
    distance = compute_hausdorff_distance(
        torch.from_numpy(pred_array[None, None]),
        torch.from_numpy(gt_array[None, None]),
        include_background=True,
        percentile=95,
        spacing=spacing_checked,
    )
    return float(distance.item())


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def volume_scores(
    pred: NdarrayOrTensor, gt: NdarrayOrTensor, spacing: float | Sequence[float] | None = None
) -> dict[str, float]:
    """Binary overlap and distance scores of one volume (one patient), scored in 3D.

    With :math:`TP, FP, FN, TN` the voxel counts:

    - ``dice`` :math:`= 2TP / (2TP + FP + FN)`, ``iou`` :math:`= TP / (TP + FP + FN)`,
    - ``precision`` :math:`= TP / (TP + FP)`, ``recall`` :math:`= TP / (TP + FN)`,
    - ``f1`` :math:`= 2PR / (P + R)` (equal to Dice at voxel level; kept for readers who expect it),
    - ``accuracy`` :math:`= (TP + TN) / N`, ``hd95`` from :func:`hausdorff_distance_95`.

    Empty masks (explicit, nothing is skipped):
        - ground truth and prediction both empty: dice, iou, precision, recall, f1 and accuracy are 1,
          ``hd95`` is 0;
        - otherwise any 0/0 ratio is 0: empty ground truth with any predicted voxel gives dice, iou,
          precision, recall, f1 = 0; an empty prediction on a tumour gives 0 as well;
        - exactly one mask empty: ``hd95`` is ``nan``; ``gt_empty``/``pred_empty`` say which, so the
          case can be reported separately rather than averaged.

    Args:
        pred: binary prediction (values 0/1 or bool), ``(H, W)``, ``(H, W, D)`` or ``(1, H, W, D)``,
            numpy array or torch tensor.
        gt: binary ground truth with the same shape.
        spacing: voxel size for ``hd95`` (one number or one per spatial axis); ``None`` gives voxels.

    Returns:
        dict with float values under the keys :data:`VOLUME_SCORE_KEYS`: the scores above, the voxel
        counts ``tp``, ``fp``, ``fn``, ``tn`` and the flags ``gt_empty``/``pred_empty`` (1.0 or 0.0).

    Raises:
        ValueError: on shape mismatch, non-binary values or invalid ``spacing``.
    """
    pred_array = as_spatial_binary_array(pred, "pred")
    gt_array = as_spatial_binary_array(gt, "gt")
    check_same_shape(pred_array, gt_array, ("pred", "gt"))
    tp = int(np.count_nonzero(pred_array & gt_array))
    fp = int(np.count_nonzero(pred_array & ~gt_array))
    fn = int(np.count_nonzero(~pred_array & gt_array))
    tn = int(pred_array.size) - tp - fp - fn
    both_empty = tp + fp + fn == 0
    if both_empty:
        dice = iou = precision = recall = f1 = 1.0
    else:
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        iou = _ratio(tp, tp + fp + fn)
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "dice": dice,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / pred_array.size,
        "hd95": hausdorff_distance_95(pred_array, gt_array, spacing=spacing),
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "tn": float(tn),
        "gt_empty": float(tp + fn == 0),
        "pred_empty": float(tp + fp == 0),
    }
