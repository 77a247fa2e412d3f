"""What ``monai-lgg predict`` can read, grouped into cases, and how each case is loaded.

Input forms:

* one slice image (``.tif``/``.tiff``/``.png``/...) with 3 channels like the Kaggle slices;
* a folder of slice images, one patient or many (the Kaggle layout): the slices of a case
  (``<case>_<n>.tif`` in one folder, ``_mask`` files ignored) are stacked in numeric order;
* a NIfTI volume: one 3-channel file (rows x columns x slices x 3), or one of the three
  ``<case>_000x.nii.gz`` modality files (its siblings are found);
* a folder of NIfTI volumes, or a converted data set (``datalist.json``).

NIfTI volumes may be stored in any orientation: they are reoriented to the model's frame on loading and their
outputs are mapped back onto the input's grid (:mod:`monai_lgg.inference.orientation`).

Which file is which form, and how each form names and writes its outputs: :mod:`monai_lgg.inference.formats`.

Slices and volumes are loaded with the presets of :mod:`monai_lgg.transforms.presets` (the same
per-slice normalisation as training), so a slice predicted alone and the same slice inside a
stacked case reach the network as the same array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai_lgg.data.kaggle import _ranges, read_tiff_header
from monai_lgg.data.naming import MASK_SUFFIX, NIFTI_SUFFIXES, SLICE_NUMBER, SLICE_SUFFIXES, TIFF_SUFFIXES
from monai_lgg.data.naming import file_stem as _stem
from monai_lgg.data.naming import file_suffix as _suffix
from monai_lgg.errors import LGGInputError, input_error_in
from monai_lgg.inference.orientation import Reorientation, plan_reorientation

# find_cases and load_case live in monai_lgg.inference.formats (the registry of input forms); import them from there
# or from monai_lgg.inference
__all__ = ["Case", "VolumeReference", "SLICE_SUFFIXES", "NIFTI_SUFFIXES", "input_error"]

OTHER_VOLUME_SUFFIXES = (
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".mgz",
    ".mgh",
    ".npy",
    ".npz",
    ".dcm",
    ".hdr",
    ".img",
    ".vtk",
    ".gz",
)


@dataclass
class Case:
    """One unit of prediction: a stack of 2D slices or a NIfTI volume.

    Attributes:
        name: case id (Kaggle folder/file prefix, or NIfTI name without ``_000x``).
        form: ``"slices"`` or ``"volume"``.
        files: slice files in slice order, or the NIfTI file(s) (modalities in channel order).
        out_dir: output sub-folder, relative to the output root (mirrors the input folders for slices).
        format_name: the :mod:`~monai_lgg.inference.formats` form that found the case (its loading and writing).
    """

    name: str
    form: str
    files: list[Path]
    out_dir: Path = field(default_factory=Path)
    format_name: str = ""

    @property
    def num_files(self) -> int:
        return len(self.files)


def _is_slice(path: Path) -> bool:
    return path.is_file() and _suffix(path) in SLICE_SUFFIXES and not _stem(path).lower().endswith(MASK_SUFFIX)


def _is_nifti(path: Path) -> bool:
    return path.is_file() and _suffix(path) in NIFTI_SUFFIXES


def input_error(path: str | Path, err: BaseException, what: str) -> LGGInputError:
    """The user-facing error for a failed read: the :class:`LGGInputError` behind ``err``, else a new one."""
    found = input_error_in(err)
    if found is not None:
        return found
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return LGGInputError(path, f"unreadable {what} ({type(err).__name__}: {message[:200]})")


def _check_channels(path: Path, image: torch.Tensor, in_channels: int) -> None:
    if image.shape[0] != in_channels:
        raise LGGInputError(
            path,
            f"has {image.shape[0]} channel(s), the model needs {in_channels}"
            + (" (pre-contrast, FLAIR, post-contrast)" if in_channels == 3 else ""),
        )


MAX_AFFINE = 1e6
"""Largest plausible affine entry in mm (a scanner's field of view is under a metre; 1e30 is a broken header)."""


def check_slices(case: Case) -> None:
    """What ``monai-lgg convert`` checks of a patient's slices, before the case is segmented: consecutive slice
    numbers (a missing slice would make its neighbours look adjacent) and one pixel type for all slices.

    Raises:
        LGGInputError: naming the folder (a gap) or the odd slice (another pixel type).
    """
    if len(case.files) < 2:
        return
    numbers = [int(m["number"]) for f in case.files if (m := SLICE_NUMBER.match(_stem(f)))]
    if len(numbers) == len(case.files):
        missing = sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))
        if missing:
            raise LGGInputError(
                case.files[0].parent,
                f"{case.name}: gap in slice numbers: missing {_ranges(missing)} (its "
                "neighbours would be segmented as adjacent slices)",
            )
    tiffs = [f for f in case.files if _suffix(f) in TIFF_SUFFIXES]
    first = None
    for path in tiffs:
        _, dtype = read_tiff_header(path)
        first = first or (path, dtype)
        if dtype != first[1]:
            raise LGGInputError(
                path, f"pixel type is {dtype}, the case's other slices are {first[1]} (e.g. {first[0].name})"
            )


