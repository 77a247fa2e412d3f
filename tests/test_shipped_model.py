"""The shipped UNet weights: a small, safe state dict that segments real patients through `predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from monai_lgg.inference.loading import load_network
from monai_lgg.inference.predict import predict

from .conftest import PROJECT_ROOT

MODELS = PROJECT_ROOT / "bundles" / "unet" / "models"

# Two of the shared patients, segmented from their Kaggle TIFF folders by `monai-lgg predict` with the
# shipped weights and its defaults (brain geometry, 5-member ensemble, flip TTA, the cross-validated
# post-processing). The ensemble's members trained on 4 of 5 folds each, so these are training patients:
# this is a regression test of the whole inference path (TIFF reading, channel order, per-volume
# normalisation, brain box and its inversion, orientation, ensemble loading, post-processing), not an
# accuracy estimate (that is the cross-validation in docs/results/cv_recipe). Measured on 2026-12-01 with
# the shipped weights: 0.899 and 0.909 per-patient Dice. The floor 0.8 lies below both and below the
# cross-validated mean on unseen patients (0.820, median 0.881), while any break of that path (a
# transposed image, a misplaced box, wrong channels, random weights) scores far lower.
REAL_CASES = ["TCGA_CS_4941_19960909", "TCGA_HT_7608_19940304"]
DICE_FLOOR = 0.8


def test_shipped_weights_are_a_small_safe_state_dict():
    path = MODELS / "model.pt"
    assert path.is_file(), f"{path} is missing: the UNet bundle ships trained weights"
    assert path.stat().st_size <= 25 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only, no pickled code
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    record = json.loads((MODELS / "model.json").read_text())
    assert len(record["training_cases"]) == 66 and record["selection"].startswith("ensemble")
    assert record["members"] == 5 and record["geometry"] == "brain"
    network, info = load_network("unet")
    assert (info.geometry, info.spatial_size, info.tta) == ("brain", (128, 128), True)
    # inference.json's post-processing is the rule the cross-validation chose (recorded in the sidecar)
    assert (info.threshold, info.min_component_fraction) == tuple(record["postprocessing"].values())
    with torch.no_grad():
        assert network(torch.zeros(1, info.in_channels, 128, 128)).shape == (1, 1, 128, 128)


@pytest.mark.realdata
@pytest.mark.parametrize("case", REAL_CASES)
def test_shipped_weights_segment_real_patients(shared_lgg, tmp_path, case):
    predict(shared_lgg / case, tmp_path, bundle="unet", progress=False)
    written = {p.name: p for p in tmp_path.rglob("*_mask.tif")}
    truth = sorted((shared_lgg / case).glob("*_mask.tif"))
    assert sorted(written) == sorted(p.name for p in truth)
    pred = np.stack([tifffile.imread(written[p.name]) > 0 for p in truth])
    gt = np.stack([tifffile.imread(p) > 0 for p in truth])
    dice = 2 * (pred & gt).sum() / (pred.sum() + gt.sum())
    assert dice >= DICE_FLOOR, f"{case}: per-patient Dice {dice:.3f} < {DICE_FLOOR}"
