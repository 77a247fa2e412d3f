"""DICOM in, DICOM SEG out: an MR series read into a RAS+ NIfTI image, a mask written back as a DICOM Segmentation.

Reading is plain pydicom with the geometry computed here, not MONAI's ``PydicomReader``: that reader orders the
slices by ``InstanceNumber`` (skipping, with a warning, a slice that has none) and takes the slice spacing from the
z coordinate alone, so a series numbered in another order, or a sagittal one, would be stacked wrongly and silently.
Here the slices are sorted by their position along the slice normal, and every geometric inconsistency is refused.

What :func:`read_series` reads and refuses (one :class:`~monai_lgg.errors.LGGInputError` naming the file):

* Files: every file under the folder (sub-folders included, hidden ones not) that is DICOM Part 10 (``DICM`` at
  byte 128). Files that are not DICOM at all (``README``, ``.txt``, ``.json``, thumbnails) are skipped, unless their
  name ends in ``.dcm``/``.dicom`` (then the file is refused as corrupt). DICOM objects that hold no image
  (``DICOMDIR``, structured reports, presentation states, earlier Segmentations) are skipped too.
* One series: files of several ``SeriesInstanceUID`` where one series is expected are refused, listing them.
* Single-frame, one-sample (grey) images, all of one size, one ``PixelSpacing``, one ``ImageOrientationPatient``
  (within :data:`TOLERANCE`); multi-frame (enhanced) images are refused.
* Slices sorted by ``ImagePositionPatient`` projected on the slice normal (the cross product of the row and column
  directions), not by file name or ``InstanceNumber``; two slices at one position, or a step between neighbours
  that differs from the series' usual step by more than :data:`STEP_TOLERANCE` (a missing slice), are refused.
* Pixel data a decoder here cannot read (a compressed transfer syntax without its plug-in) is refused with the
  transfer syntax's name. ``RescaleSlope`` / ``RescaleIntercept`` are applied (float32 image).

The image is indexed ``[row, column, slice]`` with the affine of DICOM's patient coordinates (LPS) flipped to
nibabel's RAS+: voxel ``(r, c, k)`` lies at ``IPP_0 + c * dc * X + r * dr * Y + k * S`` (``X``/``Y`` the row and
column directions, ``dr``/``dc`` the ``PixelSpacing``, ``S`` the step between the first and last slice positions
divided by the gaps), so an ordinary axial series is already in the model's frame
(:mod:`monai_lgg.inference.orientation`).

:func:`write_seg` writes a binary DICOM Segmentation (highdicom) of one segment, "FLAIR abnormality", whose frames
reference the series' SOP instances.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_lgg.errors import LGGInputError

__all__ = [
    "DicomSeries",
    "read_series",
    "read_series_files",
    "dicom_files",
    "is_dicom_file",
    "series_of",
    "study_of",
    "write_seg",
    "SEGMENT_LABEL",
]

TOLERANCE = 1e-3
"""Largest difference of direction cosines (and relative difference of pixel spacings) between slices of a series."""

STEP_TOLERANCE = 0.1
"""Largest relative difference between a slice step and the series' median step (more: a gap, or uneven slices)."""

DICOM_SUFFIXES = (".dcm", ".dicom")
"""Names that claim to be DICOM: such a file that is not DICOM is refused, not skipped."""

SEGMENT_LABEL = "FLAIR abnormality"
"""The one segment of the DICOM SEG files."""

SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


def _require_versions() -> None:
    """Refuse, in one line, pydicom / highdicom releases older than the APIs used here."""
    import highdicom
    import pydicom
    from packaging.version import Version

    if Version(pydicom.__version__) < Version("3") or Version(highdicom.__version__) < Version("0.23"):
        raise LGGInputError(
            None,
            f"DICOM input needs pydicom 3 and highdicom 0.23 or newer (installed: pydicom {pydicom.__version__}, "
            f"highdicom {highdicom.__version__}); pip install -U pydicom highdicom",
        )


@dataclass
class DicomSeries:
    """One DICOM series as a volume.

    Attributes:
        image: ``rows x columns x slices`` float32, RAS+ affine from the DICOM geometry (see the module docstring).
        datasets: the slices' pydicom datasets in slice order (their pixel data dropped after reading).
        files: the slices' files, in slice order.
        description: ``SeriesDescription`` (empty when absent).
        series_uid: ``SeriesInstanceUID``.
    """

    image: nib.Nifti1Image
    datasets: list = field(repr=False)
    files: list[Path] = field(default_factory=list)
    description: str = ""
    series_uid: str = ""


