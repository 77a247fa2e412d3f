"""``monai-lgg new_bundle``: a new bundle in one command, whose network builds and whose configs parse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser

from monai_lgg.bundle.network import bundle_network
from monai_lgg.bundle.record import recipe_postprocessing
from monai_lgg.bundle.scaffold import new_bundle
from monai_lgg.bundle.settings import BUNDLES_DIR, bundle_info, resolve_bundle
from monai_lgg.errors import LGGInputError


@pytest.mark.parametrize("network", ["unet", "BasicUNet"])
def test_new_bundle_builds_its_network(tmp_path, network):
    root = new_bundle("mynet", network, tmp_path)
    assert resolve_bundle(root) == root.resolve() and bundle_info(root).name == "mynet (monai-lgg bundle)"
    configs = root / "configs"
    shared = {p.name for p in (BUNDLES_DIR / "unet" / "configs").iterdir()}
    assert {p.name for p in configs.iterdir()} == shared
    assert not any(p.is_symlink() for p in configs.iterdir())  # outside bundles/: plain copies, as in a wheel
    assert (root / "LICENSE").is_file() and (root / "docs" / "README.md").is_file()
    meta = json.loads((configs / "metadata.json").read_text())
    assert meta["version"] == "0.1.0" and list(meta["changelog"]) == ["0.1.0"]
    net = bundle_network(root, in_channels=3, out_channels=1, spatial_size=[64, 64]).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.update({"bundle_root": str(root)})
    # no trained-model record yet: the recipe's rule, as for every model without its own
    assert parser.get_parsed_content("threshold") == recipe_postprocessing()[0]


def test_new_bundle_refuses_in_one_line(tmp_path):
    new_bundle("taken", "unet", tmp_path)
    for args, problem in [
        (("taken", "unet"), "exists already"),
        (("Bad-Name", "unet"), "bundle name"),
        (("other", "torch.hub.load"), "neither a bundle nor a registered network"),
    ]:
        with pytest.raises(LGGInputError, match=problem):
            new_bundle(args[0], args[1], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-made left behind


def test_cli_new_bundle(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_lgg",
            "new_bundle",
            "cellnet",
            "--network",
            "AttentionUnet",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"made {tmp_path / 'cellnet'}" in result.stdout
    target = json.loads((tmp_path / "cellnet" / "configs" / "model.json").read_text())["network_def"]["_target_"]
    assert target.endswith("AttentionUnet")


def test_new_bundle_in_bundles_links_the_shared_configs(tmp_path, monkeypatch):
    """In a checkout's bundles/ the workflow configs are links to _shared, like the project's bundles."""
    from monai_lgg.bundle import scaffold

    bundles = tmp_path / "bundles"
    shutil.copytree(BUNDLES_DIR, bundles, symlinks=True, ignore=shutil.ignore_patterns("models", "runs", "*.pt"))
    monkeypatch.setattr(scaffold, "BUNDLES_DIR", bundles.resolve())
    monkeypatch.setattr(scaffold, "_SHARED", bundles / "_shared" / "configs")
    root = new_bundle("linked", "unet")
    assert root == bundles.resolve() / "linked"
    links = [p for p in (root / "configs").iterdir() if p.is_symlink()]
    assert {p.name for p in links} == {p.name for p in (bundles / "unet" / "configs").iterdir() if p.is_symlink()}
    assert all(p.resolve() == (bundles / "_shared" / "configs" / p.name).resolve() for p in links)
