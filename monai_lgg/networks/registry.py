"""The network classes a trained-model record may name, looked up by name only.

A trained-model record (the JSON file written beside ``model.pt``) travels with downloaded weights, so it is
untrusted data. When it names the network its weights belong to (``network_args._target_``), the name is a key of
:data:`NETWORKS`: an exact string match in a fixed table. Nothing the record holds is imported, resolved as a dotted
path or traversed as an attribute, so a name such as ``monai.networks.nets.unet.torch.hub.load`` is simply unknown.

Bundle configs (``configs/model.json``) are code the user chose to run and may name any class; this table only
bounds what a record can choose.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import UNETR, AttentionUnet, BasicUNet, BasicUNetPlusPlus, UNet

from monai_lgg.networks.transunet import TransUNet
from monai_lgg.networks.unext import UNeXt
from monai_lgg.networks.wrappers import basic_unetplusplus

__all__ = ["NETWORKS", "network_constructor", "canonical_network_name"]

_CLASSES: tuple[Callable[..., torch.nn.Module], ...] = (
    # the MONAI networks the bundles build, and close relatives a user may train with --network_args#_target_
    UNet,
    AttentionUnet,
    UNETR,
    BasicUNet,
    BasicUNetPlusPlus,
    # the project's own networks
    TransUNet,
    UNeXt,
    basic_unetplusplus,
)


def _names(constructor: Callable[..., torch.nn.Module]) -> tuple[str, ...]:
    """The spellings a config may use for ``constructor``: its bare name (MONAI's config looks bare names up in
    ``monai.networks.nets``), its public dotted path, and its defining module's dotted path."""
    module = constructor.__module__
    public = "monai.networks.nets" if module.startswith("monai.networks.nets") else module
    return tuple(
        dict.fromkeys(
            (
                constructor.__name__,
                f"{public}.{constructor.__name__}",
                f"{constructor.__module__}.{constructor.__name__}",
            )
        )
    )


NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {
    name: constructor for constructor in _CLASSES for name in _names(constructor)
}
"""Every accepted spelling of a network name, mapped to its class (or factory function)."""


def network_constructor(name: object) -> Callable[..., torch.nn.Module] | None:
    """The registered network called exactly ``name``, or ``None`` (an unknown or non-string name)."""
    return NETWORKS.get(name) if isinstance(name, str) else None


def canonical_network_name(name: object) -> str | None:
    """The full dotted path of the registered network called exactly ``name`` (``None`` if unknown).

    The returned string is built from the registered class itself, never from ``name``, so a config parser given it
    can only reach that class.
    """
    constructor = network_constructor(name)
    return None if constructor is None else f"{constructor.__module__}.{constructor.__name__}"