def is_dicom_file(path: Path) -> bool:
    """``path`` is a DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files under ``folder`` (recursively, hidden entries left out), sorted by path.

    Raises:
        LGGInputError: a file named ``*.dcm`` / ``*.dicom`` that is not DICOM.
    """
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or not path.is_file():
                continue
            if is_dicom_file(path):
                found.append(path)
            elif path.suffix.lower() in DICOM_SUFFIXES:
                raise LGGInputError(path, "is not a DICOM file (no DICM marker after the 128-byte preamble)")
    return found


def _header(path: Path):
    """The dataset of ``path`` without its pixel data (``None`` for objects that hold no image)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises several types for truncated or corrupt files
        reason = str(err).splitlines()[0][:200] if str(err) else ""
        raise LGGInputError(path, f"unreadable DICOM file ({type(err).__name__}: {reason})") from None
    sop_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    if sop_class in (MEDIA_DIRECTORY_SOP_CLASS, SEGMENTATION_SOP_CLASS) or "Rows" not in ds:
        return None
    return ds


def study_of(path: Path) -> tuple[str | None, str]:
    """``(StudyInstanceUID, PatientID)`` of a DICOM file (``(None, "")`` for an object that holds no image)."""
    ds = _header(path)
    if ds is None:
        return None, ""
    return str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("PatientID", "") or "")


def series_of(files: Iterable[Path]) -> dict[str, list[tuple[Path, object]]]:
    """The image files of ``files`` grouped by ``SeriesInstanceUID`` (objects without an image skipped), with their
    headers, in the order first seen."""
    groups: dict[str, list[tuple[Path, object]]] = {}
    for path in files:
        ds = _header(path)
        if ds is not None:
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    return groups


def read_series(folder: str | Path) -> DicomSeries:
    """The one DICOM series under ``folder`` (see the module docstring for what is read and refused).

    Raises:
        LGGInputError: naming the file (or folder) and the problem: no DICOM image, several series, or a bad slice.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LGGInputError(folder, "is not a folder of DICOM files")
    groups = series_of(dicom_files(folder))
    if not groups:
        raise LGGInputError(folder, "holds no DICOM image")
    if len(groups) > 1:
        raise LGGInputError(folder, f"holds {len(groups)} DICOM series where one is expected: {describe(groups)}")
    return read_series_files([path for path, _ in next(iter(groups.values()))], folder)


def describe(groups: dict[str, list[tuple[Path, object]]]) -> str:
    """``'desc' (n files), ...`` of series groups, for error lines."""
    return ", ".join(
        f"{str(members[0][1].get('SeriesDescription', '') or '(no description)')!r} ({len(members)} files)"
        for members in groups.values()
    )


def _vector(path: Path, ds, keyword: str, size: int) -> np.ndarray:
    value = ds.get(keyword)
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (size,) or not np.isfinite(array).all():
        raise LGGInputError(path, f"{keyword} is missing or malformed ({value!r}): the slice has no usable geometry")
    return array


