"""File names of the input forms: the one parser of ``<case>_000k``, slice numbers, mask and map outputs.

The registry of input forms (:mod:`monai_lgg.inference.formats`) is what reads inputs; these are the name rules it
uses, kept in a module without torch or MONAI so that every other reader of the same files (the radiogenomic
analysis, the bundles' inference items and output names, MONAI Label's studies) and every writer of them (the
converters) parse and build names through the same functions instead of a regex of their own.

* ``<case>_000k.nii.gz``: channel ``k`` of a case (nnU-Net/MSD naming): :func:`split_channel`,
  :func:`channel_file_name`, :func:`case_name`, :func:`is_image_channel`;
* ``<case>_flair`` / ``<case>_t1`` / ``<case>_t1c``: one MRI sequence of a case, one file each:
  :func:`split_sequence`, :func:`is_sequence_file`;
* ``<case>_<n>.tif``: slice ``n`` of a case (the Kaggle naming): :func:`split_slice`;
* ``<name>_mask.tif``: a slice mask (:func:`mask_stem`, :func:`split_mask_slice`);
* ``<case>_prob`` / ``<case>_uncertainty``: float maps written beside the masks (:data:`MAP_KINDS`).

Suffixes are compared case-insensitively (``X.NII.GZ`` is a NIfTI file).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "NIFTI_SUFFIXES",
    "TIFF_SUFFIXES",
    "OTHER_SLICE_SUFFIXES",
    "SLICE_SUFFIXES",
    "CHANNEL_FILE",
    "SLICE_NUMBER",
    "MASK_SUFFIX",
    "MAP_KINDS",
    "file_suffix",
    "file_stem",
    "is_nifti_name",
    "split_channel",
    "channel_file_name",
    "case_name",
    "is_image_channel",
    "SEQUENCE_FILE",
    "split_sequence",
    "is_sequence_file",
    "split_slice",
    "mask_stem",
    "split_mask_slice",
    "is_map_output",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
OTHER_SLICE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SLICE_SUFFIXES = TIFF_SUFFIXES + OTHER_SLICE_SUFFIXES

CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
"""``<case>_000k``: one channel (modality) of a case, nnU-Net/MSD naming."""

SLICE_NUMBER = re.compile(r"^(?P<case>.+)_(?P<number>\d+)$")
"""``<case>_<n>``: slice ``n`` of a case (the Kaggle slices)."""

MASK_SUFFIX = "_mask"
"""What a slice mask adds to its image's name (``<case>_<n>_mask.tif``, the Kaggle masks and ``predict``'s)."""

MAP_KINDS = ("prob", "uncertainty")
"""The float maps ``predict`` writes beside a mask (``<case>_prob.nii.gz``, ``<case>_uncertainty.nii.gz``)."""


def file_suffix(path: str | Path) -> str:
    """The lower-case suffix, ``.nii.gz`` counted as one (``""`` without one)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix.lower()


def file_stem(path: str | Path) -> str:
    """The file name without :func:`file_suffix` (``TCGA_x_0001`` for ``TCGA_x_0001.nii.gz``)."""
    name, suffix = Path(path).name, file_suffix(path)
    return name[: -len(suffix)] if suffix else name


def is_nifti_name(path: str | Path) -> bool:
    """The name ends in ``.nii`` or ``.nii.gz`` (any case); the file itself is not checked."""
    return file_suffix(path) in NIFTI_SUFFIXES


def split_channel(stem: str) -> tuple[str, int | None]:
    """``(case, channel)`` of a file name without its extension: ``("TCGA_x", 1)`` for ``TCGA_x_0001``, and
    ``(stem, None)`` for a name without a 4-digit channel suffix. The one parser of ``<case>_000k`` names."""
    match = CHANNEL_FILE.match(stem)
    return (match["case"], int(match["channel"])) if match else (stem, None)


def channel_file_name(case: str, channel: int, suffix: str = ".nii.gz") -> str:
    """``<case>_000k<suffix>``: the file of channel ``channel`` of ``case`` (what :func:`split_channel` parses)."""
    if not 0 <= int(channel) <= 9999:
        raise ValueError(f"a channel number has 4 digits, got {channel}")
    return f"{case}_{int(channel):04d}{suffix}"


def case_name(path: str | Path) -> str:
    """The case a file belongs to: its stem without a ``_000k`` channel suffix (``p_2`` for ``p_2_0001.nii.gz``)."""
    return split_channel(file_stem(path))[0]


def is_image_channel(path: str | Path) -> bool:
    """The file is one channel of a case (``<case>_000k``), not a whole case, a mask or a map."""
    return split_channel(file_stem(path))[1] is not None


SEQUENCE_FILE = re.compile(r"^(?P<case>.+)_(?P<sequence>flair|t1c|t1)$", re.IGNORECASE)
"""``<case>_flair``, ``<case>_t1`` (pre-contrast), ``<case>_t1c`` (post-contrast): one MRI sequence of a case."""


def split_sequence(stem: str) -> tuple[str, str | None]:
    """``(case, sequence)`` of a file name without its extension: ``("p1", "t1c")`` for ``p1_T1C``, and
    ``(stem, None)`` for a name without a sequence suffix."""
    match = SEQUENCE_FILE.match(stem)
    return (match["case"], match["sequence"].lower()) if match else (stem, None)


def is_sequence_file(path: str | Path) -> bool:
    """The file is named as one MRI sequence of a case (``<case>_flair``, ``_t1``, ``_t1c``, any case)."""
    return split_sequence(file_stem(path))[1] is not None


def split_slice(stem: str) -> tuple[str, int | None]:
    """``(case, number)`` of a slice name without its extension: ``("TCGA_x", 12)`` for ``TCGA_x_12``, and
    ``(stem, None)`` for a name without a slice number."""
    match = SLICE_NUMBER.match(stem)
    return (match["case"], int(match["number"])) if match else (stem, None)


def mask_stem(stem: str) -> str:
    """The stem of the mask of an image stem (``x_3`` -> ``x_3_mask``)."""
    return f"{stem}{MASK_SUFFIX}"


def split_mask_slice(stem: str) -> tuple[str, int] | None:
    """``(case, number)`` of a slice mask's stem (``TCGA_x_12_mask`` -> ``("TCGA_x", 12)``, ``_MASK`` alike), else
    ``None`` (not a mask, or a mask without a slice number)."""
    if not stem.lower().endswith(MASK_SUFFIX):
        return None
    case, number = split_slice(stem[: -len(MASK_SUFFIX)])
    return None if number is None else (case, number)


def is_map_output(stem: str) -> bool:
    """The stem names a float map ``predict`` writes beside a mask (``<case>_prob``, ``<case>_uncertainty``)."""
    return any(stem.endswith(f"_{kind}") for kind in MAP_KINDS)
