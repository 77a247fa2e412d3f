"""Masks and clinical tables for the radiogenomic analysis: find them, read them, match them by patient.

Mask sources (``MASKS`` / ``--reference``), each a folder, or several folders separated by commas:

* a converted data set: ``labelsTr/<case>.nii.gz`` (``monai-lgg convert``);
* a folder of NIfTI masks ``<case>.nii.gz`` (``monai-lgg predict`` on volumes, a bundle's
  ``predictions/``); ``<case>_000x`` and ``<case>_flair|t1|t1c`` image files and ``<case>_prob`` /
  ``<case>_uncertainty`` maps are skipped (the name rules of :mod:`monai_lgg.data.naming`, which the input
  registry reads with);
* slice masks ``<case>_<n>_mask.tif|png`` in any folder structure (the Kaggle ``kaggle_3m`` layout, or
  ``monai-lgg predict`` on Kaggle slices): each case's slices are stacked in numeric order;
* ``<case>.npz`` arrays with a ``mask`` (label > 0) or a ``prob`` array (thresholded at 0.5), e.g. the
  out-of-fold predictions of :func:`monai_lgg.studies.crossval.out_of_fold`.

Case names follow the converter: a Kaggle case ``TCGA_CS_4941_19960909`` is patient ``TCGA_CS_4941``
of ``data.csv`` (the first three ``_`` fields); any other name is its own patient id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_lgg.data.kaggle import CASE_PATTERN, read_clinical_csv, read_tiff

# the input forms' name rules (the registry's, without importing it: it imports MONAI, seconds for a table)
from monai_lgg.data.naming import (
    SLICE_SUFFIXES,
    TIFF_SUFFIXES,
    file_stem,
    is_image_channel,
    is_map_output,
    is_nifti_name,
    is_sequence_file,
    split_mask_slice,
)
from monai_lgg.errors import DataProblem, LGGInputError

__all__ = [
    "MaskCase",
    "patient_id",
    "folder_list",
    "find_mask_cases",
    "out_of_fold_cases",
    "load_mask",
    "find_clinical",
    "load_clinical",
]


@dataclass
class MaskCase:
    """One patient's mask: a NIfTI volume or a stack of slice masks.

    Attributes:
        name: case id (file or slice prefix).
        form: ``"volume"`` (NIfTI), ``"array"`` (``.npz``) or ``"slices"``.
        files: the NIfTI or ``.npz`` file, or the slice masks in slice order.
        numbers: slice numbers of ``files`` (slices only).
    """

    name: str
    form: str
    files: list[Path]
    numbers: list[int] = field(default_factory=list)

    @property
    def patient(self) -> str:
        return patient_id(self.name)


def patient_id(case: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the ``data.csv`` key); other names unchanged."""
    return "_".join(case.split("_")[:3]) if CASE_PATTERN.match(case) else case


def _volume_cases(folder: Path) -> list[MaskCase]:
    cases = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() == ".npz":  # out-of-fold predictions (monai_lgg.studies.crossval.out_of_fold)
            cases.append(MaskCase(path.stem, "array", [path]))
            continue
        image = is_image_channel(path) or is_sequence_file(path)  # one channel or sequence of a case's image
        if not is_nifti_name(path) or image or is_map_output(file_stem(path)):
            continue  # not NIfTI, or an image file or a probability/uncertainty map, not a mask
        cases.append(MaskCase(file_stem(path), "volume", [path]))
    return cases


