"""The output folder of a batch prediction: one run at a time, each case committed on its own.

A run over a thousand studies must not lose the good ones to one bad file, a kill or a full disk, and two runs
must not interleave their files. So:

* **Lock.** ``<output>/.monai-lgg/lock`` is held with ``flock`` for the whole run. A second run is refused at once
  in one line naming the holder (or waits, ``wait=True``). The kernel releases the lock when its process dies, so a
  lock left by a killed run is never stale. The parts of a sharded run (``part``) share the folder's lock and each
  holds its own, so parts run side by side but a part never runs twice, nor beside a whole run.
* **Per-case commits.** A case's files are written into ``.monai-lgg/staging/<run or part>/<case>/``, then a
  journal listing them is written, then each file is moved into place (``os.replace``), and last the case's manifest
  (``.monai-lgg/cases/<case>.json``: its files and its summary row) is marked complete. Staging left by a killed
  run is removed when the next run takes the lock.
* **Continue.** With ``resume=True`` a case whose manifest is complete (and whose files are all there) is skipped;
  a case whose commit was interrupted is done again, and only the files its journal lists may be replaced.

Every write into the folder is atomic (temporary name, then rename).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from monai_lgg.errors import LGGInputError, OutputError

__all__ = ["OutputFolder", "CaseStage", "STATE_DIR", "output_error"]

STATE_DIR = ".monai-lgg"
"""The run's bookkeeping inside the output folder (lock, staging, per-case manifests)."""

# errors that mean the output cannot be written at all (not a problem of one case): the run stops at once
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def output_error(root: Path, err: OSError) -> OutputError:
    """One line naming the output folder and what the operating system refused."""
    reason = os.strerror(err.errno) if err.errno else str(err).splitlines()[0] if str(err) else type(err).__name__
    where = err.filename if isinstance(err.filename, str) and err.filename else root
    return OutputError(where, f"cannot write the output ({reason}); nothing partial was left for the cases not done")


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _safe_relative(relative: str | Path, root: Path) -> Path:
    relative = Path(relative)
    if relative.is_absolute() or ".." in relative.parts or (relative.parts and relative.parts[0] == STATE_DIR):
        raise LGGInputError(root / relative, "output name would leave the output folder")
    return relative


class CaseStage:
    """Where one case's outputs are written before they are committed (see :meth:`OutputFolder.case`)."""

    def __init__(self, root: Path, staging: Path) -> None:
        self.root, self.staging = root, staging
        self.files: list[Path] = []
        self.row: dict | None = None

    def path(self, relative: str | Path) -> Path:
        """The staging path of output ``relative`` (its folder is created)."""
        relative = _safe_relative(relative, self.root)
        staged = self.staging / relative
        staged.parent.mkdir(parents=True, exist_ok=True)
        if relative not in self.files:
            self.files.append(relative)
        return staged


