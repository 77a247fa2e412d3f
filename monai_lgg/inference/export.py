"""``monai-lgg export``: TorchScript and ONNX copies of a bundle's network, checked against PyTorch.

Each exported file is written under a temporary name, reloaded (``torch.jit.load`` /
``onnxruntime``) and run on random inputs of a batch size other than the one it was traced with; it
is moved into place only if its output matches the PyTorch network within the tolerance.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_lgg.engines.bundle import output_root
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.loading import load_network, resolve_bundle
from monai_lgg.io import atomic_path

__all__ = ["FORMATS", "export_model", "export_torchscript", "export_onnx"]

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}


def _check(name: str, path: Path, exported: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> float:
    diff = float(np.max(np.abs(exported - reference)))
    if exported.shape != reference.shape or not np.allclose(exported, reference, atol=atol, rtol=rtol):
        raise LGGInputError(
            path, f"{name} output differs from PyTorch (max |diff| {diff:.3g} > atol {atol}); nothing written"
        )
    return diff


def export_torchscript(
    network: torch.nn.Module, path: Path, example: torch.Tensor, check: torch.Tensor, atol: float, rtol: float
) -> float:
    """Script the network (trace it if scripting fails), save atomically, reload and compare; returns max |diff|."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.script(network)
        except Exception:  # some MONAI/einops code paths cannot be scripted: tracing is exact for these networks
            module = torch.jit.trace(network, example, check_trace=False)
    with torch.no_grad():
        reference = network(check).numpy()
    with atomic_path(path) as tmp:
        torch.jit.save(module, str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
        with torch.no_grad():
            diff = _check("TorchScript", path, loaded(check).numpy(), reference, atol, rtol)
    return diff


def export_onnx(
    network: torch.nn.Module,
    path: Path,
    example: torch.Tensor,
    check: torch.Tensor,
    atol: float,
    rtol: float,
    opset: int = 17,
) -> float:
    """Export with a dynamic batch axis (TorchScript-based exporter), check with onnxruntime; returns max |diff|."""
    try:
        import onnxruntime
    except ImportError as err:
        raise LGGInputError(
            None, f"ONNX export needs onnx and onnxruntime ({err}); pip install onnx onnxruntime"
        ) from None
    with torch.no_grad():
        reference = network(check).numpy()
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=["image"],
                output_names=["pred"],
                dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
                opset_version=opset,
            )
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff = _check("ONNX", path, session.run(None, {"image": check.numpy()})[0], reference, atol, rtol)
    return diff


def export_model(
    bundle: str | Path,
    output_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    formats: Sequence[str] = ("torchscript", "onnx"),
    spatial_size: Sequence[int] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    overwrite: bool = False,
) -> dict[str, dict]:
    """Export a bundle's trained network and check each export against PyTorch.

    Args:
        bundle: bundle folder, zip or name.
        output_dir: where ``model.ts`` / ``model.onnx`` go (default ``<bundle>/models``; for a bundle of an
            installed monai-lgg ``./<bundle name>_outputs/models``).
        checkpoint: weights (default ``<bundle>/models/model.pt``).
        formats: any of ``torchscript``, ``onnx``.
        spatial_size: input size (rows, columns), default the bundle's patch size.
        atol: absolute tolerance of the output check (logits).
        rtol: relative tolerance of the output check.
        overwrite: replace existing exports.

    Returns:
        ``{format: {"path": ..., "max_abs_diff": ...}}``.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise LGGInputError(
            None, f"unknown export format(s) {unknown or list(formats)}; choose from {', '.join(FORMATS)}"
        )
    root = resolve_bundle(bundle)
    output_dir = Path(output_dir) if output_dir else output_root(root) / "models"
    targets = {fmt: output_dir / FORMATS[fmt] for fmt in formats}
    for target in targets.values():
        if target.exists() and not overwrite:
            raise LGGInputError(target, "output exists (pass --overwrite to replace it)")
    network, info = load_network(root, checkpoint, spatial_size, "cpu")
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, info.in_channels, *info.spatial_size, generator=generator)
    check = torch.randn(2, info.in_channels, *info.spatial_size, generator=generator)
    exporters = {"torchscript": export_torchscript, "onnx": export_onnx}
    return {
        fmt: {"path": str(path), "max_abs_diff": exporters[fmt](network, path, example, check, atol, rtol)}
        for fmt, path in targets.items()
    }
