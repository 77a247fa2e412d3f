"""Every speed option against the plain path on CPU: same inputs -> same outputs / loss, same augmentation law.

No timings are asserted here (``tools/benchmark.py`` measures speed); these tests only check that the fast
paths compute what the plain MONAI path computes.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.networks.nets import UNet
from monai.transforms import Affine, Compose, Flip, SpatialCrop, SpatialPad
from scipy.stats import ks_2samp

from monai_lgg.data.datalist import load_fold
from monai_lgg.data.datasets import VolumeSliceDataset
from monai_lgg.data.slice_bank import SliceBank, batch_loader
from monai_lgg.engines import FastInferer, fast_default, make_loss, make_optimizer, prepare_network, train_loader
from monai_lgg.engines.performance import DEVICE_DEFAULTS, cpu_has_bf16, device_defaults
from monai_lgg.transforms import presets
from monai_lgg.transforms.batch import RandBatchAugment, affine_grid

from .conftest import PROJECT_ROOT, converted_synthetic

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """5 synthetic patients x 6 slices of 64 x 64, converted (5 folds: 3 training patients in fold 0)."""
    return converted_synthetic(
        tmp_path_factory.mktemp("fast"), num_patients=5, num_slices=6, size=64, num_folds=5, seed=3
    )


@pytest.fixture(scope="module")
def volumes(tiny) -> VolumeSliceDataset:
    """Training slices with preprocessing only (no augmentation): the plain path's deterministic half."""
    items = load_fold(tiny / "datalist.json", split="all")
    chain = Compose(presets.preprocess())
    return VolumeSliceDataset(items, slice_transform=chain, positive_fraction=0.5, progress=False)


def _params(aug: RandBatchAugment, n: int, size: tuple[int, int], **fixed) -> dict[str, torch.Tensor]:
    params = aug.randomize(n, size, CPU)
    params.update(
        {
            "flip": torch.zeros(n, dtype=torch.bool),
            "affine": torch.zeros(n, dtype=torch.bool),
            "shift_on": torch.zeros(n, dtype=torch.bool),
            "scale_on": torch.zeros(n, dtype=torch.bool),
        }
    )
    params.update(fixed)
    return params


# ------------------------------------------------------------------------------------------ batched augmentation
def test_batch_augment_has_the_preset_arguments():
    """RandBatchAugment takes presets.augment's arguments with the same defaults (so configs can share them)."""
    preset = {k: p.default for k, p in inspect.signature(presets.augment).parameters.items()}
    del preset["image_key"], preset["label_key"]
    batch = {k: p.default for k, p in inspect.signature(RandBatchAugment).parameters.items()}
    assert batch == preset
    with pytest.raises(ValueError, match="elastic"):
        RandBatchAugment(elastic_prob=0.2)


def test_batch_augment_geometry_matches_monai():
    """Flip + rotation + anisotropic scaling in one grid equal MONAI Flip then Affine (bilinear / nearest, zeros)."""
    torch.manual_seed(0)
    h, w = 40, 56  # not square: the normalised-coordinate conversion must be per axis
    image = torch.rand(3, 3, h, w)
    label = (torch.rand(3, 1, h, w) > 0.7).float()
    aug = RandBatchAugment()
    params = _params(
        aug,
        3,
        (h, w),
        flip=torch.tensor([False, True, True]),
        affine=torch.tensor([True, True, False]),
        angle=torch.tensor([0.2, -0.25, 0.1]),
        zoom=torch.tensor([[1.04, 0.97], [0.96, 1.02], [1.0, 1.0]]),
    )
    out_image, out_label = aug.apply(image, label, params)
    for b in range(3):
        x, y = image[b], label[b]
        if params["flip"][b]:
            x, y = Flip(spatial_axis=1)(x), Flip(spatial_axis=1)(y)
        if params["affine"][b]:
            kw = {
                "rotate_params": [float(params["angle"][b])],
                "scale_params": params["zoom"][b].tolist(),
                "padding_mode": "zeros",
                "image_only": True,
            }
            x, y = Affine(mode="bilinear", **kw)(x), Affine(mode="nearest", **kw)(y)
        torch.testing.assert_close(out_image[b], torch.as_tensor(x).as_tensor(), atol=1e-4, rtol=0)
        mismatch = (out_label[b] != torch.as_tensor(y).as_tensor()).float().mean()
        assert mismatch < 2e-3, f"label differs on {mismatch:.4f} of the pixels"  # ties at exactly .5 may round apart


