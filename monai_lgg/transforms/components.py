"""Connected-component post-processing of binary masks: drop 3D components that are small next to the largest.

Keeping only the largest component (the data set authors' post-processing) deletes a small true tumour
whenever a false positive is larger. Dropping components below a fraction of the largest one removes the
speckle of false positives on tumour-free slices while keeping a second real lesion of reasonable size.
The fraction is chosen on training-side validation (``tools/postprocessing.py``), never on test patients.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor
from scipy import ndimage

__all__ = [
    "remove_small_components",
    "keep_largest_component",
    "hysteresis_mask",
    "fill_holes_per_slice",
    "RemoveSmallComponents",
    "RemoveSmallComponentsd",
]


def remove_small_components(mask: np.ndarray, min_fraction: float = 0.0, min_voxels: int = 0) -> np.ndarray:
    """Zero the connected components of a binary mask smaller than ``min_fraction`` of the largest or ``min_voxels``.

    Args:
        mask: binary array of any dimension (components use full connectivity: 8 in 2D, 26 in 3D).
        min_fraction: keep components with at least this fraction of the largest component's voxels.
        min_voxels: keep components with at least this many voxels (the largest is always kept).

    Returns:
        the filtered mask, same shape and dtype.
    """
    binary = np.asarray(mask) > 0
    if (min_fraction <= 0 and min_voxels <= 0) or not binary.any():
        return np.asarray(mask).copy()
    labels, count = ndimage.label(binary, structure=np.ones((3,) * binary.ndim, dtype=bool))
    if count <= 1:
        return np.asarray(mask).copy()
    sizes = np.bincount(labels.ravel())[1:]
    keep = (sizes >= min_fraction * sizes.max()) & (sizes >= min(min_voxels, sizes.max()))
    kept = np.concatenate([[False], keep])[labels]
    return np.where(kept, mask, 0).astype(np.asarray(mask).dtype)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (full connectivity) of a binary mask as bool; of equal-sized largest
    components, the first in label order, so exactly one is kept."""
    binary = np.asarray(mask) > 0
    labels, count = ndimage.label(binary, structure=np.ones((3,) * binary.ndim, dtype=bool))
    if count <= 1:
        return binary
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def hysteresis_mask(prob: np.ndarray, high: float, low: float) -> np.ndarray:
    """Voxels at or above ``low`` in 3D components (full connectivity) that reach ``high`` somewhere.

    Grows a confident prediction into the faint rim around it without adding faint components of their own.
    """
    prob = np.asarray(prob)
    labels, count = ndimage.label(prob >= low, structure=np.ones((3,) * prob.ndim, dtype=bool))
    if count == 0:
        return np.zeros(prob.shape, dtype=bool)
    reached = np.zeros(count + 1, dtype=bool)
    reached[np.unique(labels[prob >= high])] = True
    reached[0] = False
    return reached[labels]


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill the enclosed holes of a ``(H, W, D)`` binary mask slice by slice (a cystic core inside a tumour rim)."""
    mask = np.asarray(mask) > 0
    return np.stack([ndimage.binary_fill_holes(mask[..., z]) for z in range(mask.shape[-1])], axis=-1)


class RemoveSmallComponents(Transform):
    """:func:`remove_small_components` on a channel-first mask ``(1, H, W[, D])`` (each channel on its own).

    Example::

        >>> mask = torch.zeros(1, 20, 20, 3); mask[0, 2:10, 2:10] = 1; mask[0, 15, 15, 0] = 1
        >>> int(RemoveSmallComponents(min_fraction=0.1)(mask).sum())
        192
    """

    backend = [convert_to_tensor.__name__]

    def __init__(self, min_fraction: float = 0.0, min_voxels: int = 0) -> None:
        self.min_fraction, self.min_voxels = float(min_fraction), int(min_voxels)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.min_fraction <= 0 and self.min_voxels <= 0:
            return img
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        out = np.stack([remove_small_components(c, self.min_fraction, self.min_voxels) for c in array])
        if isinstance(img, MetaTensor):
            return MetaTensor(
                torch.as_tensor(out, device=img.device), meta=img.meta, applied_operations=img.applied_operations
            )
        return torch.as_tensor(out, device=img.device) if isinstance(img, torch.Tensor) else out


class RemoveSmallComponentsd(MapTransform):
    """Dictionary :class:`RemoveSmallComponents`."""

    def __init__(
        self, keys: KeysCollection, min_fraction: float = 0.0, min_voxels: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.filter = RemoveSmallComponents(min_fraction, min_voxels)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.filter(d[key])
        return d
