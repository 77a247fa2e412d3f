"""The main job shows a model that works: the UNet bundle's default run on the embedded synthetic set.

``make demo`` trains the UNet bundle with its defaults on the 8 generated synthetic patients and evaluates
the test fold. Before the whole-slice recipe it put a false positive on every tumour-free slice of the test
patients (FP rate 1.0, HD95 about 105): a newcomer's first result looked broken. Measured with the current
defaults (2-core CPU, `make demo`): per-patient Dice 0.912, HD95 1.4 voxels, false positives on 2 of 35
tumour-free slices on 2026-12-01; Dice 0.918 and 2 of 35 on 2026-12-07 (3 of 35 in another run). The floors
below sit well under those numbers and far above the broken run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import PROJECT_ROOT

BUNDLE = PROJECT_ROOT / "bundles" / "unet"
DICE_FLOOR = 0.8
FP_RATE_CEILING = 0.25


@pytest.mark.slow
def test_default_bundle_run_segments_the_synthetic_test_patients(synthetic_converted, tmp_path):
    dirs = [
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--log_dir",
        str(tmp_path / "logs"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    run = [sys.executable, "-m", "monai.bundle", "run"]
    data = ["--dataset_dir", str(synthetic_converted)]
    subprocess.run(
        run + ["training", "--config_file", str(BUNDLE / "configs" / "train.json")] + data + dirs,
        check=True,
        capture_output=True,
    )
    configs = repr([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "evaluate.json")])
    subprocess.run(run + ["--config_file", configs] + data + dirs, check=True, capture_output=True)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    dice = summary["per_patient"]["dice"]["mean"]
    fp = summary["false_positive_rate"]["tumour_free_slices"]["rate"]
    assert dice >= DICE_FLOOR, f"per-patient Dice {dice:.3f} < {DICE_FLOOR}"
    assert fp <= FP_RATE_CEILING, f"false positives on {fp:.0%} of tumour-free slices"
