"""Reading the Kaggle LGG TIFF slices: every failure names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from monai_lgg.errors import DataProblem
from monai_lgg.io import existing_file

__all__ = ["read_tiff", "read_tiff_header"]


def read_tiff(path: str | Path) -> np.ndarray:
    """Read a TIFF as stored (rows, columns[, channels]) with tifffile; any failure names the file."""
    path = existing_file(path)
    try:
        array = tifffile.imread(path)
    except Exception as err:  # tifffile, zlib and numpy raise many types for damaged files
        raise DataProblem(path, f"unreadable or truncated TIFF ({type(err).__name__}: {err})") from None
    return np.asarray(array)


def read_tiff_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a TIFF from its header, without decoding the pixels; any failure names the file.

    A file cut short (a truncated download or copy) is detected too: its first page's pixel data
    must end within the file.
    """
    path = existing_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series, page = tif.series[0], tif.pages[0]
            end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)), default=0)
            size = tif.filehandle.size
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
    except Exception as err:  # as in read_tiff
        raise DataProblem(path, f"unreadable or truncated TIFF ({type(err).__name__}: {err})") from None
    if end > size:
        raise DataProblem(path, f"truncated TIFF (pixel data end at byte {end}, the file has {size})")
    return shape, dtype
