"""A bundle's settings: the one table of defaults, and finding a bundle (folder, zip or project name).

Torch-free on purpose: the command line checks its ``--bundle`` before any heavy import
(:mod:`monai_lgg.cli_args`). What training recorded beside a checkpoint (:mod:`monai_lgg.bundle.record`)
overrides these defaults and ``configs/inference.json``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from monai_lgg.errors import LGGInputError

__all__ = [
    "BUNDLES_DIR",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_FILES",
    "bundle_names",
    "installed_bundle",
    "output_root",
    "resolve_bundle",
    "GEOMETRIES",
    "NORMALIZATIONS",
    "image_channels",
    "THRESHOLD",
    "DEFAULTS",
    "BundleInfo",
    "bundle_info",
]

GEOMETRIES = ("brain", "patch")
"""How slices reach the network. ``brain``: per volume, the square brain box resized to ``spatial_size`` and
normalised over the brain (:mod:`monai_lgg.transforms.brain`; predictions are resized back into the input's
grid); ``patch``: the slice at its own resolution, normalised per slice, random ``spatial_size`` patches in
training and a sliding window at inference (for images of any size, e.g. ``convert_folders`` data)."""


NORMALIZATIONS = ("volume", "zscore", "percentile", "none")
"""How image intensities are normalised (the ``normalization`` key). ``volume``: per volume and channel, clipped to
the 1st-99th percentile of the brain and z-scored over it (``brain`` geometry only, where the brain box is
found); ``zscore`` / ``percentile``: per slice and channel over its non-zero pixels
(:class:`~monai_lgg.transforms.array.SliceWiseNormalizeIntensity`); ``none``: as stored."""


def image_channels(in_channels: int, context_slices: int = 0) -> int:
    """Channels of one image slice: the network's ``in_channels`` over the ``2 * context_slices + 1`` slices it sees.

    Raises:
        ValueError: ``in_channels`` is not a multiple of ``2 * context_slices + 1``.
    """
    slices = 2 * int(context_slices) + 1
    if context_slices < 0 or in_channels % slices:
        raise ValueError(
            f"in_channels {in_channels} must be the image's channels x (2 * context_slices + 1) = x {slices} "
            f"(context_slices {context_slices})"
        )
    return in_channels // slices


THRESHOLD = 0.5
"""The probability threshold training validates at (``train.json``) and the default of the post-processing functions.

Masks are made with the model's own rule instead: the ``postprocessing`` of its trained-model record, else the
recipe's (:func:`monai_lgg.bundle.record.recipe_postprocessing`: 0.4 and the largest component, chosen by
cross-validation of trained models, so validation during training cannot use it).
"""

DEFAULTS: dict[str, object] = {
    # what inference falls back to when neither inference.json nor the checkpoint's record gives a value
    "spatial_size": (128, 128),
    "threshold": None,  # None: the checkpoint's mask rule (monai_lgg.bundle.record.trained_threshold)
    "in_channels": 3,
    "out_channels": 1,
    "geometry": "brain",
    "tta": False,
    "min_component_fraction": None,  # None: the checkpoint's (trained_min_component_fraction)
    "context_slices": 0,
    "normalization": None,
}

_PACKAGED = resources.files("monai_lgg") / "_bundles"
BUNDLES_DIR = Path(str(_PACKAGED)).resolve()
"""The project's bundles (``unet``, ``unetplusplus``, ...): package data of ``monai_lgg``.

In a source checkout ``monai_lgg/_bundles`` is a link to the top-level ``bundles/`` folder, so this is
``<checkout>/bundles``; a built wheel holds the bundles there as plain files (the shared configs copied into
each bundle, the UNet's shipped weights, no training output). pip always unpacks wheels, so these are ordinary
files that MONAI's config parser and ``torch.load`` open.
"""
# a checkout's monai_lgg/_bundles is the link to bundles/; an installed wheel's is a plain folder
_IN_CHECKOUT = Path(str(_PACKAGED)).is_symlink()


def bundle_names() -> list[str]:
    """The names of the project's bundles: the folders of :data:`BUNDLES_DIR` with a ``configs/model.json``."""
    return sorted(p.name for p in BUNDLES_DIR.glob("*") if (p / "configs" / "model.json").is_file())


def installed_bundle(root: str | os.PathLike) -> bool:
    """Whether ``root`` is one of the project's bundles inside an installed monai-lgg (not a source checkout).

    Such a bundle is part of the installed package: often read-only, and replaced or removed by ``pip``.
    """
    return not _IN_CHECKOUT and Path(root).resolve().parent == BUNDLES_DIR


def output_root(root: str | os.PathLike) -> Path:
    """Where a bundle's default outputs go (``runs/``, exported ``models/``, ``predictions/``).

    The bundle folder itself, as in a source checkout (``bundles/unet/runs/...``) or a user's own bundle; for a
    bundle inside an installed monai-lgg (see :func:`installed_bundle`) ``<bundle name>_outputs`` in the current
    directory (``./unet_outputs/runs/...``), since the package is no place for results (and a plain ``./unet``
    folder would shadow the bundle's name in ``--bundle unet``).
    """
    return Path.cwd() / f"{Path(root).name}_outputs" if installed_bundle(root) else Path(root)


MAX_BUNDLE_BYTES = 2 * 2**30
"""The most a bundle zip may unpack to, from its declared sizes (the shipped UNet bundle is about 20 MB)."""
MAX_BUNDLE_FILES = 10_000


@functools.lru_cache(maxsize=8)
def _extract_zip_once(path: Path, mtime_ns: int, size: int) -> Path:
    """Unpack a bundle zip into a temporary folder removed at exit; refuse members escaping it.

    Cached on the file's identity, so checking a command line and then running it unpacks the zip once.
    """
    target = Path(tempfile.mkdtemp(prefix="monai-lgg-bundle-"))
    atexit.register(shutil.rmtree, target, True)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
            if declared > MAX_BUNDLE_BYTES or len(archive.infolist()) > MAX_BUNDLE_FILES:
                limit = f"{MAX_BUNDLE_BYTES / 2**20:.0f} MiB, {MAX_BUNDLE_FILES} files"
                raise LGGInputError(
                    path,
                    f"unpacks to {declared / 2**20:.0f} MiB in {len(archive.infolist())} files, more than a "
                    f"bundle may ({limit}): refused before unpacking",
                )
            for member in archive.namelist():
                resolved = (target / member).resolve()
                if target.resolve() not in resolved.parents and resolved != target.resolve():
                    raise LGGInputError(path, f"zip member {member!r} would be written outside the bundle folder")
            archive.extractall(target)
    except zipfile.BadZipFile as err:
        raise LGGInputError(path, f"is not a readable zip file ({err})") from None
    candidates = sorted(p.parent.parent for p in target.glob("**/configs/model.json"))
    if not candidates:
        raise LGGInputError(path, "holds no monai-lgg bundle (no configs/model.json inside)")
    return min(candidates, key=lambda p: len(p.parts))


def _extract_zip(path: Path) -> Path:
    stat = path.stat()
    return _extract_zip_once(path.resolve(), stat.st_mtime_ns, stat.st_size)


def resolve_bundle(source: str | Path) -> Path:
    """The bundle folder for a folder, a bundle zip, or the name of a project bundle (``unet``).

    Raises:
        LGGInputError: nothing usable there.
    """
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".zip":
        return _extract_zip(path)
    if not path.exists() and not path.is_absolute() and len(path.parts) <= 2 and (BUNDLES_DIR / path.name).is_dir():
        path = BUNDLES_DIR / path.name  # "unet" or "bundles/unet" from outside the source tree
    if not path.exists():
        names = ", ".join(bundle_names())
        raise LGGInputError(path, f"bundle not found (give a bundle folder, a bundle .zip, or one of: {names})")
    if not (path / "configs" / "model.json").is_file():
        raise LGGInputError(path, "is not a monai-lgg bundle (no configs/model.json)")
    return path.resolve()


@dataclass(frozen=True)
class BundleInfo:
    """What inference needs to know about a bundle besides its network.

    Attributes:
        root: the bundle folder.
        name: ``_meta_``/metadata name, or the folder name.
        spatial_size: training patch size (rows, columns): the sliding-window size.
        threshold: probability threshold of the masks (None until the checkpoint's record is applied:
            :func:`monai_lgg.inference.loading.load_network` fills it in).
        in_channels: the network's input channels (3: pre-contrast, FLAIR, post-contrast; times
            ``2 * context_slices + 1`` for a 2.5D network).
        out_channels: output channels (1: tumour logit).
        geometry: ``brain`` (whole brain slices resized to ``spatial_size``) or ``patch`` (sliding windows).
        tta: average with the left-right mirror by default.
        min_component_fraction: drop 3D components below this fraction of the largest by default (None, as
            ``threshold``, until the record is applied).
        context_slices: neighbour slices on each side stacked as channels (2.5D input; 0: none).
        normalization: intensity normalisation of the inputs (``presets.NORMALIZATIONS``; ``None``: the
            geometry's default, ``volume`` for ``brain`` and ``zscore`` for ``patch``, which
            :func:`monai_lgg.inference.loading.load_network` fills in).
        review_threshold: ``review_entropy`` from which the shipped model's cases are flagged ``needs_review``
            (:mod:`monai_lgg.inference.review`; chosen by cross-validation and kept in the trained-model record's
            ``review``), or None where it was not calibrated.
    """

    root: Path
    name: str
    spatial_size: tuple[int, int]
    threshold: float | None = None
    in_channels: int = 3
    out_channels: int = 1
    geometry: str = "brain"
    tta: bool = False
    min_component_fraction: float | None = None
    context_slices: int = 0
    normalization: str | None = None
    review_threshold: float | None = None

    @property
    def image_channels(self) -> int:
        """Channels of the images the model segments (``in_channels`` over the slices of a 2.5D input)."""
        return image_channels(self.in_channels, self.context_slices)


def _plain(value: object, default: object) -> object:
    """A config value unless it is an expression or reference (``$...``, ``@...``)."""
    return default if isinstance(value, str) and value[:1] in ("$", "@") else value


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)


