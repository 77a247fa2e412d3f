"""User-facing errors: each names the file and the problem, so the CLI can print one line."""

from __future__ import annotations

from pathlib import Path

__all__ = ["LGGInputError", "DataProblem"]


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
