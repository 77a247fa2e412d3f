"""Bad input, for every entry point that exists: the converter, the data loaders and ``monai-lgg convert``.

Each damage gives one message naming the file and the problem (never a library traceback), writes
nothing partial, and with ``skip_bad`` the rest is processed and the skipped folder is listed.
Converter checks already in ``test_kaggle_convert.py`` (unpaired image, non-binary mask, 1-channel
image, truncated TIFF, gap, mixed sizes) are not repeated for the converter here; the loaders and the
CLI are tested against the whole list.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile

from monai_lgg.cli import main
from monai_lgg.data.datalist import load_fold
from monai_lgg.data.datasets import VolumeSliceDataset, kaggle_slice_datalist, kaggle_slice_dataset
from monai_lgg.data.kaggle import convert_kaggle
from monai_lgg.data.synthetic import generate_synthetic_kaggle, synthetic_case_ids
from monai_lgg.errors import DataProblem, LGGInputError, OutputError, input_error_in
from monai_lgg.transforms import presets

CASES = synthetic_case_ids(3)
BAD = CASES[0]  # the damaged case; the two others stay valid
SIZE = 64


@dataclass
class Damage:
    """What a damage should be reported as: the file named, a fragment of the problem, the folder skipped."""

    file: Path
    problem: str
    skipped: str = BAD


def _slice(src: Path, number: int, mask: bool = False) -> Path:
    return src / BAD / f"{BAD}_{number}{'_mask' if mask else ''}.tif"


def _corrupt(src: Path) -> Damage:
    _slice(src, 2).write_bytes(b"this is not a TIFF file " * 40)
    return Damage(_slice(src, 2), "unreadable or truncated TIFF")


def _truncated(src: Path) -> Damage:
    path = _slice(src, 3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Damage(path, "truncated TIFF")


def _zero_byte(src: Path) -> Damage:
    _slice(src, 4, mask=True).write_bytes(b"")
    return Damage(_slice(src, 4, mask=True), "empty file (0 bytes)")


def _image_without_mask(src: Path) -> Damage:
    _slice(src, 2, mask=True).unlink()
    return Damage(_slice(src, 2), "image without mask")


def _mask_without_image(src: Path) -> Damage:
    _slice(src, 2).unlink()
    return Damage(_slice(src, 2, mask=True), "mask without image")


def _mask_size(src: Path) -> Damage:
    tifffile.imwrite(_slice(src, 3, mask=True), np.zeros((SIZE // 2, SIZE // 2), np.uint8))
    return Damage(_slice(src, 3, mask=True), f"differs from image shape ({SIZE}, {SIZE})")


def _non_binary_mask(src: Path) -> Damage:
    mask = tifffile.imread(_slice(src, 4, mask=True))
    mask[:2, :2] = 7
    tifffile.imwrite(_slice(src, 4, mask=True), mask)
    return Damage(_slice(src, 4, mask=True), "are not in {0, 255}")


def _image(channels: int | None, dtype: type = np.uint8) -> Callable[[Path], Damage]:
    def damage(src: Path) -> Damage:
        shape = (SIZE, SIZE) if channels is None else (SIZE, SIZE, channels)
        tifffile.imwrite(_slice(src, 2), np.zeros(shape, dtype))
        expected = "dtype is uint16, expected uint8" if dtype != np.uint8 else "expected (rows, columns, 3)"
        return Damage(_slice(src, 2), expected)

    return damage


def _folder_name(src: Path) -> Damage:
    renamed = src / "patient_A001"
    (src / BAD).rename(renamed)
    return Damage(renamed, "folder name does not follow TCGA_<inst>_<pid>_<date>", skipped=renamed.name)


def _file_name(src: Path) -> Damage:
    stray = src / BAD / f"{BAD}_2 copy.tif"
    shutil.copy(_slice(src, 2), stray)
    return Damage(stray, "file name does not follow")


def _empty_patient_folder(src: Path) -> Damage:
    empty = src / "TCGA_SC_A009_20010901"
    empty.mkdir()
    return Damage(empty, "folder has no .tif slices", skipped=empty.name)


LAYOUT_DAMAGES: dict[str, Callable[[Path], Damage]] = {
    "corrupt_tiff": _corrupt,
    "truncated_tiff": _truncated,
    "zero_byte_file": _zero_byte,
    "image_without_mask": _image_without_mask,
    "mask_without_image": _mask_without_image,
    "mask_size_differs": _mask_size,
    "non_binary_mask": _non_binary_mask,
    "one_channel_image": _image(None),
    "four_channel_image": _image(4),
    "sixteen_bit_image": _image(3, np.uint16),
    "folder_name_off_pattern": _folder_name,
    "file_name_off_pattern": _file_name,
    "empty_patient_folder": _empty_patient_folder,
}
# already checked for the converter in test_kaggle_convert.py::test_validation_stops_and_writes_nothing
IN_TEST_KAGGLE_CONVERT = {"truncated_tiff", "image_without_mask", "non_binary_mask", "one_channel_image"}
CONVERTER_DAMAGES = [k for k in LAYOUT_DAMAGES if k not in IN_TEST_KAGGLE_CONVERT]


@pytest.fixture(scope="module")
def small_kaggle(tmp_path_factory) -> Path:
    return generate_synthetic_kaggle(
        tmp_path_factory.mktemp("small") / "kaggle_3m", num_patients=3, num_slices=6, size=SIZE, seed=2
    )


@pytest.fixture
def source(small_kaggle, tmp_path) -> Path:
    """A fresh copy of the 3-patient set, to damage."""
    return Path(shutil.copytree(small_kaggle, tmp_path / "src"))


def _good_cases(source: Path, damage: Damage) -> list[str]:
    """The valid patients left after ``damage``."""
    return sorted(c for c in CASES if (source / c).is_dir() and c != damage.skipped)


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists(), "partial output left"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert not leftovers, f"temporary output left: {leftovers}"


def _named(messages: list[str], damage: Damage) -> bool:
    return any(m.startswith(f"{damage.file}: ") and damage.problem in m for m in messages)


# ---------------------------------------------------------------- converter


@pytest.mark.parametrize("kind", CONVERTER_DAMAGES)
def test_converter(kind, source, tmp_path):
    damage = LAYOUT_DAMAGES[kind](source)
    out = tmp_path / "out"
    result = convert_kaggle(source, out, num_folds=2, progress=False, num_workers=1)
    assert not result.ok
    messages = [f"{e['file']}: {e['problem']}" for e in result.report["errors"]]
    assert _named(messages, damage), messages
    _assert_nothing_written(out)

    result = convert_kaggle(source, out, num_folds=2, skip_bad=True, progress=False, num_workers=1)
    assert result.ok and result.report["skipped_cases"] == [damage.skipped]
    assert sorted(i["case"] for i in load_fold(out / "datalist.json", split="all")) == _good_cases(source, damage)


def _deny_writes_under(folder: Path, monkeypatch) -> None:
    """Make ``folder`` unwritable: chmod, and (as root ignores modes) refuse creating anything in it."""
    folder.chmod(0o555)
    real_mkdir, real_open = os.mkdir, os.open

    def denied(path) -> bool:
        return Path(os.fspath(path)).absolute().parent == folder.absolute()

    def mkdir(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if denied(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def _fail_nifti_writes(monkeypatch) -> None:
    """Simulate a full disk: writing a NIfTI volume fails with ENOSPC."""
    real = Path.write_bytes

    def write_bytes(self, data):
        if self.name.endswith(".nii.gz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


ENVIRONMENT = {
    "unwritable_output_folder": (
        lambda out, mp: _deny_writes_under(out.parent, mp),
        "cannot write (Permission denied)",
    ),
    "disk_full": (lambda out, mp: _fail_nifti_writes(mp), "cannot write (No space left on device)"),
}


@pytest.fixture
def environment(request, source, tmp_path, monkeypatch):
    """(source, output, expected message) with the output's environment broken as ``request.param`` says."""
    out = tmp_path / "locked" / "lgg"
    out.parent.mkdir()
    breaker, problem = ENVIRONMENT[request.param]
    breaker(out, monkeypatch)
    yield source, out, problem
    out.parent.chmod(0o755)


