"""Checks of a ``monai-lgg`` command line before any work is done.

Fire calls a command with the flags it recognises and complains about the others only after the
command returned, so ``monai-lgg predict case out/ --overlay`` used to segment everything, write the
masks and then fail; ``train`` handed any unknown flag to the bundle config, where a misspelled key
(``--epoch 1``) was silently ignored. :func:`check_command_line` reads the arguments the way Fire
will (same flag syntax: ``--name value``, ``--name=value``, ``--flag`` / ``--noflag``, ``-n``
shortcuts, ``-`` for ``_``), refuses unknown flags and override keys that no config of the bundle has,
and checks that the input paths exist. It imports neither torch nor MONAI, so a mistake costs a
fraction of a second instead of the start-up of the deep-learning stack.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monai_lgg.errors import LGGInputError, as_list

__all__ = [
    "CommandLine",
    "parse_command_line",
    "check_command_line",
    "config_keys",
    "RUN_OPTIONS",
    "SEQUENCE_FLAGS",
    "predict_paths",
]

RUN_OPTIONS = ("run_id", "init_id", "final_id", "meta_file", "logging_file", "tracking", "args_file")
"""Options of ``monai.bundle.run`` itself, accepted by ``train`` / ``evaluate`` beside the config keys."""

BUNDLE_CONFIGS = {"train": ("train.json",), "evaluate": ("train.json", "evaluate.json")}
"""The configs each bundle command runs (their keys are the valid overrides)."""

ALIASES = {"--continue": "--resume"}
"""Flags named after a Python keyword, as users type them (``predict --continue``), and the parameter they set."""

_SYNTHETIC = "synthetic"
_TRACKING_MODULES = ("mlflow", "sqlalchemy", "alembic")  # MONAI's MLflow handler and its local SQLite store


@dataclass
class CommandLine:
    """A command line read as Fire will read it.

    Attributes:
        command: the command's method name (``convert_folders`` also for ``convert-folders``).
        values: the raw text of every argument given, by parameter name (``"True"`` / ``"False"`` for bare flags).
        overrides: ``--key value`` pairs not naming a parameter (commands with ``**overrides`` only).
        typed: the flag as typed for each override key (for the error line).
    """

    command: str
    values: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    typed: dict[str, str] = field(default_factory=dict)


def _is_flag(argument: str) -> bool:
    """Fire's rule: a flag starts with ``--``, or with ``-`` and a letter (``-1`` is a number)."""
    return argument.startswith("--") or re.match("^-[a-zA-Z]", argument) is not None


def _suggest(word: str, choices: Sequence[str], prefix: str = "--") -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def _usage_error(command: str, problem: str) -> LGGInputError:
    return LGGInputError(None, f"{command}: {problem}; see monai-lgg {command} --help")


