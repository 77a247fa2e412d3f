"""``monai-lgg predict`` on every input form, the inference engine, overwrite protection and bad inputs.

A tiny UNet bundle is trained once per session (``monai-lgg train``, 64x64 synthetic slices, 2
epochs) and evaluated (``monai-lgg evaluate``); :func:`tiny_bundle` caches it for the other test files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch

from monai_lgg.cli import main
from monai_lgg.data.kaggle import convert_kaggle
from monai_lgg.data.synthetic import generate_synthetic_kaggle
from monai_lgg.inference import Predictor, find_cases, load_case, load_network

from .conftest import CONSOLE_SCRIPT, PROJECT_ROOT

TINY = ["--spatial_size", "[64,64]"]


def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained + evaluated copy of the UNet bundle on a tiny synthetic set, built once per session."""
    root = tmp_path_factory.getbasetemp() / "lgg-tiny"
    paths = {"root": root, "kaggle": root / "kaggle_3m", "dataset": root / "lgg", "bundle": root / "unet"}
    paths["eval"] = paths["bundle"] / "eval"
    if (paths["eval"] / "per_patient.csv").is_file():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    generate_synthetic_kaggle(paths["kaggle"], num_patients=5, num_slices=8, size=64, seed=1)
    assert convert_kaggle(paths["kaggle"], paths["dataset"], num_folds=5, progress=False, num_workers=1).ok
    ignore = shutil.ignore_patterns("models", "eval", "logs", "predictions", "runs")
    shutil.copytree(PROJECT_ROOT / "bundles" / "unet", paths["bundle"], symlinks=False, ignore=ignore)
    common = ["--bundle", str(paths["bundle"]), "--dataset_dir", str(paths["dataset"]), *TINY, "--batch_size", "4"]
    # written into the copy's own models/ on purpose (the default is runs/...): predict --bundle loads it from there
    bundle_dirs = {"ckpt_dir": "models", "log_dir": "logs", "output_dir": "eval"}
    common += [a for key, name in bundle_dirs.items() for a in (f"--{key}", str(paths["bundle"] / name))]
    main(["train", *common, "--epochs", "2"])
    main(["evaluate", *common])
    assert (paths["bundle"] / "models" / "model.pt").is_file() and (paths["eval"] / "per_patient.csv").is_file()
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return tiny_bundle(tmp_path_factory)


def predict(*args: str) -> None:
    main(["predict", *args, *TINY, "--progress", "False"])


