"""User-facing errors: each names the file and the problem, so the CLI can print one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LGGInputError", "DataProblem", "OutputError", "input_error_in", "reraise_input_errors", "as_flag"]


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