def bundle_info(root: Path, spatial_size: Sequence[int] | None = None) -> BundleInfo:
    """Inference settings of a bundle from ``configs/inference.json`` and ``configs/metadata.json``.

    Values that ``inference.json`` computes (``$...``: read from the trained-model record at run time) are the
    :data:`DEFAULTS` here; :func:`monai_lgg.inference.loading.load_network` then applies the record.
    """
    config: dict = {}
    inference = root / "configs" / "inference.json"
    if inference.is_file():
        config = json.loads(inference.read_text())
    settings = {key: _plain(config.get(key, default), default) for key, default in DEFAULTS.items()}
    size = tuple(int(s) for s in (spatial_size or settings["spatial_size"]))
    if len(size) != 2 or min(size) < 1:
        raise LGGInputError(None, f"spatial_size must be two positive integers (rows, columns), got {list(size)}")
    name = root.name
    metadata = root / "configs" / "metadata.json"
    if metadata.is_file():
        name = json.loads(metadata.read_text()).get("name", name)
    return BundleInfo(
        root,
        name,
        size,
        _optional_float(settings["threshold"]),
        int(settings["in_channels"]),
        int(settings["out_channels"]),
        str(settings["geometry"]),
        bool(settings["tta"]),
        _optional_float(settings["min_component_fraction"]),
        int(settings["context_slices"]),
        settings["normalization"],
    )
