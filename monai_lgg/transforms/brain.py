"""Whole-slice brain geometry: a per-volume brain box, resized to the network's size, and back.

The LGG slices are 256 x 256 with the brain filling about half of them. Instead of random patches of
the full slice, the network sees the whole brain of each slice at a reduced, fixed resolution: per
volume, the box around the brain (FLAIR above ``fraction`` of its maximum, as the data set's authors
threshold it), made square around its centre (padding with zeros where it leaves the image) and
resized to ``spatial_size``. Predictions are resized back into the box and pasted into the original
grid, so every output keeps the input's geometry (the Kaggle 256 x 256 slices).

Normalisation is per volume here too: per channel, clip to the ``lower``..``upper`` percentiles of the
brain voxels, then z-score over them. A missing sequence replaced by FLAIR in the release stays
identical to the normalised FLAIR channel, which the training augmentation reproduces
(:class:`~monai_lgg.transforms.batch.RandBatchAugment`'s ``flair_prob``).

Array transforms (:class:`BrainCrop`, :class:`BrainNormalizeIntensity`) work on channel-first volumes
``(C, H, W, D)`` or slices ``(C, H, W)`` (a one-slice volume); the dictionary versions end in ``d``.
:class:`BrainCrop` is invertible, so ``Invertd`` maps predictions back in bundle postprocessing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform, Transform
from monai.utils import TraceKeys, convert_to_tensor, ensure_tuple_rep

__all__ = [
    "Box",
    "brain_mask",
    "brain_box",
    "crop_resize",
    "paste_back",
    "normalize_volume",
    "BrainCrop",
    "BrainCropd",
    "BrainNormalizeIntensity",
    "BrainNormalizeIntensityd",
    "flair_substitution_index",
    "RandFlairSubstituted",
]

Box = tuple[int, int, int]
"""A square box ``(top, left, side)`` in pixels of the slice grid; it may extend beyond the image."""

FLAIR = 1  # channel of FLAIR in the LGG images (pre-contrast, FLAIR, post-contrast)
SEQUENCES = 3  # channels of one LGG slice; 2.5D input repeats them per context slice (AddContextSlices)


def _reference_channel(image: torch.Tensor, channel: int) -> torch.Tensor:
    """The channel that defines the brain: ``channel`` (FLAIR) when present, else the first (grey images)."""
    return image[channel if image.shape[0] > channel else 0]


def brain_mask(image: torch.Tensor, channel: int = FLAIR, fraction: float = 0.1) -> torch.Tensor:
    """Brain voxels of a channel-first image: the reference channel above ``fraction`` of its maximum.

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)``.
        channel: reference channel (FLAIR); the first channel when the image has fewer.
        fraction: threshold as a fraction of the maximum (the data set's authors use 0.1).

    Returns:
        a bool tensor of the image's spatial shape (all False for an empty image).
    """
    reference = _reference_channel(image, channel).float()
    peak = reference.max()
    if peak <= 0:
        return torch.zeros_like(reference, dtype=torch.bool)
    return reference > fraction * peak


def brain_box(mask: torch.Tensor, margin: float = 0.0) -> Box:
    """The square box around the true pixels of a ``(H, W)`` or ``(H, W, D)`` mask (all slices together).

    The box is centred on the bounding box of the mask, its side the longer side of that bounding box
    enlarged by ``margin`` on each side (a fraction of the side). An empty mask gives the square around
    the whole image.
    """
    plane = mask.reshape(mask.shape[0], mask.shape[1], -1).any(-1)
    height, width = plane.shape
    rows, cols = plane.any(1).nonzero(), plane.any(0).nonzero()
    if rows.numel() == 0:
        r0, r1, c0, c1 = 0, height, 0, width
    else:
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        c0, c1 = int(cols.min()), int(cols.max()) + 1
    side = max(r1 - r0, c1 - c0)
    side = max(1, int(round(side * (1 + 2 * margin))))
    return (r0 + r1 - side) // 2, (c0 + c1 - side) // 2, side


def _as_slices(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(C, H, W, D)`` -> ``(D, C, H, W)``; ``(C, H, W)`` -> ``(1, C, H, W)``."""
    if x.ndim == 3:
        return x[None], False
    if x.ndim == 4:
        return x.permute(3, 0, 1, 2), True
    raise ValueError(f"expected (C, H, W) or (C, H, W, D), got shape {tuple(x.shape)}")


def _from_slices(x: torch.Tensor, volume: bool) -> torch.Tensor:
    return x.permute(1, 2, 3, 0).contiguous() if volume else x[0]


def crop_resize(x: torch.Tensor, box: Box, spatial_size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Crop ``x`` (``(C, H, W)`` or ``(C, H, W, D)``) to ``box`` (zero padding outside it), resize each slice.

    Args:
        x: channel-first slice or volume; cast to float32.
        box: ``(top, left, side)`` from :func:`brain_box`.
        spatial_size: output ``(h, w)`` of each slice.
        mode: ``"bilinear"`` (anti-aliased when shrinking) or ``"nearest"``.
    """
    slices, volume = _as_slices(torch.as_tensor(x).float())
    top, left, side = box
    height, width = slices.shape[-2:]
    # F.pad with negative amounts crops: one call pads where the box leaves the image and crops elsewhere.
    boxed = F.pad(slices, (-left, left + side - width, -top, top + side - height))
    size = tuple(int(s) for s in spatial_size)
    if tuple(boxed.shape[-2:]) != size:
        if mode == "nearest":
            boxed = F.interpolate(boxed, size=size, mode="nearest-exact")
        else:
            boxed = F.interpolate(boxed, size=size, mode=mode, align_corners=False, antialias=side > min(size))
    return _from_slices(boxed, volume)


def paste_back(x: torch.Tensor, box: Box, out_size: Sequence[int], fill: float = 0.0) -> torch.Tensor:
    """The inverse of :func:`crop_resize`: resize ``x`` to the box and place it in an ``out_size`` grid.

    Args:
        x: ``(K, h, w)`` or ``(K, h, w, D)``, e.g. probabilities (interpolated bilinearly).
        box: the box used by :func:`crop_resize`.
        out_size: ``(H, W)`` of the original grid.
        fill: value outside the box (0: no tumour probability).
    """
    slices, volume = _as_slices(torch.as_tensor(x).float())
    top, left, side = box
    height, width = (int(s) for s in out_size)
    if tuple(slices.shape[-2:]) != (side, side):
        slices = F.interpolate(slices, size=(side, side), mode="bilinear", align_corners=False)
    pasted = F.pad(slices, (left, width - left - side, top, height - top - side), value=fill)
    return _from_slices(pasted, volume)


def normalize_volume(
    image: torch.Tensor,
    brain: torch.Tensor,
    lower: float = 1.0,
    upper: float = 99.0,
    clip: float | None = 5.0,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Per channel: clip to the ``lower``..``upper`` percentiles of the brain voxels, then z-score over them.

    Args:
        image: ``(C, ...)`` channel-first.
        brain: bool mask of the spatial shape (e.g. :func:`brain_mask`); fewer than 2 brain voxels: all voxels.
        lower, upper: percentiles of the clip.
        clip: clip the z-scores to ``[-clip, clip]`` (``None``: no clip).
        eps: floor of the standard deviation.
    """
    x = torch.as_tensor(image).float()
    inside = brain if int(brain.sum()) >= 2 else torch.ones_like(brain, dtype=torch.bool)
    out = torch.empty_like(x)
    quantiles = torch.tensor([lower / 100.0, upper / 100.0])
    for c in range(x.shape[0]):
        values = x[c][inside]
        if values.numel() > 2_000_000:  # torch.quantile's size limit; a regular subsample keeps the percentiles
            values = values[:: values.numel() // 1_000_000 + 1]
        low, high = torch.quantile(values, quantiles).tolist()
        values = values.clamp(low, high)
        mean, std = values.mean(), values.std().clamp_min(eps)
        out[c] = (x[c].clamp(low, high) - mean) / std
    return out.clamp(-clip, clip) if clip is not None else out


class BrainCrop(InvertibleTransform):
    """Crop a slice or volume to its square brain box and resize each slice to ``spatial_size`` (invertible).

    The box is computed from the image itself (:func:`brain_mask`, :func:`brain_box`) or given, so the
    dictionary version crops image and label with the image's box. ``inverse`` resizes a prediction on
    the cropped grid (e.g. probabilities ``(K, h, w, D)``) back into the box and pastes it into the
    original grid, with 0 outside the box.

    Args:
        spatial_size: ``(h, w)`` the network sees.
        channel: reference channel of the brain (FLAIR).
        fraction: brain threshold, a fraction of the reference channel's maximum.
        margin: enlarge the box by this fraction of its side on each side.
        mode: ``"bilinear"`` or ``"nearest"``.

    Example::

        >>> crop = BrainCrop((64, 64))
        >>> image = torch.zeros(3, 256, 256, 4); image[:, 60:200, 40:220] = 100
        >>> small = crop(image); small.shape
        torch.Size([3, 64, 64, 4])
        >>> crop.inverse(small[:1]).shape
        torch.Size([1, 256, 256, 4])
    """

    backend = [convert_to_tensor.__name__]

    def __init__(
        self,
        spatial_size: Sequence[int] = (128, 128),
        channel: int = FLAIR,
        fraction: float = 0.1,
        margin: float = 0.0,
        mode: str = "bilinear",
    ) -> None:
        self.spatial_size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 2))
        self.channel, self.fraction, self.margin, self.mode = channel, fraction, margin, mode

    def compute_box(self, img: NdarrayOrTensor) -> Box:
        """The square brain box of a channel-first image."""
        return brain_box(brain_mask(convert_to_tensor(img, track_meta=False), self.channel, self.fraction), self.margin)

    def __call__(self, img: NdarrayOrTensor, box: Box | None = None, mode: str | None = None) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=True)
        box = self.compute_box(img) if box is None else tuple(int(b) for b in box)
        plain = img.as_tensor() if isinstance(img, MetaTensor) else img
        out = crop_resize(plain, box, self.spatial_size, mode or self.mode)
        if not isinstance(img, MetaTensor):
            return out
        # The affine is left as it was: outputs are only saved after inversion, back in the input's grid.
        out = MetaTensor(out, meta=img.meta, applied_operations=list(img.applied_operations))
        self.push_transform(out, orig_size=tuple(img.shape[1:]), extra_info={"box": list(box)})
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        transform = self.pop_transform(data)
        box = tuple(int(b) for b in transform[TraceKeys.EXTRA_INFO]["box"])
        height, width = (int(s) for s in transform[TraceKeys.ORIG_SIZE][:2])
        plain = data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)
        out = paste_back(plain, box, (height, width))
        if isinstance(data, MetaTensor):
            return MetaTensor(out, meta=data.meta, applied_operations=list(data.applied_operations))
        return out


