"""Prediction outputs: masks, probability maps, overlays and tumour tables.

Each writer writes one file at the path it is given: ``monai-lgg predict`` gives paths inside a case's staging
folder, and :class:`~monai_lgg.inference.output_folder.OutputFolder` moves a case's files into place together.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import tifffile

from monai_lgg.engines.reports import overlay_picture, uncertainty_picture

__all__ = [
    "write_slice_mask",
    "write_probability_slice",
    "write_nifti",
    "write_overlay",
    "write_uncertainty_overlay",
    "tumour_rows",
    "write_csv",
]


def write_slice_mask(path: Path, mask: np.ndarray, label_map: bool = False) -> None:
    """A Kaggle-style mask, uint8 {0, 255}, as TIFF or PNG by the file's extension.

    ``label_map``: write a multi-class mask's class indices ``0 .. K-1`` as they are (uint8, not scaled).
    """
    values = np.asarray(mask).astype(np.uint8) if label_map else (np.asarray(mask) > 0).astype(np.uint8) * 255
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, values)
    elif not cv2.imwrite(str(path), values):
        raise OSError(f"cannot write {path}")


def write_probability_slice(path: Path, probability: np.ndarray) -> None:
    """A float32 TIFF of tumour probabilities in [0, 1] (``(K, H, W)``: one page per class)."""
    tifffile.imwrite(path, np.asarray(probability, dtype=np.float32))


def write_nifti(path: Path, array: np.ndarray, reference, dtype: type = np.uint8) -> None:
    """``array`` (rows x columns x slices [x classes]) as NIfTI on the input's grid, as ``dtype``.

    Args:
        path: the file to write.
        array: in the model's frame when ``reference`` is a
            :class:`~monai_lgg.inference.inputs.VolumeReference`: it is mapped back onto the input's stored grid
            (the inverse of the lossless reorientation), so the output has the input's shape, affine and header;
            a plain ``nib.Nifti1Image`` reference takes ``array`` as stored.
        reference: the input's :class:`~monai_lgg.inference.inputs.VolumeReference` (or its NIfTI image).
        dtype: the stored data type.
    """
    reorientation = getattr(reference, "reorientation", None)
    reference = getattr(reference, "image", reference)
    data = np.asarray(array) if reorientation is None else reorientation.array_to_input(array)
    if data.shape[:3] != tuple(reference.shape[:3]):
        raise ValueError(f"output of shape {data.shape[:3]} does not fit the input's grid {reference.shape[:3]}")
    header = reference.header.copy()
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), reference.affine, header)
    image.set_data_dtype(dtype)
    image.header.set_slope_inter(None, None)
    image.header.set_intent("none")
    nib.save(image, path)


def write_overlay(
    path: Path,
    image: np.ndarray,
    mask: np.ndarray,
    label_map: bool = False,
    title: str = "",
    notes: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
) -> None:
    """PNG of one slice: grey FLAIR with the predicted tumour in red, under a caption naming the case and
    slice and a colour legend (``engines.reports.overlay_picture``).

    Args:
        path: the PNG to write.
        image: the slice drawn in grey.
        mask: the predicted mask (binary) or class indices (``label_map``, each class in its colour).
        label_map: ``mask`` holds class indices.
        title: first caption line (default: the file name).
        notes: more caption lines (e.g. the predicted area).
        class_names: names of the classes 0..K-1 for the legend.
    """
    picture = overlay_picture(
        np.asarray(image), None, np.asarray(mask), title or path.stem, notes, label_map, class_names
    )
    if not cv2.imwrite(str(path), picture):
        raise OSError(f"cannot write {path}")


def write_uncertainty_overlay(
    path: Path, image: np.ndarray, mask: np.ndarray, uncertainty: np.ndarray, title: str, notes: Sequence[str] = ()
) -> None:
    """PNG of one slice and its uncertainty heat map with the predicted tumour outlined, captioned
    (``engines.reports.uncertainty_picture``)."""
    picture = uncertainty_picture(np.asarray(image), np.asarray(mask), np.asarray(uncertainty), title, notes)
    if not cv2.imwrite(str(path), picture):
        raise OSError(f"cannot write {path}")


def tumour_rows(
    mask: np.ndarray, spacing: Sequence[float], numbers: Sequence[int | str], num_classes: int = 2
) -> list[dict]:
    """Per-slice tumour area and volume rows, then an ``all`` row with the totals.

    For NIfTI volumes ``mask`` is in the model's frame (:mod:`monai_lgg.inference.orientation`), so the rows are
    its axial slices (the first the most inferior), whatever axis the input file stores them along.

    Args:
        mask: binary mask or class-index map (rows, columns, slices); "tumour" is every voxel > 0.
        spacing: (row, column, slice) voxel size in mm along ``mask``'s axes.
        numbers: the slice labels written in the ``slice`` column.
        num_classes: classes of a label map (background included); above 2, each row also counts
            every foreground class (``class<c>_pixels``).
    """
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    voxel_mm3 = pixel_mm2 * float(spacing[2])
    flat = np.asarray(mask).reshape(-1, mask.shape[-1])
    counts = (flat > 0).sum(0)
    per_class = {f"class{c}_pixels": (flat == c).sum(0) for c in range(1, num_classes)} if num_classes > 2 else {}

    def row(number: int | str, n: int, classes: dict) -> dict:
        return {
            "slice": number,
            "tumour_pixels": int(n),
            "tumour_area_mm2": round(n * pixel_mm2, 4),
            "tumour_volume_mm3": round(n * voxel_mm3, 4),
            **{k: int(v) for k, v in classes.items()},
        }

    rows = [
        row(number, n, {k: v[i] for k, v in per_class.items()})
        for i, (number, n) in enumerate(zip(numbers, counts, strict=True))
    ]
    rows.append(row("all", int(counts.sum()), {k: v.sum() for k, v in per_class.items()}))
    return rows


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows as CSV with the first row's keys as header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
