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


# ------------------------------------------------------------------ predict: the SequenceFiles form, flags and folders

import csv  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from monai_lgg.cli import main  # noqa: E402
from monai_lgg.inference.formats import SequenceFiles, find_cases, format_of  # noqa: E402
from monai_lgg.inference.predict import PredictFailures, predict  # noqa: E402

from .conftest import converted_synthetic, one_error_line  # noqa: E402


def _table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mask(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _split(channels: list[Path], folder: Path, case: str, which=("t1", "flair", "t1c")) -> dict[str, Path]:
    """A converted case's ``_000k`` files copied as ``<case>_<sequence>.nii.gz`` (channel order t1, flair, t1c)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, source in zip(SEQUENCES, channels, strict=True):
        if name in which:
            files[name] = folder / f"{case}_{name}.nii.gz"
            shutil.copyfile(source, files[name])
    return files


_one_line = one_error_line


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """Two synthetic patients converted (``_000k`` files) and segmented as converted by the shipped UNet."""
    root = tmp_path_factory.mktemp("seq")
    data = converted_synthetic(root, num_patients=2, num_slices=6, size=64, num_folds=2, seed=3)
    cases = sorted({p.name[: -len("_0000.nii.gz")] for p in (data / "imagesTr").glob("*_0000.nii.gz")})
    channels = {c: sorted((data / "imagesTr").glob(f"{c}_000?.nii.gz")) for c in cases}
    predict(data / "imagesTr", root / "native", progress=False)
    return {"root": root, "cases": cases, "channels": channels, "native": root / "native"}


def test_folder_of_sequence_files_equals_the_channel_files(synthetic, tmp_path):
    folder = tmp_path / "scans"
    for case in synthetic["cases"]:
        _split(synthetic["channels"][case], folder, case)
    found = find_cases(folder)
    assert [c.name for c in found] == synthetic["cases"] and {format_of(c).name for c in found} == {"sequences"}
    rows = predict(folder, tmp_path / "out", progress=False)
    for case in synthetic["cases"]:
        ours, native = nib.load(tmp_path / "out" / f"{case}.nii.gz"), nib.load(synthetic["native"] / f"{case}.nii.gz")
        assert np.array_equal(np.asanyarray(ours.dataobj), np.asanyarray(native.dataobj))
        flair = nib.load(folder / f"{case}_flair.nii.gz")
        assert ours.shape == flair.shape and np.array_equal(ours.affine, flair.affine)
        assert {r["sequences"] for r in _table(tmp_path / "out" / f"{case}_tumour.csv")} == {"t1+flair+t1c"}
    assert [r["sequences"] for r in rows] == ["t1+flair+t1c"] * len(rows)
    assert [r["sequences"] for r in _table(tmp_path / "out" / "tumour_summary.csv")] == ["t1+flair+t1c"] * len(rows)


def test_flags_flair_alone_and_flair_with_t1(synthetic, tmp_path, capsys):
    case = synthetic["cases"][0]
    files = _split(synthetic["channels"][case], tmp_path / "scans", case)
    main(["predict", "--flair", str(files["flair"]), str(tmp_path / "alone"), "--progress", "False"])
    assert [r["sequences"] for r in _table(tmp_path / "alone" / "tumour_summary.csv")] == ["flair"]
    assert _table(tmp_path / "alone" / "tumour_summary.csv")[0]["input"] == str(files["flair"])
    # FLAIR alone is the 3-channel input with both T1s replaced by FLAIR
    flair = nib.load(files["flair"])
    stacked = np.stack([np.asanyarray(flair.dataobj)] * 3, axis=-1)
    nib.save(nib.Nifti1Image(stacked, flair.affine, flair.header), tmp_path / "copies.nii.gz")
    predict(tmp_path / "copies.nii.gz", tmp_path / "copies", progress=False)
    assert np.array_equal(_mask(tmp_path / "alone" / f"{case}.nii.gz"), _mask(tmp_path / "copies" / "copies.nii.gz"))
    main(
        [
            "predict",
            "--t1",
            str(files["t1"]),
            "--flair",
            str(files["flair"]),
            str(tmp_path / "two"),
            "--progress",
            "False",
        ]
    )
    assert [r["sequences"] for r in _table(tmp_path / "two" / "tumour_summary.csv")] == ["t1+flair"]
    assert {r["sequences"] for r in _table(tmp_path / "two" / f"{case}_tumour.csv")} == {"t1+flair"}


def test_one_sequence_file_as_input_brings_its_siblings(synthetic, tmp_path):
    case = synthetic["cases"][0]
    files = _split(synthetic["channels"][case], tmp_path, case, which=("flair", "t1c"))
    shutil.copyfile(files["flair"], tmp_path / "notes.nii.gz")  # another file beside them is not looked at
    for given in files.values():
        (found,) = find_cases(given)
        assert isinstance(format_of(found), SequenceFiles) and found.sequences == files


def test_naming_does_not_clash_with_other_forms(synthetic, tmp_path):
    """``_000k`` files and plain volumes stay their forms; ``<name>_t1.nii.gz`` without a FLAIR is a plain volume."""
    case = synthetic["cases"][0]
    assert {format_of(c).name for c in find_cases(synthetic["channels"][case][0].parent)} == {"nifti_channels"}
    image = nib.load(synthetic["channels"][case][0])
    nib.save(image, tmp_path / "scan_t1.nii.gz")
    assert format_of(find_cases(tmp_path / "scan_t1.nii.gz")[0]).name == "nifti"
    assert {format_of(c).name for c in find_cases(tmp_path)} == {"nifti"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flair", "{tmp}/absent_flair.nii.gz", "{tmp}/out"], "absent_flair.nii.gz: does not exist"),
        (["--t1", "{t1}", "{tmp}/out"], "--t1 needs --flair"),
        (["--t1c", "{t1}", "--t1", "{t1}", "{tmp}/out"], "--t1 --t1c needs --flair"),
        (["{flair}", "{tmp}/out", "--flair", "{flair}"], "give either INPUT or --flair, not both"),
        (["--flair", "{flair}"], "missing argument OUTPUT"),
        ([], "missing argument INPUT"),
        (["--flair", "{flair}", "--t1", "{far}", "{tmp}/out"], "far_t1.nii.gz: does not overlap the FLAIR volume"),
        (["--flair", "{flair}", "--t2", "{t1}", "{tmp}/out"], "unknown flag --t2"),
    ],
)
def test_bad_sequence_inputs_one_line(synthetic, tmp_path, capsys, args, message):
    case = synthetic["cases"][0]
    files = _split(synthetic["channels"][case], tmp_path / "scans", case)
    image = nib.load(files["t1"])
    moved = image.affine.copy()
    moved[:3, 3] += 1000.0
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), moved), tmp_path / "far_t1.nii.gz")
    names = {"tmp": tmp_path, "t1": files["t1"], "flair": files["flair"], "far": tmp_path / "far_t1.nii.gz"}
    line = _one_line(capsys, ["predict", *[a.format(**names) for a in args], "--progress", "False"])
    assert message in line, line
    assert not (tmp_path / "out").exists()


def test_folder_problems_are_refused_or_listed(synthetic, tmp_path):
    """A folder's naming problems stop the run before any work; a bad case fails alone into failed.csv."""
    first, second = synthetic["cases"]
    folder = tmp_path / "scans"
    _split(synthetic["channels"][first], folder, first)
    _split(synthetic["channels"][second], folder, second, which=("t1",))
    with pytest.raises(LGGInputError, match=f"{second}_t1.nii.gz: no {second}_flair.nii.gz beside it"):
        find_cases(folder)
    (folder / f"{second}_t1.nii.gz").unlink()
    shutil.copyfile(synthetic["channels"][second][0], folder / "stray.nii.gz")
    with pytest.raises(LGGInputError, match="stray.nii.gz: does not follow the sequence naming"):
        find_cases(folder)
    (folder / "stray.nii.gz").unlink()
    files = _split(synthetic["channels"][second], folder, second, which=("flair", "t1c"))
    image = nib.load(files["t1c"])
    moved = image.affine.copy()
    moved[:3, 3] += 1000.0
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), moved), files["t1c"])
    with pytest.raises(PredictFailures):
        predict(folder, tmp_path / "out", progress=False)
    assert [r["case"] for r in _table(tmp_path / "out" / "tumour_summary.csv")] == [first]
    (failure,) = _table(tmp_path / "out" / "failed.csv")
    assert failure["file"] == str(files["t1c"]) and "does not overlap" in failure["problem"]


