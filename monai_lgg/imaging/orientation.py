"""The model's canonical frame for NIfTI volumes, and the lossless reorientation of any stored orientation into it.

The networks were trained on volumes converted by ``monai-lgg convert`` (:func:`monai_lgg.data.kaggle.kaggle_affine`):
array axis 0 (rows) runs to the patient's posterior, axis 1 (columns) to the patient's left and axis 2 (slices) to
superior, orientation code ``PLS``: axial slices seen as in the Kaggle TIFFs. A NIfTI volume stored in any other
orientation (RAS, LPS, sagittal or coronal arrays of the same axial acquisition) is brought into that frame by an
axis permutation and flips only (nibabel ``io_orientation`` / ``apply_orientation``: no interpolation, every voxel
kept), segmented, and its outputs are mapped back onto the input's exact grid.

What is refused (:class:`~monai_lgg.errors.LGGInputError` naming the file), because the model would segment along
the wrong axis: a volume whose slice plane is not close to axial, i.e. an oblique affine whose slice normal is more
than :data:`MAX_OBLIQUE_DEGREES` from the superior axis, or a real sagittal/coronal acquisition whose thick slice
direction lies in the model's image plane after reorientation (in-plane spacing ratio above
:data:`MAX_INPLANE_RATIO`). Such volumes must be resampled to axial slices first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from monai_lgg.errors import LGGInputError

__all__ = [
    "kaggle_affine",
    "MODEL_AXCODES",
    "MAX_OBLIQUE_DEGREES",
    "MAX_INPLANE_RATIO",
    "Reorientation",
    "plan_reorientation",
]


def kaggle_affine(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Affine for a volume indexed ``[row, column, slice]`` (see the module docstring), centred on 0.

    Args:
        shape: (rows, columns, slices).
        spacing: (row, column, slice) voxel size in mm. The TIFFs store none: 1 mm by default.
    """
    rows, cols, slices = shape[:3]
    sr, sc, ss = (float(s) for s in spacing)
    affine = np.zeros((4, 4))
    affine[0, 1] = -sc  # column -> patient left = -x in RAS
    affine[1, 0] = -sr  # row -> posterior = -y
    affine[2, 2] = ss  # slice -> superior = +z
    affine[:3, 3] = (sc * (cols - 1) / 2, sr * (rows - 1) / 2, -ss * (slices - 1) / 2)
    affine[3, 3] = 1.0
    return affine


MODEL_AXCODES: tuple[str, ...] = tuple(nib.aff2axcodes(kaggle_affine((2, 2, 2))))
"""Orientation of the model's frame, from the converter's affine: ``("P", "L", "S")``."""

MAX_OBLIQUE_DEGREES = 30.0
"""Largest angle between a volume's slice normal and the superior axis that is still segmented as axial."""

MAX_INPLANE_RATIO = 2.0
"""Largest ratio of the two in-plane voxel sizes (after reorientation) that is still an axial slice."""


@dataclass(frozen=True)
class Reorientation:
    """How one NIfTI volume maps to the model's frame and back.

    Attributes:
        stored: nibabel orientation of the stored array (``io_orientation`` of its affine).
        input_shape: the stored spatial shape.
        model_affine: the affine of the reoriented array (same world coordinates as the file).
    """

    stored: np.ndarray
    input_shape: tuple[int, int, int]
    model_affine: np.ndarray

    @property
    def to_model(self) -> np.ndarray:
        return ornt_transform(self.stored, _model_ornt())

    @property
    def identity(self) -> bool:
        """The file is already stored in the model's frame."""
        return bool(np.array_equal(self.to_model, [[0, 1], [1, 1], [2, 1]]))

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        """(row, column, slice) voxel size in mm in the model's frame."""
        return tuple(float(z) for z in np.sqrt((self.model_affine[:3, :3] ** 2).sum(0)))  # type: ignore[return-value]

    def array_to_model(self, array: np.ndarray, first_axis: int = 0) -> np.ndarray:
        """Reorient ``array`` whose spatial axes start at ``first_axis`` (1 for channel-first) to the model's frame."""
        return _apply(array, self.to_model, first_axis)

    def array_to_input(self, array: np.ndarray, first_axis: int = 0) -> np.ndarray:
        """Map ``array`` in the model's frame (spatial axes from ``first_axis``) back onto the stored grid."""
        return _apply(array, ornt_transform(_model_ornt(), self.stored), first_axis)


def _model_ornt() -> np.ndarray:
    return axcodes2ornt(MODEL_AXCODES)


def _apply(array: np.ndarray, transform: np.ndarray, first_axis: int) -> np.ndarray:
    """``apply_orientation`` on the three spatial axes starting at ``first_axis`` (others, e.g. channels, kept)."""
    spatial = range(first_axis, first_axis + 3)
    moved = np.moveaxis(np.asarray(array), spatial, range(3))
    return np.ascontiguousarray(np.moveaxis(apply_orientation(moved, transform), range(3), spatial))


def plan_reorientation(path: str | Path, affine: np.ndarray, shape: tuple[int, ...]) -> Reorientation:
    """The reorientation of a volume with ``affine`` and spatial ``shape`` to the model's frame.

    Raises:
        LGGInputError: naming ``path``, when the slices are not close to axial (oblique, or a sagittal/coronal
            acquisition whose thick direction would lie in the model's image plane).
    """
    affine = np.asarray(affine, dtype=np.float64)
    shape3 = tuple(int(s) for s in shape[:3])
    stored = io_orientation(affine)
    to_model = ornt_transform(stored, _model_ornt())
    axes = stored[:, 0].astype(int)  # world axis (0 = x/R, 1 = y/A, 2 = z/S) of each stored axis
    columns = affine[:3, :3]
    zooms = np.sqrt((columns**2).sum(0))
    in_plane = [k for k in range(3) if axes[k] != 2]
    normal = np.cross(columns[:, in_plane[0]], columns[:, in_plane[1]])
    angle = float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / np.linalg.norm(normal)))))
    if angle > MAX_OBLIQUE_DEGREES:
        raise LGGInputError(
            path,
            f"slices are oblique: their normal is {angle:.0f} degrees from the superior axis (at most "
            f"{MAX_OBLIQUE_DEGREES:.0f} are segmented as axial); resample the volume to axial slices first",
        )
    ratio = max(zooms[in_plane]) / min(zooms[in_plane])
    if ratio > MAX_INPLANE_RATIO:
        sizes = " x ".join(f"{zooms[k]:.2g}" for k in in_plane)
        thick = "RAS"[axes[in_plane[int(np.argmax(zooms[in_plane]))]]]
        raise LGGInputError(
            path,
            f"is not an axial acquisition: its axial-plane voxels are {sizes} mm (ratio {ratio:.1f} > "
            f"{MAX_INPLANE_RATIO:g}; the thick slices run along {'R-L' if thick == 'R' else 'A-P'}, a "
            f"{'sagittal' if thick == 'R' else 'coronal'} acquisition); resample the volume to axial slices first",
        )
    model_affine = affine @ inv_ornt_aff(to_model, shape3)
    return Reorientation(stored, shape3, model_affine)  # type: ignore[arg-type]
