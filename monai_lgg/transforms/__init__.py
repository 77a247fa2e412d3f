"""Transforms of monai_lgg: custom array/dictionary transforms and the preset pipelines."""

from monai_lgg.transforms.array import CheckChannels, SliceWiseNormalizeIntensity
from monai_lgg.transforms.dictionary import (
    CheckChannelsd,
    CheckSameShaped,
    PinnedLoadImaged,
    SliceWiseNormalizeIntensityd,
)

__all__ = [
    "SliceWiseNormalizeIntensity",
    "SliceWiseNormalizeIntensityd",
    "CheckChannels",
    "CheckChannelsd",
    "CheckSameShaped",
    "PinnedLoadImaged",
]
