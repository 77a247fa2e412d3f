"""NIfTI volumes in any stored orientation are segmented like the converted ones; non-axial ones are refused.

Real patients from the shared Kaggle copy (skipped with a reason when it is absent) are converted, stored again as
RAS, LPS, sagittal and coronal arrays with the same world coordinates, and resampled in-plane; each is segmented with
the shipped model and ``predict``'s defaults and compared in world space (docs/inputs.md).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from monai_lgg.data.kaggle import kaggle_affine
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.predict import predict
from monai_lgg.studies import orientation_check as check

from .conftest import converted_real

PATIENT = "TCGA_CS_4942_19970222"  # 20 slices, tumour on 8 of them
STORAGES = ("RAS", "LPS", "SAR", "RSA")  # RSA: coronal slices (last axis anterior)


@pytest.fixture(scope="module")
def converted(shared_lgg, tmp_path_factory):
    """One real patient through ``convert_kaggle`` (PLS storage, as the model was trained on)."""
    return converted_real(shared_lgg, tmp_path_factory.mktemp("orientation"), [PATIENT])


def _modalities(converted) -> list[nib.Nifti1Image]:
    return [nib.load(p) for p in sorted((converted / "imagesTr").glob(f"{PATIENT}_000?.nii.gz"))]


def _save_case(folder, case: str, images: list[nib.Nifti1Image]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        nib.save(image, folder / f"{case}_{k:04d}.nii.gz")


@pytest.fixture(scope="module")
def storages(converted, tmp_path_factory):
    """The converted patient and its four re-stored copies, segmented in one run: ``{storage: (input, mask)}``."""
    root = tmp_path_factory.mktemp("storages")
    images = _modalities(converted)
    _save_case(root / "in", "PLS", images)
    for codes in STORAGES:
        _save_case(root / "in", codes, [check.reorient(m, codes) for m in images])
    predict(root / "in", root / "out", bundle="unet", progress=False)
    return {
        codes: (nib.load(root / "in" / f"{codes}_0000.nii.gz"), nib.load(root / "out" / f"{codes}.nii.gz"))
        for codes in ("PLS", *STORAGES)
    }


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("codes", STORAGES)
def test_any_storage_gives_the_converted_mask_in_world_space(storages, converted, codes):
    stored, mask = storages[codes]
    assert nib.aff2axcodes(stored.affine) == tuple(codes)
    # the mask lies on the input's exact grid, with its header
    assert mask.shape == stored.shape and np.array_equal(mask.affine, stored.affine)
    assert mask.header.get_zooms() == stored.header.get_zooms()
    native = np.asarray(storages["PLS"][1].dataobj)
    label = np.asarray(nib.load(converted / "labelsTr" / f"{PATIENT}.nii.gz").dataobj)
    assert check.dice(native, label) > 0.5  # the native run finds this patient's tumour at all
    assert check.dice(check.to_grid(mask, storages["PLS"][1]), native) >= 0.99


@pytest.mark.realdata
@pytest.mark.slow
def test_in_plane_resampling_keeps_the_dice(converted, tmp_path):
    label = nib.load(converted / "labelsTr" / f"{PATIENT}.nii.gz")
    images = _modalities(converted)
    cases = {"native": (images, label)}
    for name, factor, shape in (("half_mm", 2.0, (512, 512)), ("crop240", 1.0, (240, 240))):
        reference = check.resample_in_plane(label, factor, shape, 1)
        mask = (np.asarray(reference.dataobj) > 0.5 * np.asarray(label.dataobj).max()).astype(np.uint8)
        cases[name] = ([check.resample_in_plane(m, factor, shape, 1) for m in images], mask)
    for name, (volumes, _) in cases.items():
        _save_case(tmp_path / "in", name, volumes)
    predict(tmp_path / "in", tmp_path / "out", bundle="unet", progress=False)
    scores = {}
    for name, (volumes, reference) in cases.items():
        mask = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        assert mask.shape == volumes[0].shape and np.allclose(mask.affine, volumes[0].affine)
        scores[name] = check.dice(np.asarray(mask.dataobj), np.asarray(getattr(reference, "dataobj", reference)))
    assert scores["native"] > 0.5, scores
    assert abs(scores["half_mm"] - scores["native"]) <= 0.02, scores
    assert abs(scores["crop240"] - scores["native"]) <= 0.02, scores


def _volume(path, affine: np.ndarray, shape=(64, 64, 12)) -> None:
    data = np.random.default_rng(0).integers(0, 200, (*shape, 3), dtype=np.uint8)
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.mark.parametrize(
    "spacing, plane", [((1.0, 5.0, 1.0), "sagittal"), ((5.0, 1.0, 1.0), "coronal")], ids=["sagittal", "coronal"]
)
def test_non_axial_acquisition_is_refused(tmp_path, spacing, plane):
    # PLS storage, but the thick (5 mm) direction is an in-plane axis: slices along the last axis would be
    # segmented across the acquisition's slices
    path = tmp_path / "thick.nii.gz"
    _volume(path, kaggle_affine((64, 64, 12), spacing))
    with pytest.raises(LGGInputError, match="not an axial acquisition") as raised:
        predict(path, tmp_path / "out", bundle="unet", progress=False)
    assert raised.value.path == str(path) and plane in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out" / "thick.nii.gz").exists()


def test_oblique_affine_is_refused(tmp_path):
    angle = np.radians(40)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]  # about the R-L axis
    path = tmp_path / "oblique.nii.gz"
    _volume(path, rotation @ kaggle_affine((64, 64, 12)))
    with pytest.raises(LGGInputError, match="oblique: their normal is 40 degrees") as raised:
        predict(path, tmp_path / "out", bundle="unet", progress=False)
    assert raised.value.path == str(path)


def test_slightly_tilted_axial_volume_is_segmented(tmp_path):
    angle = np.radians(10)  # a usual head tilt: still axial slices
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    path = tmp_path / "tilted.nii.gz"
    affine = rotation @ kaggle_affine((32, 32, 4))
    _volume(path, affine, (32, 32, 4))
    predict(path, tmp_path / "out", bundle="unet", progress=False)
    mask = nib.load(tmp_path / "out" / "tilted.nii.gz")
    assert mask.shape == (32, 32, 4) and np.allclose(mask.affine, affine)
