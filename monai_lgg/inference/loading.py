"""Find a monai-lgg bundle (folder, zip or name) and load its checkpoint(s) into networks for inference.

A bundle states its network in ``configs/model.json`` (built by
:func:`monai_lgg.bundle.network.bundle_network`) and its inference settings in ``configs/inference.json``
(:func:`monai_lgg.bundle.settings.bundle_info`); what training recorded beside the weights
(:mod:`monai_lgg.bundle.record`: channels, geometry, threshold...) overrides them. Weights are ``models/model.pt``,
a plain state dict, always loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from monai_lgg.bundle.network import bundle_network
from monai_lgg.bundle.record import (
    trained_channels,
    trained_members,
    trained_min_component_fraction,
    trained_threshold,
)

# bundles are found and their settings read without importing torch (the command line checks --bundle first)
from monai_lgg.bundle.settings import BUNDLES_DIR, BundleInfo, bundle_info, bundle_names, resolve_bundle
from monai_lgg.errors import LGGInputError
from monai_lgg.transforms import presets

__all__ = [
    "BundleInfo",
    "BUNDLES_DIR",
    "bundle_names",
    "resolve_bundle",
    "bundle_info",
    "load_state_dict",
    "load_network",
    "load_members",
    "resolve_device",
    "trained_channels",
]


def load_state_dict(network: torch.nn.Module, checkpoint: str | Path) -> torch.nn.Module:
    """Load a checkpoint into ``network`` with ``weights_only=True``.

    Accepts a plain state dict (``model.pt``) or a training checkpoint holding one under ``network`` or
    ``model`` (``last.pt``).

    Raises:
        LGGInputError: the file is missing, is not weights, holds inf/NaN, or does not fit ``network``.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise LGGInputError(checkpoint, "checkpoint not found (train the bundle first, or pass --checkpoint)")
    if checkpoint.stat().st_size == 0:
        raise LGGInputError(checkpoint, "is empty (0 bytes): not weights; was a download or copy interrupted?")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights-only errors have many types
        raise LGGInputError(checkpoint, f"cannot be loaded as weights ({_first_line(err)})") from None
    if isinstance(state, dict):
        for key in ("network", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    # weights with inf/NaN load without complaint and silently give empty or garbage masks
    broken = (
        [
            k
            for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
        ]
        if isinstance(state, dict)
        else []
    )
    if broken:
        raise LGGInputError(
            checkpoint, f"holds non-finite values (inf/NaN) in {len(broken)} tensor(s), e.g. {broken[0]}"
        )
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise LGGInputError(
            checkpoint,
            f"does not fit the bundle's network ({detail[:200]}); "
            "wrong bundle, or trained with another --spatial_size?",
        ) from None
    return network


def _first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (some errors, e.g. an empty file's ``EOFError``, have no message)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def load_torchscript(path: str | Path) -> torch.nn.Module:
    """Load a TorchScript export (``monai-lgg export``); a TorchScript file is a program: load only trusted ones.

    Raises:
        LGGInputError: missing, empty, truncated or not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise LGGInputError(path, "TorchScript model not found")
    if path.stat().st_size == 0:
        raise LGGInputError(path, "is empty (0 bytes): not a TorchScript model")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # the zip reader and the TorchScript deserialiser raise RuntimeError and others
        problem = f"cannot be loaded as a TorchScript model, corrupt or truncated ({_first_line(err)})"
        raise LGGInputError(path, problem) from None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None: CUDA when present, else CPU; anything else must be usable here."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except RuntimeError as err:
        raise LGGInputError(None, f"--device {device}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LGGInputError(None, f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return resolved


def load_network(
    bundle: str | Path,
    checkpoint: str | Path | None = None,
    spatial_size: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, BundleInfo]:
    """Build a bundle's network, load its weights and put it in eval mode on ``device``.

    Args:
        bundle: bundle folder, zip or name (see :func:`resolve_bundle`).
        checkpoint: weights (default ``<bundle>/models/model.pt``); a ``.ts`` file is loaded as TorchScript.
        spatial_size: training patch size, if not the bundle's (UNETR and TransUNet depend on it).
        device: where to put the network.
    """
    root = resolve_bundle(bundle)
    info = bundle_info(root, spatial_size)
    checkpoint = Path(checkpoint) if checkpoint else root / "models" / "model.pt"
    trained = trained_channels(checkpoint)
    if spatial_size:  # an explicit --spatial_size wins over the record
        trained.pop("spatial_size", None)
    network_args = trained.pop("network_args", {})  # builds the network; not an input setting
    info = replace(info, **trained)
    if info.threshold is None:  # inference.json computes it from the record: the record's rule, else the recipe's
        info = replace(info, threshold=trained_threshold(checkpoint))
    if info.min_component_fraction is None:
        info = replace(info, min_component_fraction=trained_min_component_fraction(checkpoint))
    if info.normalization is None:  # a sidecar written before the key existed: the geometry's (then only) one
        info = replace(info, normalization=presets.default_normalization(info.geometry))
    if checkpoint.suffix == ".ts":
        network = load_torchscript(checkpoint)
    else:
        network = bundle_network(
            root,
            network_args,
            in_channels=info.in_channels,
            out_channels=info.out_channels,
            spatial_size=list(info.spatial_size),
            members=trained_members(checkpoint),  # the shipped UNet: its 5 fold models as one ensemble module
        )
        load_state_dict(network, checkpoint)
    return network.to(device).eval(), info


def _inputs(info: BundleInfo) -> tuple:
    """What members of an ensemble must share: channels and how their one input is preprocessed."""
    return info.in_channels, info.out_channels, info.context_slices, info.normalization


def load_members(
    bundle: str | Path,
    checkpoint: str | Path | None = None,
    ensemble: Sequence[str | Path] = (),
    spatial_size: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[list[torch.nn.Module], BundleInfo]:
    """The networks of an ensemble: ``bundle`` (with ``checkpoint``) and each ``ensemble`` entry.

    An ``ensemble`` entry is another bundle (folder, zip or name, with its own ``models/model.pt``) or
    a checkpoint file (``.pt`` / ``.ts``) of ``bundle``'s network. The settings (patch size,
    threshold) are those of ``bundle``.
    """
    first, info = load_network(bundle, checkpoint, spatial_size, device)
    members = [first]
    for entry in ensemble:
        path = Path(entry)
        if path.suffix in (".pt", ".pth", ".ts"):
            members.append(load_network(bundle, path, spatial_size, device)[0])
        else:
            member, member_info = load_network(entry, None, spatial_size, device)
            if _inputs(member_info) != _inputs(info):
                raise LGGInputError(
                    entry,
                    "has other input/output channels or input preprocessing than the first bundle: cannot be ensembled",
                )
            members.append(member)
    return members, info
