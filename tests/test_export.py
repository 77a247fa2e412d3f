"""``monai-lgg export``: TorchScript and ONNX files that reproduce the PyTorch network, and are refused otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from monai_lgg.cli import main
from monai_lgg.inference import load_network

from .test_predict import TINY, fail, predict, tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    main(["export", "--bundle", str(tiny["bundle"]), "--output_dir", str(out), *TINY])
    return out


def test_exports_match_pytorch(tiny, exported):
    """Reloaded exports give the PyTorch logits on inputs of another batch size than the export's."""
    onnxruntime = pytest.importorskip("onnxruntime")
    network, _ = load_network(tiny["bundle"], spatial_size=(64, 64))
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = network(x).numpy()
    scripted = torch.jit.load(str(exported / "model.ts"))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, atol=1e-4, rtol=1e-4)
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4, rtol=1e-4)


def test_predict_with_torchscript_checkpoint(tiny, exported, tmp_path):
    """The TorchScript file is a drop-in --checkpoint: same masks as the PyTorch weights."""
    image = sorted(tiny["kaggle"].glob("*/*_4.tif"))[0]
    predict(str(image), str(tmp_path / "pt"), "--bundle", str(tiny["bundle"]))
    predict(
        str(image), str(tmp_path / "ts"), "--bundle", str(tiny["bundle"]), "--checkpoint", str(exported / "model.ts")
    )
    name = f"{image.stem}_mask.tif"
    assert np.array_equal(tifffile.imread(tmp_path / "pt" / name), tifffile.imread(tmp_path / "ts" / name))


class _Shifted(torch.nn.Module):
    """An 'export' whose output is off by 0.01: what a broken conversion looks like."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) + 0.01


def test_overwrite_and_failed_check_write_nothing(tiny, exported, tmp_path, capsys, monkeypatch):
    before = (exported / "model.ts").read_bytes()
    line = fail(capsys, "export", "--bundle", str(tiny["bundle"]), "--output_dir", str(exported), *TINY)
    assert "exists (pass --overwrite" in line and (exported / "model.ts").read_bytes() == before
    # an export that does not reproduce the network is refused and nothing is left
    load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: _Shifted(load(*args, **kwargs)))
    line = fail(
        capsys,
        "export",
        "--bundle",
        str(tiny["bundle"]),
        "--output_dir",
        str(tmp_path),
        "--formats",
        "torchscript",
        *TINY,
    )
    assert "differs from PyTorch" in line
    assert list(tmp_path.iterdir()) == []
    assert "unknown export format" in fail(capsys, "export", "--bundle", str(tiny["bundle"]), "--formats", "tflite")
