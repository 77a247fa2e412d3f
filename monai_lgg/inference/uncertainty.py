"""Per-voxel uncertainty of a segmentation and its per-case summaries (``monai-lgg predict --uncertainty``).

Two well-known measures of a prediction averaged over ``T`` passes (ensemble members x flips; Gal 2016,
Depeweg et al. 2018), both in **bits** and scaled to ``[0, 1]``:

* **predictive entropy** ``H[p̄]`` of the mean probability ``p̄ = mean_t p_t``: the total uncertainty. For a
  binary map ``H[p̄] = -p̄ log2 p̄ - (1 - p̄) log2 (1 - p̄)``: 0 where ``p̄`` is 0 or 1, 1 bit at ``p̄ = 0.5``.
  For ``K`` classes ``-sum_k p̄_k log2 p̄_k / log2 K``. Defined for any model, even one network without
  test-time augmentation (``T = 1``); this is the map ``predict`` writes;
* **mutual information** ``H[p̄] - mean_t H[p_t]`` (the "BALD" score): the part of that entropy due to the
  passes disagreeing (the model's own doubt, rather than a boundary every pass finds ambiguous). Needs
  ``T >= 2``; never negative, never above the entropy.

Per case and per slice they are summarised over two regions of the predicted mask ``M`` (foreground: any
class > 0), each slice in its own plane (the networks are 2D and slices are thick):

* **tumour**: the voxels of ``M``;
* **border**: the band of voxels within ``width`` pixels (Euclidean, in-plane) of ``M``'s edge on either
  side: ``dilate(M, disk(width)) & ~erode(M, disk(width))`` per slice (3 pixels by default: about 3 mm on
  the 256² TCGA slices, 2-3 pixels of the 128² grid the UNet sees).

A region with no voxel (no tumour predicted) has no mean: its cells are left blank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["BORDER_WIDTH", "UNCERTAINTY_COLUMNS", "entropy", "border_band", "uncertainty_rows"]

BORDER_WIDTH = 3
"""Half-width in pixels of the band around the predicted tumour's border (``--uncertainty_border``)."""

UNCERTAINTY_COLUMNS = ("entropy_tumour", "entropy_border", "mutual_info_tumour", "mutual_info_border")
"""Columns added to the tumour tables: mean entropy / mutual information (bits) in the tumour and its border band."""

_EPS = 1e-7  # probabilities are clamped away from 0 and 1 before the logarithm (0 log 0 = 0)


def entropy(probability: torch.Tensor, class_dim: int | None = None) -> torch.Tensor:
    """Shannon entropy in bits, scaled to ``[0, 1]``, of binary or categorical probabilities.

    Args:
        probability: tumour probabilities (binary, ``class_dim=None``) or class probabilities along ``class_dim``.
        class_dim: the class axis of a ``K``-class map (removed in the result; the entropy is divided by
            ``log2 K``), or None for a binary map (Bernoulli entropy, same shape).

    Example::

        >>> entropy(torch.tensor([0.0, 0.5, 1.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    p = torch.as_tensor(probability).float()
    if class_dim is None:
        q = p.clamp(_EPS, 1 - _EPS)
        value = -(q * torch.log2(q) + (1 - q) * torch.log2(1 - q))
        return torch.where((p <= 0) | (p >= 1), torch.zeros_like(value), value).clamp(0, 1)
    classes = p.shape[class_dim]
    q = p.clamp_min(_EPS)
    value = -(p * torch.log2(q)).sum(class_dim) / math.log2(max(classes, 2))
    return value.clamp(0, 1)


def _disk(width: int) -> np.ndarray:
    """An in-plane disk of radius ``width`` as a ``(2w+1, 2w+1, 1)`` structuring element (no reach across slices)."""
    r = np.arange(-width, width + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= width**2)[..., None]


def border_band(mask: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """The voxels within ``width`` pixels of the edge of a ``(H, W, D)`` mask, inside or outside, slice by slice.

    ``dilate(M, disk) & ~erode(M, disk)`` with a Euclidean disk of radius ``width`` in each slice's plane; empty
    where the slice has no foreground.

    Example::

        >>> m = np.zeros((20, 20, 1), bool); m[5:15, 5:15] = True
        >>> int(border_band(m, 1).sum())  # 36 edge pixels inside the square, 40 outside (a radius-1 disk is a cross)
        76
    """
    foreground = np.asarray(mask) > 0
    if width < 1 or not foreground.any():
        return np.zeros_like(foreground)
    disk = _disk(int(width))
    grown = ndimage.binary_dilation(foreground, disk)
    shrunk = ndimage.binary_erosion(foreground, disk, border_value=0)
    return grown & ~shrunk


def _mean(values: np.ndarray, region: np.ndarray) -> float | str:
    return round(float(values[region].mean()), 5) if region.any() else ""


def uncertainty_rows(
    mask: np.ndarray,
    entropy_map: np.ndarray,
    mutual_information: np.ndarray | None = None,
    width: int = BORDER_WIDTH,
) -> list[dict]:
    """The :data:`UNCERTAINTY_COLUMNS` of every slice, then of the whole case (the tumour table's ``all`` row).

    Args:
        mask: the predicted mask ``(H, W, D)`` (foreground: any value > 0).
        entropy_map: predictive entropy ``(H, W, D)`` in ``[0, 1]``.
        mutual_information: ``(H, W, D)``, or None with a single pass (its columns are then blank).
        width: half-width of the border band (:func:`border_band`).

    Returns:
        ``D + 1`` dicts; a mean over an empty region is ``""`` (a blank cell).
    """
    tumour = np.asarray(mask) > 0
    band = border_band(tumour, width)
    information = None if mutual_information is None else np.asarray(mutual_information)
    maps = {"entropy": np.asarray(entropy_map), "mutual_info": information}

    def row(index: Sequence[int] | slice) -> dict:
        values = {}
        for name, values_map in maps.items():
            for region_name, region in (("tumour", tumour), ("border", band)):
                cell = "" if values_map is None else _mean(values_map[..., index], region[..., index])
                values[f"{name}_{region_name}"] = cell
        return values

    return [row([k]) for k in range(tumour.shape[-1])] + [row(slice(None))]
