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

from monai_lgg.bundle.settings import GEOMETRIES, NORMALIZATIONS, image_channels  # re-exported
from monai_lgg.imaging.channels import CHANNEL_NAMES
from monai_lgg.imaging.readers import NiftiVolumeReader, SliceImageReader
from monai_lgg.transforms.array import SliceWiseNormalizeIntensity
from monai_lgg.transforms.brain import BrainCropd, BrainNormalizeIntensityd, RandFlairSubstituted
from monai_lgg.transforms.dictionary import (
    AddContextSlicesd,
    CheckChannelsd,
    CheckLabelValuesd,
    CheckSameShaped,
    PinnedLoadImaged,
    SliceWiseNormalizeIntensityd,
)
from monai_lgg.transforms.orientation import ReorientToModeld

__all__ = [
    "GEOMETRIES",
    "NORMALIZATIONS",
    "load",
    "brain_geometry",
    "preprocess",
    "augment",
    "volume_transforms",
    "cached_volume_transforms",
    "slice_transforms",
    "train_slice_transforms",
    "default_normalization",
    "check_normalization",
    "slice_normalizer",
    "image_channels",
    "context_transform",
]


def check_geometry(geometry: str) -> str:
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}; got {geometry!r}")
    return geometry


def default_normalization(geometry: str = "patch") -> str:
    """The normalisation of a geometry unless told otherwise: ``volume`` for ``brain``, ``zscore`` for ``patch``.

    This is how weights whose sidecar records no ``normalization`` were trained (the key came later), so it
    must not change. The bundles' recipe sets its own (``"normalization": "zscore"`` in ``train.json``, which
    every new sidecar records).
    """
    return "volume" if check_geometry(geometry) == "brain" else "zscore"


def check_normalization(normalization: str | None, geometry: str = "patch") -> str:
    """``normalization`` checked against :data:`NORMALIZATIONS` and the geometry (``None``: the geometry's default)."""
    check_geometry(geometry)
    if normalization is None:
        return default_normalization(geometry)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; got {normalization!r}")
    if normalization == "volume" and geometry != "brain":
        raise ValueError("normalization 'volume' needs geometry 'brain' (its statistics are over the brain mask)")
    return normalization


def slice_normalizer(normalization: str, slice_dim: int | None = -1) -> SliceWiseNormalizeIntensity | None:
    """The per-slice array normaliser of ``normalization``; ``None`` for ``volume`` (done per volume) and ``none``."""
    return None if normalization in ("none", "volume") else SliceWiseNormalizeIntensity(slice_dim, method=normalization)


def context_transform(image_key: str = "image", context_slices: int = 0) -> list:
    """2.5D input: :class:`~monai_lgg.transforms.dictionary.AddContextSlicesd` on a volume (nothing for 0)."""
    return [AddContextSlicesd(image_key, context_slices)] if context_slices else []


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


