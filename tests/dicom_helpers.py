"""DICOM test data written by the tests: a NIfTI-like volume exported as an MR Image Storage series.

:func:`write_series` turns any ``rows x columns x slices`` array with a RAS+ affine into one DICOM file per slice
whose ``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing`` describe exactly that affine (so
reading the series back must give the same voxels in the same place), under shuffled file names (sorting by name
would stack the slices wrongly). Values are stored as uint16 through ``RescaleSlope`` / ``RescaleIntercept``.
"""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def realistic_affine(shape, spacing=(0.94, 0.94, 5.0), origin=(-120.0, 110.0, -40.0)) -> np.ndarray:
    """A RAS+ affine of an axial acquisition stored rows posterior, columns left (the model's frame)."""
    affine = np.zeros((4, 4))
    affine[1, 0] = -spacing[0]  # rows -> posterior
    affine[0, 1] = -spacing[1]  # columns -> left
    affine[2, 2] = spacing[2]  # slices -> superior
    affine[:3, 3] = origin
    affine[3, 3] = 1
    return affine


def write_series(
    folder: Path,
    image: nib.Nifti1Image,
    description: str = "AX FLAIR",
    patient_id: str = "LGG-TEST-1",
    study_uid: str | None = None,
    series_number: int = 3,
    slope: float = 0.5,
    intercept: float = -10.0,
    seed: int = 0,
) -> list[Path]:
    """Write ``image`` (3D, any orientation) as one DICOM file per slice of its last axis, shuffled names.

    Returns:
        the files, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(image.dataobj, dtype=np.float64)
    lps = LPS @ image.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(0))
    col_dir, row_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]  # array axis 0 = DICOM rows
    stored = np.round((data - intercept) / slope)
    assert stored.min() >= 0 and stored.max() < 65536, "values do not fit uint16 with this rescale"
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    names = [f"IM{n:05d}" for n in random.Random(seed).sample(range(10000, 99999), data.shape[2])]
    files = []
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"{names[k]}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", patient_id, "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20260101", "120000", "A1"
        ds.ReferringPhysicianName, ds.Manufacturer = "", "monai-lgg tests"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", series_number, k + 1
        ds.SeriesDescription, ds.PositionReferenceIndicator = description, ""
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "BRAIN"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 100, 9000, 1, 3
        ds.SliceThickness, ds.SpacingBetweenSlices = f"{spacing[2]:.6g}", f"{spacing[2]:.6g}"
        ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.SliceLocation = f"{(lps @ [0, 0, k, 1])[2]:.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[0], data.shape[1]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
        ds.PixelData = stored[:, :, k].astype("<u2").tobytes()
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def edit(path: Path, **values) -> None:
    """Set DICOM attributes of one file (``None`` deletes)."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
