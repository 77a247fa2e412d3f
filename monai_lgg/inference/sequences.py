"""MRI sequences given as separate files, assembled into the model's 3-channel input on the FLAIR grid.

The networks take three channels, in order: pre-contrast T1 (``"t1"``), FLAIR (``"flair"``) and post-contrast T1
(``"t1c"``): :data:`SEQUENCES`. A scan usually stores each sequence as its own volume, on its own grid (another
resolution, field of view or orientation). :func:`assemble_sequences` puts them on one grid, FLAIR's (the
sequence every case has and the one the tumour is drawn on):

* FLAIR is kept as stored (array, affine, header);
* a sequence whose grid equals FLAIR's (same shape and affine) is stacked as stored, without interpolation;
* any other sequence is resampled onto the FLAIR grid in world space (its affine and FLAIR's), with linear
  interpolation; FLAIR voxels outside its field of view get 0;
* a missing pre- or post-contrast sequence is replaced by FLAIR, as the data set's release did for patients
  without it (and as the shipped models saw in training).

A sequence whose field of view does not meet FLAIR's anywhere (wrong patient, wrong header) is refused with one
line naming its file.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import affine_transform

from monai_lgg.errors import LGGInputError

__all__ = ["SEQUENCES", "SEQUENCE_NAMES", "GRID_TOLERANCE_MM", "read_sequence", "assemble_sequences", "same_grid"]

SEQUENCES: tuple[str, ...] = ("t1", "flair", "t1c")
"""The sequences in the model's channel order: pre-contrast T1, FLAIR, post-contrast T1."""

SEQUENCE_NAMES = {"t1": "pre-contrast T1", "flair": "FLAIR", "t1c": "post-contrast T1"}

GRID_TOLERANCE_MM = 1e-4
"""Largest affine difference (mm) for two grids to count as the same (float32 headers round their affines)."""


def read_sequence(path: Path) -> nib.Nifti1Image:
    """One sequence: a NIfTI file (a 3D volume, or 4D with a single volume), or a DICOM series folder.

    The volume's geometry and values are checked here, so a bad file is named before anything is resampled.

    Raises:
        LGGInputError: missing or unreadable file, not one 3D volume, unusable header geometry, NaN/infinite values.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        try:
            from monai_lgg.inference.dicom import read_series
        except ImportError:
            raise LGGInputError(path, "is a folder; give the sequence as a NIfTI file (.nii / .nii.gz)") from None
        return read_series(path).image
    if not path.exists():
        raise LGGInputError(path, "does not exist")
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        raise LGGInputError(path, "is not a NIfTI volume (.nii / .nii.gz)")
    from monai_lgg.data.readers import check_finite
    from monai_lgg.inference.inputs import check_nifti_geometry, input_error

    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image):
            image = nib.Nifti1Image.from_image(image)
        shape = tuple(image.shape)
        if len(shape) == 4 and shape[3] == 1:
            image = image.slicer[..., 0]
            shape = shape[:3]
    except LGGInputError:
        raise
    except Exception as err:
        raise input_error(path, err, "NIfTI volume") from None
    if len(shape) != 3:
        what = f"{shape[3]} volumes" if len(shape) == 4 else f"{len(shape)}D"
        raise LGGInputError(path, f"holds {what} (shape {shape}); give one sequence per file, a 3D volume")
    check_nifti_geometry(path, image)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # e.g. a truncated .nii.gz fails only when its data are read
        raise input_error(path, err, "NIfTI data") from None
    check_finite(path, data)
    loaded = nib.Nifti1Image(data, image.affine, image.header)
    loaded.set_filename(str(path))  # errors about this sequence name its file
    return loaded


def same_grid(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> bool:
    """``image`` has ``reference``'s spatial shape and (within :data:`GRID_TOLERANCE_MM`) affine."""
    return tuple(image.shape[:3]) == tuple(reference.shape[:3]) and bool(
        np.allclose(image.affine, reference.affine, rtol=0.0, atol=GRID_TOLERANCE_MM)
    )


def _source_name(image: nib.Nifti1Image, fallback: Path) -> str | Path:
    name = image.get_filename()
    return name if name else fallback


def _resample(image: nib.Nifti1Image, reference: nib.Nifti1Image, path: str | Path) -> np.ndarray:
    """``image`` resampled onto ``reference``'s grid in world space (linear; 0 outside its field of view)."""
    to_source = np.linalg.inv(np.asarray(image.affine, np.float64)) @ np.asarray(reference.affine, np.float64)
    shape = tuple(int(s) for s in reference.shape[:3])
    source = np.asarray(image.dataobj, dtype=np.float32)
    # which reference voxels fall inside the source's field of view (nearest: a voxel centre within half a voxel)
    covered = affine_transform(
        np.ones(source.shape, np.uint8), to_source[:3, :3], to_source[:3, 3], shape, order=0, mode="constant", cval=0
    )
    if not covered.any():
        raise LGGInputError(
            path,
            "does not overlap the FLAIR volume anywhere in world space (another patient, or a wrong header affine?)",
        )
    return affine_transform(source, to_source[:3, :3], to_source[:3, 3], shape, order=1, mode="constant", cval=0.0)


def assemble_sequences(images: dict[str, nib.Nifti1Image], source: Path) -> tuple[nib.Nifti1Image, tuple[str, ...]]:
    """The model's 3-channel input from separate sequences, on the FLAIR image's grid.

    Args:
        images: sequence name (:data:`SEQUENCES`) -> 3D image; ``"flair"`` is required, ``"t1"`` / ``"t1c"``
            optional (replaced by FLAIR when missing).
        source: the file named in errors that concern the case as a whole (e.g. a missing FLAIR).

    Returns:
        a 4D image ``rows x columns x slices x 3`` in :data:`SEQUENCES` order with FLAIR's affine and header, and
        the names of the sequences that were given (in :data:`SEQUENCES` order). Without resampling the input
        values are stacked unchanged (their common dtype); a resampled sequence makes the volume float32.

    Raises:
        LGGInputError: FLAIR missing, an unknown sequence name, a sequence that is not 3D, or one that does not
            overlap the FLAIR grid (naming its file).
    """
    unknown = sorted(set(images) - set(SEQUENCES))
    if unknown:
        raise LGGInputError(source, f"unknown sequence(s) {', '.join(unknown)}: expected {', '.join(SEQUENCES)}")
    flair = images.get("flair")
    if flair is None:
        raise LGGInputError(source, "no FLAIR volume: FLAIR is required (pre- and post-contrast T1 are optional)")
    channels: list[np.ndarray] = []
    for name in SEQUENCES:
        image = images.get(name, flair)
        path = _source_name(image, source)
        if len(image.shape) != 3:
            raise LGGInputError(path, f"{SEQUENCE_NAMES[name]} has shape {tuple(image.shape)}, expected a 3D volume")
        if image is flair or same_grid(image, flair):
            channels.append(np.asanyarray(image.dataobj))  # stacked as stored: no interpolation
        else:
            channels.append(_resample(image, flair, path))
    dtype = np.result_type(*channels)
    data = np.stack([np.asarray(c, dtype=dtype) for c in channels], axis=-1)
    header = flair.header.copy()
    header.set_data_dtype(data.dtype)
    assembled = nib.Nifti1Image(data, flair.affine, header)
    assembled.header.set_slope_inter(None, None)
    return assembled, tuple(name for name in SEQUENCES if name in images)
