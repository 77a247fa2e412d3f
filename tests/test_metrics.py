"""Known-answer tests for monai_lgg.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_lgg.metrics import (
    VOLUME_SCORE_KEYS,
    FalsePositiveRate,
    SliceDiceMetric,
    bootstrap_ci,
    compute_slice_dice,
    false_positive_rate,
    hausdorff_distance_95,
    patient_false_positive_rate,
    slice_false_positive_rate,
    slice_flags,
    summarize,
    summarize_scores,
    volume_scores,
)


def square_volume(size: int = 32, depth: int = 6, side: int = 12, offset: int = 0) -> np.ndarray:
    """(H, W, D) volume with a side x side square, shifted by ``offset`` along W, in slices 1..D-2."""
    volume = np.zeros((size, size, depth), dtype=np.uint8)
    volume[8 : 8 + side, 8 + offset : 8 + side + offset, 1 : depth - 1] = 1
    return volume


# ---------------------------------------------------------------- per-volume scores


@pytest.mark.parametrize("as_torch", [False, True])
def test_perfect_prediction_scores_one_and_hd95_zero(as_torch: bool) -> None:
    gt = square_volume()
    pred = torch.from_numpy(gt.copy()) if as_torch else gt.copy()
    scores = volume_scores(pred, gt)
    assert set(scores) == set(VOLUME_SCORE_KEYS)
    for key in ("dice", "iou", "precision", "recall", "f1", "accuracy"):
        assert scores[key] == 1.0, key
    assert scores["hd95"] == 0.0
    assert scores["fp"] == scores["fn"] == 0.0
    assert scores["gt_empty"] == scores["pred_empty"] == 0.0


def test_channel_first_volume_is_accepted() -> None:
    gt = square_volume()[None]
    assert volume_scores(gt, gt)["dice"] == 1.0


def test_empty_vs_empty_scores_one() -> None:
    empty = np.zeros((16, 16, 4), dtype=bool)
    scores = volume_scores(empty, empty)
    for key in ("dice", "iou", "precision", "recall", "f1", "accuracy"):
        assert scores[key] == 1.0, key
    assert scores["hd95"] == 0.0
    assert scores["gt_empty"] == scores["pred_empty"] == 1.0


def test_false_positive_on_tumour_free_volume_scores_zero_and_hd95_nan() -> None:
    gt = np.zeros((16, 16, 4), dtype=bool)
    pred = gt.copy()
    pred[3, 3, 2] = True
    scores = volume_scores(pred, gt)
    for key in ("dice", "iou", "precision", "recall", "f1"):
        assert scores[key] == 0.0, key
    assert scores["accuracy"] == pytest.approx(1 - 1 / gt.size)
    assert math.isnan(scores["hd95"])
    assert scores["gt_empty"] == 1.0 and scores["pred_empty"] == 0.0


def test_missed_tumour_scores_zero_and_hd95_nan() -> None:
    gt = square_volume()
    scores = volume_scores(np.zeros_like(gt), gt)
    for key in ("dice", "iou", "precision", "recall", "f1"):
        assert scores[key] == 0.0, key
    assert math.isnan(scores["hd95"])
    assert scores["gt_empty"] == 0.0 and scores["pred_empty"] == 1.0


def test_volume_scores_hand_computed() -> None:
    # gt has 4 voxels; pred hits 3 of them and adds 2 outside: TP=3, FP=2, FN=1, TN=4*4*2-6=26
    gt = np.zeros((4, 4, 2), dtype=np.uint8)
    gt[0, 0:4, 0] = 1
    pred = np.zeros_like(gt)
    pred[0, 0:3, 0] = 1
    pred[3, 3, 1] = pred[2, 3, 1] = 1
    scores = volume_scores(pred, gt)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (3.0, 2.0, 1.0, 26.0)
    assert scores["dice"] == pytest.approx(6 / 9)
    assert scores["iou"] == pytest.approx(3 / 6)
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert scores["f1"] == pytest.approx(scores["dice"])
    assert scores["accuracy"] == pytest.approx(29 / 32)


@pytest.mark.parametrize("side", [10, 16])
def test_square_shifted_by_three_pixels_has_hd95_three(side: int) -> None:
    # the left edge of one square is 3 px from the other's, and more than 5 % of all
    # edge-to-edge distances equal that maximum, so the 95th percentile is exactly 3
    gt = np.zeros((40, 40), dtype=bool)
    gt[10 : 10 + side, 10 : 10 + side] = True
    pred = np.roll(gt, 3, axis=1)
    assert hausdorff_distance_95(pred, gt) == 3.0
    assert hausdorff_distance_95(gt, pred) == 3.0
    assert volume_scores(pred, gt)["hd95"] == 3.0


def test_hd95_ignores_a_rare_outlier_that_sets_the_full_hausdorff_distance() -> None:
    # 60 edge pixels match exactly; one isolated false positive 14 px away is 1/61 < 5 % of the distances
    gt = np.zeros((40, 40), dtype=bool)
    gt[4:20, 4:20] = True
    pred = gt.copy()
    pred[33, 19] = True
    assert hausdorff_distance_95(pred, gt) == 0.0
    scores = volume_scores(pred, gt)
    assert scores["fp"] == 1.0 and scores["precision"] == pytest.approx(256 / 257)


def test_hd95_in_3d_and_scaled_by_spacing() -> None:
    gt = square_volume(offset=0)
    pred = square_volume(offset=3)
    assert hausdorff_distance_95(pred, gt) == 3.0
    assert hausdorff_distance_95(pred, gt, spacing=(0.5, 2.0, 5.0)) == 6.0
    assert volume_scores(pred, gt, spacing=2.0)["hd95"] == 6.0


def test_volume_scores_validation() -> None:
    gt = square_volume()
    with pytest.raises(ValueError, match="same shape"):
        volume_scores(gt[:-1], gt)
    with pytest.raises(ValueError, match="binary"):
        volume_scores(gt * 0.7, gt)
    with pytest.raises(ValueError, match="spacing"):
        volume_scores(gt, gt, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        volume_scores(gt, gt, spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="channel-first"):
        volume_scores(np.stack([gt, gt]), np.stack([gt, gt]))


# ---------------------------------------------------------------- per-slice Dice


def test_compute_slice_dice_hand_computed_and_layout() -> None:
    # batch of 2 volumes, depth 3; slice order in the output is b * D + d
    gt = torch.zeros(2, 1, 4, 4, 3)
    pred = torch.zeros(2, 1, 4, 4, 3)
    gt[0, 0, 0, 0:2, 0] = 1  # |G| = 2
    pred[0, 0, 0, 0:1, 0] = 1  # |P| = 1, |P & G| = 1 -> 2/3
    pred[0, 0, 1, 1, 1] = 1  # tumour-free slice with a false positive -> 0
    gt[1, 0, :, :, 2] = 1
    pred[1, 0, :, :, 2] = 1  # perfect -> 1; every other slice empty/empty -> empty_score
    dice = compute_slice_dice(pred, gt)
    assert dice.shape == (6, 1)
    expected = torch.tensor([[2 / 3], [0.0], [1.0], [1.0], [1.0], [1.0]])
    torch.testing.assert_close(dice, expected)
    dice_empty_zero = compute_slice_dice(pred, gt, empty_score=0.0)
    torch.testing.assert_close(dice_empty_zero[:, 0], torch.tensor([2 / 3, 0.0, 0.0, 0.0, 0.0, 1.0]))


def test_compute_slice_dice_keeps_channels_and_slice_order() -> None:
    # 2 volumes x 2 channels x depth 2; channel 0 predicts a false positive in slice d=1 of volume 0 only
    gt = torch.zeros(2, 2, 3, 3, 2)
    pred = gt.clone()
    pred[0, 0, 0, 0, 1] = 1
    expected = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(compute_slice_dice(pred, gt), expected)


def test_compute_slice_dice_on_2d_batch_gives_one_row_per_image() -> None:
    gt = np.zeros((3, 1, 5, 5), dtype=np.uint8)
    gt[0, 0, 1:3, 1:3] = 1
    pred = gt.copy()
    pred[2, 0, 0, 0] = 1
    torch.testing.assert_close(compute_slice_dice(pred, gt)[:, 0], torch.tensor([1.0, 1.0, 0.0]))


def test_compute_slice_dice_validation() -> None:
    gt = torch.zeros(1, 1, 4, 4, 2)
    with pytest.raises(ValueError, match="binary"):
        compute_slice_dice(gt + 0.5, gt)
    with pytest.raises(ValueError, match="same shape"):
        compute_slice_dice(gt[..., :1], gt)
    with pytest.raises(ValueError, match=r"\(B, C, H, W, D\)"):
        compute_slice_dice(gt[0, 0], gt[0, 0])
    for bad in (math.nan, -0.1, 1.5):
        with pytest.raises(ValueError, match="empty_score"):
            compute_slice_dice(gt, gt, empty_score=bad)
    with pytest.raises(ValueError, match="empty_score"):
        SliceDiceMetric(empty_score=math.nan)


@pytest.mark.parametrize("n_slices", [4, 10])
def test_one_false_positive_slice_lowers_pooled_dice_by_one_over_n(n_slices: int) -> None:
    gt = torch.zeros(1, 1, 8, 8, n_slices)
    metric = SliceDiceMetric()
    metric(gt.clone(), gt)
    assert metric.aggregate().item() == 1.0
    metric.reset()
    pred = gt.clone()
    pred[0, 0, 2, 5, n_slices // 2] = 1
    metric(pred, gt)
    assert metric.aggregate().item() == pytest.approx(1.0 - 1.0 / n_slices, abs=1e-6)
    slice_rate = slice_false_positive_rate([(pred[0], gt[0])])
    assert slice_rate == FalsePositiveRate(1 / n_slices, 1, n_slices)
    assert patient_false_positive_rate([(pred[0], gt[0])]) == FalsePositiveRate(1.0, 1, 1)


def test_slice_dice_metric_aggregates_volumes_of_different_depths() -> None:
    metric = SliceDiceMetric()
    # iteration 1: one volume, depth 3: slice Dice [1 (empty/empty), 0 (FP), 2/3]
    gt1 = torch.zeros(1, 1, 4, 4, 3)
    pred1 = torch.zeros(1, 1, 4, 4, 3)
    pred1[0, 0, 0, 0, 1] = 1
    gt1[0, 0, 0, 0:2, 2] = 1
    pred1[0, 0, 0, 0, 2] = 1
    first = metric(pred1, gt1)
    assert first.shape == (3, 1)
    # iteration 2: two volumes, depth 5, all correct except one missed slice (Dice 0)
    gt2 = torch.zeros(2, 1, 4, 4, 5)
    gt2[1, 0, 1:3, 1:3, 0:4] = 1
    pred2 = gt2.clone()
    pred2[1, 0, :, :, 3] = 0
    metric(pred2, gt2)
    # iteration 3: a list of channel-first volumes of depths 2 and 1 (decollated batch)
    vol_a = torch.ones(1, 4, 4, 2)
    vol_b = torch.zeros(1, 4, 4, 1)
    metric([vol_a, vol_b], [vol_a, vol_b])
    buffer = metric.aggregate(reduction="none")
    assert buffer.shape == (3 + 10 + 3, 1)
    expected = (1 + 0 + 2 / 3 + 9 * 1 + 0 + 3 * 1) / 16
    assert metric.aggregate().item() == pytest.approx(expected, abs=1e-6)


def test_slice_dice_metric_without_data_raises() -> None:
    with pytest.raises(ValueError, match="no data"):
        SliceDiceMetric().aggregate()


def test_slice_dice_metric_with_ignite_handler_and_supervised_evaluator() -> None:
    from monai.engines import SupervisedEvaluator
    from monai.handlers import IgniteMetricHandler, from_engine
    from monai.inferers import SliceInferer

    class Threshold2D(torch.nn.Module):
        """A "2D network" that segments by thresholding the image."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.ndim == 4  # SliceInferer feeds (B, C, H, W) slices
            return (x > 0.5).float()

    def volume(depth: int, false_positive_slice: int | None) -> dict[str, torch.Tensor]:
        label = torch.zeros(1, 1, 8, 8, depth)
        label[0, 0, 2:5, 2:5, 0] = 1
        image = label.clone()
        if false_positive_slice is not None:
            image[0, 0, 7, 7, false_positive_slice] = 1
        return {"image": image, "label": label}

    # 4 + 6 slices; one false positive on a tumour-free slice -> pooled Dice 9/10
    loader = [volume(4, None), volume(6, 3)]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        epoch_length=len(loader),
        network=Threshold2D(),
        inferer=SliceInferer(roi_size=(8, 8), sw_batch_size=4, spatial_dim=2),
        key_val_metric={
            "pooled_slice_dice": IgniteMetricHandler(SliceDiceMetric(), output_transform=from_engine(["pred", "label"]))
        },
    )
    evaluator.run()
    assert evaluator.state.metrics["pooled_slice_dice"] == pytest.approx(0.9, abs=1e-6)
    assert evaluator.state.metric_details["pooled_slice_dice"].shape == (10, 1)


