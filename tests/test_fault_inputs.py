"""Faults found by trying ``predict`` and ``convert`` the way a user with a large archive would: each is refused in
one line naming the file, before the case is segmented, and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch

from monai_lgg.bundle import settings as bundle_settings
from monai_lgg.errors import LGGInputError
from monai_lgg.inference import loading
from monai_lgg.inference.formats import find_cases, load_case
from monai_lgg.inference.loading import load_network

from .conftest import PROJECT_ROOT


def test_empty_weights_file_is_one_line(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(LGGInputError, match=r"model\.pt: is empty \(0 bytes\)"):
        load_network("unet", checkpoint)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_torchscript_is_one_line(tmp_path, damage):
    path = tmp_path / "model.ts"
    scripted = torch.jit.script(torch.nn.Linear(2, 1))
    scripted.save(str(path))
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"PK\x03\x04" + b"x" * 100}[damage])
    with pytest.raises(LGGInputError, match=r"model\.ts: (is empty|cannot be loaded as a TorchScript model)") as info:
        load_network("unet", path)
    assert "\n" not in str(info.value)


def test_zip_bomb_is_refused_from_its_declared_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_settings, "MAX_BUNDLE_BYTES", 2**20)  # resolve_bundle lives there (no torch import)
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("unet/configs/model.json", "{}")
        z.writestr("unet/models/filler.bin", b"\0" * (8 * 2**20))  # 8 MiB of zeros: a few KiB compressed
    assert archive.stat().st_size < 2**20
    before = set(Path(tempfile.gettempdir()).glob("monai-lgg-bundle-*"))
    with pytest.raises(LGGInputError, match="unpacks to 8 MiB .* refused before unpacking"):
        loading.resolve_bundle(archive)
    unpacked = [p for p in set(Path(tempfile.gettempdir()).glob("monai-lgg-bundle-*")) - before if any(p.rglob("*"))]
    assert not unpacked, "the zip was unpacked before it was refused"


def broken_nifti(path: Path, kind: str) -> Path:
    """An uncompressed 3-channel NIfTI whose stored header geometry is broken as ``kind`` says (patched in the file:
    nibabel itself refuses to write such headers)."""
    data = np.random.default_rng(0).integers(0, 255, (32, 32, 4, 3), dtype=np.uint8)
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    with open(path, "r+b") as f:
        header = nib.Nifti1Header.from_fileobj(f)
        value = {"nan_affine": np.nan, "zero_affine": 0.0, "huge_affine": 1e30}.get(kind)
        if value is not None:
            header["qform_code"], header["sform_code"] = 0, 1
            for axis, key in enumerate(("srow_x", "srow_y", "srow_z")):
                row = np.zeros(4)
                row[axis] = value
                header[key] = row
        elif kind == "nan_pixdim":
            header["pixdim"][1] = np.nan
        f.seek(0)
        header.write_to(f)
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("nan_affine", "NaN or infinite"),
        ("zero_affine", "singular"),
        ("huge_affine", r"1e\+30 mm"),
        ("nan_pixdim", "pixdim"),
    ],
)
def test_broken_nifti_geometry_is_refused_before_segmenting(tmp_path, kind, problem, monkeypatch):
    from monai_lgg.cli import main
    from monai_lgg.inference.predictor import Predictor

    def no_inference(*args, **kwargs):
        raise AssertionError("the case was segmented")

    monkeypatch.setattr(Predictor, "__call__", no_inference)
    volume = broken_nifti(tmp_path / "case.nii", kind)
    with pytest.raises(LGGInputError, match=problem):
        load_case(find_cases(volume)[0])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(volume), str(tmp_path / "out"), "--progress", "False"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()
    assert load_case(find_cases(broken_nifti(tmp_path / "fine.nii", "fine"))[0])[0].shape[0] == 3  # control


def _patient(folder: Path, numbers, dtype=np.uint8) -> Path:
    folder.mkdir(parents=True)
    for n in numbers:
        tifffile.imwrite(folder / f"{folder.name}_{n}.tif", np.zeros((32, 32, 3), dtype))
    return folder


def test_a_missing_slice_is_refused_like_convert_does(tmp_path):
    patient = _patient(tmp_path / "TCGA_AA_0001_20000101", [1, 2, 3, 5, 6])
    with pytest.raises(LGGInputError, match=r"gap in slice numbers: missing 4"):
        load_case(find_cases(patient)[0])


def test_a_16_bit_slice_in_an_8_bit_patient_is_refused(tmp_path):
    patient = _patient(tmp_path / "TCGA_AA_0001_20000101", [1, 2, 3, 4])
    odd = patient / f"{patient.name}_3.tif"
    tifffile.imwrite(odd, np.zeros((32, 32, 3), np.uint16))
    with pytest.raises(LGGInputError, match=r"_3\.tif: pixel type is uint16, the case's other slices are uint8"):
        load_case(find_cases(patient)[0])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").is_file() else ""
        found += [int(c) for c in text.split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the pool's workers")
def test_convert_workers_exit_when_convert_is_killed(tmp_path):
    from monai_lgg.data.synthetic import generate_synthetic_kaggle

    source = generate_synthetic_kaggle(tmp_path / "kaggle_3m", num_patients=12, num_slices=40, size=128, seed=3)
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monai_lgg",
            "convert",
            str(source),
            str(tmp_path / "lgg"),
            "--workers",
            "2",
            "--progress",
            "False",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
        workers = [c for c in _children(parent.pid) if _alive(c)]
    if len(workers) < 2:
        parent.kill()
        pytest.skip("convert finished before its two workers could be seen")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    assert not orphans, f"pool workers {orphans} outlived the killed convert"
    shutil.rmtree(tmp_path / "lgg", ignore_errors=True)
