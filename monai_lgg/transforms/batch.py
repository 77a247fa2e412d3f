"""Batched training augmentation in torch: the same random flips, rotations, scalings and intensity changes
as :func:`monai_lgg.transforms.presets.augment`, applied to a whole ``(B, C, H, W)`` batch at once on the
batch's device (CPU or GPU), with one ``grid_sample`` for all geometric changes.

The parameter names and defaults are those of ``presets.augment`` (tested), and each random draw follows
the distribution of the MONAI transform it replaces (tested on a fixed seed):

- ``RandFlipd(spatial_axis=1)``: a left-right flip with probability ``flip_prob``;
- ``RandAffined``: with probability ``affine_prob``, a rotation uniform in +-``rotate_degrees`` and a
  scaling ``1 + U(-scale, scale)`` drawn independently per axis, bilinear for the image, nearest for the
  label, zero padding (same geometry as MONAI's ``Affine``, ``align_corners=False``: tested);
- ``SpatialPadd`` + ``RandSpatialCropd`` when ``spatial_size`` is given (symmetric pad, random integer crop);
- ``RandShiftIntensityd`` / ``RandScaleIntensityd``: ``x + U(-shift, shift)`` and ``x * (1 + U(-s, s))``,
  each with probability ``intensity_prob``, one draw per slice for all channels.

Randomness comes from torch's generator on the batch's device (seeded by ``monai.utils.set_determinism``
and the training handlers' per-epoch seeding), so a GPU batch is augmented with no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_lgg.transforms.brain import SEQUENCES, flair_substitution_index

__all__ = ["RandBatchAugment", "affine_theta", "affine_grid"]


def affine_theta(
    matrix: torch.Tensor, shift: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int]
) -> torch.Tensor:
    """``affine_grid`` matrices from pixel-space transforms (MONAI's ``Affine`` convention).

    An output pixel at centred pixel coordinates ``p`` (row, column; 0 at the image centre) samples
    the input at ``matrix @ p + shift``. ``grid_sample`` wants normalised ``(x, y)`` = (column, row)
    coordinates with ``align_corners=False``, where a centred coordinate ``p`` of an axis of ``n`` pixels
    is ``2 p / n``.

    Args:
        matrix: ``(B, 2, 2)`` in (row, column) order.
        shift: ``(B, 2)`` centred pixel offsets in the input, (row, column).
        in_size: input ``(H, W)``.
        out_size: output ``(h, w)``.

    Returns:
        ``(B, 2, 3)`` matrices for ``torch.nn.functional.affine_grid``.
    """
    half_in = (in_size[0] / 2, in_size[1] / 2)
    half_out = (out_size[0] / 2, out_size[1] / 2)
    # D_in^-1 M D_out and D_in^-1 shift, with Python scalars only (no host -> device copy, no sync on GPU);
    # rows and columns are swapped on the way: (row, column) -> (x, y) = (column, row)
    linear = torch.stack(
        [torch.stack([matrix[:, i, j] * (half_out[j] / half_in[i]) for j in (1, 0)], dim=-1) for i in (1, 0)], dim=1
    )
    offset = torch.stack([shift[:, i] / half_in[i] for i in (1, 0)], dim=-1)
    return torch.cat([linear, offset[:, :, None]], dim=2)


def affine_grid(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``torch.nn.functional.affine_grid(theta, (B, 1, h, w), align_corners=False)``, computed faster.

    One broadcast multiply-add per output coordinate instead of a batched matrix product over a
    materialised base grid (about 20x less time on CPU at 256 x 256). The result is a ``(B, h, w, 2)``
    view, which ``grid_sample`` accepts.
    """
    h, w = size
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1
    rows = theta[:, :, 1, None, None] * ys[:, None] + theta[:, :, 2, None, None]  # (B, 2, h, 1)
    return torch.addcmul(rows, theta[:, :, 0, None, None], xs).permute(0, 2, 3, 1)


class RandBatchAugment(torch.nn.Module):
    """Random 2D augmentation of a batch ``(B, C, H, W)`` (image) and ``(B, 1, H, W)`` (label).

    The label is a binary mask or a map of class indices ``0 .. K-1``: it is resampled with
    nearest-neighbour interpolation and zero (background) padding, so its values stay exactly those of
    the input (tested for multi-class maps).

    Args:
        spatial_size: output ``(h, w)``: pad / randomly crop to it (``None``: keep the input size).
        flip_prob: probability of a left-right flip (last axis).
        affine_prob: probability of a random rotation and scaling.
        rotate_degrees: rotation range, +- degrees.
        scale: scaling range per axis, ``1 +- scale``.
        intensity_prob: probability of each intensity shift / scale.
        intensity_shift: shift range, +-.
        intensity_scale: scale range, ``1 +- intensity_scale``.
        elastic_prob: must be 0 (elastic deformation is only in the per-sample MONAI chain).
        flair_prob: probability that a slice's pre-contrast, post-contrast or both channels (one of the three,
            equally likely) are replaced by its FLAIR channel, as the data set's release does for patients
            missing a sequence, so the model has seen such input (LGG images: 3 channels, or 3 per slice of a
            2.5D input; other channel counts are left as they are).
        flair_channel: the FLAIR channel.

    Example::

        >>> aug = RandBatchAugment()
        >>> image, label = aug(torch.randn(8, 3, 64, 64), torch.zeros(8, 1, 64, 64))
        >>> image.shape, label.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 1, 64, 64]))
    """

    def __init__(
        self,
        spatial_size: Sequence[int] | None = None,
        flip_prob: float = 0.5,
        affine_prob: float = 0.5,
        rotate_degrees: float = 15.0,
        scale: float = 0.05,
        intensity_prob: float = 0.5,
        intensity_shift: float = 0.1,
        intensity_scale: float = 0.1,
        elastic_prob: float = 0.0,
        flair_prob: float = 0.0,
        flair_channel: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= flair_prob <= 1.0:
            raise ValueError(f"flair_prob must be in [0, 1], got {flair_prob}")
        self.flair_prob, self.flair_channel = flair_prob, flair_channel
        if elastic_prob > 0:
            raise ValueError("elastic_prob > 0 needs the per-sample MONAI augmentation (augmentation='loader')")
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.flip_prob, self.affine_prob = flip_prob, affine_prob
        self.rotate = math.radians(rotate_degrees)
        self.scale = scale
        self.intensity_prob = intensity_prob
        self.intensity_shift, self.intensity_scale = intensity_shift, intensity_scale

    @staticmethod
    def _uniform(n: int, low: float, high: float, device: torch.device, shape: tuple = ()) -> torch.Tensor:
        return torch.rand((n, *shape), device=device) * (high - low) + low

    def _chance(self, n: int, prob: float, device: torch.device) -> torch.Tensor:
        return torch.rand(n, device=device) < prob

    def randomize(self, batch_size: int, in_size: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Draw the parameters of every slice of a batch (all on ``device``).

        Returns:
            ``flip``, ``affine``, ``shift_on``, ``scale_on`` (bool ``(B,)``), ``angle`` (radians ``(B,)``),
            ``zoom`` (``(B, 2)``, row and column factors), ``offset`` and ``factor`` (``(B,)``), ``crop``
            (``(B, 2)`` centred pixel offset of the crop in the input).
        """
        n = batch_size
        params = {
            "flip": self._chance(n, self.flip_prob, device),
            "affine": self._chance(n, self.affine_prob, device),
            "angle": self._uniform(n, -self.rotate, self.rotate, device),
            "zoom": self._uniform(n, 1 - self.scale, 1 + self.scale, device, (2,)),
            "shift_on": self._chance(n, self.intensity_prob, device),
            "offset": self._uniform(n, -self.intensity_shift, self.intensity_shift, device),
            "scale_on": self._chance(n, self.intensity_prob, device),
            "factor": self._uniform(n, -self.intensity_scale, self.intensity_scale, device),
        }
        params["crop"] = self._crop_offsets(n, in_size, device)
        # 0: keep, 1: pre-contrast replaced, 2: post-contrast replaced, 3: both
        params["flair"] = torch.where(
            self._chance(n, self.flair_prob, device), torch.randint(1, 4, (n,), device=device), 0
        )
        return params

    def substitute_flair(self, image: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """Replace the other channels of a ``(B, 3k, H, W)`` batch by FLAIR where ``pattern`` says (see ``randomize``),
        in every channel group of a 2.5D input (:func:`~monai_lgg.transforms.brain.flair_substitution_index`)."""
        if self.flair_prob == 0 or image.shape[1] % SEQUENCES:
            return image
        index = flair_substitution_index(image.shape[1], pattern, self.flair_channel)
        return image.gather(1, index[:, :, None, None].expand_as(image))

    def _crop_offsets(self, n: int, in_size: Sequence[int], device: torch.device) -> torch.Tensor:
        """Centred pixel offsets of ``SpatialPad`` (symmetric) + ``RandSpatialCrop`` (random integer start)."""
        out_size = self.spatial_size or tuple(in_size)
        offsets = []
        for size, roi in zip(in_size, out_size, strict=True):
            padded = max(size, roi)
            pad_before = (padded - size) // 2
            start = torch.randint(0, padded - roi + 1, (n,), device=device).to(torch.float32)
            offsets.append(start + (roi - 1) / 2 - pad_before - (size - 1) / 2)
        return torch.stack(offsets, dim=1)

    def matrices(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-space sampling matrices ``flip @ rotate @ scale`` (row, column) and shifts from drawn parameters."""
        cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
        rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        matrix = rotate * params["zoom"][:, None, :]  # R @ diag(zoom)
        eye = torch.eye(2, device=matrix.device, dtype=matrix.dtype).expand_as(matrix)
        matrix = torch.where(params["affine"][:, None, None], matrix, eye)
        col_sign = torch.where(params["flip"], -1.0, 1.0).to(matrix.dtype)
        matrix = matrix * torch.stack([torch.ones_like(col_sign), col_sign], -1)[:, :, None]  # diag(1, +-1) @ M
        return matrix, params["crop"].to(matrix.dtype)

    def apply(
        self, image: torch.Tensor, label: torch.Tensor | None, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply drawn parameters: FLAIR substitution, one grid for flip + affine + crop, then intensity changes."""
        if "flair" in params:
            image = self.substitute_flair(image, params["flair"])
        in_size = tuple(image.shape[-2:])
        out_size = self.spatial_size or in_size
        if self.flip_prob > 0 or self.affine_prob > 0 or out_size != in_size:  # else no resampling at all
            matrix, shift = self.matrices(params)
            theta = affine_theta(matrix, shift, in_size, out_size)
            grid = affine_grid(theta, out_size)
            image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if label is not None:
                label = label.to(image.dtype)
                label = F.grid_sample(label, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        offset = torch.where(params["shift_on"], params["offset"], 0.0)[:, None, None, None].to(image.dtype)
        factor = torch.where(params["scale_on"], 1.0 + params["factor"], 1.0)[:, None, None, None].to(image.dtype)
        image = torch.addcmul(offset * factor, image, factor)  # (image + offset) * factor in one pass
        return image, label

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a float batch; returns ``(image, label)`` (label ``None`` when not given)."""
        params = self.randomize(image.shape[0], image.shape[-2:], image.device)
        return self.apply(image, label, params)
