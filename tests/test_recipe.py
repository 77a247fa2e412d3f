"""The accuracy recipe's pieces: brain geometry, per-volume normalisation, sampling, FLAIR substitution,
schedules, flip TTA, component filtering, and the cross-validation scoring with leave-one-fold-out selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.data.slice_bank import AreaWeightedSampler
from monai_lgg.engines.components import make_scheduler
from monai_lgg.engines.inferers import FlipTTAInferer
from monai_lgg.studies.crossval import average_out_of_fold, paired_difference, score_case, select_postprocessing
from monai_lgg.transforms.batch import RandBatchAugment
from monai_lgg.transforms.brain import (
    BrainCrop,
    BrainCropd,
    BrainNormalizeIntensity,
    RandFlairSubstituted,
    brain_box,
    brain_mask,
    crop_resize,
    paste_back,
)
from monai_lgg.transforms.components import remove_small_components


def _head(h: int = 256, w: int = 256, d: int = 6, rows=(60, 200), cols=(40, 220)) -> torch.Tensor:
    image = torch.zeros(3, h, w, d)
    image[:, rows[0] : rows[1], cols[0] : cols[1]] = 100.0
    image += torch.rand_like(image) * (image > 0)  # brain texture; background exactly 0
    return image


def test_brain_box_is_the_square_around_the_brain():
    mask = brain_mask(_head())
    assert brain_box(mask) == (40, 40, 180)  # rows 60..200 (140), columns 40..220 (180): side 180, centred
    empty = torch.zeros(256, 200, 3, dtype=torch.bool)
    assert brain_box(empty) == (0, -28, 256)  # the whole 256 x 200 image, squared around its centre


def test_crop_resize_and_paste_back_round_trip_the_grid():
    """A map on the box's grid goes back to the same place in the input's grid; outside the box is 0."""
    image = _head()
    box = brain_box(brain_mask(image))
    small = crop_resize(image, box, (90, 90))
    assert small.shape == (3, 90, 90, 6)
    ones = torch.ones(1, 90, 90, 6)
    back = paste_back(ones, box, (256, 256))
    assert back.shape == (1, 256, 256, 6)
    top, left, side = box
    assert back[0, top : top + side, left : left + side].min() > 0.99
    assert back[0, :top].abs().max() == 0 and back[0, :, left + side :].abs().max() == 0
    # an off-centre lesion keeps its place through crop -> resize -> back
    lesion = torch.zeros(1, 256, 256, 6)
    lesion[0, 150:180, 60:90, 2] = 1.0
    restored = paste_back(crop_resize(lesion, box, (128, 128)), box, (256, 256)) > 0.5
    dice = 2 * (restored & (lesion > 0)).sum() / (restored.sum() + (lesion > 0).sum())
    assert dice > 0.93


def test_box_leaving_the_image_is_zero_padded():
    image = _head(rows=(0, 256), cols=(100, 140))  # tall and narrow: the square box leaves the image sideways
    box = brain_box(brain_mask(image))
    assert box[1] < 0 or box[1] + box[2] > 256 or box[0] < 0
    out = crop_resize(image, box, (64, 64))
    assert out.shape == (3, 64, 64, 6) and out[:, :, :5].abs().max() == 0


def test_brain_crop_inverts_through_invertd_like_bundle_postprocessing():
    """The bundle's Invertd maps a prediction on the cropped grid back onto the input's grid with the input's meta."""
    image = MetaTensor(_head(), affine=torch.diag(torch.tensor([-1.0, -1.0, 2.0, 1.0])))
    preprocessing = Compose(
        [
            BrainCropd("image", spatial_size=(64, 64)),
        ]
    )
    data = preprocessing({"image": image})
    assert data["image"].shape == (3, 64, 64, 6)
    data["pred"] = MetaTensor(torch.ones(1, 64, 64, 6), meta=data["image"].meta)
    inverted = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)(data)["pred"]
    assert inverted.shape == (1, 256, 256, 6)
    assert torch.equal(inverted.affine, image.affine)
    assert inverted[0, 40:220, 40:220].min() > 0.99 and inverted[0, :30].max() == 0


def test_brain_crop_array_inverse():
    crop = BrainCrop((32, 32))
    out = crop(MetaTensor(_head()))
    assert out.shape == (3, 32, 32, 6)
    assert crop.inverse(out[:1]).shape == (1, 256, 256, 6)


def test_volume_normalisation_is_per_volume_over_the_brain():
    image = _head()
    image[0] *= 5.0  # channel scale differences vanish
    out = BrainNormalizeIntensity()(image)
    brain = brain_mask(image)
    for c in range(3):
        values = out[c][brain]
        assert abs(float(values.mean())) < 0.05 and abs(float(values.std()) - 1) < 0.05
    # a sequence replaced by FLAIR in the release stays identical to FLAIR after normalisation
    image[0] = image[1]
    out = BrainNormalizeIntensity()(image)
    assert torch.allclose(out[0], out[1])