def fail(capsys, *args: str) -> str:
    """Run a command that must fail; return its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--progress", "False"] if args[0] == "predict" else list(args))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monai-lgg: error: "), lines
    return lines[0]


def masks_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: tifffile.imread(p) for p in sorted(folder.rglob("*_mask.tif"))}


@pytest.fixture(scope="module")
def kaggle_prediction(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "kaggle"
    predict(str(tiny["kaggle"]), str(out), "--bundle", str(tiny["bundle"]), "--overlays", "--probabilities")
    return out


def test_kaggle_folder(tiny, kaggle_prediction):
    """Many patients: one Kaggle-named {0,255} mask per slice in the same folders, CSVs, overlays, probabilities."""
    images = sorted(p for p in tiny["kaggle"].rglob("*.tif") if not p.stem.endswith("_mask"))
    threshold = load_network(Path(tiny["bundle"]))[1].threshold
    for image in images:
        rel = image.relative_to(tiny["kaggle"])
        mask = tifffile.imread(kaggle_prediction / rel.parent / f"{image.stem}_mask.tif")
        assert mask.dtype == np.uint8 and mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        prob = tifffile.imread(kaggle_prediction / rel.parent / f"{image.stem}_prob.tif")
        assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
        # the mask is the probability at the bundle's threshold, less the components the post-processing drops
        assert not np.any((mask == 255) & (prob < threshold))
    case = images[0].parent.name
    rows = (kaggle_prediction / case / f"{case}_tumour.csv").read_text().strip().splitlines()
    assert rows[0] == "slice,tumour_pixels,tumour_area_mm2,tumour_volume_mm3" and rows[-1].startswith("all,")
    total = sum(int((m > 0).sum()) for n, m in masks_of(kaggle_prediction / case).items())
    assert int(rows[-1].split(",")[1]) == total == sum(int(r.split(",")[1]) for r in rows[1:-1])
    summary = (kaggle_prediction / "tumour_summary.csv").read_text().strip().splitlines()
    assert len(summary) == 1 + 5
    assert list((kaggle_prediction / case / "overlays").glob("*.png"))
    assert not list(kaggle_prediction.parent.glob(".*part*")), "staging folder left behind"


def test_single_slice_tiff_and_png_agree(tiny, kaggle_prediction, tmp_path):
    """A slice alone (TIFF, or the same pixels as PNG) gets one mask, whatever its file format.

    With the ``brain`` geometry a slice alone is a one-slice volume: its brain box and per-volume
    normalisation are its own, so its mask may differ from the one it gets inside its patient's stack
    (the recipe normalises per volume, which scored better; docs/evaluation.md)."""
    image = sorted(tiny["kaggle"].glob("*/*_4.tif"))[0]
    predict(str(image), str(tmp_path / "tif"), "--bundle", str(tiny["bundle"]))
    expected = tifffile.imread(tmp_path / "tif" / f"{image.stem}_mask.tif")
    assert expected.shape == tifffile.imread(image).shape[:2] and set(np.unique(expected)) <= {0, 255}
    png = tmp_path / f"{image.stem}.png"
    cv2.imwrite(str(png), cv2.cvtColor(tifffile.imread(image), cv2.COLOR_RGB2BGR))
    predict(str(png), str(tmp_path / "png"), "--bundle", str(tiny["bundle"]))
    assert np.array_equal(cv2.imread(str(tmp_path / "png" / f"{image.stem}_mask.png"), cv2.IMREAD_UNCHANGED), expected)


def test_volume_forms_match_slices(tiny, kaggle_prediction, tmp_path):
    """Converted data set, one _000x modality file, and one 3-channel NIfTI: uint8 {0,1} masks with the
    input's affine, equal to the slice-wise prediction of the same patient."""
    predict(str(tiny["dataset"]), str(tmp_path / "set"), "--bundle", str(tiny["bundle"]))
    case = sorted(p.name for p in tiny["kaggle"].iterdir() if p.is_dir())[0]
    flair = tiny["dataset"] / "imagesTr" / f"{case}_0001.nii.gz"
    predict(str(flair), str(tmp_path / "one"), "--bundle", str(tiny["bundle"]))
    modalities = [nib.load(tiny["dataset"] / "imagesTr" / f"{case}_{c:04d}.nii.gz") for c in range(3)]
    stacked = tmp_path / f"{case}.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([np.asarray(m.dataobj) for m in modalities], -1), modalities[0].affine), stacked)
    predict(str(stacked), str(tmp_path / "four"), "--bundle", str(tiny["bundle"]))
    slices = masks_of(kaggle_prediction / case)
    expected = np.stack([slices[f"{case}_{k}_mask.tif"] > 0 for k in range(1, len(slices) + 1)], axis=-1)
    for out in (tmp_path / "set", tmp_path / "one", tmp_path / "four"):
        mask = nib.load(out / f"{case}.nii.gz")
        np.testing.assert_allclose(mask.affine, modalities[0].affine)
        assert mask.get_data_dtype() == np.uint8 and mask.shape == modalities[0].shape
        assert np.array_equal(np.asarray(mask.dataobj) > 0, expected), out
    assert len(list((tmp_path / "set").glob("*.nii.gz"))) == 5