def brain_geometry(
    image_key: str = "image",
    label_key: str | None = "label",
    spatial_size: Sequence[int] = (128, 128),
    label_mode: str = "bilinear",
    normalize: bool = True,
) -> list:
    """The ``brain`` geometry of a channel-first volume: crop to the square brain box, resize, normalise per volume.

    ``label_key`` (``None``: the image only, e.g. in evaluation, where the label stays in the input's grid and
    the prediction is inverted back onto it) is cropped with the image's box and resampled with ``label_mode``:
    bilinearly for a binary mask (the label step of :func:`preprocess` thresholds it again at 0.5, which keeps
    small lesions better than nearest-neighbour), ``"nearest"`` for class-index maps. ``normalize=False`` only
    crops and resizes (normalisation ``zscore``: each slice is normalised later, as in the ``patch`` geometry).
    """
    keys = _keys(image_key, label_key)
    crop = BrainCropd(keys, source_key=image_key, spatial_size=spatial_size, mode=["bilinear", label_mode][: len(keys)])
    return [crop, BrainNormalizeIntensityd(image_key)] if normalize else [crop]


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
        normalization: ``"zscore"`` or ``"percentile"`` (see ``SliceWiseNormalizeIntensity``), ``"volume"`` (done
            per volume already, by :func:`brain_geometry`) or ``"none"``.
        out_channels: the network's outputs. 1 (binary): the label is thresholded at 0.5 (any mask
            becomes {0, 1}); ``K > 1`` classes: the label map is kept as it is and must hold the class
            indices ``0 .. K-1`` (``CheckLabelValuesd``).
    """
    chain: list = []
    if normalization not in ("none", "volume"):
        chain.append(SliceWiseNormalizeIntensityd(image_key, slice_dim=slice_dim, method=normalization))
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
    flair_prob: float = 0.0,
    flair_channel: int = 1,
) -> list:
    """2D training augmentation: left-right flip, rotation, scaling, intensity shift/scale, optional elastic.

    Args:
        spatial_size: if given, pad to at least this size and take a random crop of it (larger images
            are trained on patches and inferred with a sliding window; nothing is resized).
        flip_prob: probability of a left-right flip.
        affine_prob: probability of a random rotation (+-``rotate_degrees``) and scaling (+-``scale``).
        intensity_prob: probability of each intensity shift / scale.
        elastic_prob: probability of a 2D elastic deformation (0 disables it).
        flair_prob: probability that pre-contrast, post-contrast or both are replaced by FLAIR
            (:class:`~monai_lgg.transforms.brain.RandFlairSubstituted`).
        flair_channel: the FLAIR channel.
    """
    keys = _keys(image_key, label_key)
    modes = ["bilinear", "nearest"][: len(keys)]
    chain: list = (
        [RandFlairSubstituted(image_key, prob=flair_prob, flair_channel=flair_channel)] if flair_prob > 0 else []
    )
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
    normalization: str | None = None,
    image_channels: int | None = 3,
    out_channels: int = 1,
    geometry: str = "patch",
    spatial_size: Sequence[int] = (128, 128),
    context_slices: int = 0,
    reorient: bool = False,
) -> Compose:
    """Load and preprocess a patient volume ``(C, H, W, D)`` for validation, evaluation or inference.

    ``image_channels``: see :func:`load`; ``out_channels``: see :func:`preprocess`; ``normalization``: one of
    :data:`NORMALIZATIONS` (``None``: :func:`default_normalization` of the geometry). With ``geometry="brain"``
    the image is cropped to its brain box and resized to ``spatial_size`` (:func:`brain_geometry`; invertible:
    ``Invertd`` maps predictions back) while the label keeps the input's grid. With ``context_slices`` the
    normalised image gets its neighbour slices as channels (:func:`context_transform`), as in training.
    With ``reorient`` (the bundles' inference), a volume stored in any orientation is first reoriented losslessly
    to the model's frame, as ``monai-lgg predict`` does, and one whose slices are not close to axial is refused
    (:class:`~monai_lgg.transforms.orientation.ReorientToModeld`; invertible, so ``Invertd`` puts predictions
    back on the input's grid).
    """
    normalization = check_normalization(normalization, geometry)
    chain = load("volume", image_key, label_key, image_channels)
    if reorient:
        chain.append(ReorientToModeld(_keys(image_key, label_key)))
    if geometry == "brain":
        chain += brain_geometry(image_key, None, spatial_size, normalize=normalization == "volume")
    chain += preprocess(image_key, label_key, -1, normalization, out_channels)
    return Compose(chain + context_transform(image_key, context_slices))


def cached_volume_transforms(
    image_key: str = "image",
    label_key: str = "label",
    image_channels: int | None = 3,
    geometry: str = "patch",
    spatial_size: Sequence[int] = (128, 128),
    out_channels: int = 1,
    normalization: str | None = None,
    context_slices: int = 0,
) -> Compose:
    """What :class:`~monai_lgg.data.datasets.VolumeSliceDataset` caches per training volume.

    ``patch``: the loaded volumes as stored (uint8 for LGG; slices are normalised one by one later).
    ``brain``: image and label cropped to the brain box and resized (float32), and with ``normalization``
    ``"volume"`` (the default, see :func:`check_normalization`) normalised per volume, so the per-slice steps
    only augment; with ``"zscore"`` / ``"percentile"`` each slice is normalised later, as in ``patch``.
    ``context_slices``: each slice's neighbours stacked as channels (:func:`context_transform`), so every
    training path (per-sample loader, batch slice bank) slices 2.5D inputs from the cache. Per-slice
    normalisation then treats each channel of each slice alone, exactly as if done before the stacking.
    """
    normalization = check_normalization(normalization, geometry)
    chain = load("volume", image_key, label_key, image_channels)
    if geometry == "brain":
        label_mode = "bilinear" if out_channels == 1 else "nearest"
        chain += brain_geometry(image_key, label_key, spatial_size, label_mode, normalize=normalization == "volume")
    return Compose(chain + context_transform(image_key, context_slices))


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
    image_key: str = "image",
    label_key: str = "label",
    normalization: str = "zscore",
    out_channels: int = 1,
    **augment_args,
) -> Compose:
    """Per-slice chain of :class:`~monai_lgg.data.datasets.VolumeSliceDataset` at training time.

    ``out_channels``: see :func:`preprocess` (labels of ``K > 1`` classes keep their values through the
    augmentation: it resamples labels with nearest-neighbour interpolation and pads with 0).
    """
    return Compose(
        preprocess(image_key, label_key, None, normalization, out_channels)
        + augment(image_key, label_key, **augment_args)
    )