def _list(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _decode(path: Path, ds) -> np.ndarray:
    """The slice's pixels as float32 with the rescale applied."""
    syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    try:
        pixels = ds.pixel_array
    except Exception as err:
        name = getattr(syntax, "name", str(syntax))
        compressed = syntax is not None and getattr(syntax, "is_compressed", False)
        hint = "; install its decoder (pylibjpeg, gdcm) or convert the series to uncompressed" if compressed else ""
        raise LGGInputError(
            path, f"pixel data cannot be decoded (transfer syntax {name}: {str(err).splitlines()[0][:150]}){hint}"
        ) from None
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_series_files(files: Sequence[Path], source: Path) -> DicomSeries:
    """The series made of ``files`` (one ``SeriesInstanceUID``), checked, sorted along the slice normal, decoded.

    Args:
        files: the series' DICOM files in any order.
        source: what the user gave (the folder), named when the problem is not one file's.

    Raises:
        LGGInputError: naming the file and the problem (see the module docstring).
    """
    import pydicom

    _require_versions()
    headers = [(Path(p), _header(Path(p))) for p in files]
    headers = [(p, ds) for p, ds in headers if ds is not None]
    if not headers:
        raise LGGInputError(source, "holds no DICOM image")
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(uids) > 1:
        raise LGGInputError(source, f"files of {len(uids)} series given as one")
    first_path, first = headers[0]
    orientation = _vector(first_path, first, "ImageOrientationPatient", 6)
    spacing = _vector(first_path, first, "PixelSpacing", 2)
    size = (int(first.Rows), int(first.Columns))
    for path, ds in headers:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise LGGInputError(path, "is a multi-frame (enhanced) DICOM image; only single-frame series are read")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise LGGInputError(path, f"has {ds.SamplesPerPixel} samples per pixel; an MR series is grey (1)")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise LGGInputError(
                path,
                f"is {ds.Rows} x {ds.Columns} pixels, the series' first slice "
                f"({first_path.name}) {size[0]} x {size[1]}",
            )
        other = _vector(path, ds, "ImageOrientationPatient", 6)
        if np.abs(other - orientation).max() > TOLERANCE:
            raise LGGInputError(
                path,
                f"ImageOrientationPatient {_list(other)} differs from the series' first slice "
                f"({first_path.name}: {_list(orientation)})",
            )
        pixel = _vector(path, ds, "PixelSpacing", 2)
        if np.abs(pixel - spacing).max() > TOLERANCE * spacing.max():
            raise LGGInputError(
                path,
                f"PixelSpacing {_list(pixel)} differs from the series' first slice "
                f"({first_path.name}: {_list(spacing)})",
            )
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1) > 0.01 or abs(row_dir @ col_dir) > 0.01:
        raise LGGInputError(
            first_path, f"ImageOrientationPatient {_list(orientation)} is not two orthogonal unit directions"
        )
    positions = {p: _vector(p, ds, "ImagePositionPatient", 3) for p, ds in headers}
    headers.sort(key=lambda item: (float(positions[item[0]] @ normal), str(item[0])))
    along = np.array([positions[p] @ normal for p, _ in headers])
    _check_steps(headers, along)
    slices = []
    datasets = []
    for path, _ in headers:
        ds = pydicom.dcmread(path)
        slices.append(_decode(path, ds))
        del ds.PixelData  # the geometry and references are kept; the pixels are in the image
        datasets.append(ds)
    data = np.stack(slices, axis=-1)  # [row, column, slice]
    if len(headers) > 1:
        step = (positions[headers[-1][0]] - positions[headers[0][0]]) / (len(headers) - 1)
    else:
        thickness = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0) or 1)
        step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0] = col_dir * spacing[0]  # rows advance along the column direction, PixelSpacing[0] apart
    lps[:3, 1] = row_dir * spacing[1]  # columns along the row direction, PixelSpacing[1] apart
    lps[:3, 2] = step
    lps[:3, 3] = positions[headers[0][0]]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> nibabel RAS+
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    return DicomSeries(
        image,
        datasets,
        [path for path, _ in headers],
        str(first.get("SeriesDescription", "") or ""),
        str(first.get("SeriesInstanceUID", "")),
    )


def _check_steps(headers: list[tuple[Path, object]], along: np.ndarray) -> None:
    """Refuse duplicate slice positions and steps that are not the series' usual one (a missing slice)."""
    if len(along) < 2:
        return
    steps = np.diff(along)
    for k, step in enumerate(steps):
        if step < 1e-3:
            raise LGGInputError(
                headers[k + 1][0],
                f"has the same slice position ({along[k]:.3f} mm along the slice "
                f"normal) as {headers[k][0].name}: duplicate slice",
            )
    usual = float(np.median(steps))
    for k, step in enumerate(steps):
        if abs(step - usual) > STEP_TOLERANCE * usual:
            missing = round(step / usual) - 1
            problem = f"about {missing} slice(s) missing" if missing >= 1 else "slices unevenly spaced"
            raise LGGInputError(
                headers[k + 1][0],
                f"is {step:.2f} mm from the previous slice ({headers[k][0].name}) where the "
                f"series' step is {usual:.2f} mm: {problem} (its neighbours would be segmented as adjacent slices)",
            )


def write_seg(path: Path, mask: np.ndarray, series: DicomSeries, algorithm: tuple[str, str] | None = None) -> None:
    """Write ``mask`` as a binary DICOM Segmentation of ``series``, through a temporary name then renamed.

    Args:
        path: the ``.dcm`` file to write.
        mask: ``rows x columns x slices`` on the series' grid (the array of :attr:`DicomSeries.image`), nonzero in
            the segment; frames without any segment voxel are left out of the file, as highdicom does by default.
        series: the source series (its datasets, in slice order, are referenced frame by frame).
        algorithm: ``(name, version)`` of the model (default: monai-lgg and its version).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from monai_lgg import __version__

    _require_versions()
    mask = np.asarray(mask)
    if mask.shape[:3] != tuple(series.image.shape[:3]):
        raise ValueError(f"mask of shape {mask.shape} does not fit the series' grid {series.image.shape[:3]}")
    name, version = algorithm or ("monai-lgg", __version__)
    identification = hd.AlgorithmIdentificationSequence(
        name=str(name)[:64], family=codes.cid7162.ArtificialIntelligence, version=str(version)[:64]
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
    )
    frames = np.moveaxis(mask > 0, -1, 0).astype(np.uint8)  # (slices, rows, columns), one frame per source slice
    seg = hd.seg.Segmentation(
        source_images=series.datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=int(series.datasets[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-lgg",
        manufacturer_model_name=str(name)[:64],
        software_versions=f"monai-lgg {__version__}",
        device_serial_number="0",
        series_description=f"{SEGMENT_LABEL} ({name})"[:64],
    )
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        seg.save_as(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
