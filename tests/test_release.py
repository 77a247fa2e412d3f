"""The versions of a release agree: the package, CHANGELOG.md and every bundle's metadata.json.

Rule: a bundle's ``required_packages_version["monai-lgg"]`` is the package release it belongs to (its configs call
this package's code; ``monai-lgg export_bundle`` pins the same); the bundle's own ``version`` is the newest entry
of its ``changelog``, and the entry of a bundle changed in a release names the release (``monai-lgg X.Y.Z``).
Checked here: the pins, the order of the changelogs, and that every release a bundle entry names is in CHANGELOG.md.
"""

from __future__ import annotations

import json
import re

import pytest
from packaging.version import Version

from monai_lgg import __version__

from .conftest import PROJECT_ROOT

BUNDLES = sorted(p.name for p in (PROJECT_ROOT / "bundles").iterdir() if (p / "configs" / "model.json").is_file())


def _released() -> list[str]:
    return re.findall(r"^## (\d+\.\d+\.\d+)\s*$", (PROJECT_ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)


def test_changelog_names_this_version_first():
    releases = _released()
    assert releases and releases[0] == __version__, (releases, __version__)
    assert releases == sorted(releases, key=Version, reverse=True) and len(set(releases)) == len(releases)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_metadata_agrees_with_the_package(bundle):
    meta = json.loads((PROJECT_ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())
    assert meta["required_packages_version"]["monai-lgg"] == __version__
    versions = list(meta["changelog"])
    assert versions[0] == meta["version"] and versions == sorted(versions, key=Version, reverse=True), versions
    # a bundle entry that names a package release names one the changelog lists
    for note in meta["changelog"].values():
        for release in re.findall(r"monai-lgg (\d+\.\d+\.\d+)", note):
            assert release in _released(), (bundle, note)
