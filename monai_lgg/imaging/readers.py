"""MONAI image I/O for monai_lgg: pinned readers and a crash-safe writer.

A 2D TIFF/PNG reader that keeps the stored (rows, columns) axis order and a checked NIfTI volume
reader, both naming the file and the problem when an input is bad; and a NIfTI writer for
``SaveImaged`` that writes to a temporary file and renames it, so a killed run never leaves a
half-written prediction.

MONAI's PIL and ITK readers return 2D images as (columns, rows), and ``LoadImage`` silently falls back
to another reader when the chosen one fails, which can flip axes unnoticed and buries the real error
under "cannot find a suitable reader". These readers therefore never fail in ``read`` (which
``LoadImage`` wraps in its fallback loop): ``read`` only records the file names, and ``get_data``
reads and validates them, raising :class:`~monai_lgg.errors.DataProblem`. Every entry point of
monai_lgg loads with them (see ``monai_lgg.transforms.presets.load``), so a TIFF slice and the
matching slice of a converted NIfTI volume are the same array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from monai.data import ImageReader, NibabelReader, NibabelWriter
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from monai_lgg.data.naming import OTHER_SLICE_SUFFIXES as OTHER_SUFFIXES
from monai_lgg.data.naming import TIFF_SUFFIXES
from monai_lgg.errors import DataProblem
from monai_lgg.imaging.tiff import read_tiff
from monai_lgg.io import atomic_path, existing_file

__all__ = ["SliceImageReader", "NiftiVolumeReader", "AtomicNibabelWriter", "read_slice_image", "check_finite"]


def check_finite(path: str | Path, array: np.ndarray) -> None:
    """Raise a :class:`DataProblem` naming ``path`` when a floating-point ``array`` holds NaN or infinity."""
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DataProblem(path, f"contains {bad} NaN or infinite value(s)")


def read_slice_image(path: str | Path) -> np.ndarray:
    """Read a 2D image as (rows, columns[, channels]) in the file's channel order (RGB, not BGR)."""
    path = existing_file(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        array = read_tiff(path)
    else:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise DataProblem(path, "unreadable image (not a valid PNG/JPEG/BMP file)")
        if array.ndim == 3:  # OpenCV stores colour as BGR(A)
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if array.ndim not in (2, 3):
        raise DataProblem(path, f"expected a 2D image (rows, columns[, channels]), got shape {array.shape}")
    check_finite(path, array)
    return array


class SliceImageReader(ImageReader):
    """MONAI ``ImageReader`` for 2D TIFF/PNG slices, channel-last, with no axis swap.

    Example::

        LoadImaged(keys=["image", "label"], reader=SliceImageReader(), image_only=True)
    """

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return all(str(f).lower().endswith(TIFF_SUFFIXES + OTHER_SUFFIXES) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str] | str, **kwargs) -> list[str]:
        return [str(f) for f in ensure_tuple(data)]  # read in get_data, outside LoadImage's fallback loop

    def get_data(self, img: Sequence[str] | str) -> tuple[np.ndarray, dict]:
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for name in ensure_tuple(img):
            array = read_slice_image(name)
            header = {
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[:2]),
                MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if array.ndim == 3 else float("nan"),
                MetaKeys.AFFINE: np.eye(3),
                MetaKeys.ORIGINAL_AFFINE: np.eye(3),
                MetaKeys.SPACE: SpaceKeys.RAS,
                "filename_or_obj": str(name),
            }
            arrays.append(array)
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta


class NiftiVolumeReader(NibabelReader):
    """MONAI's ``NibabelReader`` for 3D volumes, refusing bad files with a message naming them.

    Refused: missing, empty, unreadable or truncated files, volumes with fewer than 3 dimensions (a 2D
    NIfTI where a ``(rows, columns, slices)`` volume is expected) or more than 4 (3D + channels), and
    floating-point data with NaN or infinite values (which would silently poison normalisation).

    Args:
        kwargs: arguments of ``NibabelReader``.
    """

    def read(self, data: Sequence[str] | str, **kwargs) -> list[str]:
        return [str(f) for f in ensure_tuple(data)]  # read in get_data, outside LoadImage's fallback loop

    def get_data(self, img: Sequence[str] | str) -> tuple[np.ndarray, dict]:
        names = [str(existing_file(name)) for name in ensure_tuple(img)]
        images = []
        for name in names:
            try:
                images.append(super().read(name))
            except Exception as err:  # nibabel raises many types for damaged headers
                raise DataProblem(name, f"unreadable NIfTI ({type(err).__name__}: {err})") from None
            shape = tuple(images[-1].shape)
            if not 3 <= len(shape) <= 4:
                expected = "expected a 3D volume (rows, columns, slices)"
                raise DataProblem(name, f"is {len(shape)}D with shape {shape}, {expected}")
        self.filenames = names  # NibabelReader.get_data pairs images with these
        try:
            array, meta = super().get_data(images if len(images) > 1 else images[0])
        except Exception as err:  # e.g. a truncated .nii.gz fails only when its data are read
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            bad = next((name for image, name in zip(images, names, strict=True) if not _readable(image)), None)
            if bad is None:  # each file reads: they do not fit together (shapes, affines)
                others = ", ".join(Path(n).name for n in names[1:])
                raise DataProblem(names[0], f"cannot be stacked with {others} ({reason})") from None
            raise DataProblem(bad, f"unreadable NIfTI data ({reason})") from None
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            for image, name in zip(images, names, strict=True):  # name the file that holds them
                check_finite(name, np.asanyarray(image.dataobj))
        return array, meta


def _readable(image) -> bool:
    try:
        np.asanyarray(image.dataobj)
    except Exception:
        return False
    return True


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file that is renamed onto the target.

    Example::

        SaveImaged("pred", output_dir="predictions", writer=AtomicNibabelWriter)
    """

    def set_data_array(self, data_array, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs) -> None:
        """Drop a single channel but keep every spatial axis, a one-slice volume's slice axis included.

        MONAI's default squeezes all trailing size-1 axes: a ``(1, H, W, 1)`` mask of a one-slice volume
        (a converted 2D image) came out 2D, and its saving then failed while matching the 3D metadata.
        """
        super().set_data_array(data_array, channel_dim=channel_dim, squeeze_end_dims=False, **kwargs)
        if squeeze_end_dims and self.data_obj.shape[-1] == 1:  # channel last now: drop only that axis
            self.data_obj = self.data_obj[..., 0]

    def resample_if_needed(self, data_array, affine=None, target_affine=None, output_spatial_shape=None, **kwargs):
        """No resampling unless asked (``SaveImaged(resample=False)``: the array and its affine as they are).

        MONAI 1.6 resamples even then, through a tensor whose spatial rank it takes as 2 (a 3D array without its
        channel), which fails on a volume stored sagittally (the affine's first 2 x 2 block is singular).
        """
        if target_affine is None and output_spatial_shape is None:
            return data_array, affine
        return super().resample_if_needed(data_array, affine, target_affine, output_spatial_shape, **kwargs)

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
