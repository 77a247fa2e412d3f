"""Per-patient (3D) and pooled per-slice metrics for binary LGG segmentation.

Empty masks are always scored, never skipped: ground truth and prediction both empty score 1
(Dice, IoU, precision, recall, F1) and HD95 0; empty ground truth with any predicted voxel scores 0;
HD95 with exactly one empty mask is NaN and is counted separately by :func:`summarize`.
"""

from monai_lgg.metrics.false_positive import (
    FalsePositiveRate,
    false_positive_rate,
    patient_false_positive_rate,
    slice_false_positive_rate,
    slice_flags,
)
from monai_lgg.metrics.slice_dice import SliceDiceMetric, compute_slice_dice
from monai_lgg.metrics.summary import DEFAULT_SUMMARY_KEYS, bootstrap_ci, summarize, summarize_scores
from monai_lgg.metrics.volume import VOLUME_SCORE_KEYS, hausdorff_distance_95, volume_scores

__all__ = [
    "DEFAULT_SUMMARY_KEYS",
    "FalsePositiveRate",
    "SliceDiceMetric",
    "VOLUME_SCORE_KEYS",
    "bootstrap_ci",
    "compute_slice_dice",
    "false_positive_rate",
    "hausdorff_distance_95",
    "patient_false_positive_rate",
    "slice_false_positive_rate",
    "slice_flags",
    "summarize",
    "summarize_scores",
    "volume_scores",
]
