"""A new bundle in one call: ``monai-lgg new_bundle NAME --network UNet`` (in the spirit of MONAI's ``init_bundle``).

The new bundle is a copy of a project bundle (the template: its workflow configs, LICENSE, metadata) with its own
``configs/model.json``. In a source checkout, a bundle made in ``bundles/`` links its workflow configs to
``bundles/_shared/configs`` as the project's bundles do, so it states only its differences; anywhere else the
configs are copied as plain files, as in an installed monai-lgg. The bundle tests find every folder of ``bundles/``
with a ``configs/model.json``, so a new bundle there is tested without editing a test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from monai_lgg.bundle.network import MODEL_FILE
from monai_lgg.bundle.settings import BUNDLES_DIR, bundle_names
from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir, write_json

__all__ = ["new_bundle", "BUNDLE_NAME"]

BUNDLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A bundle's folder name: lower case letters, digits and ``_``, starting with a letter (``--bundle NAME`` finds it)."""

_SHARED = BUNDLES_DIR / "_shared" / "configs"


def _network_def(network: str) -> dict:
    """``network_def`` of a project bundle called ``network``, or a registered network class with its defaults."""
    from monai_lgg.networks.registry import canonical_network_name

    if network in bundle_names():
        return json.loads((BUNDLES_DIR / network / "configs" / MODEL_FILE).read_text())["network_def"]
    target = canonical_network_name(network)
    if target is None:
        from monai_lgg.networks.registry import NETWORKS

        known = ", ".join(bundle_names() + sorted({name for name in NETWORKS if "." not in name}))
        problem = f"--network {network!r} is neither a bundle nor a registered network (one of {known})"
        raise LGGInputError(None, problem)
    return {"_target_": target, "spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@out_channels"}


def new_bundle(
    name: str,
    network: str = "unet",
    directory: str | os.PathLike | None = None,
    template: str = "unet",
    network_args: dict | None = None,
) -> Path:
    """Make the bundle ``<directory>/<name>`` and return its folder.

    Args:
        name: the bundle's folder name (:data:`BUNDLE_NAME`).
        network: a project bundle whose ``network_def`` to start from (``unet``, ``unetr``...), or a registered network
            class (:data:`monai_lgg.networks.registry.NETWORKS`: ``BasicUNet``, ``AttentionUnet``...) built with
            its defaults and ``network_args``.
        directory: where to make it (default: the project's ``bundles/``).
        template: the project bundle whose workflow configs, metadata and LICENSE are copied.
        network_args: constructor arguments added to (or replacing those of) ``network_def``.

    Raises:
        LGGInputError: a bad name, an existing folder, or an unknown network or template.
    """
    if not BUNDLE_NAME.match(str(name)):
        problem = f"bundle name {name!r}: use lower case letters, digits and _, starting with a letter"
        raise LGGInputError(None, problem)
    if template not in bundle_names():
        raise LGGInputError(None, f"--template {template!r} is not a bundle (one of {', '.join(bundle_names())})")
    parent = Path(directory).expanduser() if directory is not None else BUNDLES_DIR
    target = parent / name
    if target.exists():
        raise LGGInputError(target, "exists already: choose another name or remove it")
    network_def = {**_network_def(network), **(network_args or {})}
    source = BUNDLES_DIR / template
    link_shared = parent.resolve() == BUNDLES_DIR and _SHARED.is_dir()
    with atomic_dir(target) as tmp:
        (tmp / "configs").mkdir(parents=True)
        (tmp / "docs").mkdir()
        for config in sorted((source / "configs").iterdir()):
            if config.name in (MODEL_FILE, "metadata.json"):
                continue
            if link_shared and config.is_symlink():
                (tmp / "configs" / config.name).symlink_to(Path("..", "..", "_shared", "configs", config.name))
            else:
                shutil.copyfile(config, tmp / "configs" / config.name)
        if (source / "LICENSE").is_file():
            shutil.copyfile(source / "LICENSE", tmp / "LICENSE")
        write_json(
            tmp / "configs" / MODEL_FILE,
            {
                "_comment": f"What this bundle adds to the shared workflow configs (made from the {template} bundle).",
                "network_def": network_def,
            },
        )
        metadata = json.loads((source / "configs" / "metadata.json").read_text())
        metadata.update(
            version="0.1.0",
            changelog={"0.1.0": f"first version, made by monai-lgg new_bundle from {template}"},
            name=f"{name} (monai-lgg bundle)",
        )
        write_json(tmp / "configs" / "metadata.json", metadata)
        (tmp / "docs" / "README.md").write_text(
            f"# {name}\n\nA monai-lgg bundle made from the {template} bundle; its network is `configs/model.json`'s "
            f"`network_def`.\n\n    monai-lgg train --bundle {target}\n"
            f"    monai-lgg predict INPUT OUTPUT --bundle {target}\n"
        )
    return target