def test_area_weighted_sampler_half_uniform_half_by_area():
    torch.manual_seed(0)
    areas = torch.zeros(1000)
    areas[:10] = 1000.0  # 10 large-tumour slices among 990 tumour-free ones
    indices = list(AreaWeightedSampler(areas, num_samples=20000))
    weighted, uniform = np.array(indices[0::2]), np.array(indices[1::2])
    # weighted draws: P(large) = 10000 / (10000 + 0.1 * 10 * 1000) = 0.909; uniform draws: 1 %
    assert 0.88 < (weighted < 10).mean() < 0.93
    assert (uniform < 10).mean() < 0.03
    with pytest.raises(ValueError):
        AreaWeightedSampler(areas, uniform_fraction=1.5)


def test_flair_substitution_batch_and_loader():
    torch.manual_seed(0)
    image = torch.stack([torch.full((4, 4), float(c)) for c in range(3)])[None].repeat(400, 1, 1, 1)
    aug = RandBatchAugment(flip_prob=0, affine_prob=0, intensity_prob=0, flair_prob=0.6)
    out, _ = aug(image)
    first = out[:, :, 0, 0]
    changed = (first[:, 0] == 1) | (first[:, 2] == 1)
    assert 0.5 < changed.float().mean() < 0.7  # ~ flair_prob
    assert torch.all(first[:, 1] == 1)  # FLAIR itself never changes
    assert ((first[:, 0] == 1) & (first[:, 2] == 1)).any() and ((first[:, 0] == 1) & (first[:, 2] == 2)).any()
    loader = RandFlairSubstituted("image", prob=1.0)
    loader.set_random_state(0)
    result = loader({"image": image[0]})["image"]
    assert torch.equal(result[1], image[0, 1]) and not torch.equal(result, image[0])
    grey = torch.zeros(1, 4, 4)
    assert torch.equal(loader({"image": grey})["image"], grey)


def test_onecycle_steps_per_iteration_and_ends_near_zero():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    sched = make_scheduler(opt, "onecycle", max_epochs=10, steps_per_epoch=5)
    assert sched.per_iteration
    lrs = []
    for _ in range(50):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(3e-3, rel=0.05)
    assert lrs[-1] < 3e-3 * 2e-3  # annealed to ~0 by the last step
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_scheduler(opt, "poly", max_epochs=10)


