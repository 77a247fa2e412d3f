"""The ``needs_review`` flag: its score, the member probabilities it comes from, its threshold and ``predict``'s
columns.

Networks here are untrained (fixed seeds): the tests check definitions and plumbing. Whether the score ranks badly
segmented patients is measured on the real cross-validation (``tools/review_threshold.py``, docs/results/review),
and a real-data test below checks that those published rows are what the code computes.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_lgg.cli import main
from monai_lgg.engines.bundle import bundle_network
from monai_lgg.inference import Predictor
from monai_lgg.inference.loading import load_network
from monai_lgg.inference.review import ReviewScore, review_cells, review_score
from monai_lgg.inference.uncertainty import entropy
from monai_lgg.io import save_checkpoint, write_json
from monai_lgg.networks.ensemble import ProbabilityEnsemble
from monai_lgg.studies.review_calibration import calibrate, choose_threshold, collect_rows, confusion, wilson

from .conftest import PROJECT_ROOT, converted_real

RESULTS = PROJECT_ROOT / "docs" / "results" / "review"


def _members(n: int) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [torch.nn.Conv2d(3, 1, 3, padding=1).eval() for _ in range(n)]


def _rule(p: torch.Tensor) -> torch.Tensor:
    return (p >= 0.5).to(torch.uint8)


# ---------------------------------------------------------------- the score


def test_review_score_averages_the_members_own_tumour_entropy():
    a = torch.tensor([0.9, 0.6, 0.1, 0.0])  # tumour: voxels 0, 1
    b = torch.tensor([0.99, 0.2, 0.7, 0.0])  # tumour: voxels 0, 2
    score = review_score([a, b], _rule)
    expected = (float(entropy(a)[:2].mean()) + float(entropy(b)[[0, 2]].mean())) / 2
    assert score.members == 2 and score.members_with_tumour == 2
    assert score.entropy == pytest.approx(expected)
    assert not score.needs_review(expected + 0.01) and score.needs_review(expected)


def test_members_disagreeing_on_a_tumour_are_flagged_and_no_tumour_is_not():
    some = review_score([torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.1])], _rule)
    assert some.members_disagree and some.needs_review(1.0)  # even with a threshold nothing reaches
    none = review_score([torch.tensor([0.2, 0.1]), torch.tensor([0.3, 0.0])], _rule)
    assert none.entropy is None and not none.needs_review(0.0)
    assert review_cells(none, 0.3) == {"review_entropy": "", "needs_review": "no"}
    assert review_cells(ReviewScore(0.41234567, 5, 5), 0.4) == {"review_entropy": 0.41235, "needs_review": "yes"}


@pytest.mark.parametrize("geometry, size", [("brain", (3, 60, 70, 5)), ("patch", (3, 80, 100, 4))])
@pytest.mark.parametrize("tta", [True, False])
def test_member_probabilities_keep_the_probability_and_match_each_member_alone(geometry, size, tta):
    """The mean is the default path's bit for bit (same masks); member m is what a Predictor of member m gives."""
    ensemble = ProbabilityEnsemble(_members(3)).eval()
    image = torch.rand(*size) * 100
    predictor = Predictor([ensemble], (32, 32), tta=tta, geometry=geometry, overlap=0.5)
    mean, members = predictor.member_probabilities(image)
    assert torch.equal(mean, predictor.probabilities(image)) and len(members) == 3
    for member, probability in zip(ensemble.members, members, strict=True):
        alone = Predictor([member], (32, 32), tta=tta, geometry=geometry, overlap=0.5).probabilities(image)
        assert torch.allclose(probability, alone, atol=1e-6)
    separate = Predictor(_members(2), (32, 32), tta=tta, geometry=geometry).member_probabilities(image)[1]
    assert len(separate) == 2  # networks given separately are members too


def test_member_probabilities_refuse_multiclass():
    net = torch.nn.Conv2d(3, 3, 1).eval()
    with pytest.raises(ValueError, match="binary"):
        Predictor([net], (32, 32), out_channels=3).member_probabilities(torch.rand(3, 40, 40))


# ---------------------------------------------------------------- the threshold


def test_threshold_maximises_youden_and_is_estimated_out_of_fold():
    assert choose_threshold(np.array([0.1, 0.2, 0.5, 0.6]), np.array([False, False, True, True])) == 0.35
    # overlapping classes: 0.35 misses one positive, 0.15 adds a false positive; J is higher at 0.35
    assert choose_threshold(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.array([False, True, False, True, True])) == 0.35
    assert confusion(np.array([0.1, 0.5, np.inf]), np.array([True, False, True]), 0.3) == {
        "tp": 1,
        "fp": 1,
        "fn": 1,
        "tn": 0,
    }
    low, high = wilson(7, 8)
    assert 0.4 < low < 0.6 and 0.97 < high <= 1.0
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.3, 0.95, 40)
    rows = [
        {"case": f"p{i}", "fold": i % 5, "dice": d, "review_entropy": 0.8 - 0.6 * d + rng.normal(0, 0.05)}
        for i, d in enumerate(dice)
    ]
    result = calibrate(rows, 0.7)
    oof, inside = result["out_of_fold"], result["in_sample"]
    assert result["positives"] == int((dice < 0.7).sum())
    assert sum(oof[k] for k in ("tp", "fp", "fn", "tn")) == 40 and set(oof["per_fold"]) == {"0", "1", "2", "3", "4"}
    assert inside["sensitivity"] + inside["specificity"] >= oof["sensitivity"] + oof["specificity"] - 1e-9
    assert result["spearman"]["rho"] < -0.8


