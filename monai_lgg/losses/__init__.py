"""Losses for monai_lgg: log-cosh Dice and a boundary-distance-weighted (shape-aware) cross-entropy."""

from monai_lgg.losses.log_cosh_dice import LogCoshDiceLoss, log_cosh
from monai_lgg.losses.shape_aware import ShapeAwareLoss, normalized_contour_distance

__all__ = ["LogCoshDiceLoss", "ShapeAwareLoss", "log_cosh", "normalized_contour_distance"]
