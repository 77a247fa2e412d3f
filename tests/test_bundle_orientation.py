"""The bundles' own inference (``python -m monai.bundle run --config_file .../inference.json``) honours NIfTI
orientation as ``monai-lgg predict`` does: volumes stored in another orientation are reoriented losslessly to the
model's frame and their masks land on the input's grid; oblique volumes are refused in one line (docs/inputs.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_lgg.data.kaggle import kaggle_affine
from monai_lgg.engines.components import inference_postprocessing
from monai_lgg.studies import orientation_check as check
from monai_lgg.transforms.presets import volume_transforms

from .conftest import PROJECT_ROOT, converted_real

PATIENT = "TCGA_CS_4942_19970222"  # 20 slices, tumour on 8 of them
INFERENCE = PROJECT_ROOT / "bundles" / "unet" / "configs" / "inference.json"


def _bundle_inference(dataset_dir, output_dir, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(INFERENCE),
        "--dataset_dir",
        str(dataset_dir),
        "--output_dir",
        str(output_dir),
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MONAI_LGG_DEBUG", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def _volume(path, affine: np.ndarray, shape=(32, 32, 4)) -> np.ndarray:
    data = np.random.default_rng(0).integers(0, 200, (*shape, 3), dtype=np.uint8)
    nib.save(nib.Nifti1Image(data, affine), path)
    return data


@pytest.mark.parametrize("codes", ["RAS", "SAR"])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_preprocessing_reorients_and_postprocessing_restores_the_grid(tmp_path, codes, out_channels):
    """Without a network: the reoriented image is the converted storage's array, and a prediction made from it is
    saved on the stored grid (binary and K-class, patch geometry)."""
    native = nib.Nifti1Image(_volume(tmp_path / "PLS.nii.gz", kaggle_affine((32, 32, 4))), kaggle_affine((32, 32, 4)))
    stored = check.reorient(native, codes)
    nib.save(stored, tmp_path / f"{codes}.nii.gz")
    pre = volume_transforms(label_key=None, normalization="none", reorient=True)
    image = pre({"image": str(tmp_path / f"{codes}.nii.gz")})["image"]
    reference = pre({"image": str(tmp_path / "PLS.nii.gz")})["image"]
    assert torch.equal(image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(image.affine.numpy(), kaggle_affine((32, 32, 4)), atol=1e-6)
    logits = image[:out_channels] - 100.0  # any function of the model-frame image
    post = inference_postprocessing(str(tmp_path / "out"), threshold=0.5, out_channels=out_channels, invert=pre)
    post({"image": image, "pred": logits})
    mask = nib.load(tmp_path / "out" / f"{codes}.nii.gz")
    assert mask.shape == stored.shape[:3] and np.allclose(mask.affine, stored.affine)
    if out_channels == 1:
        expected = np.asarray(native.dataobj)[..., 0] >= 100  # sigmoid(logit) >= 0.5
    else:
        expected = np.argmax(np.asarray(native.dataobj)[..., :out_channels], axis=-1)
    assert np.array_equal(check.to_grid(mask, nib.Nifti1Image(expected.astype(np.uint8), native.affine)), expected)


def test_oblique_volume_is_refused_by_the_bundle_in_one_line(tmp_path):
    angle = np.radians(40)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]  # about the R-L axis
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "oblique.nii.gz"
    _volume(path, rotation @ kaggle_affine((32, 32, 4)))
    result = _bundle_inference(tmp_path / "in", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"monai-lgg: error: {path}: slices are oblique: their normal is 40 degrees"), last
    assert not (tmp_path / "out" / "oblique.nii.gz").exists()


@pytest.fixture(scope="module")
def converted(shared_lgg, tmp_path_factory):
    """One real patient through ``convert_kaggle`` (PLS storage, as the model was trained on)."""
    return converted_real(shared_lgg, tmp_path_factory.mktemp("bundle-orientation"), [PATIENT])


@pytest.mark.realdata
@pytest.mark.slow
def test_bundle_inference_gives_the_converted_mask_in_any_storage(converted, tmp_path):
    """The converted patient stored as RAS and sagittally (S-A-R): the bundle's masks, on each input's grid, are the
    converted storage's mask in world space."""
    images = [nib.load(p) for p in sorted((converted / "imagesTr").glob(f"{PATIENT}_000?.nii.gz"))]
    (tmp_path / "in").mkdir()
    for codes in ("PLS", "RAS", "SAR"):
        for k, image in enumerate(images):
            stored = image if codes == "PLS" else check.reorient(image, codes)
            nib.save(stored, tmp_path / "in" / f"{codes}_{k:04d}.nii.gz")
    result = _bundle_inference(tmp_path / "in", tmp_path / "out", "--tta", "False")
    assert result.returncode == 0, result.stderr[-3000:]
    native = nib.load(tmp_path / "out" / "PLS.nii.gz")
    label = np.asarray(nib.load(converted / "labelsTr" / f"{PATIENT}.nii.gz").dataobj)
    assert check.dice(np.asarray(native.dataobj), label) > 0.5  # the native run finds this patient's tumour at all
    for codes in ("RAS", "SAR"):
        stored = nib.load(tmp_path / "in" / f"{codes}_0000.nii.gz")
        mask = nib.load(tmp_path / "out" / f"{codes}.nii.gz")
        assert nib.aff2axcodes(stored.affine) == tuple(codes)
        assert mask.shape == stored.shape and np.allclose(mask.affine, stored.affine)
        assert check.dice(check.to_grid(mask, native), np.asarray(native.dataobj)) >= 0.99, codes