# ---------------------------------------------------------------- false-positive rates


def test_false_positive_rate_from_flags() -> None:
    pred = [True, False, True, True, False]
    gt = [False, False, False, True, True]
    assert false_positive_rate(pred, gt) == FalsePositiveRate(2 / 3, 2, 3)
    assert false_positive_rate(np.array(pred), torch.tensor(gt)) == FalsePositiveRate(2 / 3, 2, 3)
    no_negative = false_positive_rate([True], [True])
    assert math.isnan(no_negative.rate) and no_negative.n_tumour_free == 0
    with pytest.raises(ValueError, match="one flag per unit"):
        false_positive_rate([True, False], [True])


def test_slice_flags_and_rates_over_patients() -> None:
    tumour = square_volume(depth=5)  # tumour in slices 1..3, slices 0 and 4 tumour-free
    pred_tumour = tumour.copy()
    pred_tumour[0, 0, 4] = 1  # FP on tumour-free slice 4
    pred_flags, gt_flags = slice_flags(pred_tumour, tumour)
    np.testing.assert_array_equal(gt_flags, [False, True, True, True, False])
    np.testing.assert_array_equal(pred_flags, [False, True, True, True, True])
    healthy = np.zeros((32, 32, 3), dtype=np.uint8)
    healthy_fp = healthy.copy()
    healthy_fp[5, 5, 0] = 1
    volumes = [(pred_tumour, tumour), (healthy, healthy), (healthy_fp, healthy)]
    # tumour-free slices: 2 + 3 + 3 = 8, with FP: slice 4 of patient 0 and slice 0 of patient 2
    assert slice_false_positive_rate(volumes) == FalsePositiveRate(2 / 8, 2, 8)
    # tumour-free patients: 2, one with a predicted voxel
    assert patient_false_positive_rate(volumes) == FalsePositiveRate(0.5, 1, 2)
    assert math.isnan(slice_false_positive_rate([]).rate)


