"""A pinned 2D TIFF/PNG reader that keeps the stored (rows, columns) axis order.

MONAI's PIL and ITK readers return 2D images as (columns, rows), and ``LoadImage`` silently falls back
to another reader when the chosen one fails, which can flip axes unnoticed. Every 2D entry point of
monai_lgg loads slices with this reader so a TIFF slice and the matching slice of a converted NIfTI
volume are the same array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from monai_lgg.data.kaggle import read_tiff
from monai_lgg.errors import DataProblem

__all__ = ["SliceImageReader", "read_slice_image"]

TIFF_SUFFIXES = (".tif", ".tiff")
OTHER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_slice_image(path: str | Path) -> np.ndarray:
    """Read a 2D image as (rows, columns[, channels]) in the file's channel order (RGB, not BGR)."""
    path = Path(path)
    if not path.is_file():
        raise DataProblem(path, "file not found")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return read_tiff(path)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataProblem(path, "unreadable image (not a valid PNG/JPEG/BMP file)")
    if array.ndim == 3:  # OpenCV stores colour as BGR(A)
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return array


class SliceImageReader(ImageReader):
    """MONAI ``ImageReader`` for 2D TIFF/PNG slices, channel-last, with no axis swap.

    Example::

        LoadImaged(keys=["image", "label"], reader=SliceImageReader(), image_only=True)
    """

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return all(str(f).lower().endswith(TIFF_SUFFIXES + OTHER_SUFFIXES) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str] | str, **kwargs) -> list[tuple[str, np.ndarray]]:
        return [(str(f), read_slice_image(f)) for f in ensure_tuple(data)]

    def get_data(self, img: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, dict]:
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for name, array in ensure_tuple(img):
            if array.ndim not in (2, 3):
                raise DataProblem(name, f"expected a 2D image, got shape {array.shape}")
            header = {
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[:2]),
                MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if array.ndim == 3 else float("nan"),
                MetaKeys.AFFINE: np.eye(3),
                MetaKeys.ORIGINAL_AFFINE: np.eye(3),
                MetaKeys.SPACE: SpaceKeys.RAS,
                "filename_or_obj": name,
            }
            arrays.append(array)
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta
