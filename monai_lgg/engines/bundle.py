"""Where a bundle runs: its root folder, its device and its run folders.

The bundle's settings, network and trained-model record live in :mod:`monai_lgg.bundle`, its data in
:mod:`monai_lgg.data.sources`; they are re-exported here, where bundle configs and earlier code find them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from monai_lgg.bundle.network import MODEL_FILE, bundle_network, bundle_root, bundle_setting
from monai_lgg.bundle.record import MAX_MEMBERS, trained_members, trained_network_args, trained_setting
from monai_lgg.bundle.settings import BUNDLES_DIR, bundle_names, installed_bundle, output_root
from monai_lgg.data.sources import (
    SYNTHETIC,
    cache_root,
    default_geometry,
    inference_items,
    load_split,
    prepare_dataset,
)
from monai_lgg.errors import one_line_errors_in_bundle_runs

__all__ = [
    "BUNDLES_DIR",
    "MAX_MEMBERS",
    "MODEL_FILE",
    "bundle_names",
    "installed_bundle",
    "output_root",
    "run_dir",
    "dataset_tag",
    "default_geometry",
    "bundle_root",
    "default_device",
    "cache_root",
    "prepare_dataset",
    "load_split",
    "inference_items",
    "bundle_setting",
    "bundle_network",
    "trained_members",
    "trained_network_args",
    "trained_setting",
    "SYNTHETIC",
]

RUNS = "runs"

# Bundle configs import this module ("$import monai_lgg.engines as lgg"): from then on, a user error under
# `python -m monai.bundle run` ends with our one-line message instead of MONAI's wrapped traceback.
one_line_errors_in_bundle_runs()


def dataset_tag(dataset_dir: str | os.PathLike = SYNTHETIC) -> str:
    """A short name of a data set for run folders: ``synthetic``, or the data set folder's name.

    A ``datalist.json`` is named by its folder; another datalist file adds its stem (``lgg-small``).
    """
    if str(dataset_dir) == SYNTHETIC:
        return SYNTHETIC
    path = Path(dataset_dir).expanduser().resolve()
    name = path.name
    if path.suffix == ".json":
        name = path.parent.name if path.stem == "datalist" else f"{path.parent.name}-{path.stem}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"


def run_dir(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike = SYNTHETIC,
    fold: int = 0,
    train_split: str = "train",
) -> str:
    """The folder a training run writes into by default: ``<bundle_root>/runs/<data set>_fold<k>``.

    For a bundle of an installed monai-lgg: ``./<bundle name>_outputs/runs/<data set>_fold<k>`` (see
    :func:`output_root`).

    Its ``models/`` (``model.pt``, ``last.ckpt`` and their JSON records), ``logs/`` and ``eval/`` belong to
    this run only. The bundle's own ``models/model.pt`` is the published model that ``inference.json``
    and ``monai-lgg predict`` load, so training never writes there unless asked (``--ckpt_dir
    <bundle>/models``); re-running the same command finds the same folder, which is what lets a killed
    run resume. A run on every patient (``--train_split all``, ``configs/final.json``) is
    ``<data set>_all``; other training splits add their name (``<data set>_fold0_trainval``).

    Args:
        bundle_root: the bundle folder.
        dataset_dir: the ``dataset_dir`` of the run (see :func:`dataset_tag`).
        fold: the test fold of the nested split.
        train_split: the patients trained on (``train``, ``trainval``, ``all``, ...).
    """
    tag = dataset_tag(dataset_dir)
    split = str(train_split)
    name = f"{tag}_all" if split == "all" else f"{tag}_fold{int(fold)}" + ("" if split == "train" else f"_{split}")
    return str(output_root(bundle_root) / RUNS / re.sub(r"[^A-Za-z0-9._-]+", "_", name))


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