def test_flip_tta_averages_probabilities_of_the_mirror():
    class Left(torch.nn.Module):  # a "network" that sees only the left half: not mirror-symmetric
        def forward(self, x):
            out = torch.full_like(x[:, :1], -4.0)
            out[..., : x.shape[-1] // 2] = 4.0
            return out

    from monai.inferers import SimpleInferer

    x = torch.zeros(1, 3, 8, 8)
    plain = torch.sigmoid(SimpleInferer()(x, Left()))
    tta = torch.sigmoid(FlipTTAInferer(SimpleInferer())(x, Left()))
    assert torch.allclose(tta, torch.full_like(tta, 0.5), atol=1e-4)  # mean of sigmoid(4) and sigmoid(-4)
    assert not torch.allclose(plain, tta)
    assert torch.equal(FlipTTAInferer(SimpleInferer(), flip=False)(x, Left()), Left()(x))


def test_remove_small_components_keeps_a_second_real_lesion():
    mask = np.zeros((40, 40, 5), np.uint8)
    mask[5:20, 5:20, 1:4] = 1  # 675 voxels
    mask[25:33, 25:33, 2] = 1  # 64 voxels: ~9 % of the largest
    mask[38, 38, 0] = 1  # speckle
    assert remove_small_components(mask, 0.05).sum() == 675 + 64
    assert remove_small_components(mask, 0.2).sum() == 675
    assert remove_small_components(mask, 0.0).sum() == mask.sum()


def test_score_case_counts_false_positive_slices():
    label = np.zeros((10, 10, 4), bool)
    label[2:5, 2:5, 1] = True
    prob = np.zeros((10, 10, 4), np.uint8)
    prob[2:5, 2:5, 1] = 255
    prob[8, 8, 3] = 200  # a false positive on a tumour-free slice
    scores = score_case(prob, label)
    assert scores["fp_slices"] == 1 and scores["empty_slices"] == 3
    assert scores["dice"] == pytest.approx(18 / 19)
    assert score_case(prob, label, threshold=0.9)["fp_slices"] == 0
    assert score_case(np.zeros_like(prob), np.zeros_like(label))["dice"] == 1.0


def test_leave_one_fold_out_selection_never_uses_the_test_fold(tmp_path):
    """Fold 1's rule is chosen on fold 0 only: a rule that only helps fold 1 is not chosen for it."""
    label = np.zeros((10, 10, 3), bool)
    label[2:6, 2:6, 1] = True
    good = np.where(label, 255, 0).astype(np.uint8)
    speckled = good.copy()
    speckled[9, 9, 0] = 140  # a weak false positive: removed by threshold 0.6 only
    for i in range(3):
        np.savez(tmp_path / f"a{i}.npz", prob=good, label=label, fold=np.array(0), replaced=np.array(""))
        np.savez(tmp_path / f"b{i}.npz", prob=speckled, label=label, fold=np.array(1), replaced=np.array(""))
    record = select_postprocessing(tmp_path, candidates=[(0.5, 0.0), (0.6, 0.0)])
    assert record["chosen_per_fold"]["1"] == {"threshold": 0.5, "min_component_fraction": 0.0}  # fold 0 is indifferent
    assert record["ship"] == {"threshold": 0.6, "min_component_fraction": 0.0}  # all folds: 0.6 helps
    assert record["lofo"]["fp_slices"] == 3 and record["raw"]["fp_slices"] == 3


def test_fold_models_ship_as_one_half_precision_ensemble(tmp_path):
    """build_ensemble writes one weights-only state dict of all members (float16), with a sidecar that makes
    load_network build the ensemble; its output is the mean of the members' probabilities."""
    import json

    from monai_lgg.engines.bundle import bundle_network, trained_members
    from monai_lgg.inference.loading import load_network
    from monai_lgg.networks.ensemble import ProbabilityEnsemble
    from monai_lgg.studies.crossval import build_ensemble

    from .conftest import PROJECT_ROOT

    bundle = PROJECT_ROOT / "bundles" / "unet"
    members, paths = [], []
    for fold in range(2):
        torch.manual_seed(fold)
        net = bundle_network(bundle, in_channels=3, out_channels=1, spatial_size=[64, 64]).eval()
        if fold == 1:  # a deep BatchNorm variance as z-scored training reaches: beyond float16's 65504
            big = next(k for k in net.state_dict() if k.endswith("running_var"))
            net.state_dict()[big].fill_(2e5)
        path = tmp_path / f"fold{fold}" / "model.pt"
        path.parent.mkdir()
        torch.save(net.state_dict(), path)
        sidecar_path(path).write_text(
            json.dumps(
                {
                    "fold": fold,
                    "training_cases": [f"case{fold}"],
                    "validation_cases": ["case9"],
                    "geometry": "brain",
                    "spatial_size": [64, 64],
                    "in_channels": 3,
                    "out_channels": 1,
                    "epoch": 3,
                }
            )
        )
        members.append(net)
        paths.append(path)
    out = build_ensemble(paths, tmp_path / "ship" / "model.pt", record={"postprocessing": {"threshold": 0.5}})
    state = torch.load(out, weights_only=True)
    assert state[f"members.1.{big}"].dtype == torch.float32  # float16 would store inf and break the ensemble
    assert all(v.dtype == torch.float16 for k, v in state.items() if v.is_floating_point() and k != f"members.1.{big}")
    record = json.loads(sidecar_path(out).read_text())
    assert (
        record["members"] == 2 and record["training_cases"] == ["case0", "case1"] and record["spatial_size"] == [64, 64]
    )
    assert trained_members(out) == 2
    network, info = load_network(bundle, out)
    assert isinstance(network, ProbabilityEnsemble) and info.geometry == "brain" and info.spatial_size == (64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
        assert torch.allclose(torch.sigmoid(network(x)), expected, atol=5e-3)  # float16 storage


def test_build_ensemble_without_a_member_sidecar_names_it(tmp_path):
    """The sidecar lists the member's training patients, which the shipped record must carry: no silent skip."""
    from monai_lgg.errors import LGGInputError
    from monai_lgg.studies.crossval import build_ensemble

    path = tmp_path / "fold0" / "model.pt"
    path.parent.mkdir()
    torch.save(torch.nn.Conv2d(1, 1, 1).state_dict(), path)
    with pytest.raises(LGGInputError, match=r"fold0/model\.json: not found: the sidecar that names the member's"):
        build_ensemble([path], tmp_path / "ship" / "model.pt")


def test_weights_with_inf_or_nan_are_refused_naming_the_file(tmp_path):
    """Non-finite weights load silently in torch and give empty masks; loading refuses them in one line."""
    from monai_lgg.engines.bundle import bundle_network
    from monai_lgg.errors import LGGInputError
    from monai_lgg.inference.loading import load_state_dict

    from .conftest import PROJECT_ROOT

    net = bundle_network(PROJECT_ROOT / "bundles" / "unet", in_channels=3, out_channels=1, spatial_size=[64, 64])
    state = net.state_dict()
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = float("inf")
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(LGGInputError, match=f"{path.name}.*non-finite.*{key}"):
        load_state_dict(net, path)


def test_onecycle_resumes_exactly_and_extends_along_the_new_cycle():
    """Same epochs: the resumed schedule replays the uninterrupted one; more epochs: it continues (torch's own
    OneCycleLR keeps the checkpoint's length and fails past its last step)."""

    def run(epochs: int, state: dict | None = None, steps: int = 6) -> tuple[list[float], dict]:
        opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
        sched = make_scheduler(opt, "onecycle", max_epochs=epochs, steps_per_epoch=3)
        if state is not None:
            sched.load_state_dict(state)
        lrs = []
        for _ in range(steps):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs, sched.state_dict()

    full, _ = run(4, steps=12)
    first, state = run(4, steps=6)
    assert first + run(4, state)[0] == full
    _, finished = run(2, steps=6)
    extended, _ = run(4, finished, steps=6)  # would raise "Tried to step 7 times" with torch's OneCycleLR
    assert extended[-1] < extended[0] and len(extended) == 6


def test_paired_difference_of_two_cross_validations():
    """Pairs by patient (order and extra patients do not matter) and counts better/worse, ties neither."""
    ours = [
        {"case": "a", "dice": 0.9},
        {"case": "b", "dice": 0.5},
        {"case": "c", "dice": 0.7},
        {"case": "x", "dice": 0.1},
    ]
    theirs = [{"case": "c", "dice": 0.7}, {"case": "b", "dice": 0.6}, {"case": "a", "dice": 0.6}]
    paired = paired_difference(ours, theirs)
    assert paired["patients"] == 3 and (paired["better"], paired["worse"]) == (1, 1)
    assert paired["mean_difference"] == pytest.approx((0.3 - 0.1 + 0.0) / 3)
    assert paired["ci_low"] <= paired["mean_difference"] <= paired["ci_high"]
    with pytest.raises(ValueError, match="no patient"):
        paired_difference(ours, [{"case": "z", "dice": 1.0}])


def test_ensemble_of_two_cross_validations_averages_each_fold(tmp_path):
    """Two CVs' out-of-fold probabilities average per case (shared keys only); folds filter; mismatches refuse."""
    label = np.zeros((4, 4, 2), bool)
    label[1:3, 1:3, 0] = True
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for fold, case in ((0, "p0"), (1, "p1")):
        np.savez(
            a / f"{case}.npz",
            prob=np.full(label.shape, 200, np.uint8),
            prob_notta=np.full(label.shape, 10, np.uint8),
            label=label,
            fold=np.array(fold),
            replaced=np.array(""),
        )
        np.savez(
            b / f"{case}.npz",
            prob=np.full(label.shape, 101, np.uint8),
            label=label,
            fold=np.array(fold),
            replaced=np.array(""),
        )
    out = average_out_of_fold([a, b], tmp_path / "ab")
    with np.load(out / "p0.npz") as data:
        assert set(data.files) == {"prob", "label", "fold", "replaced"}  # prob_notta: only one member has it
        assert (data["prob"] == 150).all() and data["prob"].dtype == np.uint8  # (200 + 101) / 2 rounded
    only = average_out_of_fold([a, b], tmp_path / "ab1", folds=[1])
    assert sorted(p.stem for p in only.glob("*.npz")) == ["p1"]
    assert select_postprocessing(a, folds=[1])["cases"] == 1
    np.savez(b / "p1.npz", prob=np.zeros(label.shape, np.uint8), label=~label, fold=np.array(1), replaced=np.array(""))
    with pytest.raises(ValueError, match="p1.npz: fold or label differs"):
        average_out_of_fold([a, b], tmp_path / "bad")
    (b / "p0.npz").unlink()
    with pytest.raises(ValueError, match="do not hold the same patients"):
        average_out_of_fold([a, b], tmp_path / "bad")


@pytest.mark.parametrize(
    "option, message",
    [
        (["--members", "attentionunet"], "is not BUNDLE=CELL_DIR"),
        (["--members", "unet=/no/such/cell"], "is not a folder"),
        (["--thresholds", "0.3,0.4"], "including 0.5"),
        (["--thresholds", "low"], "not a comma-separated list"),
    ],
)
def test_crossval_report_rejects_bad_options_in_one_line(tmp_path, option, message):
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "crossval_report.py"
    run = subprocess.run(
        [sys.executable, str(tool), str(tmp_path), "datalist.json", str(tmp_path / "out"), *option],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