@pytest.mark.parametrize("size", [(48, 40), (24, 20), (40, 24), (33, 21)])
def test_batch_augment_pad_and_crop_match_monai(size, roi=(32, 32)):
    """spatial_size pads symmetrically (SpatialPad) and crops a random window (RandSpatialCrop) like the preset."""
    torch.manual_seed(1)
    image = torch.rand(6, 2, *size)
    aug = RandBatchAugment(spatial_size=roi)
    params = _params(aug, 6, size)
    out, _ = aug.apply(image, None, params)
    assert out.shape == (6, 2, *roi)
    for b in range(6):
        padded = SpatialPad(roi)(image[b])
        # the crop's centred offset in the input -> its start in the padded image (pad_before = width // 2)
        pad_before = [(padded.shape[d + 1] - size[d]) // 2 for d in (0, 1)]
        start = [float(params["crop"][b, d]) - (roi[d] - 1) / 2 + pad_before[d] + (size[d] - 1) / 2 for d in (0, 1)]
        for d, s in enumerate(start):  # a whole-pixel start inside the padded image
            assert abs(s - round(s)) < 1e-6 and 0 <= round(s) <= padded.shape[d + 1] - roi[d]
        start = [round(s) for s in start]
        expected = SpatialCrop(roi_start=start, roi_end=[s + r for s, r in zip(start, roi, strict=True)])(padded)
        torch.testing.assert_close(out[b], torch.as_tensor(expected).as_tensor(), atol=1e-5, rtol=0)


def test_batch_augment_intensity():
    image = torch.rand(4, 3, 8, 8)
    aug = RandBatchAugment()
    params = _params(
        aug,
        4,
        (8, 8),
        shift_on=torch.tensor([True, False, True, False]),
        scale_on=torch.tensor([True, True, False, False]),
    )
    out, _ = aug.apply(image, None, params)
    offset = torch.where(params["shift_on"], params["offset"], 0.0)[:, None, None, None]
    factor = torch.where(params["scale_on"], 1 + params["factor"], 1.0)[:, None, None, None]
    torch.testing.assert_close(out, (image + offset) * factor, atol=1e-5, rtol=0)


def _monai_draws(n: int, seed: int) -> dict[str, np.ndarray]:
    """Run the preset chain ``n`` times and read back what each random transform drew."""
    chain = Compose(presets.augment()).set_random_state(seed=seed)
    flip, affine, shift, scale = (chain.transforms[i] for i in range(4))
    keys = ("flip", "affine", "angle", "zoom", "shift_on", "offset", "scale_on", "factor")
    draws: dict[str, list] = {k: [] for k in keys}
    data = {"image": torch.rand(3, 8, 8), "label": torch.zeros(1, 8, 8)}
    for _ in range(n):
        chain(dict(data))
        draws["flip"].append(flip._do_transform)
        grid = affine.rand_affine.rand_affine_grid
        draws["affine"].append(affine._do_transform)
        if affine._do_transform:
            draws["angle"].append(grid.rotate_params[0])
            draws["zoom"].append(grid.scale_params)
        draws["shift_on"].append(shift._do_transform)
        if shift._do_transform:
            draws["offset"].append(shift.shifter._offset)
        draws["scale_on"].append(scale._do_transform)
        if scale._do_transform:
            draws["factor"].append(scale.scaler.factor)
    return {k: np.asarray(v, dtype=float) for k, v in draws.items()}


def test_batch_augment_draws_follow_the_monai_distributions():
    """On a fixed seed, flips / rotations / scalings / intensity changes happen as often and as large as in MONAI."""
    n = 3000
    monai = _monai_draws(n, seed=0)
    torch.manual_seed(0)
    p = RandBatchAugment().randomize(n, (8, 8), CPU)
    ours = {k: v.numpy().astype(float) for k, v in p.items()}
    for key in ("flip", "affine", "shift_on", "scale_on"):
        assert abs(ours[key].mean() - monai[key].mean()) < 0.04, key  # both ~ Bernoulli(0.5): 4 sigma ~ 0.036
    chosen = {
        "angle": ours["angle"][p["affine"].numpy()],
        "offset": ours["offset"][p["shift_on"].numpy()],
        "factor": ours["factor"][p["scale_on"].numpy()],
    }
    zoom = ours["zoom"][p["affine"].numpy()]
    for key, values in chosen.items():
        assert ks_2samp(values, monai[key]).pvalue > 0.001, key
    for axis in (0, 1):
        assert ks_2samp(zoom[:, axis], monai["zoom"][:, axis]).pvalue > 0.001, f"zoom axis {axis}"
    assert np.abs(chosen["angle"]).max() <= math.radians(15) + 1e-6 and np.abs(zoom - 1).max() <= 0.05 + 1e-6


# ------------------------------------------------------------------------------------------ slice bank
def test_affine_grid_equals_torch():
    theta = torch.randn(4, 2, 3)
    for size in ((16, 16), (12, 20)):
        expected = torch.nn.functional.affine_grid(theta, [4, 1, *size], align_corners=False)
        torch.testing.assert_close(affine_grid(theta, size), expected, atol=1e-6, rtol=1e-6)


def test_slice_bank_serves_the_plain_pipeline_slices(volumes):
    """Without augmentation, a bank batch equals the MONAI per-sample preprocessing of the same items.

    Images are stored as float16: within 2.5e-3 of the float32 chain (z-scores clipped to +-5).
    """
    bank = SliceBank(volumes, augment=None)
    assert len(bank) == len(volumes) and (bank.images.dtype, bank.labels.dtype) == (torch.float16, torch.uint8)
    picks = [0, 3, len(volumes) - 1, 7]
    batch = bank.__getitems__(picks)
    for b, i in enumerate(picks):
        item = volumes[i]
        torch.testing.assert_close(batch["image"][b], torch.as_tensor(item["image"]).as_tensor(), atol=2.5e-3, rtol=0)
        torch.testing.assert_close(batch["label"][b], torch.as_tensor(item["label"]).as_tensor())
    single = bank[picks[1]]
    torch.testing.assert_close(single["image"], batch["image"][1])


def test_train_loader_paths_give_the_same_batches_without_augmentation(volumes):
    """The 'loader' and 'batch' paths serve identical tensors for the same indices when augmentation is off."""
    no_aug = {"flip_prob": 0.0, "affine_prob": 0.0, "intensity_prob": 0.0}
    fast = train_loader(volumes, 4, augmentation="batch", shuffle=False, **no_aug)
    plain = train_loader(volumes, 4, augmentation="loader", shuffle=False)
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a["image"], torch.as_tensor(b["image"]).as_tensor(), atol=2.5e-3, rtol=0)
        torch.testing.assert_close(a["label"], torch.as_tensor(b["label"]).float())
    with pytest.raises(ValueError, match="augmentation"):
        train_loader(volumes, 4, augmentation="gpu")


