"""Offline checks for the ``configs/metadata.json`` of monai-lgg MONAI Bundles.

``monai.bundle.verify_metadata`` validates a metadata file against the JSON schema named by the
metadata's ``"schema"`` URL, downloading that schema to ``filepath`` unless a file already exists
there. monai-lgg ships its own schema (``monai_lgg/schemas/meta_schema.json``, an offline
equivalent of the MONAI model-zoo schema) and always passes its path, so no download is attempted.

On top of the schema, :func:`verify_bundle_metadata` applies the model-zoo CI rule that JSON Schema
cannot express: the current ``version`` must be a key of ``changelog``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, verify_metadata
from monai.utils import optional_import

__all__ = ["schema_path", "verify_bundle_metadata"]

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
    location = getattr(cause, "json_path", "$")
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
