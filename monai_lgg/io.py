"""Crash-safe output: everything is written under a temporary name and renamed into place.

A process killed at any moment (even with SIGKILL) leaves each target either as it was before or
complete, never half-written: the temporary file or folder sits beside the target (same file
system, so the final ``os.replace`` is atomic) and is removed on any error. A SIGKILL cannot run
that cleanup; :func:`remove_stale_parts` deletes such leftovers, and nothing ever reads them.
Failures to write (folder not writable, disk full) raise :class:`~monai_lgg.errors.OutputError`
naming the target, never the temporary name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai_lgg.errors import DataProblem, LGGInputError, OutputError

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_json",
    "read_json",
    "save_checkpoint",
    "safe_child",
    "remove_stale_parts",
    "existing_file",
]

PART = ".part"


def _part_prefix(target: Path) -> str:
    return f".{target.name}."


@contextmanager
def _writing(target: Path, tmp: Path | None = None) -> Iterator[None]:
    """Report a failed write as :class:`OutputError` naming ``target`` (an error inside ``tmp`` is renamed)."""
    try:
        yield
    except OutputError as err:
        if tmp is not None and err.path is not None and err.path.startswith(str(tmp)):
            raise OutputError(str(target) + err.path[len(str(tmp)) :], err.problem) from None
        raise
    except OSError as err:
        raise OutputError(target, f"cannot write ({err.strerror or err})") from err


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once at import, before any worker thread
    os.umask(umask)
    return umask


_FILE_MODE = 0o666 & ~_read_umask()  # the mode open() gives new files


@contextmanager
def atomic_path(target: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The temporary name (``.<name>.<random>.part<suffixes>``) keeps ``target``'s suffixes so writers
    that choose the format from the extension (nibabel, tifffile, OpenCV, torch) still work.

    Args:
        target: the file to write.
        durable: flush the file to disk before the rename (checkpoints), so even a power cut leaves
            the previous or the new file.

    Raises:
        OutputError: the folder cannot be written, or the write failed (e.g. disk full).
    """
    target = Path(target)
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = PART + "".join(target.suffixes)
        fd, tmp = tempfile.mkstemp(prefix=_part_prefix(target), suffix=suffix, dir=target.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _writing(target, tmp_path):
            yield tmp_path
            if durable:
                _fsync(tmp_path)
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; outputs get the usual umask
            os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Build a whole folder under a temporary name, then swap it into place.

    A crash leaves either the old folder or the new one, never a half-written mix.

    Raises:
        LGGInputError: ``target`` exists and ``overwrite`` is False.
        OutputError: the folder cannot be written, or a write inside it failed (named under ``target``).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise LGGInputError(target, "output already exists (pass --overwrite to replace it)")
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_part_prefix(target), suffix=PART, dir=target.parent))
    try:
        with _writing(target, tmp):
            yield tmp
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_parts(target: str | Path) -> list[Path]:
    """Delete the temporary files or folders that an interrupted :func:`atomic_path` / :func:`atomic_dir`
    for ``target`` left behind (a SIGKILL skips their cleanup). Returns what was removed.

    Only call it when no other process is writing ``target``.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    # the exact names mkstemp / mkdtemp give: prefix, 8 random characters, suffix
    suffixes = re.escape("".join(target.suffixes))
    name = re.compile(rf"{re.escape(_part_prefix(target))}[a-z0-9_]{{8}}{re.escape(PART)}({suffixes})?")
    stale = sorted(p for p in target.parent.iterdir() if name.fullmatch(p.name))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, missing: str = "file not found") -> Any:
    """Parse a JSON file; a missing or malformed file is an :class:`LGGInputError` naming it (``missing``: why
    the file was expected, said when it is absent)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LGGInputError(path, missing) from None
    except json.JSONDecodeError as err:
        raise LGGInputError(path, f"is not valid JSON ({err.msg}, line {err.lineno})") from None


def save_checkpoint(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed onto ``path`` (never a torn file)."""
    import torch  # here, so the converter does not import torch

    with atomic_path(path, durable=True) as tmp:
        torch.save(obj, tmp)


def existing_file(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it is a non-empty file; else a :class:`DataProblem` saying which it is not."""
    path = Path(path)
    if not path.is_file():
        raise DataProblem(path, "is a folder, expected a file" if path.is_dir() else "file not found")
    if path.stat().st_size == 0:
        raise DataProblem(path, "empty file (0 bytes)")
    return path


def safe_child(root: str | Path, name: str) -> Path:
    """``root / name``, refusing names (taken from file or folder names) that would escape ``root``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name) or "\0" in name:
        raise LGGInputError(name, "is not a safe case name (no path separators, '..' or absolute paths)")
    return Path(root) / name
