"""A monai-lgg bundle served by MONAI Label's monaibundle app (``BundleInferTask``).

monailabel 0.8.5 does not install beside this project's CPU torch: it requires ``torchvision`` (PyPI
has only CUDA builds, whose ``_C`` extension links ``libtorch_cuda.so``/``libc10_cuda.so``, absent
from CPU torch, so ``import torchvision`` fails with "operator torchvision::nms does not exist";
letting pip resolve it replaces torch with a CUDA build) and ``sam2`` (which pulls torchvision too).
Installed with ``pip install --no-deps monailabel==0.8.5`` plus its pure-Python imports
(docs/monailabel.md), only ``monailabel.transform.post`` needs torchvision, for ``make_grid`` /
``save_image``, which bundle inference never calls: :func:`test_real_bundle_infer_task` then runs the
real ``BundleInferTask`` with a stand-in ``torchvision.utils``. Without monailabel it skips, and
:func:`test_bundle_infer_task_path` repeats, with MONAI alone, every read and call that
``BundleInferTask`` makes on our bundle (see :mod:`monai_lgg.inference.monailabel`).
"""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImaged, SaveImaged

from monai_lgg.cli import main
from monai_lgg.inference.monailabel import (
    check_monailabel_bundle,
    monailabel_labels,
    prepare_monailabel_bundle,
    write_multichannel_studies,
)

from .test_predict import tiny_bundle


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Path]:
    """The tiny bundle prepared as ``<app>/model/lgg_unet``, one 3-channel study and our CLI's mask of it."""
    tiny = tiny_bundle(tmp_path_factory)
    app = tmp_path_factory.mktemp("app")
    bundle = prepare_monailabel_bundle(tiny["bundle"], app / "model" / "lgg_unet")
    study = write_multichannel_studies(tiny["dataset"], app / "studies")[0]
    # the bundle's own settings (256x256 windows), as MONAI Label uses them
    main(["predict", str(study), str(app / "cli"), "--bundle", str(bundle), "--probabilities", "--progress", "False"])
    probability = app / "cli" / study.name.replace(".nii.gz", "_prob.nii.gz")
    return {
        "bundle": bundle,
        "study": study,
        "expected": app / "cli" / study.name,
        "probability": probability,
        "tiny": tiny["bundle"],
    }


def assert_same_mask(mask: np.ndarray, served: dict[str, Path]) -> None:
    """Equal to the CLI's mask, except voxels whose probability is within float noise of the threshold
    (the two paths batch the slices differently, which changes the last bits of the convolutions)."""
    expected = np.asarray(nib.load(served["expected"]).dataobj) > 0
    probability = np.asarray(nib.load(served["probability"]).dataobj)
    assert mask.shape == expected.shape
    differ = (mask > 0) != expected
    assert np.all(np.abs(probability[differ] - 0.5) < 1e-4), f"{differ.sum()} voxels differ"


def test_prepared_bundle_has_every_key_and_file(served, tmp_path):
    """Every file and key BundleInferTask reads is there, and a stray training checkpoint is flagged."""
    assert check_monailabel_bundle(served["bundle"]) == []
    assert sorted(p.name for p in (served["bundle"] / "models").iterdir()) == ["model.pt"]
    assert not any(p.is_symlink() for p in served["bundle"].rglob("*"))
    metadata = json.loads((served["bundle"] / "configs" / "metadata.json").read_text())
    assert next(iter(metadata["network_data_format"]["inputs"])) == "image"
    assert next(iter(metadata["network_data_format"]["outputs"])) == "pred"
    assert "tumour" in monailabel_labels(metadata)
    # a stray checkpoint with a shorter name than model.pt would be MONAI Label's default model file
    raw = tmp_path / "raw"
    shutil.copytree(served["tiny"], raw, symlinks=False)
    shutil.copy(raw / "models" / "model.pt", raw / "models" / "last.pt")
    assert any("would load last.pt" in p for p in check_monailabel_bundle(raw))
    shutil.rmtree(raw / "configs" / "inference.json", ignore_errors=True)
    (raw / "configs" / "inference.json").unlink()
    assert "missing" in check_monailabel_bundle(raw)[0]


def _run_like_bundle_infer_task(bundle: Path, image: Path) -> np.ndarray:
    """What BundleInferTask.__call__ does with MONAI alone: same keys, filters and loading rules."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(bundle), "device": torch.device("cpu")})
    network = parser.get_parsed_content("network_def", instantiate=True)
    checkpoint = torch.load(bundle / "models" / "model.pt", map_location="cpu")  # as MONAI Label loads it
    network.load_state_dict(checkpoint.get("model", checkpoint), strict=True)
    network.eval()
    pre = parser.get_parsed_content("preprocessing", instantiate=True)
    pre = list(pre.transforms) if isinstance(pre, Compose) else pre
    for t in pre:
        if isinstance(t, LoadImaged):
            t._loader.image_only = False  # MONAI Label asks for the metadata too
    data = Compose(pre)({"image": str(image)})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer", instantiate=True)(data["image"][None], network)[0]
    post = parser.get_parsed_content("postprocessing", instantiate=True)
    post = [t for t in (post.transforms if isinstance(post, Compose) else post) if not isinstance(t, SaveImaged)]
    return np.asarray(Compose(post)(data)["pred"])[0]


def test_bundle_infer_task_path(served):
    """MONAI Label's inference path on a synthetic 3-channel NIfTI gives our CLI's mask."""
    assert_same_mask(_run_like_bundle_infer_task(served["bundle"], served["study"]), served)


def _import_monailabel(monkeypatch):
    try:
        importlib.import_module("torchvision.utils")
    except Exception:  # not installed, or a CUDA build that cannot load beside CPU torch
        stub, utils = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")

        def unavailable(*args, **kwargs):
            raise RuntimeError("torchvision is not available here")

        utils.make_grid = utils.save_image = unavailable
        stub.utils = utils
        monkeypatch.setitem(sys.modules, "torchvision", stub)
        monkeypatch.setitem(sys.modules, "torchvision.utils", utils)
    try:
        return importlib.import_module("monailabel.tasks.infer.bundle")
    except ImportError as err:
        pytest.skip(
            f"monailabel not importable ({err}); it cannot be installed with its dependencies beside CPU "
            "torch (torchvision/sam2): see this module's docstring and docs/monailabel.md"
        )


def test_real_bundle_infer_task(served, monkeypatch):
    """MONAI Label's own BundleInferTask loads the bundle and segments the study like our CLI."""
    bundle_module = _import_monailabel(monkeypatch)
    task = bundle_module.BundleInferTask(str(served["bundle"]), {})
    assert task.is_valid()
    info = task.info()
    assert info["type"] == "segmentation" and "tumour" in info["labels"] and info["version"]
    result_file, result = task(copy.deepcopy({"image": str(served["study"]), "device": "cpu"}))
    try:
        mask = nib.load(result_file)
        np.testing.assert_allclose(mask.affine, nib.load(served["expected"]).affine, atol=1e-5)
        assert_same_mask(np.asarray(mask.dataobj), served)
        assert result["label_names"] == task.labels
    finally:
        Path(result_file).unlink(missing_ok=True)
