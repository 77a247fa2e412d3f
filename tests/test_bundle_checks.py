"""Tests for monai_lgg.bundle_checks: offline metadata verification against the packaged schema."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import jsonschema
import monai.apps.utils
import monai.bundle.scripts
import pytest
from monai.bundle import verify_metadata

from monai_lgg import bundle_checks
from monai_lgg.bundle_checks import schema_path, verify_bundle_metadata

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"

VALID_METADATA: dict[str, Any] = {
    "schema": SCHEMA_URL,
    "version": "0.2.0",
    "changelog": {
        "0.2.0": "use three MR sequences as input channels",
        "0.1.0": "first version of the 2D LGG segmentation bundle",
    },
    "monai_version": "1.6.1",
    "pytorch_version": "2.8.0",
    "numpy_version": "2.1.0",
    "required_packages_version": {"pytorch-ignite": "0.5.2", "tifffile": "2024.8.30"},
    "optional_packages_version": {"tensorboard": "2.17.0"},
    "name": "2D brain MRI LGG segmentation",
    "task": "2D binary segmentation of lower-grade glioma in brain MRI slices",
    "description": "A 2D U-Net that segments FLAIR abnormality (tumour) in axial brain MRI slices.",
    "authors": "monai-lgg contributors",
    "copyright": "Copyright (c) monai-lgg contributors",
    "data_source": "LGG brain MRI segmentation slices (TCIA / TCGA-LGG)",
    "data_type": "tiff",
    "image_classes": "3 channels: pre-contrast, FLAIR, post-contrast, intensities scaled to [0, 1]",
    "label_classes": "1 channel: 1 is tumour, 0 is everything else",
    "pred_classes": "1 channel: tumour probability",
    "eval_metrics": {"mean_dice": 0.8},
    "intended_use": "Research example only, not for diagnostic use",
    "references": ["Buda et al., Computers in Biology and Medicine 2019, doi:10.1016/j.compbiomed.2019.05.002"],
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "MR",
                "num_channels": 3,
                "spatial_shape": [256, 256],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "pre-contrast", "1": "FLAIR", "2": "post-contrast"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 1,
                "spatial_shape": [256, 256],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "tumour"},
            }
        },
    },
}


class NetworkAccessError(AssertionError):
    """Raised when code under test tries to reach the network."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make every network path fail loudly and record MONAI's download_url calls.

    ``monai.bundle.scripts`` imports ``download_url`` by name, so the spy is installed there; the
    functions that actually fetch (``_download_with_progress``, ``urlopen``) and socket connections
    are replaced with functions that raise.

    Returns:
        A list that receives one record per ``download_url`` call made by ``verify_metadata``.
    """

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise NetworkAccessError(f"network access attempted: args={args!r}")

    monkeypatch.setattr(monai.apps.utils, "_download_with_progress", refuse)
    monkeypatch.setattr(monai.apps.utils, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    calls: list[dict[str, Any]] = []
    real_download_url = monai.bundle.scripts.download_url

    def spy(url: str, filepath: Any = "", *args: Any, **kwargs: Any) -> None:
        calls.append({"url": url, "filepath": str(filepath), "existed": Path(filepath).is_file()})
        real_download_url(url, filepath, *args, **kwargs)

    monkeypatch.setattr(monai.bundle.scripts, "download_url", spy)
    return calls


def _metadata(**changes: Any) -> dict[str, Any]:
    meta = copy.deepcopy(VALID_METADATA)
    meta.update(changes)
    return meta


def _write(tmp_path: Path, metadata: dict[str, Any]) -> str:
    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    path = configs / "metadata.json"
    path.write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return str(path)


def test_schema_path_points_to_packaged_valid_schema() -> None:
    path = Path(schema_path())
    assert path.is_file()
    assert path.parent.name == "schemas" and path.parent.parent.name == "monai_lgg"
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert "monai-lgg" in schema["$id"] and "monai-lgg" in schema["title"]
    assert "meta_schema_20240725.json" in schema["description"]


@pytest.mark.parametrize("spatial_shape", [[256, 256], ["16*n", "16*n"]])
def test_valid_metadata_passes_offline(tmp_path: Path, no_network: list[dict[str, Any]], spatial_shape: list) -> None:
    meta = _metadata()
    for spec in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
        spec["spatial_shape"] = spatial_shape
    meta_file = _write(tmp_path, meta)

    verify_bundle_metadata(meta_file)

    # verify_metadata reached download_url exactly once, with the packaged schema already on disk,
    # which is the branch that returns without touching the network.
    assert no_network == [{"url": SCHEMA_URL, "filepath": schema_path(), "existed": True}]


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")
def test_plain_monai_verify_metadata_accepts_packaged_schema(tmp_path: Path) -> None:
    verify_metadata(meta_file=_write(tmp_path, _metadata()), filepath=schema_path())


def test_network_guard_is_effective(tmp_path: Path) -> None:
    # Without a pre-existing schema file MONAI would download it; the guard turns that into an error.
    missing = tmp_path / "downloaded_schema.json"
    with pytest.raises(NetworkAccessError):
        monai.bundle.scripts.download_url(url=SCHEMA_URL, filepath=missing)
    assert not missing.exists()


def _assert_rejected(tmp_path: Path, metadata: dict[str, Any], *fragments: str) -> str:
    meta_file = _write(tmp_path, metadata)
    with pytest.raises(ValueError) as info:
        verify_bundle_metadata(meta_file)
    message = str(info.value)
    assert meta_file in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_version_fails(tmp_path: Path) -> None:
    meta = _metadata()
    del meta["version"]
    _assert_rejected(tmp_path, meta, "'version' is a required property")


def test_version_not_in_changelog_fails(tmp_path: Path) -> None:
    message = _assert_rejected(tmp_path, _metadata(version="0.3.0"), "'0.3.0'", "changelog")
    assert "0.1.0, 0.2.0" in message


def test_num_channels_wrong_type_fails(tmp_path: Path) -> None:
    meta = _metadata()
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "3"
    _assert_rejected(tmp_path, meta, "$.network_data_format.inputs.image.num_channels", "'3' is not of type 'integer'")


def test_missing_network_data_format_fails(tmp_path: Path) -> None:
    meta = _metadata()
    del meta["network_data_format"]
    _assert_rejected(tmp_path, meta, "'network_data_format' is a required property")


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("version",), "1.0", "does not match"),
        (("changelog",), {"0.2.0": 1}, "is not of type 'string'"),
        (("required_packages_version",), None, "'required_packages_version' is a required property"),
        (("network_data_format", "inputs", "image", "dtype"), "float", "does not match"),
        (("network_data_format", "inputs", "image", "spatial_shape"), [], "should be non-empty"),
        (("network_data_format", "outputs", "pred", "value_range"), [0, 1, 2], "is too long"),
        (("network_data_format", "outputs", "pred", "channel_def"), {"tumour": "0"}, "does not match"),
        (("network_data_format", "outputs", "pred", "is_patch_data"), "false", "is not of type 'boolean'"),
        (("references",), "Buda 2019", "is not of type 'array'"),
    ],
)
def test_other_schema_rules(tmp_path: Path, path: tuple[str, ...], value: Any, fragment: str) -> None:
    meta = _metadata()
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _assert_rejected(tmp_path, meta, fragment)


def test_inputs_must_name_image_for_monai_tools(tmp_path: Path) -> None:
    meta = _metadata()
    inputs = meta["network_data_format"]["inputs"]
    inputs["img"] = inputs.pop("image")
    _assert_rejected(tmp_path, meta, "'image' is a required property")


def test_missing_schema_field_fails_before_download(tmp_path: Path, no_network: list[dict[str, Any]]) -> None:
    meta = _metadata()
    del meta["schema"]
    _assert_rejected(tmp_path, meta, "`schema` field")
    assert no_network == []


def test_missing_metadata_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metadata file not found"):
        verify_bundle_metadata(str(tmp_path / "nope" / "metadata.json"))


def test_missing_packaged_schema_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(bundle_checks, "_SCHEMA_RESOURCE", ("schemas", "does_not_exist.json"))
    with pytest.raises(FileNotFoundError, match="schema not found"):
        verify_bundle_metadata(_write(tmp_path, _metadata()))
    assert no_network == []
