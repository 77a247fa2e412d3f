"""Transforms of monai_lgg: custom array/dictionary transforms and the preset pipelines."""

from monai_lgg.transforms.array import SliceWiseNormalizeIntensity
from monai_lgg.transforms.dictionary import SliceWiseNormalizeIntensityd

__all__ = ["SliceWiseNormalizeIntensity", "SliceWiseNormalizeIntensityd"]