def test_batch_loader_with_distributed_sampler(volumes):
    sampler = torch.utils.data.DistributedSampler(volumes, num_replicas=2, rank=1, shuffle=True, seed=0)
    loader = batch_loader(volumes, 3, sampler=sampler, augment=RandBatchAugment())
    assert len(loader) == math.ceil(math.ceil(len(volumes) / 2) / 3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["label"].shape == (3, 1, 64, 64)
    assert set(batch["label"].unique().tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------------------------------ network options
def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(2, 3, 1, (8, 16, 32), (2, 2), num_res_units=1, norm="batch")


def _loss(inferer: FastInferer, network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return make_loss("dicece")(inferer(x, network), y)


def test_channels_last_same_loss():
    x, y = torch.randn(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.8).float()
    reference = _loss(FastInferer(), prepare_network(_net(), CPU), x, y)
    net = prepare_network(_net(), CPU, channels_last=True)
    assert net.model[0].conv.unit0.conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_loss(FastInferer(channels_last=True), net, x, y), reference, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_close_loss_and_float_outputs():
    x, y = torch.randn(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.8).float()
    reference = _loss(FastInferer(), _net(), x, y)
    inferer = FastInferer(precision="bf16")
    assert inferer(x, _net()).dtype == torch.float32
    assert inferer(x, lambda t: [t.bfloat16(), t.bfloat16()])[1].dtype == torch.float32  # deep-supervision lists
    torch.testing.assert_close(_loss(inferer, _net(), x, y), reference, atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="precision"):
        FastInferer(precision="fp8")


def test_fused_optimizer_same_update():
    nets = [_net(), _net()]
    x = torch.randn(2, 3, 32, 32)
    for net, fused in zip(nets, (False, True), strict=True):
        optimizer = make_optimizer("adamw", net.parameters(), lr=1e-2, fused=fused)
        assert bool(optimizer.defaults.get("fused")) == fused
        net(x).mean().backward()
        optimizer.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not make_optimizer("adamw", _net().parameters()).defaults.get("fused")  # CPU default: not fused


@pytest.mark.slow
def test_compiled_training_network_same_loss():
    """torch.compile (as SupervisedTrainer(compile=True) does) gives the eager loss and gradients."""
    x, y = torch.randn(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.8).float()
    eager, compiled = _net(), _net()
    loss_e = _loss(FastInferer(), eager, x, y)
    loss_c = _loss(FastInferer(), torch.compile(compiled), x, y)
    torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
    loss_e.backward()
    loss_c.backward()
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------ bundle options
def test_device_defaults():
    assert set(DEVICE_DEFAULTS["cpu"]) == set(DEVICE_DEFAULTS["cuda"])
    cpu = device_defaults("cpu")
    assert cpu["augmentation"] == "batch" and cpu["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert device_defaults("cuda:0") == DEVICE_DEFAULTS["cuda"] and fast_default("precision", "cuda") == "bf16"
    with pytest.raises(KeyError, match="unknown speed option"):
        fast_default("turbo", "cpu")


@pytest.mark.parametrize(
    "options",
    [
        {"augmentation": "loader", "precision": "fp32", "channels_last": False},
        {"augmentation": "batch", "precision": "bf16", "channels_last": True},
    ],
)
def test_bundle_trains_with_the_options(tiny, tmp_path, options):
    """The same train.json trains with the plain and the fast options (one short epoch, no validation)."""
    workflow = ConfigWorkflow(
        config_file=str(PROJECT_ROOT / "bundles" / "unet" / "configs" / "train.json"),
        workflow_type="train",
        bundle_root=str(PROJECT_ROOT / "bundles" / "unet"),
        dataset_dir=str(tiny),
        spatial_size=[64, 64],
        batch_size=4,
        epochs=1,
        ckpt_dir=str(tmp_path / "models"),
        log_dir=str(tmp_path / "logs"),
        output_dir=str(tmp_path / "eval"),
        resume=False,
        network_args={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
        **options,
    )
    workflow.initialize()
    workflow.parser["train#handlers"] = []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert (trainer.amp, type(trainer.inferer).__name__) == (False, "FastInferer")
    trainer.run()
    losses = trainer.state.output
    loss = float((losses[0] if isinstance(losses, list) else losses)["loss"])
    assert math.isfinite(loss) and trainer.state.iteration == len(trainer.data_loader)


# ------------------------------------------------------------------------------------------ GPU (skipped without one)
def cuda(test):
    """A test that needs a CUDA GPU: skipped without one, selected by ``pytest -m cuda`` (tools/gpu_suite.py)."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@cuda
def test_gpu_augmentation_equals_cpu():
    """The same drawn parameters give the same batch on the GPU as on the CPU."""
    aug = RandBatchAugment(spatial_size=(48, 48))
    image, label = torch.rand(6, 3, 64, 56), (torch.rand(6, 1, 64, 56) > 0.7).float()
    params = aug.randomize(6, (64, 56), CPU)
    expected = aug.apply(image, label, params)
    gpu = torch.device("cuda")
    result = aug.apply(image.to(gpu), label.to(gpu), {k: v.to(gpu) for k, v in params.items()})
    torch.testing.assert_close(result[0].cpu(), expected[0], atol=1e-4, rtol=0)
    assert (result[1].cpu() != expected[1]).float().mean() < 2e-3


@cuda
def test_gpu_bank_batches_do_not_synchronize(volumes):
    """A GPU bank batch (gather + augmentation) runs with no device -> host synchronisation."""
    bank = SliceBank(volumes, "cuda", RandBatchAugment())
    bank.__getitems__([0, 1])  # warm-up (allocations, pinned buffer)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = bank.__getitems__([3, 1, 4, 1])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert batch["image"].is_cuda and batch["image"].shape == (4, 3, 64, 64)
