"""Conversion and validation of binary masks shared by the metric modules."""

from __future__ import annotations

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy, convert_to_tensor

__all__ = ["as_binary_tensor", "as_spatial_binary_array", "check_same_shape"]

_THRESHOLD_HINT = "threshold probabilities/logits first, e.g. with monai.transforms.AsDiscrete(threshold=0.5)"


def _check_binary_values(values: NdarrayOrTensor, name: str) -> None:
    if isinstance(values, torch.Tensor):
        is_binary = bool(((values == 0) | (values == 1)).all())
    else:
        is_binary = bool(np.isin(values, (0, 1)).all())
    if not is_binary:
        raise ValueError(f"{name} must be a binary mask with values in {{0, 1}}; {_THRESHOLD_HINT}.")


def as_binary_tensor(mask: NdarrayOrTensor, name: str) -> torch.Tensor:
    """Convert a 0/1 mask (numpy, torch or ``MetaTensor``) into a plain boolean ``torch.Tensor``.

    Args:
        mask: array of any shape whose values are all 0 or 1 (or booleans).
        name: name used in error messages.

    Returns:
        boolean tensor of the same shape and device, without metadata.

    Raises:
        ValueError: when ``mask`` holds values other than 0 and 1.
    """
    tensor = convert_to_tensor(mask, track_meta=False)
    if tensor.dtype != torch.bool:
        _check_binary_values(tensor, name)
        tensor = tensor != 0
    return tensor


def as_spatial_binary_array(mask: NdarrayOrTensor, name: str) -> np.ndarray:
    """Convert one mask into a boolean numpy array with spatial axes only.

    Accepted layouts are ``(H, W)``, ``(H, W, D)`` and channel-first ``(1, H, W, D)``; the single
    channel of the last one is dropped. A 3D array is always read as ``(H, W, D)``.

    Args:
        mask: 0/1 mask as numpy array or torch tensor.
        name: name used in error messages.

    Returns:
        boolean array of shape ``(H, W)`` or ``(H, W, D)``.

    Raises:
        ValueError: when the layout is not one of the above or values are not 0/1.
    """
    array = convert_to_numpy(mask)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(
                f"{name} with 4 dimensions must be channel-first (1, H, W, D) with one foreground channel, "
                f"got shape {tuple(array.shape)}."
            )
        array = array[0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W), (H, W, D) or (1, H, W, D), got {tuple(array.shape)}.")
    if array.dtype != np.bool_:
        _check_binary_values(array, name)
        array = array != 0
    return array


def check_same_shape(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` when ``a`` and ``b`` differ in shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