# ---------------------------------------------------------------- summaries


def test_bootstrap_ci_contains_mean_and_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(0.8, 0.1, size=20)
    large = rng.normal(0.8, 0.1, size=2000)
    low_s, high_s = bootstrap_ci(small, n_resamples=2000)
    low_l, high_l = bootstrap_ci(large, n_resamples=2000)
    assert low_s < small.mean() < high_s
    assert low_l < large.mean() < high_l
    assert high_l - low_l < (high_s - low_s) / 5  # width shrinks like 1/sqrt(n): sqrt(100) = 10
    # standard error of the mean is 0.1/sqrt(2000); a 95 % interval spans about 3.92 of them
    assert high_l - low_l == pytest.approx(3.92 * large.std(ddof=1) / math.sqrt(2000), rel=0.15)


def test_bootstrap_ci_nan_handling_determinism_and_validation() -> None:
    values = [0.5, 0.7, math.nan, 0.9, 0.6]
    assert bootstrap_ci(values, n_resamples=500) == bootstrap_ci([0.5, 0.7, 0.9, 0.6], n_resamples=500)
    assert bootstrap_ci(values, n_resamples=500, seed=3) == bootstrap_ci(values, n_resamples=500, seed=3)
    assert bootstrap_ci([0.4]) == (0.4, 0.4)
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan, math.nan]))
    low, high = bootstrap_ci(values, statistic=lambda x: float(np.median(x)), n_resamples=200)
    assert 0.5 <= low <= high <= 0.9
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(values, confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(values, n_resamples=0)


def test_summarize_hand_computed() -> None:
    summary = summarize([1.0, 2.0, math.nan, 3.0], n_resamples=1000)
    assert summary["n"] == 3 and summary["n_nan"] == 1
    assert (summary["mean"], summary["median"], summary["std"]) == (2.0, 2.0, 1.0)
    assert (summary["min"], summary["max"]) == (1.0, 3.0)
    assert 1.0 <= summary["ci_low"] < 2.0 < summary["ci_high"] <= 3.0
    empty = summarize([math.nan])
    assert empty["n"] == 0 and empty["n_nan"] == 1 and math.isnan(empty["mean"])


def test_summarize_scores_counts_undefined_hd95_separately() -> None:
    tumour = square_volume()
    healthy = np.zeros_like(tumour)
    healthy_fp = healthy.copy()
    healthy_fp[0, 0, 0] = 1
    scores = [volume_scores(tumour, tumour), volume_scores(healthy_fp, healthy), volume_scores(healthy, healthy)]
    summary = summarize_scores(scores, keys=("dice", "hd95"), n_resamples=200)
    assert summary["dice"]["mean"] == pytest.approx(2 / 3)
    assert summary["dice"]["n_nan"] == 0
    assert summary["hd95"]["n"] == 2 and summary["hd95"]["n_nan"] == 1
    assert summary["hd95"]["mean"] == 0.0
    with pytest.raises(KeyError, match="missing"):
        summarize_scores([{"dice": 1.0}], keys=("dice", "hd95"))
