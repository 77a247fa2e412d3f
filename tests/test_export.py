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
    """An 'export' whose logits are off by 1: what a broken conversion looks like."""

    def __init__(self, module: torch.nn.Module, shift: float = 1.0) -> None:
        super().__init__()
        self.module, self.shift = module, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) + self.shift


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
    assert "TorchScript probabilities differ from PyTorch" in line
    assert list(tmp_path.iterdir()) == []
    assert "unknown export format" in fail(capsys, "export", "--bundle", str(tiny["bundle"]), "--formats", "tflite")


def test_refused_onnx_leaves_no_torchscript_behind(tiny, tmp_path, capsys, monkeypatch):
    """Both files are staged and checked before either is moved into place: a refused ONNX file takes the
    TorchScript file (checked first, and fine) with it, and the output folder it would have created."""
    onnxruntime = pytest.importorskip("onnxruntime")
    run = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, *a, **k: [run(self, *a, **k)[0] + 1.0])
    out = tmp_path / "exports"
    line = fail(capsys, "export", "--bundle", str(tiny["bundle"]), "--output_dir", str(out), *TINY)
    assert "ONNX probabilities differ from PyTorch" in line and "nothing written" in line
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert list(tmp_path.iterdir()) == []


class _Constant(torch.nn.Module):
    """A one-channel 'network' whose logit is ``value`` everywhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        torch.nn.init.zeros_(self.conv.weight)
        torch.nn.init.constant_(self.conv.bias, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "logit, accepted",
    [
        (-13.8, True),  # the ensemble's clamp logit(1e-6): +0.05 moves the probability by 5e-8, no mask changes
        (0.0, False),  # near the threshold +0.05 moves the probability by 0.0125: refused
    ],
)
def test_check_is_on_probabilities_not_logits(tmp_path, monkeypatch, logit, accepted):
    """The check compares what users consume: a logit difference of 0.05 deep in the background is accepted."""
    from monai_lgg.errors import LGGInputError
    from monai_lgg.inference.export import export_torchscript

    load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: _Shifted(load(*args, **kwargs), 0.05))
    network, path = _Constant(logit).eval(), tmp_path / "model.ts"
    example, check = torch.randn(1, 3, 16, 16), torch.randn(2, 3, 16, 16)
    if accepted:
        diff = export_torchscript(network, path, example, check, atol=1e-4)
        assert 0 < diff < 1e-6 and path.is_file()
    else:
        with pytest.raises(LGGInputError, match="probabilities differ"):
            export_torchscript(network, path, example, check, atol=1e-4)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_documented_export_of_the_shipped_ensemble(tmp_path, capsys):
    """``monai-lgg export unet`` (the documented command) exports the shipped 5-member ensemble: its logits differ
    by up to ~0.05 where they are clamped at logit(1e-6), its probabilities and masks do not."""
    pytest.importorskip("onnxruntime")
    main(["export", "unet", "--output_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ts"]
    assert out.count("0 mask pixels differ") == 2, out