# ---------------------------------------------------------------- predict's columns


@pytest.fixture(scope="module")
def review_bundle(tmp_path_factory) -> Path:
    """A copy of the UNet bundle whose shipped model is an untrained 2-member ensemble with a review threshold."""
    bundle = tmp_path_factory.mktemp("review") / "unet"
    shutil.copytree(PROJECT_ROOT / "bundles" / "unet", bundle, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    torch.manual_seed(5)
    nets = [bundle_network(bundle, in_channels=3, out_channels=1, spatial_size=[64, 64]) for _ in range(2)]
    save_checkpoint(ProbabilityEnsemble(nets).state_dict(), bundle / "models" / "model.pt")
    record = {"in_channels": 3, "out_channels": 1, "geometry": "brain", "spatial_size": [64, 64], "members": 2}
    write_json(bundle / "models" / "model.json", {**record, "review": {"threshold": 0.0}})
    return bundle


def _summary(out: Path) -> list[dict]:
    with open(out / "tumour_summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_predict_writes_needs_review_for_the_shipped_ensemble_only(tiny_dataset, review_bundle, tmp_path, capsys):
    common = ["--bundle", str(review_bundle), "--progress", "False"]
    main(["predict", str(tiny_dataset), str(tmp_path / "default"), *common])
    rows = _summary(tmp_path / "default")
    assert rows and all(r["needs_review"] in ("yes", "no") for r in rows)
    with_tumour = [r for r in rows if int(r["tumour_voxels"])]
    assert all(r["review_entropy"] != "" and r["needs_review"] == "yes" for r in with_tumour)  # threshold 0
    assert "flagged needs_review" in capsys.readouterr().out
    # another mask rule or other weights: the calibration does not apply, so no review columns
    main(["predict", str(tiny_dataset), str(tmp_path / "rule"), *common, "--threshold", "0.6"])
    main(
        [
            "predict",
            str(tiny_dataset),
            str(tmp_path / "ckpt"),
            *common,
            "--checkpoint",
            str(review_bundle / "models" / "model.pt"),
        ]
    )
    for name in ("rule", "ckpt"):
        assert "needs_review" not in _summary(tmp_path / name)[0]
    # the masks are those of a run without the review (its member probabilities keep the mean bit for bit)
    main(
        [
            "predict",
            str(tiny_dataset),
            str(tmp_path / "plain"),
            *common,
            "--checkpoint",
            str(review_bundle / "models" / "model.pt"),
            "--probabilities",
        ]
    )
    main(["predict", str(tiny_dataset), str(tmp_path / "probs"), *common, "--probabilities"])
    plain = sorted((tmp_path / "plain").rglob("*.nii.gz"))
    assert plain and all(
        (tmp_path / "probs" / p.relative_to(tmp_path / "plain")).read_bytes() == p.read_bytes() for p in plain
    )


def test_shipped_review_threshold_is_the_calibrated_one():
    record = json.loads((PROJECT_ROOT / "bundles" / "unet" / "models" / "model.json").read_text())
    calibrated = json.loads((RESULTS / "results.json").read_text())
    assert record["review"]["threshold"] == calibrated["threshold"]
    assert record["review"]["dice_below"] == calibrated["dice_below"]
    assert load_network("unet")[1].review_threshold == calibrated["threshold"]
    assert (
        calibrate(list(csv.DictReader(open(RESULTS / "per_patient.csv", newline=""))))["threshold"]
        == (calibrated["threshold"])
    )


def test_published_rows_are_what_the_code_computes(shared_lgg, tmp_path):
    """Three published out-of-fold rows recomputed from the real patients (one per fold it names)."""
    with open(RESULTS / "per_patient.csv", newline="") as f:
        published = {r["case"]: r for r in csv.DictReader(f)}
    chosen = {}
    for name, row in sorted(published.items()):
        chosen.setdefault(int(row["fold"]), name)
    cases = [chosen[f] for f in sorted(chosen)[:3]]
    dataset = converted_real(shared_lgg, tmp_path, cases)
    rows = collect_rows(dataset, {name: int(published[name]["fold"]) for name in cases})
    for row in rows:
        assert row["dice"] == pytest.approx(float(published[row["case"]]["dice"]), abs=1e-4)
        assert row["review_entropy"] == pytest.approx(float(published[row["case"]]["review_entropy"]), abs=1e-4)


def test_benchmark_times_the_review_score_of_an_ensemble():
    from monai_lgg.inference.benchmark import format_table, time_inference

    ensemble = ProbabilityEnsemble(_members(2)).eval()
    rows = time_inference(
        ensemble,
        (16, 16),
        "cpu",
        num_slices=3,
        size=24,
        repeats=1,
        variants=[("fp32", False)],
        tta=[True],
        review=(False, True),
        geometry="brain",
    )
    assert [r["review"] for r in rows] == [False, True]
    assert "| yes |" in format_table(rows).splitlines()[-1]