def test_sliding_window_pads_and_tiles_never_resizes():
    """Images smaller and larger than the patch keep their size; a 1x1 conv gives the same as without windows."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 1).eval()
    predictor = Predictor([net], roi_size=(64, 64), batch_size=3)
    for shape in ((3, 40, 30), (3, 150, 100), (3, 512, 512, 2)):
        image = torch.rand(*shape)
        prob = predictor.probabilities(image)
        assert tuple(prob.shape) == shape[1:]
        batch = image.permute(3, 0, 1, 2) if image.ndim == 4 else image[None]
        with torch.no_grad():
            direct = torch.sigmoid(net(batch))[:, 0]
        direct = direct.permute(1, 2, 0) if image.ndim == 4 else direct[0]
        torch.testing.assert_close(prob, direct, atol=1e-5, rtol=1e-5)


def test_tta_ensemble_and_largest_component():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    image = torch.rand(3, 32, 32, 4)
    single = Predictor([net], (32, 32)).probabilities(image)
    torch.testing.assert_close(Predictor([net, net], (32, 32)).probabilities(image), single)
    tta = Predictor([net], (32, 32), tta=True)
    torch.testing.assert_close(tta.probabilities(image.flip(2)), tta.probabilities(image).flip(1), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(tta.probabilities(image), single)
    prob = torch.zeros(16, 16, 4)
    prob[1:3, 1:3, 0] = 0.9  # 4 voxels
    prob[8:12, 8:12, 1:3] = 0.9  # 32 voxels, connected across slices 1-2
    mask = Predictor([net], (16, 16), largest_component=True).mask(prob)
    assert mask.dtype == torch.uint8 and int(mask.sum()) == 32 and mask[1, 1, 0] == 0


def test_threshold_and_ensemble_option(tiny, tmp_path):
    """--threshold 1.0 empties every mask; --ensemble with a checkpoint of the bundle runs."""
    image = sorted(tiny["kaggle"].glob("*/*_4.tif"))[0]
    predict(str(image), str(tmp_path / "t"), "--bundle", str(tiny["bundle"]), "--threshold", "1.0")
    assert tifffile.imread(tmp_path / "t" / f"{image.stem}_mask.tif").max() == 0
    model = str(tiny["bundle"] / "models" / "model.pt")
    predict(str(image), str(tmp_path / "e"), "--bundle", str(tiny["bundle"]), "--ensemble", f"{model},{model}", "--tta")
    assert (tmp_path / "e" / f"{image.stem}_mask.tif").is_file()


def test_overwrite_protection(tiny, tmp_path, capsys):
    image = sorted(tiny["kaggle"].glob("*/*_4.tif"))[0]
    out = tmp_path / "out"
    predict(str(image), str(out), "--bundle", str(tiny["bundle"]))
    mask = out / f"{image.stem}_mask.tif"
    mask.write_bytes(b"previous")
    line = fail(capsys, "predict", str(image), str(out), "--bundle", str(tiny["bundle"]), *TINY)
    assert "exists (pass --overwrite" in line and mask.read_bytes() == b"previous"
    # fire hands "--overwrite false" over as the text "false", which Python would read as true
    line = fail(capsys, "predict", str(image), str(out), "--bundle", str(tiny["bundle"]), "--overwrite", "false", *TINY)
    assert "exists (pass --overwrite" in line and mask.read_bytes() == b"previous"
    predict(str(image), str(out), "--bundle", str(tiny["bundle"]), "--overwrite")
    assert tifffile.imread(mask).shape == (64, 64)


def _bad_inputs(folder: Path, kaggle: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir()
    (folder / "empty").mkdir()
    tifffile.imwrite(folder / "grey.tif", np.zeros((64, 64), np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), np.zeros((64, 64, 4), np.uint8))
    (folder / "junk.png").write_bytes(b"not an image")
    (folder / "volume.mha").write_bytes(b"ObjectType = Image\n")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b broken")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), folder / "single.nii.gz")
    return {
        "missing file": (folder / "missing.tif", "does not exist"),
        "wrong channel count": (folder / "grey.tif", "has 1 channel(s)"),
        "RGBA png": (folder / "rgba.png", "has 4 channel(s)"),
        "unreadable image": (folder / "junk.png", "unreadable"),
        "empty folder": (folder / "empty", "no slice images"),
        "non-NIfTI volume": (folder / "volume.mha", "not a NIfTI volume"),
        "corrupt NIfTI": (folder / "broken.nii.gz", "unreadable"),
        "single-channel NIfTI": (folder / "single.nii.gz", "has 1 channel(s)"),
    }


def test_bad_inputs_one_line_no_output(tiny, tmp_path, capsys):
    """Every bad input of a one-case run: exit 2, one line naming the file, and no output folder or staging
    leftovers (a bad case among others is listed in failed.csv: tests/test_batch_predict.py)."""
    for name, (path, message) in _bad_inputs(tmp_path / "bad", tiny["kaggle"]).items():
        out = tmp_path / "outputs" / name.replace(" ", "_")
        line = fail(capsys, "predict", str(path), str(out), "--bundle", str(tiny["bundle"]), *TINY)
        assert message in line, (name, line)
        assert not out.exists(), name
    assert not list((tmp_path / "outputs").glob(".*")), "staging leftovers"


def test_bad_bundle_checkpoint_and_device(tiny, tmp_path, capsys):
    image = str(sorted(tiny["kaggle"].glob("*/*_4.tif"))[0])
    assert "bundle not found" in fail(capsys, "predict", image, str(tmp_path / "o"), "--bundle", str(tmp_path / "nope"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    assert "cannot be loaded" in fail(
        capsys, "predict", image, str(tmp_path / "o"), "--bundle", str(tiny["bundle"]), "--checkpoint", str(junk), *TINY
    )
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(1)}, other)
    assert "does not fit" in fail(
        capsys,
        "predict",
        image,
        str(tmp_path / "o"),
        "--bundle",
        str(tiny["bundle"]),
        "--checkpoint",
        str(other),
        *TINY,
    )
    if not torch.cuda.is_available():
        assert "CUDA is not available" in fail(
            capsys, "predict", image, str(tmp_path / "o"), "--bundle", str(tiny["bundle"]), "--device", "cuda", *TINY
        )
    assert not (tmp_path / "o").exists()


def test_bundle_zip(tiny, tmp_path):
    """A bundle zip (as the Model Zoo ships them) works like the folder."""
    archive = shutil.make_archive(str(tmp_path / "unet"), "zip", tiny["bundle"].parent, tiny["bundle"].name)
    network, info = load_network(archive, spatial_size=(64, 64))
    assert info.spatial_size == (64, 64) and not network.training
    case = find_cases(sorted(tiny["kaggle"].glob("*/*_4.tif"))[0])[0]
    image, _ = load_case(case)
    assert tuple(image.shape) == (3, 64, 64, 1)


def test_console_script_help():
    """The console script lists every command; predict --help explains its arguments."""
    listing = subprocess.run([CONSOLE_SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    text = listing.stdout + listing.stderr
    assert listing.returncode == 0
    for command in ("predict", "export", "report", "train", "evaluate", "benchmark", "convert", "synth"):
        assert command in text
    helped = subprocess.run(
        [sys.executable, "-m", "monai_lgg", "predict", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "--largest_component" in helped.stdout + helped.stderr
    assert "keep only the largest 3D connected component" in helped.stdout + helped.stderr


def test_grey_model_predicts_grey_images(tmp_path):
    """A bundle trained on 1-channel images (its sidecar records in_channels) segments grey PNGs of any size."""
    from monai_lgg.engines.bundle import bundle_network
    from monai_lgg.io import save_checkpoint, write_json

    bundle = tmp_path / "unet"
    shutil.copytree(
        PROJECT_ROOT / "bundles" / "unet",
        bundle,
        ignore=shutil.ignore_patterns("models", "eval", "logs", "predictions", "runs"),
    )
    net = bundle_network(bundle, in_channels=1, out_channels=1, spatial_size=[64, 64])
    save_checkpoint(net.state_dict(), bundle / "models" / "model.pt")
    write_json(bundle / "models" / "model.json", {"in_channels": 1, "out_channels": 1})
    grey = (np.random.default_rng(0).random((100, 80)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "em_7.png"), grey)
    predict(str(tmp_path / "em_7.png"), str(tmp_path / "out"), "--bundle", str(bundle))
    mask = cv2.imread(str(tmp_path / "out" / "em_7_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == grey.shape and set(np.unique(mask)) <= {0, 255}
    # the LGG model (3 channels) refuses the same grey image with a one-line message naming it
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "em_7.png"), str(tmp_path / "out3"), "--bundle", "unet", "--progress", "False"])