def _slice_cases(folder: Path) -> list[MaskCase]:
    groups: dict[tuple[Path, str], list[tuple[int, Path]]] = {}
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.suffix.lower() not in SLICE_SUFFIXES:
            continue
        found = split_mask_slice(path.stem)
        if found:
            groups.setdefault((path.parent, found[0]), []).append((found[1], path))
    cases = []
    for (_, case), members in sorted(groups.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        members.sort(key=lambda m: m[0])
        numbers = [n for n, _ in members]
        if len(set(numbers)) != len(numbers):
            raise LGGInputError(members[0][1].parent, f"case {case}: duplicate slice numbers")
        cases.append(MaskCase(case, "slices", [p for _, p in members], numbers))
    return cases


def _cases_in(folder: Path) -> list[MaskCase]:
    if not folder.exists():
        raise LGGInputError(folder, "does not exist")
    if not folder.is_dir():
        raise LGGInputError(
            folder, "is a file; expected a folder of masks (labelsTr/, <case>.nii.gz or <case>_<n>_mask.tif)"
        )
    labels = folder / "labelsTr"
    if labels.is_dir():
        return _volume_cases(labels)
    cases = _volume_cases(folder)
    return cases if cases else _slice_cases(folder)


def folder_list(source: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """Folders from one path, a comma-separated string or a list."""
    if source is None:
        return []
    items = str(source).split(",") if isinstance(source, (str, Path)) else [str(s) for s in source]
    return [Path(s.strip()).expanduser() for s in items if s.strip()]


def find_mask_cases(source: str | Path | Sequence[str | Path]) -> list[MaskCase]:
    """Every case of one mask folder, or of several (a comma-separated string or a list).

    Raises:
        LGGInputError: a folder is missing or holds no masks, or two cases share a name.
    """
    folders = folder_list(source)
    if not folders:
        raise LGGInputError(None, "no mask folder given")
    cases: dict[str, MaskCase] = {}
    for folder in folders:
        found = _cases_in(folder)
        if not found:
            raise LGGInputError(
                folder, "holds no masks (expected labelsTr/, <case>.nii.gz volumes or <case>_<n>_mask.tif slices)"
            )
        for case in found:
            if case.name in cases:
                raise LGGInputError(case.files[0], f"case {case.name} found twice (also {cases[case.name].files[0]})")
            cases[case.name] = case
    return sorted(cases.values(), key=lambda c: c.name)


def out_of_fold_cases(source: str | Path | Sequence[str | Path], datalist: str | Path) -> list[MaskCase]:
    """Each case's mask from the folder of its own cross-validation fold.

    With one folder of predictions per fold model (``source``, in fold order 0 .. k-1, each model having
    segmented every patient), the mask of a case of fold ``f`` is taken from folder ``f``: the model that
    was tested on that fold, so it neither trained nor selected its epoch on the case.

    Args:
        source: the k folders (comma-separated string or list), fold 0 first.
        datalist: the converted set's ``datalist.json`` (every case with its ``fold``).

    Raises:
        LGGInputError: unreadable datalist, not one folder per fold, or a fold's folder lacking one of its cases.
    """
    datalist = Path(datalist)
    try:
        entries = json.loads(datalist.read_text())["training"]
        fold_of = {str(e["case"]): int(e["fold"]) for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LGGInputError(datalist, f"cannot read the folds ({type(err).__name__}: {err})") from None
    folders = folder_list(source)
    num_folds = max(fold_of.values(), default=-1) + 1
    if len(folders) != num_folds:
        raise LGGInputError(
            datalist, f"has {num_folds} folds: give {num_folds} mask folders (fold 0 first), got {len(folders)}"
        )
    cases = []
    for fold, folder in enumerate(folders):
        found = {case.name: case for case in _cases_in(folder)}
        wanted = sorted(case for case, f in fold_of.items() if f == fold)
        missing = [case for case in wanted if case not in found]
        if missing:
            raise LGGInputError(
                folder, f"fold {fold}: no mask for {len(missing)} test case(s): {', '.join(missing[:3])}"
            )
        cases += [found[case] for case in wanted]
    return sorted(cases, key=lambda c: c.name)


def _read_plane(path: Path) -> np.ndarray:
    """A slice mask as stored (TIFF with tifffile, other formats with OpenCV)."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        return read_tiff(path)
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataProblem(path, "unreadable image (not a valid PNG/JPEG/BMP file)")
    return array


def _as_mask(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataProblem(path, "contains NaN or infinite values")
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise DataProblem(path, "is not a mask (non-integer values: threshold probability maps first)")
    if array.dtype.kind in "iuf" and array.size and array.min() < 0:
        raise DataProblem(path, "is not a mask (negative values)")
    return array > 0


def _npz_mask(path: Path) -> np.ndarray:
    """A ``.npz`` volume: its ``mask`` array (any label > 0), else its ``prob`` array thresholded at 0.5
    (float probabilities, or uint8 probabilities x 255 as :func:`monai_lgg.studies.crossval.out_of_fold` stores
    them)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "mask" if "mask" in data.files else "prob" if "prob" in data.files else None
            if key is None:
                raise DataProblem(path, f"holds neither a 'mask' nor a 'prob' array (has {', '.join(data.files)})")
            array = data[key]
    except DataProblem:
        raise
    except Exception as err:  # zipfile / numpy raise many types for damaged files
        raise DataProblem(path, f"unreadable .npz ({type(err).__name__}: {err})") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataProblem(path, f"expected a 3D '{key}' array (rows, columns, slices), got shape {array.shape}")
    if key == "mask":
        return _as_mask(path, array)
    if array.dtype == np.uint8:
        return array >= 128  # round(p * 255) >= 127.5, i.e. p >= 0.5
    if array.dtype.kind != "f" or not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise DataProblem(path, "'prob' must hold probabilities in [0, 1] (float) or 0..255 (uint8)")
    return array >= 0.5


def load_mask(
    case: MaskCase, slice_spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A case's mask as a boolean ``(rows, columns, slices)`` array and its voxel spacing in mm.

    NIfTI volumes keep their own spacing (the header's zooms); slice stacks and ``.npz`` arrays get
    ``slice_spacing`` (they store none). Any label > 0 is tumour.

    Raises:
        DataProblem: unreadable file, not 3D, not a mask, or slices of different sizes / a gap in the numbers.
    """
    if case.form == "array":
        return _npz_mask(case.files[0]), tuple(float(s) for s in slice_spacing)
    if case.form == "volume":
        path = case.files[0]
        try:
            image = nib.load(path)
            array = np.asanyarray(image.dataobj)
        except Exception as err:  # nibabel / gzip / numpy raise many types for damaged files
            raise DataProblem(path, f"unreadable NIfTI ({type(err).__name__}: {err})") from None
        if array.ndim == 4 and array.shape[3] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            raise DataProblem(path, f"expected a 3D mask volume, got shape {array.shape}")
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        if any(not np.isfinite(z) or z <= 0 for z in zooms):
            raise DataProblem(path, f"invalid voxel spacing {zooms} in the header")
        return _as_mask(path, array), zooms
    missing = sorted(set(range(min(case.numbers), max(case.numbers) + 1)) - set(case.numbers))
    if missing:
        raise DataProblem(case.files[0].parent, f"case {case.name}: gap in slice numbers (missing {missing[:5]})")
    planes = []
    for path in case.files:
        plane = _read_plane(path)
        if plane.ndim not in (2, 3):
            raise DataProblem(path, f"expected a 2D slice mask, got shape {plane.shape}")
        if plane.ndim == 3:
            if not all(np.array_equal(plane[..., 0], plane[..., c]) for c in range(1, plane.shape[2])):
                raise DataProblem(path, f"expected a one-channel mask, got {plane.shape[2]} different channels")
            plane = plane[..., 0]
        if planes and plane.shape != planes[0].shape:
            raise DataProblem(path, f"slice size {plane.shape} differs from the case's first slice {planes[0].shape}")
        planes.append(_as_mask(path, plane))
    return np.stack(planes, axis=2), tuple(float(s) for s in slice_spacing)


def find_clinical(*sources: str | Path | Sequence[str | Path] | None) -> Path | None:
    """The clinical table that goes with mask folders: a converted set's ``dataset.json`` (which holds
    ``data.csv``'s fields per case), else a ``data.csv`` in or beside a folder."""
    for source in sources:
        for folder in folder_list(source):
            for candidate in (folder / "dataset.json", folder / "data.csv", folder.parent / "data.csv"):
                if candidate.is_file() and (candidate.suffix == ".csv" or _has_clinical(candidate)):
                    return candidate
    return None


def _has_clinical(dataset_json: Path) -> bool:
    try:
        cases = json.loads(dataset_json.read_text()).get("cases", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(cases, dict) and any(isinstance(c, dict) and c.get("clinical") for c in cases.values())


def load_clinical(path: str | Path) -> dict[str, dict]:
    """``{patient: {variable: value or None}}`` from ``data.csv`` or a converted set's ``dataset.json``.

    Blank cells are ``None``.

    Raises:
        LGGInputError: unreadable table, or no patient column / clinical fields.
    """
    path = Path(path)
    if not path.is_file():
        raise LGGInputError(path, "clinical table not found")
    if path.suffix.lower() != ".json":
        return read_clinical_csv(path)
    try:
        cases = json.loads(path.read_text())["cases"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LGGInputError(path, f"cannot read clinical fields ({type(err).__name__}: {err})") from None
    table = {
        patient_id(case): dict(info["clinical"])
        for case, info in cases.items()
        if isinstance(info, dict) and info.get("clinical")
    }
    if not table:
        raise LGGInputError(path, "holds no clinical fields (convert with data.csv, or pass --clinical data.csv)")
    return table
