"""Sequences given as separate files: read, resampled onto the FLAIR grid in world space, assembled in channel order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from monai_lgg.errors import LGGInputError
from monai_lgg.inference.sequences import SEQUENCES, assemble_sequences, read_sequence


def _volume(shape=(16, 12, 6), affine=None, seed=0, dtype=np.int16) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, size=shape).astype(dtype)
    return nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0]) if affine is None else affine)


def _linear(shape, affine) -> nib.Nifti1Image:
    """A volume whose value is a linear function of the world coordinates (linear interpolation is exact)."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return nib.Nifti1Image((world @ np.array([2.0, -1.0, 0.5]) + 100.0).astype(np.float32), affine)


def test_channel_order():
    assert SEQUENCES == ("t1", "flair", "t1c")


def test_same_grid_is_stacked_unchanged(tmp_path):
    flair, t1, t1c = _volume(seed=1), _volume(seed=2), _volume(seed=3)
    image, real = assemble_sequences({"flair": flair, "t1": t1, "t1c": t1c}, tmp_path / "flair.nii.gz")
    assert real == ("t1", "flair", "t1c")
    assert image.shape == (16, 12, 6, 3)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(image.affine, flair.affine)
    data = np.asanyarray(image.dataobj)
    for k, source in enumerate((t1, flair, t1c)):
        assert np.array_equal(data[..., k], np.asanyarray(source.dataobj))  # bit-identical: no interpolation


def test_missing_sequences_are_flair(tmp_path):
    flair = _volume(seed=4)
    image, real = assemble_sequences({"flair": flair}, tmp_path / "f.nii.gz")
    assert real == ("flair",)
    data = np.asanyarray(image.dataobj)
    for k in range(3):
        assert np.array_equal(data[..., k], np.asanyarray(flair.dataobj))
    _, real = assemble_sequences({"flair": flair, "t1c": _volume(seed=5)}, tmp_path / "f.nii.gz")
    assert real == ("flair", "t1c")


def test_other_orientation_is_reoriented_exactly(tmp_path):
    """The same grid stored flipped and permuted: resampling lands on voxel centres, values are kept exactly."""
    flair = _volume(seed=6)
    data = np.asanyarray(flair.dataobj)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(flair.affine), nib.orientations.axcodes2ornt("SPL"))
    stored = nib.orientations.apply_orientation(data, ornt)
    affine = flair.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    t1 = nib.Nifti1Image(stored.astype(np.int16), affine)
    image, _ = assemble_sequences({"flair": flair, "t1": t1}, tmp_path / "f.nii.gz")
    np.testing.assert_allclose(np.asanyarray(image.dataobj)[..., 0], data, atol=1e-3)


def test_other_resolution_is_resampled_linearly_in_world_space(tmp_path):
    flair_affine = np.array([[0, -1.0, 0, 20], [1.0, 0, 0, -10], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    flair = _linear((16, 12, 6), flair_affine)
    t1_affine = np.array([[0.5, 0, 0, 7.2], [0, 0.5, 0, -10.3], [0, 0, 1.5, 4.0], [0, 0, 0, 1]])  # finer, shifted
    t1 = _linear((40, 50, 16), t1_affine)
    image, _ = assemble_sequences({"flair": flair, "t1": t1}, tmp_path / "f.nii.gz")
    assert image.get_data_dtype() == np.float32
    assert image.shape[:3] == flair.shape
    np.testing.assert_array_equal(image.affine, flair.affine)
    # the field is linear, so linear interpolation reproduces it wherever the T1 covers the FLAIR voxel
    inside = np.asanyarray(image.dataobj)[..., 0] != 0
    assert inside.sum() > 50
    np.testing.assert_allclose(np.asanyarray(image.dataobj)[..., 0][inside], flair.get_fdata()[inside], rtol=1e-5)


def test_no_flair_refused(tmp_path):
    with pytest.raises(LGGInputError, match="no FLAIR"):
        assemble_sequences({"t1": _volume()}, tmp_path / "case")


def test_no_overlap_refused_naming_the_file(tmp_path):
    flair = _volume()
    far = _volume(affine=np.diag([1.0, 1.0, 3.0, 1.0]) + np.array([[0, 0, 0, 500.0]] + [[0] * 4] * 3))
    nib.save(far, tmp_path / "t1.nii.gz")
    with pytest.raises(LGGInputError, match="does not overlap") as err:
        assemble_sequences({"flair": flair, "t1": read_sequence(tmp_path / "t1.nii.gz")}, tmp_path / "f.nii.gz")
    assert str(err.value).startswith(str(tmp_path / "t1.nii.gz"))
    assert "\n" not in str(err.value)


def test_read_sequence(tmp_path):
    image = _volume()
    nib.save(image, tmp_path / "a.nii.gz")
    loaded = read_sequence(tmp_path / "a.nii.gz")
    assert np.array_equal(np.asanyarray(loaded.dataobj), np.asanyarray(image.dataobj))
    single = nib.Nifti1Image(np.asanyarray(image.dataobj)[..., None], image.affine)
    nib.save(single, tmp_path / "b.nii.gz")
    assert read_sequence(tmp_path / "b.nii.gz").shape == image.shape


@pytest.mark.parametrize(
    "name, data, match",
    [
        ("missing.nii.gz", None, "does not exist"),
        ("three.nii.gz", np.zeros((8, 8, 4, 3), np.int16), "one sequence per file"),
        ("flat.nii.gz", np.zeros((8, 8), np.int16), "2D"),
        ("nan.nii.gz", np.full((8, 8, 4), np.nan, np.float32), "NaN"),
        ("scan.mha", b"x", "not a NIfTI"),
        ("broken.nii.gz", b"not a nifti", "unreadable"),
    ],
)
def test_read_sequence_refuses_bad_files(tmp_path, name, data, match):
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif data is not None:
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(LGGInputError, match=match) as err:
        read_sequence(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
