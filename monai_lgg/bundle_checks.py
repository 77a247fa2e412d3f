"""Offline checks for the ``configs/metadata.json`` of monai-lgg MONAI Bundles.

``monai.bundle.verify_metadata`` validates a metadata file against the JSON schema named by the
metadata's ``"schema"`` URL, downloading that schema to ``filepath`` unless a file already exists
there. monai-lgg ships its own schema (``monai_lgg/schemas/meta_schema.json``, an offline
equivalent of the MONAI model-zoo schema) and always passes its path, so no download is attempted.

On top of the schema, :func:`verify_bundle_metadata` applies the model-zoo CI rule that JSON Schema
cannot express: the current ``version`` must be a key of ``changelog``.

:func:`verify_zoo_bundle` runs the rest of the Model Zoo's acceptance checks on a bundle folder as it
would be submitted (``monai-lgg export_bundle`` output): its pre-commit rules, the directory rules
(weights through ``large_files.yml``), version and changelog, the metadata schema, the inference
properties, the input/output check at the default size multiplier and the TorchScript export.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, verify_metadata
from monai.utils import optional_import

__all__ = [
    "schema_path",
    "verify_bundle_metadata",
    "zoo_json_text",
    "zoo_format_problems",
    "check_zoo_directory",
    "check_zoo_version",
    "check_zoo_network",
    "verify_zoo_bundle",
]

_SCHEMA_PACKAGE = "monai_lgg"
_SCHEMA_RESOURCE = ("schemas", "meta_schema.json")


def schema_path() -> str:
    """Return the filesystem path of the metadata schema shipped with monai-lgg.

    Returns:
        Absolute path of ``monai_lgg/schemas/meta_schema.json``.

    Raises:
        FileNotFoundError: If the schema is not present as a regular file (for example when the
            package is imported from a zip archive). Passing a missing path to
            ``monai.bundle.verify_metadata`` would make it try to download the schema instead.
    """
    resource = files(_SCHEMA_PACKAGE).joinpath(*_SCHEMA_RESOURCE)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"monai-lgg metadata schema not found at {path}; the package must be installed as regular files "
            "(schemas/*.json is listed in setup.cfg package_data)."
        )
    return str(path.resolve())


def _check_version_in_changelog(metadata: Mapping[str, Any], meta_file: str) -> None:
    """Raise ``ValueError`` unless ``metadata["version"]`` is a key of ``metadata["changelog"]``.

    Args:
        metadata: Loaded metadata content.
        meta_file: Path of the metadata file, used in error messages.

    Raises:
        ValueError: If ``version`` or ``changelog`` is missing or malformed, or the version is not
            listed in the changelog.
    """
    version = metadata.get("version")
    changelog = metadata.get("changelog")
    if not isinstance(version, str):
        raise ValueError(f"{meta_file}: 'version' must be a string, got {version!r}.")
    if not isinstance(changelog, Mapping):
        raise ValueError(f"{meta_file}: 'changelog' must be an object mapping versions to notes, got {changelog!r}.")
    if version not in changelog:
        listed = ", ".join(sorted(map(str, changelog))) or "none"
        raise ValueError(
            f"{meta_file}: version {version!r} is not a key of 'changelog' (listed versions: {listed}); "
            "add a changelog entry for the current version."
        )


def _describe_failure(error: ValueError) -> str:
    """Build a readable message from the ``ValueError`` raised by ``monai.bundle.verify_metadata``.

    MONAI shortens the ``jsonschema.ValidationError`` and names the upstream schema URL (never
    downloaded here), so the message is rebuilt from the chained validation error when available.

    Args:
        error: The exception raised by ``verify_metadata``.

    Returns:
        A one-line description naming the offending metadata field and the problem.
    """
    cause = error.__cause__
    message = getattr(cause, "message", None)
    if message is None:
        return str(error).strip()
    # jsonschema >= 4 gives json_path; 3.2 (which MONAI Label's pydicom-seg pins) only the path parts
    parts = getattr(cause, "absolute_path", ())
    location = getattr(cause, "json_path", None) or "$" + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts
    )
    return f"metadata does not satisfy the monai-lgg bundle schema at {location}: {message}"


def verify_bundle_metadata(meta_file: str) -> None:
    """Verify a bundle's ``metadata.json`` offline against the packaged monai-lgg schema.

    Runs ``monai.bundle.verify_metadata(meta_file=meta_file, filepath=schema_path())``. Because the
    schema file already exists at ``filepath``, MONAI's ``download_url`` returns before any network
    access and the ``"schema"`` URL inside the metadata is only used in messages. Afterwards checks
    that the current ``version`` has an entry in ``changelog`` (model-zoo ``ci/verify_bundle.py`` rule).

    Args:
        meta_file: Path of the metadata file (JSON, or YAML as accepted by MONAI's ``ConfigParser``).

    Raises:
        FileNotFoundError: If ``meta_file`` or the packaged schema does not exist.
        ImportError: If ``jsonschema`` is not installed (MONAI needs it to validate).
        ValueError: If the metadata has no ``"schema"`` field, does not match the schema, or its
            ``version`` is not listed in ``changelog``. The message names ``meta_file``.
    """
    meta_path = Path(meta_file)
    if not meta_path.is_file():
        raise FileNotFoundError(f"metadata file not found: {meta_file}")
    _, has_jsonschema = optional_import("jsonschema")
    if not has_jsonschema:
        raise ImportError("verify_bundle_metadata needs the 'jsonschema' package (pip install jsonschema).")
    schema = schema_path()

    with warnings.catch_warnings():
        # download_url hash-checks the existing schema file; without a hash value it only warns.
        warnings.filterwarnings("ignore", message="No hash value provided", category=UserWarning)
        try:
            verify_metadata(meta_file=str(meta_path), filepath=schema)
        except ValueError as e:
            raise ValueError(f"{meta_file}: {_describe_failure(e)} (schema: {schema})") from e

    metadata = ConfigParser.load_config_file(meta_path)
    _check_version_in_changelog(metadata, meta_file)


# ---------------------------------------------------------------------------------------------------------------
# The MONAI Model Zoo's acceptance checks, written for monai-lgg from what the zoo's CI (``ci/verify_bundle.py``,
# ``ci/get_bundle_requirements.py``) and its pre-commit hooks require (facts, not their code): the zoo's
# repository is not available where this project's tests run, so the project checks its exports itself.
# ---------------------------------------------------------------------------------------------------------------

ZOO_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
"""Model Zoo bundle folder names: a letter, then letters, digits and underscores (``spleen_ct_segmentation``)."""

ZOO_MAX_FILE_BYTES = 1024 * 1024
"""The zoo's ``check-added-large-files`` pre-commit hook refuses files over 1024 KB: weights go in large_files.yml."""

ZOO_REQUIRED_FILES = ("configs/metadata.json", "LICENSE")
LARGE_FILE_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
INFERENCE_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHTS_FILE = "models/model.pt"
NETWORK_ID = "network_def"


def zoo_json_text(content: Any) -> str:
    """``content`` as the zoo's ``pretty-format-json`` hook writes it: 4-space indent, ASCII, key order kept."""
    return json.dumps(content, indent=4, ensure_ascii=True) + "\n"


def _large_files(root: Path) -> tuple[Path | None, list[dict]]:
    """The bundle's ``large_files`` file and its entries (``path``, ``url``, optional ``hash_val``/``hash_type``)."""
    for name in LARGE_FILE_NAMES:
        path = root / name
        if path.is_file():
            content = ConfigParser.load_config_file(path)
            entries = content.get("large_files") if isinstance(content, Mapping) else None
            if not isinstance(entries, list) or not all(
                isinstance(e, Mapping) and "path" in e and "url" in e for e in entries
            ):
                raise ValueError(f"{path}: must hold 'large_files', a list of entries with 'path' and 'url'.")
            return path, [dict(e) for e in entries]
    return None, []


def zoo_format_problems(bundle_dir: str | Path) -> list[str]:
    """What the Model Zoo's pre-commit hooks would refuse or rewrite in a bundle folder.

    Checks every file except those ``large_files.yml`` downloads: no symbolic links (the zoo holds real files),
    nothing executable, nothing over 1024 KB, text files with LF line ends, no trailing whitespace and exactly one
    final newline, JSON in the ``pretty-format-json --indent=4 --no-sort-keys`` form (ASCII escapes), YAML that parses.

    Args:
        bundle_dir: the bundle folder, as it would be added to the zoo's ``models/``.

    Returns:
        One line per problem (``<relative path>: <problem>``); empty when the folder would pass.
    """
    import yaml

    root = Path(bundle_dir)
    problems: list[str] = []
    try:
        downloaded = {Path(str(e["path"])).as_posix() for e in _large_files(root)[1]}
    except ValueError as err:
        return [str(err)]
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel in downloaded and not path.is_symlink():
            continue  # fetched through large_files.yml, never committed
        if path.is_symlink():
            problems.append(f"{rel}: is a symbolic link (the Model Zoo holds real files only)")
            continue
        if path.is_dir():
            continue
        if path.stat().st_mode & 0o111:
            problems.append(f"{rel}: is executable (the zoo's hook wants a shebang; bundle files are data)")
        size = path.stat().st_size
        if size > ZOO_MAX_FILE_BYTES:
            problems.append(
                f"{rel}: {size // 1024} KB, over the zoo's 1024 KB limit (upload it and list it in large_files.yml)"
            )
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a small binary file (a figure): only the size and mode rules apply
        if "\r" in text:
            problems.append(f"{rel}: has CR line ends (the zoo wants LF only)")
        if any(line != line.rstrip() for line in text.split("\n")):
            problems.append(f"{rel}: has trailing whitespace")
        if text and (not text.endswith("\n") or text.endswith("\n\n")):
            problems.append(f"{rel}: must end with exactly one newline")
        if path.suffix == ".json":
            try:
                content = json.loads(text)
            except ValueError as err:
                problems.append(f"{rel}: is not valid JSON ({err})")
                continue
            if text != zoo_json_text(content):
                problems.append(f"{rel}: not in the zoo's JSON format (4-space indent, ASCII escapes, key order kept)")
        elif path.suffix in (".yml", ".yaml"):
            try:
                yaml.safe_load(text)
            except yaml.YAMLError as err:
                problems.append(f"{rel}: is not valid YAML ({str(err).splitlines()[0]})")
    return problems


def _find_config(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def check_zoo_directory(bundle_dir: str | Path, fetch_large_files: bool = True) -> None:
    """The zoo's directory rules: large files fetched, ``LICENSE`` and metadata present, weights and inference config.

    ``large_files.yml`` entries are downloaded first, as the zoo's CI does, with MONAI's
    ``download_large_files`` (hash-checked; a ``file://`` URL works for a local check). The zoo requires
    ``models/model.pt`` for every bundle, so a bundle without weights fails here.

    Raises:
        ValueError: the folder breaks a rule (the message names it).
    """
    from monai.bundle import download_large_files

    root = Path(bundle_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: bundle folder not found.")
    if not ZOO_NAME_PATTERN.match(root.name):
        raise ValueError(f"{root}: '{root.name}' is not a Model Zoo bundle name (letters, digits and underscores).")
    large_file, entries = _large_files(root)
    if large_file is not None and fetch_large_files:
        try:
            download_large_files(bundle_path=str(root))  # finds large_files.* itself (its name argument is not used)
        except Exception as err:
            raise ValueError(
                f"{large_file}: downloading the large files failed ({type(err).__name__}: {err})."
            ) from err
    for name in ZOO_REQUIRED_FILES:
        if not (root / name).is_file():
            raise ValueError(f"{root}: necessary file {name} is missing.")
    provided = {str(e["path"]) for e in entries}
    if not (root / WEIGHTS_FILE).is_file() and not (WEIGHTS_FILE in provided and not fetch_large_files):
        raise ValueError(
            f"{root}: {WEIGHTS_FILE} is missing and no large_files.yml provides it; the Model Zoo requires trained "
            "weights for every bundle."
        )
    if _find_config(root / "configs", INFERENCE_CONFIG_NAMES) is None:
        raise ValueError(f"{root}: configs/inference.json (or .yaml/.yml) is missing.")


def check_zoo_version(bundle_dir: str | Path, model_info: str | Path | None = None) -> None:
    """``version`` is a key of ``changelog``, and (given the zoo's ``models/model_info.json``) not yet released.

    Raises:
        ValueError: the version is missing, not in the changelog, or already published.
    """
    root = Path(bundle_dir)
    meta_file = root / "configs" / "metadata.json"
    metadata = json.loads(meta_file.read_text())
    _check_version_in_changelog(metadata, str(meta_file))
    if model_info is not None and Path(model_info).is_file():
        released = json.loads(Path(model_info).read_text())
        if f"{root.name}_v{metadata['version']}" in released:
            raise ValueError(
                f"{meta_file}: version {metadata['version']} of {root.name} is already in {model_info}; "
                "bump 'version' and add a changelog entry."
            )


def check_zoo_network(bundle_dir: str | Path, device: str = "cpu") -> None:
    """The zoo's optional (full-mode) checks, through MONAI's public bundle API.

    * inference properties: ``create_workflow(workflow_type="infer")`` then ``check_properties()``;
    * input/output: ``verify_net_in_out`` at the **default** multipliers (``n = p = any = 1``), as the
      zoo runs it, so a ``"16*n"`` spatial shape is tried at 16 pixels;
    * TorchScript: ``ckpt_export`` of ``models/model.pt`` (written to a temporary file, reloaded with
      ``torch.jit.load``), as the zoo runs it.

    Raises:
        ValueError: a check failed (the message names the check and the bundle).
    """
    import tempfile

    import torch
    from monai.bundle import ckpt_export, create_workflow, verify_net_in_out

    root = Path(bundle_dir)
    config = _find_config(root / "configs", INFERENCE_CONFIG_NAMES)
    if config is None:
        raise ValueError(f"{root}: configs/inference.json is missing.")
    meta = str(root / "configs" / "metadata.json")
    common = {"meta_file": meta, "config_file": str(config), "bundle_root": str(root)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*parsing config_file.*", category=UserWarning)
        try:
            workflow = create_workflow(
                workflow_type="infer", logging_file=str(root / "configs" / "logging.conf"), **common
            )
        except Exception as err:
            raise ValueError(
                f"{config}: the inference workflow cannot be created ({type(err).__name__}: {err})."
            ) from err
        missing = workflow.check_properties()
        if missing:
            raise ValueError(f"{config}: inference workflow properties missing: {missing}.")
        try:
            verify_net_in_out(net_id=NETWORK_ID, device=device, **common)
        except Exception as err:
            raise ValueError(
                f"{meta}: the network fails the input/output check at the default size multiplier "
                f"({type(err).__name__}: {err})."
            ) from err
        with tempfile.TemporaryDirectory() as tmp:
            exported = Path(tmp) / "verify_model.ts"
            try:
                ckpt_export(net_id=NETWORK_ID, filepath=str(exported), ckpt_file=str(root / WEIGHTS_FILE), **common)
                torch.jit.load(str(exported))
            except Exception as err:
                raise ValueError(
                    f"{root / WEIGHTS_FILE}: TorchScript export failed ({type(err).__name__}: {err})."
                ) from err


def verify_zoo_bundle(
    bundle_dir: str | Path, mode: str = "full", model_info: str | Path | None = None, device: str = "cpu"
) -> list[str]:
    """Run the Model Zoo's acceptance checks on one bundle folder, in the order its CI runs them.

    ``min``: directory (large files fetched), version and changelog, metadata against the schema (the
    packaged offline equivalent of the zoo's); ``full`` adds the inference properties, the
    input/output check at the default multiplier and the TorchScript export. Every mode also applies
    the zoo's pre-commit rules (:func:`zoo_format_problems`) to the folder as given (before downloads).

    Args:
        bundle_dir: the bundle folder (``<models>/<name>``). Large files are downloaded into it.
        mode: ``min`` or ``full``.
        model_info: the zoo's ``models/model_info.json`` (released versions), if at hand.
        device: where to run the network checks.

    Returns:
        The checks passed, one line each.

    Raises:
        ValueError: the first check that fails, naming the file and the problem.
    """
    if mode not in ("min", "full"):
        raise ValueError(f"mode must be 'min' or 'full', got {mode!r}")
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # MONAI's bundle functions log every argument at INFO; keep the report readable
    try:
        return _verify_zoo_bundle(Path(bundle_dir), mode, model_info, device)
    finally:
        logging.disable(previous)


def _verify_zoo_bundle(root: Path, mode: str, model_info: str | Path | None, device: str) -> list[str]:
    passed = []
    problems = zoo_format_problems(root)
    if problems:
        raise ValueError(f"{root}: the Model Zoo's pre-commit hooks would refuse it: " + "; ".join(problems))
    passed.append("files: real files, none over 1024 KB, zoo JSON/text format")
    check_zoo_directory(root)
    passed.append(
        "directory: LICENSE, configs/metadata.json, configs/inference.json, models/model.pt (large files fetched)"
    )
    check_zoo_version(root, model_info)
    passed.append("version and changelog")
    verify_bundle_metadata(str(root / "configs" / "metadata.json"))
    passed.append("metadata against the schema")
    if mode == "full":
        check_zoo_network(root, device)
        passed.append("inference properties, input/output shapes at the default multiplier, TorchScript export")
    return passed