class OutputFolder:
    """A locked output folder whose cases are committed one by one.

    Args:
        root: the output folder (created).
        overwrite: replace existing outputs.
        resume: skip cases committed by an earlier run into this folder; redo interrupted ones.
        wait: wait for another run holding the folder instead of refusing.

    Example::

        with OutputFolder(out) as folder:
            with folder.case("patient_1") as stage:
                write(stage.path("patient_1.nii.gz"))
                stage.row = {"case": "patient_1"}
    """

    def __init__(
        self, root: str | Path, overwrite: bool = False, resume: bool = False, wait: bool = False, part: str = ""
    ) -> None:
        self.root = Path(root).expanduser()
        self.overwrite, self.resume, self.wait, self.part = overwrite, resume, wait, part
        self.state = self.root / STATE_DIR
        self.staging = self.state / "staging" / (part or "run")
        self.created = self.state_created = False
        self._locks: list = []

    # -- the run ---------------------------------------------------------------------------------------------------
    def __enter__(self) -> OutputFolder:
        if self.root.exists() and not self.root.is_dir():
            raise LGGInputError(self.root, "output must be a folder, and this is a file")
        self.created, state_existed = not self.root.exists(), self.state.exists()
        try:
            (self.state / "cases").mkdir(parents=True, exist_ok=True)
            # a whole run holds the folder's lock alone; the parts of a sharded run share it, each holding its own
            self._lock(self.state / "lock", shared=bool(self.part))
            if self.part:
                self._lock(self.state / f"lock.{self.part}", shared=False)
        except OSError as err:
            self._release()
            raise output_error(self.root, err) from None
        except BaseException:
            self._release()
            raise
        self.state_created = not state_existed
        shutil.rmtree(self.staging, ignore_errors=True)  # we hold its lock: what is there is a killed run's
        self.staging.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if exc_type is not None and not self.part and not any((self.state / "cases").glob("*.json")):
            # a whole run refused before any case was written: leave the folder as it was
            shutil.rmtree(
                self.root if self.created else self.state if self.state_created else self.staging, ignore_errors=True
            )
        self._release()

    def _lock(self, path: Path, shared: bool) -> None:
        handle = open(path, "a+")
        self._locks.append(handle)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if not self.wait:
                raise LGGInputError(
                    self.root, f"is in use by another monai-lgg run ({holder}): wait for it, or pass --wait"
                ) from None
            print(f"monai-lgg: waiting for {self.root} ({holder})", file=sys.stderr)
            fcntl.flock(handle, mode)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "part": self.part}
        (self.state / "holder.json").write_text(json.dumps(holder))  # who to name when refusing the next run

    def _release(self) -> None:
        for handle in reversed(self._locks):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._locks = []

    def _holder(self) -> str:
        try:
            info = json.loads((self.state / "holder.json").read_text())
            part = f", part {info['part']}" if info.get("part") else ""
            return f"pid {info['pid']} on {info['host']}{part}, since {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    # -- cases -----------------------------------------------------------------------------------------------------
    @staticmethod
    def key(name: str) -> str:
        """A file name for a case id that may hold folders (``sub/case``): readable and collision-free."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "case"
        return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"

    def _manifest_path(self, name: str) -> Path:
        return self.state / "cases" / f"{self.key(name)}.json"

    def _manifest(self, name: str) -> dict | None:
        try:
            record = json.loads(self._manifest_path(name).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None

    def completed(self, name: str) -> dict | None:
        """The summary row of a case an earlier run committed completely (``None`` otherwise)."""
        record = self._manifest(name)
        if not record or not record.get("complete"):
            return None
        sizes = record.get("sizes", {})
        for relative in record["files"]:
            path = self.root / relative
            if not path.is_file() or (relative in sizes and path.stat().st_size != sizes[relative]):
                return None
        return record.get("row")

    def _journaled(self, name: str) -> set[Path]:
        """Files of a case whose commit an earlier run started: a continued run may replace them."""
        record = self._manifest(name)
        return {Path(f) for f in record["files"]} if record and self.resume else set()

    def check_free(self, planned: Iterable[tuple[str, Sequence[str | Path]]]) -> None:
        """Refuse, before any work, outputs that exist (unless overwriting or continuing the run that wrote them).

        Args:
            planned: (case name, its output files relative to the folder) for every case to be done.
        """
        for name, files in planned:
            journaled = self._journaled(name)
            for relative in files:
                relative = _safe_relative(relative, self.root)
                if not self.overwrite and relative not in journaled and (self.root / relative).exists():
                    hint = "--overwrite to replace it, or --continue to finish an interrupted run into it"
                    raise LGGInputError(self.root / relative, f"output exists (pass {hint})")

    @contextmanager
    def case(self, name: str) -> Iterator[CaseStage]:
        """Stage one case's outputs; commit them when the block succeeds, drop them when it fails.

        Raises:
            OutputError: the folder cannot be written (disk full, read-only): the run should stop.
        """
        staging = self.staging / self.key(name)
        stage = CaseStage(self.root, staging)
        self._manifest_path(name).with_name(f".{self.key(name)}.json.tmp").unlink(missing_ok=True)  # a killed write
        try:
            staging.mkdir(parents=True, exist_ok=True)
            yield stage
            self._commit(name, stage)
        except OSError as err:
            if err.errno in _OUTPUT_ERRNOS or str(self.root) in str(getattr(err, "filename", "") or ""):
                raise output_error(self.root, err) from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, name: str, stage: CaseStage) -> None:
        files = [str(f) for f in stage.files]
        self.check_free([(name, stage.files)])  # names known only now (overlays) are checked here
        sizes = {f: (stage.staging / f).stat().st_size for f in files}
        record = {"case": name, "files": files, "sizes": sizes, "row": stage.row, "complete": False}
        _atomic_write(self._manifest_path(name), json.dumps(record))  # the journal: these files may be replaced
        for relative in stage.files:
            target = self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage.staging / relative, target)
        _atomic_write(self._manifest_path(name), json.dumps({**record, "complete": True}))

    # -- run-wide tables -------------------------------------------------------------------------------------------
    def write_table(self, name: str, rows: Sequence[dict]) -> None:
        """Write a CSV table at the folder's top level atomically; no rows removes an earlier one."""
        from monai_lgg.inference.writers import write_csv

        target = self.root / name
        if not rows:
            target.unlink(missing_ok=True)
            return
        temporary = self.state / f"{name}.tmp"
        try:
            write_csv(temporary, rows)
            os.replace(temporary, target)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise output_error(self.root, err) from None
