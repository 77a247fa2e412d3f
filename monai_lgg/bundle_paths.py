"""Find a monai-lgg bundle (folder, zip or project name) without importing torch or MONAI.

The command line checks its ``--bundle`` before any heavy import (:mod:`monai_lgg.cli_args`), and
:mod:`monai_lgg.inference.loading` re-exports :func:`resolve_bundle` for everything else.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

from monai_lgg.errors import LGGInputError

__all__ = [
    "BUNDLES_DIR", "MAX_BUNDLE_BYTES", "MAX_BUNDLE_FILES", "bundle_names", "installed_bundle", "output_root",
    "resolve_bundle",
]

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
                    path, f"unpacks to {declared / 2**20:.0f} MiB in {len(archive.infolist())} files, more than a "
                    f"bundle may ({limit}): refused before unpacking"
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
