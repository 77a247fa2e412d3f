"""Post-processing rules beyond the cross-validation's candidates (hysteresis, hole filling) and their probe tool."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from monai_lgg.transforms.components import fill_holes_per_slice, hysteresis_mask

from .conftest import PROJECT_ROOT

TOOL = [sys.executable, str(PROJECT_ROOT / "tools" / "postprocessing_probe.py")]


def test_hysteresis_grows_confident_components_and_drops_faint_ones():
    prob = np.zeros((12, 12, 3))
    prob[2:6, 2:6, 1] = 0.25  # faint rim...
    prob[3:5, 3:5, 1] = 0.9  # ...around a confident core
    prob[9:11, 9:11, 0] = 0.25  # faint on its own: never reaches 0.5
    mask = hysteresis_mask(prob, high=0.5, low=0.2)
    assert mask[2:6, 2:6, 1].all() and mask.sum() == 16
    assert not hysteresis_mask(prob, high=0.95, low=0.2).any()
    assert hysteresis_mask(prob, high=0.5, low=0.5).sum() == 4  # low = high: a plain threshold


def test_fill_holes_per_slice_fills_enclosed_cores_only():
    mask = np.zeros((9, 9, 2), dtype=bool)
    mask[1:8, 1:8, 0] = True
    mask[3:6, 3:6, 0] = False  # a dark core inside a ring: filled
    mask[1:8, 1:8, 1] = True
    mask[3:9, 3:6, 1] = False  # open to the border: not a hole
    filled = fill_holes_per_slice(mask)
    assert filled[..., 0].sum() == 49 and (filled[..., 1] == mask[..., 1]).all()


def test_probe_scores_every_rule_and_reports_an_empty_folder_in_one_line(tmp_path):
    label = np.zeros((16, 16, 4), dtype=bool)
    label[4:12, 4:12, 1:3] = True
    prob = np.zeros(label.shape, dtype=np.uint8)
    prob[5:12, 4:12, 1:3] = 230  # misses one row of the tumour
    prob[14, 14, 0] = 200  # a false positive on a tumour-free slice
    np.savez(tmp_path / "P0.npz", label=label, prob=prob, fold=np.int64(0))
    out = subprocess.run(
        TOOL + [str(tmp_path), "--json_out", str(tmp_path / "probe.json")], capture_output=True, text=True, check=True
    )
    rows = {r["rule"]: r for r in json.loads((tmp_path / "probe.json").read_text())}
    assert "threshold 0.4, largest" in out.stdout
    assert rows["threshold 0.5"]["fp_rate"] == 0.5 and rows["threshold 0.5, largest"]["fp_rate"] == 0.0
    assert rows["threshold 0.5, largest"]["mean"] == 2 * 112 / (112 + 128)
    bad = subprocess.run(TOOL + [str(tmp_path / "empty")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().endswith(
        "empty: holds no <case>.npz out-of-fold predictions (crossval_report.py writes them)"
    )
