"""Known-answer tests for monai_lgg.losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from monai_lgg.losses import LogCoshDiceLoss, ShapeAwareLoss, log_cosh, normalized_contour_distance

CONFIDENT = 20.0  # |logit| at which sigmoid is 1 - 2e-9


def square_target(batch: int = 2, size: int = 32, spatial_dims: int = 2) -> torch.Tensor:
    target = torch.zeros(batch, 1, *([size] * spatial_dims))
    index = (slice(None), slice(None), *([slice(10, 20)] * spatial_dims))
    target[index] = 1.0
    return target


def confident_logits(target: torch.Tensor) -> torch.Tensor:
    return (2.0 * target - 1.0) * CONFIDENT


# ---------------------------------------------------------------- log-cosh Dice


def test_log_cosh_matches_definition_and_is_stable() -> None:
    x = torch.tensor([-3.0, -0.5, 0.0, 0.25, 1.0, 100.0])
    expected = torch.log(torch.cosh(x[:-1]))
    torch.testing.assert_close(log_cosh(x)[:-1], expected)
    assert log_cosh(x)[-1].item() == pytest.approx(100.0 - math.log(2.0))


def test_log_cosh_dice_near_zero_for_confident_perfect_prediction() -> None:
    target = square_target()
    loss = LogCoshDiceLoss(sigmoid=True)(confident_logits(target), target)
    assert 0.0 <= loss.item() < 1e-6


def test_log_cosh_dice_known_value_for_wrong_prediction() -> None:
    target = square_target()
    # predicting the complement: Dice = 0, Dice loss = 1 (up to smoothing) -> log cosh 1 = 0.4338
    loss = LogCoshDiceLoss(sigmoid=True)(-confident_logits(target), target)
    assert loss.item() == pytest.approx(math.log(math.cosh(1.0)), abs=1e-5)


def test_log_cosh_dice_is_elementwise_at_most_dice_loss_and_has_finite_gradients() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 16, 16, requires_grad=True)
    target = (torch.rand(4, 3, 16, 16) > 0.7).float()
    dice = DiceLoss(sigmoid=True, reduction="none")(logits, target)
    log_cosh_dice = LogCoshDiceLoss(sigmoid=True, reduction="none")(logits, target)
    assert log_cosh_dice.shape == dice.shape == (4, 3, 1, 1)
    assert torch.all(log_cosh_dice <= dice)
    assert torch.all(log_cosh_dice >= 0)
    torch.testing.assert_close(log_cosh_dice, torch.log(torch.cosh(dice)))
    loss = LogCoshDiceLoss(sigmoid=True)(logits, target)
    torch.testing.assert_close(loss, log_cosh_dice.mean())
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_log_cosh_dice_forwards_dice_arguments() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 4)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 4))
    kwargs = {"softmax": True, "to_onehot_y": True, "include_background": False, "batch": True}
    dice = DiceLoss(reduction="sum", **kwargs)(logits, labels)
    loss = LogCoshDiceLoss(reduction="sum", **kwargs)(logits, labels)
    unreduced = LogCoshDiceLoss(reduction="none", **kwargs)(logits, labels)
    assert unreduced.numel() == 2  # batch=True: one value per foreground class
    assert loss.item() <= dice.item()
    torch.testing.assert_close(loss, unreduced.sum())


def test_log_cosh_dice_argument_validation() -> None:
    with pytest.raises(ValueError):
        LogCoshDiceLoss(reduction="median")
    with pytest.raises(ValueError, match="Incompatible"):
        LogCoshDiceLoss(sigmoid=True, softmax=True)


# ---------------------------------------------------------------- shape-aware loss


def test_normalized_contour_distance_known_values() -> None:
    mask = np.zeros((1, 7), dtype=bool)
    mask[0, 2:4] = True
    # distances to the nearest pixel of the other class: 2 1 | 1 1 | 1 2 3, max 3
    np.testing.assert_allclose(normalized_contour_distance(mask)[0], np.array([2, 1, 1, 1, 1, 2, 3]) / 3)
    np.testing.assert_array_equal(normalized_contour_distance(np.zeros((4, 4), bool)), np.ones((4, 4)))
    np.testing.assert_array_equal(normalized_contour_distance(np.ones((4, 4), bool)), np.ones((4, 4)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shape_aware_near_zero_for_confident_perfect_prediction(spatial_dims: int) -> None:
    target = square_target(spatial_dims=spatial_dims)
    loss = ShapeAwareLoss(alpha=5.0, lambda_dice=1.0)(confident_logits(target), target)
    assert 0.0 <= loss.item() < 1e-6


def test_shape_aware_larger_for_wrong_prediction_and_finite_gradients() -> None:
    target = square_target()
    loss_fn = ShapeAwareLoss(alpha=2.0, lambda_dice=0.5)
    half_wrong = confident_logits(target) * 0.1
    half_wrong[:, :, :16] *= -1
    logits = half_wrong.clone().requires_grad_(True)
    wrong = loss_fn(logits, target)
    assert wrong.item() > loss_fn(confident_logits(target) * 0.1, target).item() > 0
    wrong.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_shape_aware_with_alpha_zero_is_bce() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 16, 16)
    target = square_target(batch=3, size=16)
    expected = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(ShapeAwareLoss(alpha=0.0)(logits, target), expected)
    expected_sum = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    torch.testing.assert_close(ShapeAwareLoss(alpha=0.0, reduction="sum")(logits, target), expected_sum)


def test_shape_aware_weights_grow_with_distance_from_gt_contour() -> None:
    target = torch.zeros(1, 1, 32, 32)
    target[0, 0, 10:20, 10:20] = 1
    logits = confident_logits(target)
    logits[0, 0, 9, 15] = CONFIDENT  # false positive right next to the contour (distance 1)
    logits[0, 0, 15, 29] = CONFIDENT  # false positive 10 px from the contour
    logits[0, 0, 15, 15] = -CONFIDENT  # missed pixel inside, 5 px from the background
    loss_fn = ShapeAwareLoss(alpha=3.0)
    weights = loss_fn.weight_map(logits, target)[0, 0]
    max_distance = math.hypot(31 - 19, 31 - 19)  # corner (31, 31) to the square's corner (19, 19)
    assert weights[9, 15].item() == pytest.approx(1 + 3.0 * 1 / max_distance)
    assert weights[15, 29].item() == pytest.approx(1 + 3.0 * 10 / max_distance)
    assert weights[15, 15].item() == pytest.approx(1 + 3.0 * 5 / max_distance)
    assert weights[15, 29] > weights[15, 15] > weights[9, 15] > 1.0
    correct = torch.ones_like(weights, dtype=torch.bool)
    correct[9, 15] = correct[15, 29] = correct[15, 15] = False
    assert torch.all(weights[correct] == 1.0)  # errors_only: correct pixels keep weight 1
    everywhere = ShapeAwareLoss(alpha=3.0, errors_only=False).weight_map(logits, target)[0, 0]
    assert everywhere[31, 31].item() == pytest.approx(4.0)
    assert everywhere[0, 0] > everywhere[5, 5] > everywhere[9, 9]


def test_shape_aware_false_positive_on_tumour_free_image_gets_full_weight() -> None:
    target = torch.zeros(1, 1, 16, 16)
    logits = torch.full_like(target, -CONFIDENT)
    logits[0, 0, 4, 4] = CONFIDENT
    weights = ShapeAwareLoss(alpha=2.0).weight_map(logits, target)
    assert weights[0, 0, 4, 4].item() == 3.0
    assert weights.sum().item() == pytest.approx(16 * 16 + 2.0)


def test_shape_aware_softmax_accepts_indices_or_one_hot() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 12, 12, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 12, 12, 4))
    one_hot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    loss_fn = ShapeAwareLoss(alpha=1.0, sigmoid=False, softmax=True, lambda_dice=1.0)
    from_indices = loss_fn(logits, labels)
    torch.testing.assert_close(from_indices, loss_fn(logits, one_hot))
    assert loss_fn.weight_map(logits, labels).shape == (2, 12, 12, 4)
    from_indices.backward()
    assert torch.isfinite(logits.grad).all()
    plain = ShapeAwareLoss(alpha=0.0, sigmoid=False, softmax=True)(logits, labels)
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels[:, 0]))


def test_shape_aware_argument_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ShapeAwareLoss(alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        ShapeAwareLoss(alpha=math.inf)
    with pytest.raises(ValueError, match="lambda_dice"):
        ShapeAwareLoss(lambda_dice=-0.1)
    with pytest.raises(ValueError, match="exactly one"):
        ShapeAwareLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="exactly one"):
        ShapeAwareLoss(sigmoid=False, softmax=False)
    with pytest.raises(ValueError, match="mean"):
        ShapeAwareLoss(reduction="none")
    loss_fn = ShapeAwareLoss()
    with pytest.raises(ValueError, match="shape of input"):
        loss_fn(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 7))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        loss_fn(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        loss_fn(torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.zeros(2, 1, 8, 8))
    softmax_fn = ShapeAwareLoss(sigmoid=False, softmax=True)
    with pytest.raises(ValueError, match="at least 2"):
        softmax_fn(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="class indices"):
        softmax_fn(torch.zeros(2, 3, 8, 8), torch.full((2, 1, 8, 8), 3))
    with pytest.raises(ValueError, match="one-hot"):
        softmax_fn(torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 8, 8))