def parse_command_line(command: str, function: Callable, args: Sequence[str]) -> CommandLine:
    """Bind ``args`` (the words after the command, before any ``--``) to ``function`` as Fire does.

    Raises:
        LGGInputError: an unknown flag (with the closest valid ones), an ambiguous shortcut, too many
            positional arguments, or a required argument missing.
    """
    args = [ALIASES.get(a, a) for a in args]
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    names = [p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    takes_overrides = any(p.kind is p.VAR_KEYWORD for p in parameters)
    line = CommandLine(command)
    positional: list[str] = []
    index = 0
    while index < len(args):
        argument = args[index]
        index += 1
        if not _is_flag(argument):
            positional.append(argument)
            continue
        key, equals, value = argument.lstrip("-").partition("=")
        key = key.replace("-", "_")
        bare = not equals and (index == len(args) or _is_flag(args[index]))
        if key in names:
            name = key
        elif bare and key.startswith("no") and key[2:] in names:
            name, value = key[2:], "False"
        elif len(key) == 1 and not takes_overrides:  # Fire's shortcut: -o for the one parameter starting with o
            matches = [n for n in names if n[0] == key]
            if len(matches) != 1:
                raise _usage_error(
                    command,
                    f"{argument} is ambiguous ({', '.join('--' + m for m in matches)})"
                    if matches
                    else f"unknown flag {argument}",
                )
            name = matches[0]
        elif takes_overrides:
            name = None
            if bare and key.startswith("no"):  # Fire reads a bare --noKEY as KEY=False
                key, value = key[2:], "False"
        else:
            raise _usage_error(command, f"unknown flag {argument}{_suggest(key, names)}")
        if bare:
            value = value or "True"
        elif not equals:
            value = args[index]
            index += 1
        if name is None:
            line.overrides[key] = value
            line.typed[key] = argument.partition("=")[0]
        else:
            line.values[name] = value
    free = [n for n in names if n not in line.values]
    if len(positional) > len(free):
        extra = positional[len(free) :]
        raise _usage_error(command, f"unexpected argument {extra[0]!r}")
    line.values.update(zip(free, positional, strict=False))
    required = [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    missing = [n for n in required if n not in line.values]
    if missing:
        raise _usage_error(command, f"missing argument {missing[0].upper()}")
    return line


def _walk(value: object, prefix: str) -> Iterator[tuple[str, object]]:
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _walk(item, f"{prefix}#{key}")


def config_keys(files: Sequence[Path]) -> dict[str, object]:
    """Every id the configs define (``epochs``, ``train#dataloader#batch_size``, ...) with its value."""
    keys: dict[str, object] = {}
    for file in files:
        try:
            config = json.loads(Path(file).read_text())
        except (OSError, ValueError) as err:
            raise LGGInputError(file, f"cannot read the bundle config ({err})") from None
        for key, value in config.items():
            keys.update(_walk(value, key))
    return keys


def check_overrides(command: str, bundle: Path, overrides: dict[str, str], typed: dict[str, str] | None = None) -> None:
    """Refuse an override key that none of the configs ``command`` runs defines (it would be ignored).

    A nested key may add an argument to a component the configs define (``network_args#dropout``).
    """
    if not overrides:
        return
    files = [bundle / "configs" / name for name in BUNDLE_CONFIGS[command]]
    for file in files:
        if not file.is_file():
            raise LGGInputError(file, "bundle config not found")
    keys = config_keys(files)
    for key in overrides:
        parent = key.rpartition("#")[0]
        if key in keys or key in RUN_OPTIONS or key.startswith("_meta_") or isinstance(keys.get(parent), dict):
            continue
        configs = " or ".join(BUNDLE_CONFIGS[command])
        top = [k for k in keys if "#" not in k] + list(RUN_OPTIONS)
        raise _usage_error(
            command,
            f"unknown flag {(typed or {}).get(key, '--' + key)}: not an option of {command} nor a key of the "
            f"bundle's {configs}"
            f"{_suggest(key, ['bundle', 'dataset_dir', *top] if '#' not in key else list(keys))}",
        )


def check_tracking(overrides: dict[str, str]) -> None:
    """Refuse ``--tracking mlflow`` when its packages are missing (MONAI would fail after the whole start-up)."""
    if _text(overrides.get("tracking", "")) == "mlflow":
        missing = [m for m in _TRACKING_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise LGGInputError(
                None, f"--tracking mlflow needs {', '.join(missing)}: pip install 'monai-lgg[tracking]'"
            )


# Which arguments name inputs that must exist, by command: "path" (a file or folder), "paths" (comma-separated),
# "checkpoint" / "logs" (a file / folder, each with its command's own message), "bundle", "bundles" (bundles or
# checkpoint files, comma-separated), "dataset" (a data set or "synthetic").
INPUTS: dict[str, dict[str, str]] = {
    "convert": {"source": "path", "clinical_csv": "path"},
    "convert_folders": {"source": "path"},
    "stats": {"dataset": "path"},
    "predict": {
        "input": "path",
        "flair": "path",
        "t1": "path",
        "t1c": "path",
        "bundle": "bundle",
        "checkpoint": "checkpoint",
        "ensemble": "bundles",
    },
    "export": {"bundle": "bundle", "checkpoint": "checkpoint"},
    "export_bundle": {"bundle": "bundle"},
    "report": {"eval_dir": "path", "logs": "logs"},
    "radiogenomics": {"masks": "paths", "clinical": "path", "reference": "paths", "folds": "path"},
    "train": {"bundle": "bundle", "dataset_dir": "dataset"},
    "evaluate": {"bundle": "bundle", "dataset_dir": "dataset"},
    "benchmark": {"bundle": "bundle", "checkpoint": "checkpoint"},
}
_MISSING = {"checkpoint": "checkpoint not found", "logs": "log folder not found"}


def _text(value: object) -> str:
    return str(value).strip().strip("'\"")


def _check_bundle(value: str) -> Path:
    from monai_lgg.bundle_paths import resolve_bundle

    return resolve_bundle(_text(value))


def check_inputs(command: str, values: dict[str, object]) -> None:
    """Refuse a missing input path with the line the command itself would end with, before heavy imports."""
    for name, kind in INPUTS.get(command, {}).items():
        value = values.get(name)
        if value is None or _text(value) in ("", "None"):
            continue
        if kind == "bundle":
            _check_bundle(value)
        elif kind == "dataset":
            path = Path(_text(value)).expanduser()
            if _text(value) != _SYNTHETIC and not path.exists():
                raise LGGInputError(
                    path, "dataset_dir does not exist (give a converted folder, a kaggle_3m folder or 'synthetic')"
                )
        else:
            items = as_list(_text(value).strip("[]()")) if kind in ("paths", "bundles") else [_text(value)]
            for item in (_text(i) for i in items):
                path = Path(item).expanduser()
                if kind == "bundles" and not path.is_file():
                    _check_bundle(item)
                elif not path.exists():
                    raise LGGInputError(path, _MISSING.get(kind, "does not exist"))


SEQUENCE_FLAGS = ("flair", "t1", "t1c")
"""``predict``'s flags giving a case's MRI sequences as separate files (the one positional is then OUTPUT)."""


def predict_paths(
    input: object, output: object, sequences: dict[str, object]
) -> tuple[object, object, dict[str, object]]:
    """``(input, output, sequences)`` of a ``predict`` command line: with ``--flair``/``--t1``/``--t1c`` the one
    positional argument (bound to ``input``) is the output folder and ``input`` becomes ``None``.

    Raises:
        LGGInputError: a missing INPUT or OUTPUT, an INPUT given besides the sequence flags, or ``--t1`` /
            ``--t1c`` without ``--flair``.
    """
    given = {k: v for k, v in sequences.items() if v is not None and _text(v) not in ("", "None")}
    if not given:
        if input is None:
            raise _usage_error("predict", "missing argument INPUT (or --flair FILE)")
        if output is None:
            raise _usage_error("predict", "missing argument OUTPUT")
        return input, output, {}
    flags = " ".join(f"--{k}" for k in SEQUENCE_FLAGS if k in given)
    if output is not None:
        raise _usage_error(
            "predict", f"give either INPUT or {flags}, not both (with {flags} the only argument is OUTPUT)"
        )
    if input is None:
        raise _usage_error("predict", "missing argument OUTPUT")
    if "flair" not in given:
        raise _usage_error(
            "predict", f"{flags} needs --flair: FLAIR is required (pre- and post-contrast T1 are optional)"
        )
    return None, input, given


def check_command_line(command: str, function: Callable, args: Sequence[str]) -> CommandLine:
    """Everything that can be checked before a command starts: flags, override keys, input paths.

    Args:
        command: the command's method name.
        function: the command's method (its signature lists the flags).
        args: the words after the command (those after a ``--`` are Fire's own flags and are not read).

    Raises:
        LGGInputError: one line naming the problem (and for a flag, the closest valid ones).
    """
    words = list(args[: list(args).index("--")] if "--" in args else args)
    line = parse_command_line(command, function, words)
    values = dict(line.values)
    if command == "predict":
        source, output, sequences = predict_paths(
            values.pop("input", None), values.pop("output", None), {k: values.pop(k, None) for k in SEQUENCE_FLAGS}
        )
        values.update({"input": source, "output": output, **sequences})
    check_inputs(command, values)
    if command in BUNDLE_CONFIGS and line.overrides:
        default = inspect.signature(function).parameters["bundle"].default
        check_overrides(command, _check_bundle(line.values.get("bundle", default)), line.overrides, line.typed)
        check_tracking(line.overrides)
    return line
