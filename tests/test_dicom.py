"""DICOM in, DICOM SEG out: series geometry, sequences, bad series, and masks equal to those of the same NIfTI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1, generate_uid

from monai_lgg.data.synthetic import make_synthetic_case
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.dicom import read_series
from monai_lgg.inference.formats import DicomSeries, find_cases, load_case, recognise_sequence
from monai_lgg.inference.predict import predict

from .conftest import CONSOLE_SCRIPT
from .dicom_helpers import edit, realistic_affine, write_series

OPTIONS = {"progress": False, "device": "cpu", "precision": "fp32"}


def phantom(num_slices: int = 12, size: int = 96, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic patient as ``rows x columns x slices x 3`` (pre, FLAIR, post) float32 and its lesion mask."""
    image, mask = make_synthetic_case(num_slices, size, seed=seed)
    return np.moveaxis(image, 0, 2).astype(np.float32), np.moveaxis(mask, 0, -1)


def channel(volume: np.ndarray, k: int, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    return nib.Nifti1Image(volume[..., k], realistic_affine(volume.shape) if affine is None else affine)


def reoriented(image: nib.Nifti1Image, axcodes: tuple[str, str, str]) -> nib.Nifti1Image:
    return image.as_reoriented(ornt_transform(io_orientation(image.affine), axcodes2ornt(axcodes)))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return phantom()[0]


# -- reading ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axcodes", [("P", "L", "S"), ("R", "A", "S"), ("L", "P", "I"), ("A", "R", "S")])
def test_series_is_read_in_place_whatever_its_stored_orientation(tmp_path, volume, axcodes):
    """Voxels and RAS+ affine of the series are those of the volume it was written from (shuffled file names,
    slices in any order along the normal), and the model sees the same array in every stored orientation."""
    flair = channel(volume, 1)
    stored = reoriented(flair, axcodes)
    files = write_series(tmp_path / "series", stored)
    assert sorted(files) != files  # sorting by name would stack the slices wrongly
    series = read_series(tmp_path / "series")
    # slices run along the normal (row x column direction): the stored slice order, or its reverse
    same = nib.aff2axcodes(series.image.affine)[2] == axcodes[2]
    assert nib.aff2axcodes(series.image.affine)[:2] == axcodes[:2]
    assert [Path(f).name for f in series.files] == [f.name for f in (files if same else files[::-1])]
    back = reoriented(series.image, axcodes)
    np.testing.assert_allclose(back.affine, stored.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(stored.dataobj))  # rescale applied

    case = find_cases(tmp_path / "series")[0]
    image, reference = load_case(case, 3, "none")
    for k in range(3):  # one series: FLAIR in every channel, in the model's frame (rows P, columns L, slices S)
        np.testing.assert_array_equal(image[k].numpy(), volume[..., 1])
    assert reference.sequences == ("flair",) and reference.image is not None


def test_slices_are_ordered_by_position_not_by_instance_number(tmp_path, volume):
    files = write_series(tmp_path / "s", channel(volume, 1))
    for k, path in enumerate(files):
        edit(path, InstanceNumber=len(files) - k if k % 2 else k + 100)
    np.testing.assert_array_equal(read_series(tmp_path / "s").image.get_fdata(), volume[..., 1])


def test_sequences_are_recognised_from_series_descriptions():
    expected = {
        "AX FLAIR": "flair",
        "T2 FLAIR AXIAL": "flair",
        "t2_tirm_tra_dark-fluid": "flair",
        "AX T1 FLAIR": "t1",
        "AX T1": "t1",
        "T1 PRE": "t1",
        "sag mprage": "t1",
        "T1 pre gd": "t1",
        "AX T1 POST": "t1c",
        "T1+C": "t1c",
        "AX T1 C+": "t1c",
        "T1 GD": "t1c",
        "mprage post": "t1c",
        "t1_se_tra_CE": "t1c",
        "T1 postcontrast": "t1c",
        "AX T2": None,
        "DWI": None,
        "3-plane localizer": None,
        "": None,
    }
    assert {d: recognise_sequence(d) for d in expected} == expected


def test_a_study_of_several_series_is_assembled_by_sequence(tmp_path, volume):
    study = generate_uid()
    for k, description in ((0, "AX T1 PRE"), (1, "AX FLAIR"), (2, "AX T1 POST GD")):
        write_series(tmp_path / "p1" / description.replace(" ", "_"), channel(volume, k), description, study_uid=study)
    write_series(tmp_path / "p1" / "t2", channel(volume, 0), "AX T2", study_uid=study)  # another sequence: left out
    case = find_cases(tmp_path / "p1")[0]
    assert case.name == "p1"
    image, reference = load_case(case, 3, "none")
    np.testing.assert_array_equal(np.moveaxis(image.numpy(), 0, -1), volume)
    assert reference.sequences == ("t1", "flair", "t1c")


def test_a_folder_of_studies_gives_one_case_each(tmp_path, volume):
    for patient in ("a", "b"):
        write_series(tmp_path / "batch" / patient / "flair", channel(volume, 1), patient_id=patient)
    cases = find_cases(tmp_path / "batch")
    assert [(c.name, str(c.out_dir)) for c in cases] == [("a", "."), ("b", ".")]
    assert all(c.format_name == DicomSeries.name and len(c.files) == volume.shape[2] for c in cases)


def test_files_that_are_not_dicom_are_skipped_unless_named_dcm(tmp_path, volume):
    write_series(tmp_path / "s", channel(volume, 1))
    (tmp_path / "s" / "README").write_text("exported by a PACS")
    (tmp_path / "s" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # not an image: skipped as well
    assert read_series(tmp_path / "s").image.shape == volume.shape[:3]
    (tmp_path / "s" / "notes.dcm").write_text("not an image")
    with pytest.raises(LGGInputError, match="notes.dcm: is not a DICOM file"):
        read_series(tmp_path / "s")
    (tmp_path / "s" / "notes.dcm").unlink()
    write_series(tmp_path / "s" / "t2", channel(volume, 0), "AX T2")
    with pytest.raises(LGGInputError, match="s: holds 2 DICOM series where one is expected: 'AX FLAIR' .*'AX T2'"):
        read_series(tmp_path / "s")


# -- bad series: one line naming the file, nothing written ------------------------------------------------------


def _drop_slice(files):
    files[5].unlink()
    return files[6].name, "slice\\(s\\) missing"


def _duplicate(files):
    ds = pydicom.dcmread(files[4])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(files[0].parent / "copy.dcm")
    return "", "duplicate slice"


def _spacing(files):
    edit(files[7], PixelSpacing=["0.9", "0.94"])
    return files[7].name, "PixelSpacing .* differs"


def _orientation(files):
    edit(files[3], ImageOrientationPatient=["1", "0", "0", "0", "0.9", "-0.43589"])
    return files[3].name, "ImageOrientationPatient .* differs"


def _position(files):
    edit(files[2], ImagePositionPatient=None)
    return files[2].name, "ImagePositionPatient is missing"


def _compressed(files):
    ds = pydicom.dcmread(files[6])
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(files[6], enforce_file_format=True)
    return files[6].name, "pixel data cannot be decoded \\(transfer syntax JPEG Lossless"


def _two_series(files):
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    write_series(
        files[0].parent / "repeat",
        channel(np.ones((8, 8, 3, 3), np.float32) * 20, 1),
        "AX FLAIR REPEAT",
        study_uid=study,
    )
    return "", "holds 2 DICOM series .* several series look like flair; .*--flair DIR --t1 DIR --t1c DIR"


def _lone_t1(files):
    for path in files:
        edit(path, SeriesDescription="AX T1 POST")
    return "", "'AX T1 POST', which is a T1 series, not FLAIR"


def _not_dicom(files):
    (files[0].parent / "IM00001.dcm").write_bytes(b"exported by a viewer, not DICOM")
    return "IM00001.dcm", "is not a DICOM file"


@pytest.mark.parametrize(
    "damage",
    [_drop_slice, _duplicate, _spacing, _orientation, _position, _compressed, _two_series, _lone_t1, _not_dicom],
)
def test_a_bad_series_is_refused_in_one_line_and_nothing_is_written(tmp_path, volume, damage):
    files = write_series(tmp_path / "patient", channel(volume, 1))
    name, problem = damage(files)
    with pytest.raises(LGGInputError, match=problem) as refused:
        predict(tmp_path / "patient", tmp_path / "out", **OPTIONS)
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path / "patient" / name) in message
    assert not (tmp_path / "out").exists()


def test_dicom_seg_of_a_non_dicom_input_is_refused(tmp_path, volume):
    nib.save(channel(np.repeat(volume[..., 1:2], 3, -1), 0), tmp_path / "case.nii.gz")
    with pytest.raises(LGGInputError, match="case.nii.gz: --dicom_seg writes DICOM Segmentations of DICOM series"):
        predict(tmp_path / "case.nii.gz", tmp_path / "out", dicom_seg=True, **OPTIONS)
    assert not (tmp_path / "out").exists()


# -- segmenting: the same masks as the same volume given as NIfTI; the SEG holds them ---------------------------


def _mask(folder: Path, name: str) -> np.ndarray:
    return np.asarray(nib.load(folder / f"{name}.nii.gz").dataobj)


def test_a_series_in_another_orientation_gives_the_same_mask(tmp_path, volume):
    """The same phantom stored ARI (rows and columns swapped and flipped, slices too): the mask, mapped back onto
    the first series' grid, is the same voxel for voxel, and it is not empty; its SEG holds it slice for slice."""
    flair = channel(volume, 1)
    write_series(tmp_path / "plain", flair)
    write_series(tmp_path / "turned", reoriented(flair, ("A", "R", "I")))
    predict(tmp_path / "plain", tmp_path / "out_plain", **OPTIONS)
    predict(tmp_path / "turned", tmp_path / "out_turned", dicom_seg=True, **OPTIONS)
    out = tmp_path / "out_turned"
    check_seg(out / "turned_seg.dcm", out / "turned.nii.gz", tmp_path / "turned")
    plain = nib.load(tmp_path / "out_plain" / "plain.nii.gz")
    turned = reoriented(nib.load(tmp_path / "out_turned" / "turned.nii.gz"), ("P", "L", "S"))
    np.testing.assert_allclose(turned.affine, plain.affine, atol=1e-4)
    assert plain.get_fdata().sum() > 0
    np.testing.assert_array_equal(np.asarray(turned.dataobj), np.asarray(plain.dataobj))


def real_flair_patient(shared_lgg: Path) -> tuple[str, np.ndarray]:
    """A real patient's FLAIR (``rows x columns x slices``) from its Kaggle slices, and its name."""
    patient = shared_lgg / "TCGA_CS_4942_19970222"
    if not patient.is_dir():
        pytest.skip(f"{patient} not found in the shared data")
    slices = [p for p in patient.glob(f"{patient.name}_*.tif") if not p.stem.endswith("_mask")]
    slices.sort(key=lambda p: int(p.stem.split("_")[-1]))
    return patient.name, np.stack([tifffile.imread(p)[..., 1] for p in slices], axis=-1).astype(np.float32)


@pytest.mark.realdata
def test_a_real_patients_dicom_series_gives_the_niftis_mask_and_a_valid_seg(tmp_path, shared_lgg):
    """A real patient's FLAIR exported to DICOM (realistic geometry, shuffled names) and the same FLAIR as a NIfTI
    volume give the same mask; the SEG read back holds it frame by frame; dciodvfy finds no error in the SEG."""
    name, flair = real_flair_patient(shared_lgg)
    affine = realistic_affine(flair.shape)
    write_series(tmp_path / name, nib.Nifti1Image(flair, affine), "AX T2 FLAIR")
    nib.save(nib.Nifti1Image(np.stack([flair] * 3, axis=-1), affine), tmp_path / f"{name}.nii.gz")  # FLAIR for all

    rows = predict(tmp_path / name, tmp_path / "dicom", dicom_seg=True, **OPTIONS)
    predict(tmp_path / f"{name}.nii.gz", tmp_path / "nifti", **OPTIONS)
    assert rows[0]["sequences"] == "flair" and rows[0]["case"] == name
    from_dicom, from_nifti = _mask(tmp_path / "dicom", name), _mask(tmp_path / "nifti", name)
    assert from_nifti.sum() > 100
    dice = 2 * ((from_dicom > 0) & (from_nifti > 0)).sum() / ((from_dicom > 0).sum() + (from_nifti > 0).sum())
    print(f"{name}: DICOM vs NIfTI mask Dice {dice:.4f}, {(from_dicom != from_nifti).sum()} voxels differ")
    assert dice >= 0.99, dice
    np.testing.assert_allclose(nib.load(tmp_path / "dicom" / f"{name}.nii.gz").affine, affine, atol=1e-4)

    seg_path = tmp_path / "dicom" / f"{name}_seg.dcm"
    check_seg(seg_path, tmp_path / "dicom" / f"{name}.nii.gz", tmp_path / name)
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: the SEG was checked with highdicom and pydicom only")
    report = subprocess.run([dciodvfy, str(seg_path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def check_seg(seg_path: Path, mask_path: Path, series: Path) -> None:
    """The SEG's frames equal the NIfTI mask ``mask_path`` slice for slice, each frame placed through the SOP
    instance it references: that slice's ``ImagePositionPatient`` (also the frame's own) and directions, mapped
    into the mask's voxels by the mask's affine. Slices without a frame are empty in the mask."""
    image = nib.load(mask_path)
    mask = np.asarray(image.dataobj)
    to_voxel = np.linalg.inv(image.affine) @ np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM LPS mm -> mask voxel
    sources = {
        str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in series.iterdir())
    }
    slice_of = {
        uid: int(round((to_voxel @ [*map(float, ds.ImagePositionPatient), 1.0])[2])) for uid, ds in sources.items()
    }
    assert sorted(slice_of.values()) == list(range(mask.shape[2]))  # one source slice per mask slice

    raw = pydicom.dcmread(seg_path)
    assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.SegmentationType == "BINARY"
    assert raw.SegmentSequence[0].SegmentLabel == "FLAIR abnormality"
    assert raw.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
    referenced = {str(r.ReferencedSOPInstanceUID) for r in raw.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(sources)
    frames = raw.pixel_array.reshape(-1, int(raw.Rows), int(raw.Columns))
    framed = set()
    for frame, group in zip(frames, raw.PerFrameFunctionalGroupsSequence, strict=True):
        uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source, k = sources[uid], slice_of[uid]
        origin = np.array([float(v) for v in source.ImagePositionPatient])
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, origin, atol=1e-3)
        cosines = np.array([float(v) for v in source.ImageOrientationPatient])
        spacing = [float(v) for v in source.PixelSpacing]
        corner, right, down = (
            to_voxel @ [*(origin + offset), 1.0]
            for offset in (np.zeros(3), cosines[:3] * spacing[1], cosines[3:] * spacing[0])
        )
        np.testing.assert_allclose(corner[:3], [0, 0, k], atol=1e-3)  # the slice's first pixel is voxel (0, 0, k)
        np.testing.assert_allclose(right[:3], [0, 1, k], atol=1e-3)  # the next column
        np.testing.assert_allclose(down[:3], [1, 0, k], atol=1e-3)  # the next row
        np.testing.assert_array_equal(frame, mask[..., k] > 0)
        framed.add(k)
    assert framed and all(not mask[..., k].any() for k in set(range(mask.shape[2])) - framed)

    seg = hd.seg.segread(seg_path)
    uids = sorted(slice_of, key=slice_of.get)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(np.moveaxis(pixels[..., 0], 0, -1), mask > 0)


def test_series_folders_given_by_sequence_flags(tmp_path, volume):
    """``--flair DIR --t1c DIR``: series folders whose descriptions say nothing, read as the sequences named."""
    write_series(tmp_path / "s1", channel(volume, 1), "Series 1")
    write_series(tmp_path / "s2", channel(volume, 2), "Series 2")
    case = find_cases({"flair": tmp_path / "s1", "t1c": tmp_path / "s2"})[0]
    image, reference = load_case(case, 3, "none")
    expected = volume[..., [1, 1, 2]]  # the missing pre-contrast T1 is FLAIR
    np.testing.assert_array_equal(np.moveaxis(image.numpy(), 0, -1), expected)
    assert reference.sequences == ("flair", "t1c")


def test_the_command_line_says_it_in_one_line(tmp_path, volume):
    """``monai-lgg predict`` on a series with a missing slice: exit code 2, one line naming the file, no output."""
    files = write_series(tmp_path / "patient", channel(volume, 1))
    files[5].unlink()
    result = subprocess.run(
        [
            CONSOLE_SCRIPT,
            "predict",
            str(tmp_path / "patient"),
            str(tmp_path / "out"),
            "--dicom_seg",
            "--progress",
            "False",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"monai-lgg: error: {files[6]}: ") and "slice(s) missing" in lines[0]
    assert not (tmp_path / "out").exists()


def test_pydicom_beside_monai_adds_no_noise_to_loading(recwarn, caplog):
    """With pydicom installed, MONAI's LoadImage builds its nvImageCodec DICOM reader, which warns on every
    construction where no GPU decoder is installed; the project's loaders are quiet."""
    import logging

    from monai_lgg.transforms.presets import slice_transforms, volume_transforms

    caplog.set_level(logging.DEBUG)
    volume_transforms(label_key=None)
    slice_transforms(label_key=None)
    noise = [str(w.message) for w in recwarn] + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [line for line in noise if "nvImageCodec" in line or "NvImgCodec" in line], noise