class BrainCropd(MapTransform, InvertibleTransform):
    """Dictionary :class:`BrainCrop`: every key cropped with the box of ``source_key`` (the image).

    Args:
        keys: keys to crop (e.g. image and label).
        source_key: key whose brain defines the box.
        spatial_size, channel, fraction, margin: see :class:`BrainCrop`.
        mode: interpolation per key (``"bilinear"`` for images; labels resampled bilinearly and then
            thresholded at 0.5 keep small lesions better than ``"nearest"``).
        allow_missing_keys: skip absent keys (e.g. no label at inference).
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str = "image",
        spatial_size: Sequence[int] = (128, 128),
        channel: int = FLAIR,
        fraction: float = 0.1,
        margin: float = 0.0,
        mode: Sequence[str] | str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.source_key = source_key
        self.cropper = BrainCrop(spatial_size, channel, fraction, margin)
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        box = self.cropper.compute_box(d[self.source_key])
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.cropper(d[key], box, mode)
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


class BrainNormalizeIntensity(Transform):
    """Per-volume normalisation over the brain (:func:`normalize_volume` on :func:`brain_mask`).

    One brain mask per input: a volume ``(C, H, W, D)`` is normalised as a whole (the recipe's
    per-volume statistics), a slice ``(C, H, W)`` by itself.

    Args:
        channel, fraction: the brain (see :func:`brain_mask`).
        lower, upper, clip: see :func:`normalize_volume`.
    """

    backend = [convert_to_tensor.__name__]

    def __init__(
        self,
        channel: int = FLAIR,
        fraction: float = 0.1,
        lower: float = 1.0,
        upper: float = 99.0,
        clip: float | None = 5.0,
    ) -> None:
        self.channel, self.fraction, self.lower, self.upper, self.clip = channel, fraction, lower, upper, clip

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=True)
        plain = img.as_tensor() if isinstance(img, MetaTensor) else img
        brain = brain_mask(plain, self.channel, self.fraction)
        out = normalize_volume(plain, brain, self.lower, self.upper, self.clip)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=img.meta, applied_operations=list(img.applied_operations))
        return out


class BrainNormalizeIntensityd(MapTransform):
    """Dictionary :class:`BrainNormalizeIntensity`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = BrainNormalizeIntensity(**kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


def flair_substitution_index(channels: int, pattern: torch.Tensor, flair_channel: int = FLAIR) -> torch.Tensor:
    """Where each channel is copied from when pre-contrast, post-contrast or both are replaced by FLAIR.

    The channels are groups of the three sequences (pre-contrast, FLAIR, post-contrast), one group per slice
    of a 2.5D input (:class:`~monai_lgg.transforms.array.AddContextSlices`): a patient's missing sequence is
    missing in every slice, so each group's own FLAIR replaces the same sequences.

    Args:
        channels: channels of the image (a multiple of 3; any other count is left as it is).
        pattern: ``(B,)`` per sample: 0 keep, 1 pre-contrast replaced, 2 post-contrast replaced, 3 both.
        flair_channel: FLAIR's place in each group.

    Returns:
        ``(B, channels)`` source channel of every output channel (``torch.gather`` / indexing order).
    """
    index = torch.arange(channels, device=pattern.device).expand(pattern.shape[0], channels)
    if channels % SEQUENCES:
        return index
    position = index % SEQUENCES
    others = [c for c in range(SEQUENCES) if c != flair_channel]  # pre-contrast, post-contrast
    for bit, channel in enumerate(others):
        replace = (pattern.bitwise_and(1 << bit) > 0)[:, None] & (position == channel)
        index = torch.where(replace, index - position + flair_channel, index)
    return index


class RandFlairSubstituted(RandomizableTransform, MapTransform):
    """Replace pre-contrast, post-contrast or both channels (equally likely) of a slice by its FLAIR channel.

    The Kaggle release stores a patient's missing sequence as a copy of FLAIR; with probability ``prob`` a
    training slice is made to look like that, so a model has seen such input. The per-sample twin of
    :class:`~monai_lgg.transforms.batch.RandBatchAugment`'s ``flair_prob``. A 2.5D image (channel groups of the
    three sequences, one per context slice) has the same sequences replaced in every group
    (:func:`flair_substitution_index`); images whose channels are not a multiple of 3 pass unchanged.

    Args:
        keys: image keys (``(3k, H, W)`` or ``(3k, H, W, D)``).
        prob: probability of a substitution.
        flair_channel: the FLAIR channel.
    """

    def __init__(
        self, keys: KeysCollection, prob: float = 0.0, flair_channel: int = FLAIR, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.flair_channel = flair_channel
        self.pattern = 0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.pattern = int(self.R.randint(1, 4)) if self._do_transform else 0

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self.pattern:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            if image.shape[0] % SEQUENCES == 0:
                index = flair_substitution_index(image.shape[0], torch.tensor([self.pattern]), self.flair_channel)
                d[key] = image[index[0]]
        return d