def check_nifti_geometry(path: Path, image: nib.Nifti1Image) -> None:
    """Refuse a NIfTI header whose geometry is unusable: NaN, infinite, zero, singular or absurd affine, or a
    voxel size that is not positive and finite. Its mask would carry that header into every output.

    Raises:
        LGGInputError: naming the file and what is wrong.
    """
    affine = np.asarray(image.affine, dtype=np.float64)
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    if not np.isfinite(affine).all():
        raise LGGInputError(path, "header affine holds NaN or infinite values: the volume has no usable geometry")
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise LGGInputError(path, f"header voxel size (pixdim) {zooms} is not positive and finite")
    if np.abs(affine).max() > MAX_AFFINE:
        largest = np.abs(affine).max()
        raise LGGInputError(path, f"header affine holds values up to {largest:.3g} mm: not a real geometry")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise LGGInputError(
            path, "header affine is singular (zero or degenerate axes): the volume has no usable geometry"
        )


def _load_slices(case: Case, in_channels: int, transform: Callable) -> torch.Tensor:
    check_slices(case)
    slices = []
    for path in case.files:
        try:
            image = transform({"image": str(path)})["image"]
        except Exception as err:
            raise input_error(path, err, "image") from None
        if image.ndim != 3:
            raise LGGInputError(path, f"expected a 2D image, got shape {tuple(image.shape)}")
        _check_channels(path, image, in_channels)
        if slices and image.shape != slices[0].shape:
            raise LGGInputError(
                path, f"size {tuple(image.shape[1:])} differs from the case's first slice {tuple(slices[0].shape[1:])}"
            )
        slices.append(torch.as_tensor(image))
    return torch.stack(slices, dim=-1)


@dataclass(frozen=True)
class VolumeReference:
    """Where a NIfTI case's outputs go: the input file's grid, and how its array maps to the model's frame.

    Attributes:
        image: the first input file (its shape, affine and header are kept by every output).
        reorientation: the lossless mapping between the stored array and the model's frame
            (:mod:`monai_lgg.inference.orientation`).
    """

    image: nib.Nifti1Image
    reorientation: Reorientation

    @property
    def affine(self) -> np.ndarray:
        return self.image.affine

    @property
    def header(self):
        return self.image.header

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(row, column, slice) voxel size in mm along the model's axes (the axes of the tumour tables)."""
        return self.reorientation.model_spacing


def _load_volume(case: Case, in_channels: int, normalization: str) -> tuple[torch.Tensor, VolumeReference]:
    from monai_lgg.transforms.presets import volume_transforms

    files = [str(f) for f in case.files]
    try:
        headers = [nib.load(f) for f in files]  # the geometry first: a broken header is refused before the pixels
    except Exception as err:
        raise input_error(case.files[0], err, "NIfTI volume") from None
    for path, header in zip(case.files, headers, strict=True):
        check_nifti_geometry(path, header)
    reference = headers[0]
    transform = volume_transforms(label_key=None, image_channels=in_channels, normalization="none")
    try:
        image = transform({"image": files if len(files) > 1 else files[0]})["image"]
    except Exception as err:
        raise input_error(case.files[0], err, "NIfTI volume") from None
    if image.ndim != 4:
        raise LGGInputError(case.files[0], f"expected a 3D volume, got an image of shape {tuple(image.shape)}")
    _check_channels(case.files[0], image, in_channels)
    return volume_in_model_frame(case.files[0], np.asarray(image), reference, normalization)


def volume_in_model_frame(
    path: Path, array: np.ndarray, reference: nib.Nifti1Image, normalization: str
) -> tuple[torch.Tensor, VolumeReference]:
    """A channel-first float32 ``array`` stored on ``reference``'s grid, reoriented to the model's frame and
    normalised per slice; with the :class:`VolumeReference` that maps outputs back onto ``reference``'s grid.

    Raises:
        LGGInputError: naming ``path``, when the volume's slices are not close to axial.
    """
    from monai.data import MetaTensor

    from monai_lgg.transforms.presets import slice_normalizer

    reorientation = plan_reorientation(path, reference.affine, reference.shape)
    # reorient before the per-slice normalisation: its slices are the model's axial slices
    array = reorientation.array_to_model(array, first_axis=1)
    normalizer = slice_normalizer(normalization, slice_dim=-1)
    model_image = MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(reorientation.model_affine))
    if normalizer is not None:
        model_image = normalizer(model_image)
    return model_image.float(), VolumeReference(reference, reorientation)
