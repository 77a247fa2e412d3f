"""Transforms of monai_lgg: custom array/dictionary transforms and the preset pipelines."""

from monai_lgg.transforms.array import AddContextSlices, CheckChannels, CheckLabelValues, SliceWiseNormalizeIntensity
from monai_lgg.transforms.dictionary import (
    AddContextSlicesd,
    CheckChannelsd,
    CheckLabelValuesd,
    CheckSameShaped,
    PinnedLoadImaged,
    SliceWiseNormalizeIntensityd,
)
from monai_lgg.transforms.orientation import ReorientToModel, ReorientToModeld

__all__ = [
    "AddContextSlices",
    "AddContextSlicesd",
    "SliceWiseNormalizeIntensity",
    "SliceWiseNormalizeIntensityd",
    "CheckChannels",
    "CheckChannelsd",
    "CheckLabelValues",
    "CheckLabelValuesd",
    "CheckSameShaped",
    "PinnedLoadImaged",
    "ReorientToModel",
    "ReorientToModeld",
]