@pytest.mark.parametrize("environment", list(ENVIRONMENT), indirect=True)
def test_converter_environment(environment):
    """An unwritable folder or a full disk stops the whole conversion (also with skip_bad), naming the output."""
    source, out, problem = environment
    for skip_bad in (False, True):
        with pytest.raises(OutputError) as info:
            convert_kaggle(source, out, num_folds=2, progress=False, num_workers=1, skip_bad=skip_bad)
        assert info.value.path.startswith(str(out)) and problem in str(info.value)
        assert ".part" not in str(info.value), "the message must name the output, not a temporary file"
        _assert_nothing_written(out)


# ---------------------------------------------------------------- command line


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _convert_cli(capsys, source: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return _cli(
        capsys, "convert", str(source), str(out), "--num_folds", "2", "--progress", "False", "--workers", "1", *extra
    )


def _assert_one_line_error(code: int, err: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("monai-lgg: error: "), err


@pytest.mark.parametrize("kind", list(LAYOUT_DAMAGES))
def test_cli(kind, source, tmp_path, capsys):
    damage = LAYOUT_DAMAGES[kind](source)
    out = tmp_path / "out"
    code, stdout, err = _convert_cli(capsys, source, out)
    _assert_one_line_error(code, err)
    assert _named([line.removeprefix("error: ") for line in err.splitlines()], damage), err
    _assert_nothing_written(out)

    code, stdout, err = _convert_cli(capsys, source, out, "--skip_bad")
    assert code == 0, err
    assert f"skipped 1 case(s): {damage.skipped}" in stdout
    assert f"converted {len(_good_cases(source, damage))} patients" in stdout


@pytest.mark.parametrize("environment", list(ENVIRONMENT), indirect=True)
def test_cli_environment(environment, capsys):
    source, out, problem = environment
    code, _, err = _convert_cli(capsys, source, out)
    _assert_one_line_error(code, err)
    assert f"monai-lgg: error: {out}" in err and problem in err
    _assert_nothing_written(out)


def test_cli_zip_root_with_duplicated_copy(small_kaggle, tmp_path, capsys):
    """The Kaggle zip holds the set twice: the CLI reports the copy it ignores and counts each patient once."""
    zip_root = tmp_path / "zip"
    shutil.copytree(small_kaggle, zip_root / "kaggle_3m")
    shutil.copytree(small_kaggle, zip_root / "lgg-mri-segmentation" / "kaggle_3m")
    code, stdout, err = _convert_cli(capsys, zip_root, tmp_path / "out")
    assert code == 0, err
    assert f"warning: {zip_root / 'lgg-mri-segmentation' / 'kaggle_3m'}: duplicate copy" in err
    assert "converted 3 patients" in stdout


# ---------------------------------------------------------------- loaders: Kaggle TIFF slices


@pytest.mark.parametrize("kind", list(LAYOUT_DAMAGES))
def test_kaggle_slice_loader(kind, source, caplog):
    damage = LAYOUT_DAMAGES[kind](source)
    with pytest.raises(DataProblem) as info:
        kaggle_slice_datalist(source, num_folds=2)
    assert info.value.path == str(damage.file) and damage.problem in info.value.problem, str(info.value)

    with caplog.at_level(logging.WARNING, logger="monai_lgg.data.datasets"):
        items = kaggle_slice_datalist(source, num_folds=2, skip_bad=True)
    assert sorted({i["case"] for i in items}) == _good_cases(source, damage)
    assert f"skipped {source / damage.skipped}" in caplog.text


def test_kaggle_slice_dataset_names_a_file_damaged_past_its_header(source):
    """A TIFF with an intact header but undecodable pixels passes validation and fails when loaded, naming the file."""
    path = _slice(source, 2)
    tifffile.imwrite(path, np.zeros((SIZE, SIZE, 3), np.uint8), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        start = tif.pages[0].dataoffsets[0]
    data = path.read_bytes()
    path.write_bytes(data[:start] + b"\xff" * (len(data) - start))  # same length: not truncated, not zlib
    fold = next(i["fold"] for i in kaggle_slice_datalist(source, num_folds=3) if i["case"] == BAD)
    with pytest.raises(DataProblem) as info:
        kaggle_slice_dataset(source, fold=fold, split="test", num_folds=3)
    assert info.value.path == str(path) and "unreadable or truncated TIFF" in info.value.problem


def test_kaggle_loader_zip_root_and_empty_folder(small_kaggle, tmp_path):
    zip_root = tmp_path / "zip"
    shutil.copytree(small_kaggle, zip_root / "kaggle_3m")
    shutil.copytree(small_kaggle, zip_root / "lgg-mri-segmentation" / "kaggle_3m")
    items = kaggle_slice_datalist(zip_root, num_folds=2)
    assert sorted({i["case"] for i in items}) == sorted(CASES)
    assert len(items) == len(kaggle_slice_datalist(small_kaggle, num_folds=2)), "a patient was counted twice"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LGGInputError, match=f"{empty}: contains no patient folders"):
        kaggle_slice_datalist(empty)
    with pytest.raises(LGGInputError, match="no volumes to train on"):
        VolumeSliceDataset([])


# ---------------------------------------------------------------- loaders: NIfTI volumes


@pytest.fixture(scope="module")
def small_converted(small_kaggle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_converted") / "lgg"
    assert convert_kaggle(small_kaggle, out, num_folds=2, progress=False, num_workers=1).ok
    return out


def _nifti(path: Path, array: np.ndarray) -> None:
    """Overwrite a converted volume, keeping its affine (only the data are damaged)."""
    nib.save(nib.Nifti1Image(array, nib.load(path).affine), path)


def _with_values(value: float) -> Callable[[dict], tuple[str, str]]:
    def damage(item: dict) -> tuple[str, str]:
        flair = np.asanyarray(nib.load(item["image"][1]).dataobj).astype(np.float32)
        flair[10, 10, 2] = value
        _nifti(Path(item["image"][1]), flair)
        return item["image"][1], "NaN or infinite value"

    return damage


def _nifti_2d(item: dict) -> tuple[str, str]:
    _nifti(Path(item["label"]), np.zeros((SIZE, SIZE), np.uint8))
    return item["label"], "is 2D with shape (64, 64), expected a 3D volume"


def _nifti_bytes(content: Callable[[bytes], bytes], problem: str) -> Callable[[dict], tuple[str, str]]:
    def damage(item: dict) -> tuple[str, str]:
        path = Path(item["image"][0])
        path.write_bytes(content(path.read_bytes()))
        return item["image"][0], problem

    return damage


def _missing(item: dict) -> tuple[str, str]:
    Path(item["image"][2]).unlink()
    return item["image"][2], "file not found"


def _four_modalities(item: dict) -> tuple[str, str]:
    extra = item["image"][0].replace("_0000.nii.gz", "_0003.nii.gz")
    shutil.copy(item["image"][0], extra)
    item["image"].append(extra)
    return item["image"][0], "has 4 channel(s), expected 3 (pre-contrast, FLAIR, post-contrast)"


def _label_size(item: dict) -> tuple[str, str]:
    label = np.asanyarray(nib.load(item["label"]).dataobj)
    _nifti(Path(item["label"]), np.ascontiguousarray(label[: SIZE // 2]))
    return item["label"], "label shape (32, 64"


VOLUME_DAMAGES: dict[str, Callable[[dict], tuple[str, str]]] = {
    "nan_values": _with_values(float("nan")),
    "inf_values": _with_values(float("inf")),
    "2d_nifti_where_3d_expected": _nifti_2d,
    "zero_byte_nifti": _nifti_bytes(lambda data: b"", "empty file (0 bytes)"),
    "corrupt_nifti": _nifti_bytes(lambda data: b"not a NIfTI file" * 50, "unreadable NIfTI"),
    "truncated_nifti": _nifti_bytes(
        lambda data: gzip.compress(gzip.decompress(data))[: len(data) // 2], "unreadable NIfTI data"
    ),
    "missing_file": _missing,
    "four_modalities": _four_modalities,
    "mask_size_differs": _label_size,
}


@pytest.fixture
def volume_item(small_converted, tmp_path) -> dict:
    """One converted patient, copied so it can be damaged."""
    item = load_fold(small_converted / "datalist.json", split="all")[0]
    copy = {"case": item["case"], "image": [], "label": str(tmp_path / Path(item["label"]).name)}
    for path in item["image"]:
        copy["image"].append(str(tmp_path / Path(path).name))
        shutil.copy(path, copy["image"][-1])
    shutil.copy(item["label"], copy["label"])
    return copy


@pytest.mark.parametrize("kind", list(VOLUME_DAMAGES))
def test_volume_loader(kind, volume_item):
    """The training dataset raises the DataProblem itself; the validation / inference transforms carry it
    as the cause of MONAI's RuntimeError (what ``reraise_input_errors`` and the CLI unwrap)."""
    file, problem = VOLUME_DAMAGES[kind](volume_item)
    with pytest.raises(DataProblem) as info:
        VolumeSliceDataset([volume_item], progress=False)
    assert info.value.path == file and problem in info.value.problem, str(info.value)

    with pytest.raises(Exception) as wrapped:
        presets.volume_transforms()(volume_item)
    found = input_error_in(wrapped.value)
    assert found is not None and found.path == file and problem in found.problem, repr(wrapped.value)


# ---------------------------------------------------------------- loaders: single 2D slices (TIFF / PNG)


def _rgba_png(pair: dict) -> tuple[str, str]:
    path = pair["image"].replace(".tif", ".png")
    cv2.imwrite(path, np.full((SIZE, SIZE, 4), 100, np.uint8))
    pair["image"] = path
    return path, "has 4 channel(s), expected 3"


def _corrupt_png(pair: dict) -> tuple[str, str]:
    path = pair["image"].replace(".tif", ".png")
    Path(path).write_bytes(b"\x89PNG but not really" * 10)
    pair["image"] = path
    return path, "unreadable image"


def _float_tiff_with_nan(pair: dict) -> tuple[str, str]:
    image = tifffile.imread(pair["image"]).astype(np.float32)
    image[5, 5, 1] = np.nan
    tifffile.imwrite(pair["image"], image, photometric="rgb")
    return pair["image"], "NaN or infinite value"


def _rgb_mask(pair: dict) -> tuple[str, str]:
    tifffile.imwrite(pair["label"], np.zeros((SIZE, SIZE, 3), np.uint8), photometric="rgb")
    return pair["label"], "has 3 channel(s), expected 1"


def _small_mask(pair: dict) -> tuple[str, str]:
    tifffile.imwrite(pair["label"], np.zeros((SIZE // 2, SIZE // 2), np.uint8))
    return pair["label"], "label shape (32, 32) differs from image shape (64, 64)"


def _empty_tiff(pair: dict) -> tuple[str, str]:
    Path(pair["image"]).write_bytes(b"")
    return pair["image"], "empty file (0 bytes)"


SLICE_DAMAGES = {
    "four_channel_png": _rgba_png,
    "corrupt_png": _corrupt_png,
    "float_tiff_with_nan": _float_tiff_with_nan,
    "three_channel_mask": _rgb_mask,
    "mask_size_differs": _small_mask,
    "zero_byte_tiff": _empty_tiff,
}


@pytest.mark.parametrize("kind", list(SLICE_DAMAGES))
def test_slice_loader(kind, source):
    pair = {"image": str(_slice(source, 2)), "label": str(_slice(source, 2, mask=True))}
    file, problem = SLICE_DAMAGES[kind](pair)
    with pytest.raises(Exception) as wrapped:
        presets.slice_transforms()(pair)
    found = input_error_in(wrapped.value)
    assert isinstance(found, DataProblem) and found.path == file and problem in found.problem, repr(wrapped.value)
