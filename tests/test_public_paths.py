"""Moved code keeps its public import paths: the bundle configs' ``lgg.<name>`` calls and the modules' old names."""

from __future__ import annotations

import importlib
import re

import pytest

from .conftest import PROJECT_ROOT

MOVED = {
    # old module: names that moved out of it and are re-exported there
    "monai_lgg.bundle_paths": [
        "BUNDLES_DIR",
        "MAX_BUNDLE_BYTES",
        "bundle_names",
        "installed_bundle",
        "output_root",
        "resolve_bundle",
    ],
    "monai_lgg.engines.bundle": [
        "bundle_root",
        "bundle_setting",
        "bundle_network",
        "trained_members",
        "trained_network_args",
        "trained_setting",
        "MAX_MEMBERS",
        "prepare_dataset",
        "load_split",
        "inference_items",
        "default_geometry",
        "cache_root",
        "SYNTHETIC",
        "BUNDLES_DIR",
        "output_root",
        "run_dir",
        "dataset_tag",
    ],
    "monai_lgg.inference.loading": [
        "BundleInfo",
        "bundle_info",
        "resolve_bundle",
        "bundle_names",
        "BUNDLES_DIR",
        "trained_channels",
    ],
    "monai_lgg.inference": ["find_cases", "load_case", "BundleInfo", "bundle_info"],
    "monai_lgg.engines.handlers": ["sidecar_path"],
    "monai_lgg.data.readers": [
        "SliceImageReader",
        "NiftiVolumeReader",
        "AtomicNibabelWriter",
        "read_slice_image",
        "check_finite",
    ],
    "monai_lgg.data.kaggle": ["CHANNEL_NAMES", "read_tiff", "read_tiff_header", "kaggle_affine"],
    "monai_lgg.inference.orientation": ["MODEL_AXCODES", "Reorientation", "plan_reorientation"],
    "monai_lgg.transforms.presets": ["GEOMETRIES", "NORMALIZATIONS", "image_channels"],
    "monai_lgg.radiogenomics.analysis": ["TESTED_FEATURES"],
}


@pytest.mark.parametrize("module", sorted(MOVED))
def test_old_import_paths_keep_working(module):
    imported = importlib.import_module(module)
    assert [name for name in MOVED[module] if not hasattr(imported, name)] == []


def test_every_lgg_call_of_the_bundle_configs_exists():
    """``"$import monai_lgg.engines as lgg"``: each ``lgg.<name>`` a shipped config calls is exported there."""
    import monai_lgg.engines as lgg

    configs = sorted((PROJECT_ROOT / "bundles").glob("*/configs/*.json"))
    called = {name for path in configs for name in re.findall(r"\blgg\.([A-Za-z_]\w*)", path.read_text())}
    assert {"trained_threshold", "THRESHOLD", "bundle_network", "prepare_dataset"} <= called  # the scan found calls
    assert sorted(name for name in called if not hasattr(lgg, name)) == []
