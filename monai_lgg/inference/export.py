"""``monai-lgg export``: TorchScript and ONNX copies of a bundle's network, checked against PyTorch.

Every requested file is written under a temporary name, reloaded (``torch.jit.load`` / ``onnxruntime``)
and run on random inputs of a batch size other than the one it was traced with. The check is on what
users consume: the probabilities (sigmoid of a one-channel logit, softmax over the channels otherwise),
which ``monai-lgg predict`` thresholds into masks and writes as probability maps. Logits are not
compared: the shipped ensemble returns ``logit(mean probability)``, clamped at ``logit(1e-6) = -13.8``,
where float32 rounding of a probability near 1e-6 moves the logit by 0.05 while the probability
moves by 1e-7. Only when every file passes are they all moved into place; a refusal leaves nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_lgg.bundle.settings import THRESHOLD, output_root
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.loading import load_network, resolve_bundle
from monai_lgg.io import atomic_path

__all__ = ["FORMATS", "export_model", "export_torchscript", "export_onnx", "probabilities"]

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """What users consume of a network's ``(N, C, H, W)`` output: sigmoid (C = 1) or softmax over C (float64)."""
    logits = torch.from_numpy(np.asarray(outputs, dtype=np.float64))
    return (torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)).numpy()


def _masks(probability: np.ndarray, threshold: float) -> np.ndarray:
    return probability[:, 0] >= threshold if probability.shape[1] == 1 else probability.argmax(axis=1)


def _check(
    name: str, path: Path, exported: np.ndarray, reference: np.ndarray, atol: float, threshold: float = THRESHOLD
) -> dict[str, float]:
    """Compare the probabilities of an export with PyTorch's; returns ``max_abs_diff`` and ``mask_pixels_differing``.

    Raises:
        LGGInputError: other output shape, or a probability more than ``atol`` away from PyTorch's.
    """
    if exported.shape != reference.shape:
        raise LGGInputError(
            path, f"{name} output has shape {exported.shape}, PyTorch {reference.shape}; nothing written"
        )
    ours, theirs = probabilities(exported), probabilities(reference)
    diff = float(np.max(np.abs(ours - theirs)))
    if not diff <= atol:  # also refuses NaN
        raise LGGInputError(
            path,
            f"{name} probabilities differ from PyTorch (max |diff| {diff:.3g} > atol {atol}); nothing written",
        )
    differing = int(np.count_nonzero(_masks(ours, threshold) != _masks(theirs, threshold)))
    return {"max_abs_diff": diff, "mask_pixels_differing": differing}


def _save_torchscript(network: torch.nn.Module, file: Path, example: torch.Tensor, opset: int) -> None:
    """Script the network (trace it if scripting fails) and save it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.script(network)
        except Exception:  # some MONAI/einops code paths cannot be scripted: tracing is exact for these networks
            module = torch.jit.trace(network, example, check_trace=False)
    torch.jit.save(module, str(file))


def _run_torchscript(file: Path, check: torch.Tensor) -> np.ndarray:
    loaded = torch.jit.load(str(file), map_location="cpu").eval()
    with torch.no_grad():
        return loaded(check).numpy()


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise LGGInputError(
            None, f"ONNX export needs onnx and onnxruntime ({err}); pip install onnx onnxruntime"
        ) from None
    return onnxruntime


def _save_onnx(network: torch.nn.Module, file: Path, example: torch.Tensor, opset: int) -> None:
    """Export with a dynamic batch axis (TorchScript-based exporter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(file),
            dynamo=False,
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
            opset_version=opset,
        )


def _run_onnx(file: Path, check: torch.Tensor) -> np.ndarray:
    session = _onnxruntime().InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": check.numpy()})[0]


_FORMATS = {
    "torchscript": ("TorchScript", _save_torchscript, _run_torchscript),
    "onnx": ("ONNX", _save_onnx, _run_onnx),
}


def _export_checked(
    fmt: str,
    network: torch.nn.Module,
    file: Path,
    target: Path,
    example: torch.Tensor,
    check: torch.Tensor,
    atol: float,
    threshold: float,
    opset: int = 17,
) -> dict[str, float]:
    """Write ``network`` as ``fmt`` into ``file`` (the staging name of ``target``), reload it and compare."""
    name, save, run = _FORMATS[fmt]
    save(network, file, example, opset)
    with torch.no_grad():
        reference = network(check).numpy()
    return _check(name, target, run(file, check), reference, atol, threshold)


def export_torchscript(
    network: torch.nn.Module,
    path: Path,
    example: torch.Tensor,
    check: torch.Tensor,
    atol: float,
    threshold: float = THRESHOLD,
) -> float:
    """Script (or trace) the network into ``path`` if its probabilities match within ``atol``; returns max |diff|."""
    with atomic_path(path) as tmp:
        return _export_checked("torchscript", network, tmp, Path(path), example, check, atol, threshold)["max_abs_diff"]


def export_onnx(
    network: torch.nn.Module,
    path: Path,
    example: torch.Tensor,
    check: torch.Tensor,
    atol: float,
    threshold: float = THRESHOLD,
    opset: int = 17,
) -> float:
    """Export to ONNX in ``path`` if onnxruntime's probabilities match within ``atol``; returns max |diff|."""
    _onnxruntime()
    with atomic_path(path) as tmp:
        return _export_checked("onnx", network, tmp, Path(path), example, check, atol, threshold, opset)["max_abs_diff"]


def export_model(
    bundle: str | Path,
    output_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    formats: Sequence[str] = ("torchscript", "onnx"),
    spatial_size: Sequence[int] | None = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> dict[str, dict]:
    """Export a bundle's trained network and check each export against PyTorch; all files or none.

    Args:
        bundle: bundle folder, zip or name.
        output_dir: where ``model.ts`` / ``model.onnx`` go (default ``<bundle>/models``; for a bundle of an
            installed monai-lgg ``./<bundle name>_outputs/models``).
        checkpoint: weights (default ``<bundle>/models/model.pt``).
        formats: any of ``torchscript``, ``onnx``.
        spatial_size: input size (rows, columns), default the bundle's patch size.
        atol: largest accepted difference of a probability (docs/cli.md, Export, explains 1e-4).
        overwrite: replace existing exports.

    Returns:
        ``{format: {"path": ..., "max_abs_diff": ..., "mask_pixels_differing": ...}}`` (probabilities; masks at
        the bundle's threshold).

    Raises:
        LGGInputError: unknown format, existing output, missing onnxruntime, or an export whose probabilities
            differ; then no file is written (nor an output folder created).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise LGGInputError(
            None, f"unknown export format(s) {unknown or list(formats)}; choose from {', '.join(FORMATS)}"
        )
    if "onnx" in formats:
        _onnxruntime()
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
    created = not output_dir.exists()
    results: dict[str, dict] = {}
    try:
        # every file staged and checked before any is moved into place: one refusal leaves none of them
        with contextlib.ExitStack() as staged:
            for fmt, target in targets.items():
                tmp = staged.enter_context(atomic_path(target))
                checked = _export_checked(fmt, network, tmp, target, example, check, atol, info.threshold)
                results[fmt] = {"path": str(target), **checked}
    except BaseException:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise
    return results
