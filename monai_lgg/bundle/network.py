"""A bundle's network and per-model settings: ``configs/model.json``, and the folder of the bundle being run.

Bundle configs call these through :mod:`monai_lgg.engines` (``"$import monai_lgg.engines as lgg"``).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch

from monai_lgg.errors import LGGInputError

__all__ = ["MODEL_FILE", "bundle_root", "bundle_setting", "bundle_network"]


def bundle_root(default: str = ".") -> str:
    """The folder of the bundle being run (the parent of its ``configs/``).

    MONAI's ``ConfigWorkflow`` knows the config folder but exposes no config key for it, and model-zoo
    bundles use ``"bundle_root": "."`` (so they only work when started inside the bundle). Here the
    running workflow is found on the call stack, so ``python -m monai.bundle run --config_file
    bundles/unet/configs/train.json`` works from any folder. Programs that parse configs themselves
    (MONAI Label, tests) pass ``bundle_root`` as an override, as the model zoo does.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    while frame is not None:
        workflow = frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow) and getattr(workflow, "config_root_path", None) is not None:
            path = Path(workflow.config_root_path).resolve()
            return str(path.parent if path.name == "configs" else path)
        frame = frame.f_back
    return str(Path(default).resolve())


MODEL_FILE = "model.json"


def _model_config(bundle_root: str | os.PathLike) -> dict:
    path = Path(bundle_root) / "configs" / MODEL_FILE
    if not path.is_file():
        raise LGGInputError(path, f"not found: every monai-lgg bundle states its network in configs/{MODEL_FILE}")
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_file(path)


def bundle_setting(bundle_root: str | os.PathLike, key: str, default: object = None) -> object:
    """A bundle-specific setting from ``<bundle_root>/configs/model.json`` (e.g. its learning rate).

    The configs shared by all bundles (``bundles/_shared/configs``) read what differs per model
    from this file, so each bundle states only its differences. A command-line override of the same
    key (``--learning_rate 1e-4``) replaces the lookup.
    """
    return _model_config(bundle_root).get(key, default)


def bundle_network(
    bundle_root: str | os.PathLike, network_args: dict | None = None, **context: object
) -> torch.nn.Module:
    """Instantiate ``network_def`` of ``<bundle_root>/configs/model.json``.

    Args:
        bundle_root: the bundle folder.
        network_args: constructor arguments replacing those in ``model.json``
            (``--network_args#hidden_size 768`` on the command line).
        context: values that ``model.json`` refers to (``@in_channels``, ``@spatial_size``, ...), taken
            from the running config so they follow its overrides; ``members=N > 1`` builds a
            :class:`~monai_lgg.networks.ensemble.ProbabilityEnsemble` of ``N`` copies (an ensemble checkpoint).
    """
    from monai.bundle import ConfigParser

    config = _model_config(bundle_root)
    if "network_def" not in config:
        raise LGGInputError(Path(bundle_root) / "configs" / MODEL_FILE, "has no 'network_def'")
    config["network_def"].update(network_args or {})
    members = int(context.pop("members", 1) or 1)
    parser = ConfigParser({**config, **context})
    if members == 1:
        return parser.get_parsed_content("network_def")
    from monai_lgg.networks.ensemble import ProbabilityEnsemble

    return ProbabilityEnsemble(
        [parser.get_parsed_content("network_def", instantiate=True, lazy=False) for _ in range(members)]
    )
