"""Dictionary wrappers (``...d``) of the array transforms in ``array.py``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_lgg.transforms.array import SliceWiseNormalizeIntensity

__all__ = ["SliceWiseNormalizeIntensityd"]


class SliceWiseNormalizeIntensityd(MapTransform):
    """Dictionary version of :class:`~monai_lgg.transforms.array.SliceWiseNormalizeIntensity`.

    Args:
        keys: keys of the images to normalise.
        allow_missing_keys: do not raise if a key is absent.
        kwargs: arguments of ``SliceWiseNormalizeIntensity``.
    """

    backend = SliceWiseNormalizeIntensity.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = SliceWiseNormalizeIntensity(**kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d
