"""The transform chains, written once and shared by training, validation, inference and every bundle.

Loading differs by input form (a NIfTI patient volume, or a 2D Kaggle TIFF slice); everything after
loading is the same deterministic preprocessing, followed at training time by 2D augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Rand2DElasticd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from monai_lgg.data.kaggle import CHANNEL_NAMES
from monai_lgg.data.readers import NiftiVolumeReader, SliceImageReader
from monai_lgg.transforms.dictionary import (
    CheckChannelsd,
    CheckLabelValuesd,
    CheckSameShaped,
    PinnedLoadImaged,
    SliceWiseNormalizeIntensityd,
)

__all__ = ["load", "preprocess", "augment", "volume_transforms", "slice_transforms", "train_slice_transforms"]


def _keys(image_key: str, label_key: str | None) -> list[str]:
    return [image_key] + ([label_key] if label_key else [])


def load(
    form: str = "volume", image_key: str = "image", label_key: str | None = "label", image_channels: int | None = 3
) -> list:
    """Load with a pinned reader (no silent fallback that could swap axes) and keep the stored dtype.

    Bad files (missing, empty, corrupt, truncated, a 2D NIfTI where a volume is expected, NaN or
    infinite values, a wrong channel count, a mask whose size differs from the image's) raise
    :class:`~monai_lgg.errors.DataProblem` naming the file (inside a ``Compose`` it is wrapped in
    MONAI's ``RuntimeError``; see :func:`monai_lgg.errors.reraise_input_errors`).

    Args:
        form: ``"volume"`` (NIfTI, one file per modality stacked as channels) or ``"slice"`` (TIFF/PNG).
        image_key: key of the image.
        label_key: key of the label (``None``: no label).
        image_channels: channels the image must have (``None``: any); labels must have one.
    """
    if form not in ("volume", "slice"):
        raise ValueError(f"form must be 'volume' or 'slice', got {form!r}")
    reader = NiftiVolumeReader() if form == "volume" else SliceImageReader()
    keys = _keys(image_key, label_key)
    chain: list = [PinnedLoadImaged(keys, reader=reader, image_only=True, dtype=None), EnsureChannelFirstd(keys)]
    if image_channels is not None:
        what = ", ".join(CHANNEL_NAMES) if image_channels == len(CHANNEL_NAMES) else ""
        chain.append(CheckChannelsd(image_key, image_channels, what))
    if label_key:
        chain += [CheckChannelsd(label_key, 1, "one binary mask"), CheckSameShaped(label_key, reference_key=image_key)]
    return chain


def preprocess(
    image_key: str = "image",
    label_key: str | None = "label",
    slice_dim: int | None = None,
    normalization: str = "zscore",
    out_channels: int = 1,
) -> list:
    """Deterministic preprocessing shared by every entry: per-slice normalisation, float label.

    Args:
        slice_dim: ``-1`` for channel-first volumes (slices on the last axis), ``None`` for 2D slices.
        normalization: ``"zscore"`` or ``"percentile"`` (see ``SliceWiseNormalizeIntensity``).
        out_channels: the network's outputs. 1 (binary): the label is thresholded at 0.5 (any mask
            becomes {0, 1}); ``K > 1`` classes: the label map is kept as it is and must hold the class
            indices ``0 .. K-1`` (``CheckLabelValuesd``).
    """
    chain: list = [SliceWiseNormalizeIntensityd(image_key, slice_dim=slice_dim, method=normalization)]
    if label_key and out_channels > 1:
        chain.append(CheckLabelValuesd(label_key, num_classes=out_channels))
    elif label_key:
        chain.append(AsDiscreted(label_key, threshold=0.5))  # {0,1} and Kaggle's {0,255} alike
    chain.append(EnsureTyped(_keys(image_key, label_key), dtype=np.float32))
    return chain


def augment(
    image_key: str = "image",
    label_key: str | None = "label",
    spatial_size: Sequence[int] | None = None,
    flip_prob: float = 0.5,
    affine_prob: float = 0.5,
    rotate_degrees: float = 15.0,
    scale: float = 0.05,
    intensity_prob: float = 0.5,
    intensity_shift: float = 0.1,
    intensity_scale: float = 0.1,
    elastic_prob: float = 0.0,
) -> list:
    """2D training augmentation: left-right flip, rotation, scaling, intensity shift/scale, optional elastic.

    Args:
        spatial_size: if given, pad to at least this size and take a random crop of it (larger images
            are trained on patches and inferred with a sliding window; nothing is resized).
        flip_prob: probability of a left-right flip.
        affine_prob: probability of a random rotation (+-``rotate_degrees``) and scaling (+-``scale``).
        intensity_prob: probability of each intensity shift / scale.
        elastic_prob: probability of a 2D elastic deformation (0 disables it).
    """
    keys = _keys(image_key, label_key)
    modes = ["bilinear", "nearest"][: len(keys)]
    chain: list = []
    if spatial_size is not None:
        chain += [SpatialPadd(keys, spatial_size), RandSpatialCropd(keys, spatial_size, random_size=False)]
    chain += [
        RandFlipd(keys, prob=flip_prob, spatial_axis=1),
        RandAffined(
            keys,
            prob=affine_prob,
            rotate_range=np.deg2rad(rotate_degrees),
            scale_range=(scale, scale),
            mode=modes,
            padding_mode="zeros",
        ),
        RandShiftIntensityd(image_key, offsets=intensity_shift, prob=intensity_prob),
        RandScaleIntensityd(image_key, factors=intensity_scale, prob=intensity_prob),
    ]
    if elastic_prob > 0:
        chain.append(Rand2DElasticd(keys, spacing=(20, 20), magnitude_range=(1, 2), prob=elastic_prob, mode=modes))
    chain.append(EnsureTyped(keys, track_meta=False))
    return chain


def volume_transforms(
    image_key: str = "image",
    label_key: str | None = "label",
    normalization: str = "zscore",
    image_channels: int | None = 3,
    out_channels: int = 1,
) -> Compose:
    """Load and preprocess a patient volume ``(C, H, W, D)`` for validation, evaluation or inference.

    ``image_channels``: see :func:`load`; ``out_channels``: see :func:`preprocess`.
    """
    chain = load("volume", image_key, label_key, image_channels)
    return Compose(chain + preprocess(image_key, label_key, -1, normalization, out_channels))


def slice_transforms(
    image_key: str = "image",
    label_key: str | None = "label",
    normalization: str = "zscore",
    train: bool = False,
    image_channels: int | None = 3,
    **augment_args,
) -> Compose:
    """Load and preprocess a 2D slice ``(C, H, W)``; with ``train``, add :func:`augment`.

    ``image_channels``: see :func:`load`.
    """
    chain = load("slice", image_key, label_key, image_channels) + preprocess(image_key, label_key, None, normalization)
    if train:
        chain += augment(image_key, label_key, **augment_args)
    return Compose(chain)


def train_slice_transforms(
    image_key: str = "image", label_key: str = "label", normalization: str = "zscore", out_channels: int = 1, **augment_args
) -> Compose:
    """Per-slice chain of :class:`~monai_lgg.data.datasets.VolumeSliceDataset` at training time.

    ``out_channels``: see :func:`preprocess` (labels of ``K > 1`` classes keep their values through the
    augmentation: it resamples labels with nearest-neighbour interpolation and pads with 0).
    """
    return Compose(
        preprocess(image_key, label_key, None, normalization, out_channels) + augment(image_key, label_key, **augment_args)
    )
