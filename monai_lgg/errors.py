"""User-facing errors: each names the file and the problem, so the CLI can print one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LGGInputError",
    "DataProblem",
    "OutputError",
    "input_error_in",
    "reraise_input_errors",
    "as_flag",
    "as_list",
    "DEBUG_ENV",
    "debug_enabled",
    "error_line",
    "one_line_errors_in_bundle_runs",
]

DEBUG_ENV = "MONAI_LGG_DEBUG"


class LGGInputError(ValueError):
    """Bad user input (file, folder or option). ``str(err)`` is a complete one-line message."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # picklable across process pools despite the two-argument constructor
        return type(self), (self.path, self.problem)


class DataProblem(LGGInputError):
    """One problem found while validating a data set; ``fatal`` ones stop a conversion."""

    def __init__(self, path: str | Path | None, problem: str, fatal: bool = True) -> None:
        super().__init__(path, problem)
        self.fatal = fatal

    def __reduce__(self):
        return type(self), (self.path, self.problem, self.fatal)

    def as_dict(self) -> dict:
        return {"file": self.path, "problem": self.problem, "severity": "error" if self.fatal else "warning"}


class OutputError(LGGInputError):
    """An output cannot be written (folder not writable, disk full); nothing partial is left behind."""


def input_error_in(err: BaseException | None) -> LGGInputError | None:
    """The :class:`LGGInputError` that caused ``err``, if any.

    Libraries wrap the errors raised inside them: MONAI's ``Compose`` re-raises every transform error
    as ``RuntimeError("applying transform ...")`` from the original. This follows the ``__cause__`` /
    ``__context__`` chain back to the clear message.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LGGInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def debug_enabled() -> bool:
    """True when ``$MONAI_LGG_DEBUG`` asks for full tracebacks instead of one-line errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def error_line(err: LGGInputError) -> str:
    """The one line a user error ends with: ``monai-lgg: error: <file>: <problem>``."""
    return f"monai-lgg: error: {err}"


def _bundle_run_excepthook(previous):
    def hook(exc_type, exc, traceback):
        cause = input_error_in(exc)
        if cause is None or debug_enabled():
            return previous(exc_type, exc, traceback)
        sys.stdout.flush()
        print(error_line(cause), file=sys.stderr, flush=True)
        # Raising SystemExit from the hook makes the interpreter exit with this code after its normal
        # clean-up (atexit, flushing), as for ``sys.exit(2)`` in the program; an uncaught error would give 1.
        raise SystemExit(2)

    hook.monai_lgg = True  # type: ignore[attr-defined]
    return hook


def one_line_errors_in_bundle_runs() -> None:
    """Make ``python -m monai.bundle run ...`` end a user error with our one line and exit code 2.

    MONAI evaluates every config expression inside ``try: ... except Exception as e: raise
    RuntimeError(f"Failed to evaluate {item}") from e`` and the bundle runner has no error handling of
    its own, so a wrong ``--dataset_dir`` would end in a 60-line traceback with the clear message buried
    in the middle. No code of ours runs around MONAI's runner, so the only place to act is the
    interpreter's last step: this installs a ``sys.excepthook`` that, when an :class:`LGGInputError`
    is anywhere in the exception chain, prints ``monai-lgg: error: <file>: <problem>`` and exits with
    code 2; any other error keeps Python's traceback. ``MONAI_LGG_DEBUG=1`` keeps the full traceback.

    Installed only when the running program is MONAI's bundle runner (``__main__`` is
    ``monai.bundle.__main__``, also in each ``torchrun`` worker), and once; a program that merely imports
    ``monai_lgg`` keeps its own hook. ``monai-lgg train / evaluate`` handle errors in :func:`monai_lgg.cli.main`.
    """
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main_spec, "name", None) != "monai.bundle.__main__" or getattr(sys.excepthook, "monai_lgg", False):
        return
    sys.excepthook = _bundle_run_excepthook(sys.excepthook)


@contextmanager
def reraise_input_errors() -> Iterator[None]:
    """Re-raise a library error caused by an :class:`LGGInputError` as that error (one clear message).

    Example::

        with reraise_input_errors():
            dataset = CacheDataset(items, transforms)  # a corrupt file raises its DataProblem, not RuntimeError
    """
    try:
        yield
    except LGGInputError:
        raise
    except Exception as err:
        found = input_error_in(err)
        if found is None:
            raise
        raise found from None


def run_tool(command: Callable) -> None:
    """Run a ``tools/`` script's command; a user error ends in one line naming the file (exit 1).

    The scripts' counterpart of :func:`monai_lgg.cli.main`, so every one of them starts and reports bad input
    alike. A command whose only parameter is ``argv`` parses its own command line (argparse) and returns the exit
    status; any other command is run with Fire, its parameters being the options.
    """
    import inspect

    try:
        if list(inspect.signature(command).parameters) == ["argv"]:
            sys.exit(command(sys.argv[1:]))
        import fire  # only the command-line scripts need it

        fire.Fire(command)
    except LGGInputError as err:
        sys.exit(error_line(err))


def as_list(value: object) -> list:
    """A list config value, also from the text a command line gives.

    Fire gives ``a,b`` as a tuple, ``[a, b]`` as a list and a lone ``3`` as a number; a lone string may also hold
    commas. ``None`` is the empty list; items are kept as given (strings stripped, empty ones dropped).
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [v.strip() if isinstance(v, str) else v for v in value if not (isinstance(v, str) and not v.strip())]
    return [value]


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off", "none", "")


def as_flag(value: object, name: str) -> bool:
    """A boolean config value, also from the text a command line gives.

    ``python -m monai.bundle run ... --resume false`` passes the string ``"false"``, which Python
    treats as true; this reads it as the user meant, and refuses anything that is not a yes/no.

    Raises:
        LGGInputError: ``value`` is not a boolean, 0/1 or a yes/no word.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise LGGInputError(None, f"{name} must be true or false, got {value!r}")