# ------------------------------------------------------------------ a real patient (skipped without the shared data)

PATIENT = "TCGA_CS_4942_19970222"  # 20 slices, tumour on 8 of them


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def _restored(image: nib.Nifti1Image, spacing=(0.8, 0.8, 1.0)) -> nib.Nifti1Image:
    """``image`` resampled (linear) onto a RAS grid of ``spacing`` mm covering its field of view."""
    from scipy.ndimage import affine_transform

    shape = np.array(image.shape[:3])
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = corners @ image.affine[:3, :3].T + image.affine[:3, 3]
    low, high = world.min(0), world.max(0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = low
    new_shape = tuple(int(n) for n in np.floor((high - low) / np.array(spacing)) + 1)
    to_source = np.linalg.inv(image.affine) @ affine
    data = affine_transform(
        np.asarray(image.dataobj, np.float32), to_source[:3, :3], to_source[:3, 3], new_shape, order=1, mode="nearest"
    )
    return nib.Nifti1Image(data, affine)


@pytest.fixture(scope="module")
def real(shared_lgg, tmp_path_factory) -> dict:
    """One real patient converted, split into sequence files, and segmented as converted and from the files."""
    from monai_lgg.data.kaggle import convert_kaggle

    root = tmp_path_factory.mktemp("seq_real")
    (root / "kaggle").mkdir()
    (root / "kaggle" / PATIENT).symlink_to(shared_lgg / PATIENT)
    assert convert_kaggle(root / "kaggle", root / "lgg", progress=False, num_workers=1).ok
    channels = sorted((root / "lgg" / "imagesTr").glob(f"{PATIENT}_000?.nii.gz"))
    files = _split(channels, root / "scans", PATIENT)
    nib.save(_restored(nib.load(files["t1"])), root / "t1_ras_0.8mm.nii.gz")
    predict(root / "lgg" / "imagesTr", root / "native", progress=False)
    main(
        [
            "predict",
            "--flair",
            str(files["flair"]),
            "--t1",
            str(files["t1"]),
            "--t1c",
            str(files["t1c"]),
            str(root / "split"),
            "--progress",
            "False",
        ]
    )
    main(
        [
            "predict",
            "--flair",
            str(files["flair"]),
            "--t1",
            str(root / "t1_ras_0.8mm.nii.gz"),
            "--t1c",
            str(files["t1c"]),
            str(root / "resampled"),
            "--progress",
            "False",
        ]
    )
    main(["predict", "--flair", str(files["flair"]), str(root / "alone"), "--progress", "False"])
    native = _mask(root / "native" / f"{PATIENT}.nii.gz")
    assert native.sum() > 1000  # the patient's tumour is found, so the comparisons below mean something
    return {"root": root, "files": files, "native": native}


def test_real_split_sequences_give_the_converted_mask(real):
    assert np.array_equal(_mask(real["root"] / "split" / f"{PATIENT}.nii.gz"), real["native"])
    assert _table(real["root"] / "split" / "tumour_summary.csv")[0]["sequences"] == "t1+flair+t1c"


def test_real_t1_on_another_grid_is_resampled(real):
    """A T1 stored as RAS at 0.8 mm (another shape, orientation and resolution) is resampled onto the FLAIR grid."""
    assert nib.load(real["root"] / "t1_ras_0.8mm.nii.gz").shape != nib.load(real["files"]["flair"]).shape
    mask = nib.load(real["root"] / "resampled" / f"{PATIENT}.nii.gz")
    flair = nib.load(real["files"]["flair"])
    assert mask.shape == flair.shape and np.array_equal(mask.affine, flair.affine)
    assert _dice(np.asanyarray(mask.dataobj), real["native"]) >= 0.99


def test_real_flair_alone(real):
    mask = _mask(real["root"] / "alone" / f"{PATIENT}.nii.gz")
    assert _table(real["root"] / "alone" / "tumour_summary.csv")[0]["sequences"] == "flair"
    assert _dice(mask, real["native"]) > 0.5  # FLAIR carries most of the signal (docs/inputs.md)


# ------------------------------------------------------------------ the cross-validated missing-sequence study


def test_study_scores_and_results(tmp_path):
    from monai_lgg.studies.sequence_study import SETTINGS, dice, fold_members, summarise, write_results

    a = np.zeros((4, 4, 2), np.uint8)
    b = a.copy()
    a[:2] = 1
    b[1:3] = 1
    assert dice(a, b) == 0.5 and dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    rows = [
        {"case": "p1", "fold": 0, "release_replaced": "", **dict.fromkeys(SETTINGS, 0.9)},
        {"case": "p2", "fold": 1, "release_replaced": "pre-contrast,post-contrast", **dict.fromkeys(SETTINGS, 0.4)},
    ]
    summary = summarise(rows)
    assert summary["flair"] == {"patients": 2, "mean": 0.65, "median": 0.65, "min": 0.4, "below_0_5": 1}
    record = write_results(tmp_path, rows, "python tools/missing_sequences.py a b", "2026-01-01")
    assert record["summary"] == summary
    assert _table(tmp_path / "per_patient.csv")[1]["release_replaced"] == "pre-contrast,post-contrast"
    assert "| FLAIR alone (`flair`) | 0.650 | 0.650 | 0.400 | 1 | - |" in (tmp_path / "README.md").read_text()
    members, info = fold_members("unet")  # the shipped checkpoint: member k is the fold-k model
    assert sorted(members) == [0, 1, 2, 3, 4] and info.in_channels == 3
