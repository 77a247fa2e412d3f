"""Dictionary wrappers (``...d``) of the array transforms in ``array.py``."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImaged, MapTransform

from monai_lgg.errors import DataProblem
from monai_lgg.transforms.array import AddContextSlices, CheckChannels, CheckLabelValues, SliceWiseNormalizeIntensity

__all__ = [
    "SliceWiseNormalizeIntensityd",
    "CheckChannelsd",
    "CheckLabelValuesd",
    "CheckSameShaped",
    "PinnedLoadImaged",
    "AddContextSlicesd",
]


class _ArrayTransformd(MapTransform):
    """Run one array transform on the value of every key (the body these wrappers share)."""

    def __init__(self, keys: KeysCollection, transform: Callable, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class SliceWiseNormalizeIntensityd(_ArrayTransformd):
    """Dictionary version of :class:`~monai_lgg.transforms.array.SliceWiseNormalizeIntensity`.

    Args:
        keys: keys of the images to normalise.
        allow_missing_keys: do not raise if a key is absent.
        kwargs: arguments of ``SliceWiseNormalizeIntensity``.
    """

    backend = SliceWiseNormalizeIntensity.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, SliceWiseNormalizeIntensity(**kwargs), allow_missing_keys)


class AddContextSlicesd(_ArrayTransformd):
    """Dictionary version of :class:`~monai_lgg.transforms.array.AddContextSlices` (images only, not labels).

    Args:
        keys: keys of the channel-first volumes ``(C, H, W, D)``.
        context_slices: neighbours on each side stacked as channels.
        slice_dim: the slice axis.
        allow_missing_keys: do not raise if a key is absent.
    """

    backend = AddContextSlices.backend

    def __init__(
        self, keys: KeysCollection, context_slices: int = 0, slice_dim: int = -1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, AddContextSlices(context_slices, slice_dim), allow_missing_keys)


class CheckChannelsd(_ArrayTransformd):
    """Dictionary version of :class:`~monai_lgg.transforms.array.CheckChannels`.

    Args:
        keys: keys of the channel-first images to check.
        channels: the expected number of channels.
        what: what the channels are, for the message.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, channels: int, what: str = "", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, CheckChannels(channels, what), allow_missing_keys)


class CheckLabelValuesd(_ArrayTransformd):
    """Dictionary version of :class:`~monai_lgg.transforms.array.CheckLabelValues`.

    Args:
        keys: keys of the label maps to check.
        num_classes: the number of classes, background included.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, CheckLabelValues(num_classes), allow_missing_keys)


class CheckSameShaped(MapTransform):
    """Refuse an item whose ``keys`` (the mask) differ in spatial shape from ``reference_key`` (the image).

    Args:
        keys: keys of the channel-first arrays to compare with the reference (e.g. ``"label"``).
        reference_key: key of the channel-first reference (e.g. ``"image"``).
        allow_missing_keys: do not raise if a key is absent.

    Raises:
        DataProblem: naming the mismatched file and the reference file.
    """

    def __init__(self, keys: KeysCollection, reference_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        reference = d[self.reference_key]
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) != tuple(reference.shape[1:]):
                raise DataProblem(
                    _filename(d[key]),
                    f"{key} shape {tuple(d[key].shape[1:])} differs from {self.reference_key} shape "
                    f"{tuple(reference.shape[1:])} ({_filename(reference)})",
                )
        return d


def _filename(array: torch.Tensor) -> str | None:
    return array.meta.get("filename_or_obj") if isinstance(array, MetaTensor) else None


class PinnedLoadImaged(LoadImaged):
    """``LoadImaged`` that reads with ``reader`` only.

    MONAI's ``LoadImage`` given a reader still registers its default readers and, when the given one
    fails, silently tries them (ITK and PIL return 2D images transposed); the real error is lost in
    "cannot find a suitable reader". Passing the reader at call time, as MONAI allows, disables that
    fallback, so a bad file raises the reader's own error.

    Args:
        keys: keys of the file names to load.
        reader: the only reader used.
        kwargs: other arguments of ``LoadImaged`` (``image_only``, ``dtype``, ...).
    """

    def __init__(self, keys: KeysCollection, reader: ImageReader, **kwargs) -> None:
        # LoadImage builds every default reader, and with pydicom installed (DICOM input) MONAI's nvImageCodec DICOM
        # reader warns twice on each construction that no GPU decoder is there; none of them is used here
        plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_log.level
        plugin_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
                super().__init__(keys, reader=reader, **kwargs)
        finally:
            plugin_log.setLevel(level)
        self.pinned_reader = reader

    def __call__(self, data, reader: ImageReader | None = None):
        return super().__call__(data, reader=reader or self.pinned_reader)
