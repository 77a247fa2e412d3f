"""One parameterised tester for every network the project uses, on tiny configurations."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
from monai.losses import DeepSupervisionLoss, DiceLoss
from monai.networks.nets import UNETR, AttentionUnet, BasicUNet, UNet

from monai_lgg.networks import DeepSupervisionWrapper, TransUNet, UNeXt, basic_unetplusplus
from monai_lgg.networks.unext import ShiftedMLPBlock, _shift

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

SIZE = (32, 32)
BATCH = 2
TINY_BUNPP = {"features": (4, 4, 8, 8, 16, 4)}
TINY_TRANSUNET = {
    "img_size": SIZE,
    "features": (4, 8, 16),
    "hidden_size": 16,
    "mlp_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
}
TINY_UNEXT = {"features": (4, 8, 8, 16, 16)}


@dataclass(frozen=True)
class NetCase:
    """A network under test: ``build(in_channels, out_channels)``, why TorchScript fails (if it does),
    the parameter-name fragments known to get no gradient and the input size (a network that downsamples
    5 times needs more than 32 pixels for batch norm to see two values per channel in training)."""

    name: str
    build: Callable[[int, int], nn.Module]
    script_skip: str | None = None
    unused_params: tuple[str, ...] = ()
    size: tuple[int, int] = SIZE


# dropout > 0 wherever the network has it, so the eval-determinism check can fail
CASES = [
    NetCase(
        "UNet",
        lambda i, o: UNet(2, i, o, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=2, dropout=0.1),
    ),
    NetCase("BasicUNet", lambda i, o: BasicUNet(2, i, o, features=(4, 4, 8, 8, 16, 4), dropout=0.1)),
    NetCase("BasicUNetPlusPlus", lambda i, o: basic_unetplusplus(2, i, o, dropout=0.1, **TINY_BUNPP)),
    NetCase(
        "UNETR",
        lambda i, o: UNETR(
            i, o, SIZE, feature_size=4, hidden_size=16, mlp_dim=32, num_heads=2, dropout_rate=0.1, spatial_dims=2
        ),
        unused_params=("norm_cross_attn",),  # MONAI's TransformerBlock builds it even without cross-attention
    ),
    NetCase("TransUNet", lambda i, o: TransUNet(2, i, o, dropout_rate=0.1, **TINY_TRANSUNET)),
    NetCase(
        "AttentionUnet", lambda i, o: AttentionUnet(2, i, o, channels=(4, 8, 16, 32), strides=(2, 2, 2), dropout=0.1)
    ),
    NetCase("UNeXt", lambda i, o: UNeXt(2, i, o, dropout=0.1, **TINY_UNEXT), size=(64, 64)),
]
CASE_IDS = [c.name for c in CASES]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _heads(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


# generic checks


@pytest.mark.parametrize("out_channels", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_output_shape(case: NetCase, out_channels: int) -> None:
    net = case.build(3, out_channels).eval()
    with torch.no_grad():
        y = net(torch.rand(BATCH, 3, *case.size))
    assert isinstance(y, torch.Tensor)
    assert y.shape == (BATCH, out_channels, *case.size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_batch_size_one(case: NetCase) -> None:
    net = case.build(3, 1)
    x = torch.rand(1, 3, *case.size)
    with torch.no_grad():
        assert net.eval()(x).shape == (1, 1, *case.size)
        assert all(h.shape == (1, 1, *case.size) for h in _heads(net.train()(x)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradients_reach_all_parameters(case: NetCase) -> None:
    net = case.build(3, 1).train()
    target = torch.rand(BATCH, 1, *case.size)
    heads = _heads(net(torch.rand(BATCH, 3, *case.size)))
    sum(((h - target) ** 2).mean() for h in heads).backward()
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert params
    missing = [n for n, p in params if p.grad is None and not any(u in n for u in case.unused_params)]
    assert not missing, f"no gradient for {missing}"
    grads = [p.grad for _, p in params if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_eval_is_deterministic(case: NetCase) -> None:
    net = case.build(3, 1).eval()
    x = torch.rand(BATCH, 3, *case.size)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_torchscript_matches_eager(case: NetCase) -> None:
    if case.script_skip:
        pytest.skip(case.script_skip)
    net = case.build(3, 1).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    x = torch.rand(BATCH, 3, *case.size)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_trace_matches_eager(case: NetCase) -> None:
    net = case.build(3, 1).eval()
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.rand(BATCH, 3, *case.size))
        x = torch.rand(BATCH, 3, *case.size)  # not the tracing input, so nothing input-specific may be baked in
        torch.testing.assert_close(traced(x), net(x), rtol=1e-4, atol=1e-5)


# TransUNet


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"features": (8,)}, "features"),
        ({"features": (4, 0, 8)}, "features"),
        ({"img_size": (32, 30)}, "divisible"),
        ({"img_size": 36, "features": (4, 8, 16, 32)}, "divisible"),
        ({"hidden_size": 18, "num_heads": 4}, "num_heads"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
    ],
)
def test_transunet_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TransUNet(**{**TINY_TRANSUNET, **kwargs})


def test_transunet_rejects_other_input_size() -> None:
    net = TransUNet(**TINY_TRANSUNET)
    with pytest.raises(ValueError, match="spatial shape"):
        net(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 64)), (3, (16, 16, 8))], ids=["2d-non-square", "3d"])
def test_transunet_other_shapes(spatial_dims: int, size: tuple[int, ...]) -> None:
    net = TransUNet(spatial_dims, 2, 3, **{**TINY_TRANSUNET, "img_size": size}).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 2, *size)).shape == (1, 3, *size)


def test_transunet_default_is_cpu_sized() -> None:
    n_params = sum(p.numel() for p in TransUNet().parameters())
    assert 2e6 < n_params < 8e6, n_params


# UNeXt


@pytest.mark.parametrize(
    "in_channels, out_channels, size",
    [(3, 1, (32, 32)), (1, 2, (64, 96)), (4, 3, (128, 128)), (3, 1, (100, 70))],
    ids=["32", "64x96", "128-4in-3out", "not-divisible-by-32"],
)
def test_unext_output_shapes(in_channels: int, out_channels: int, size: tuple[int, int]) -> None:
    net = UNeXt(2, in_channels, out_channels, **TINY_UNEXT).eval()
    with torch.no_grad():
        assert net(torch.rand(2, in_channels, *size)).shape == (2, out_channels, *size)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 3}, "2D images only"),
        ({"in_channels": 0}, "in_channels"),
        ({"features": (4, 8, 16, 32)}, "five positive"),
        ({"features": (4, 8, 0, 16, 16)}, "five positive"),
        ({"shift_size": 4}, "odd"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_unext_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNeXt(**{**TINY_UNEXT, **kwargs})


def test_unext_default_has_the_papers_size() -> None:
    n_params = sum(p.numel() for p in UNeXt().parameters())
    assert 1.45e6 < n_params < 1.50e6, n_params  # the paper reports 1.47 M


def test_unext_channel_groups() -> None:
    assert ShiftedMLPBlock._groups(12, 5) == ([3, 3, 2, 2, 2], [-2, -1, 0, 1, 2])
    assert ShiftedMLPBlock._groups(3, 5) == ([1, 1, 1], [-2, -1, 0])  # fewer channels than groups: no empty group


@pytest.mark.parametrize("dim", [1, 2], ids=["height", "width"])
def test_unext_shift_moves_each_group_with_zero_fill(dim: int) -> None:
    """Channel c of group shift s at position i holds the input at i - s, and zero where that is outside the map."""
    x = torch.rand(2, 6, 7, 5)  # (B, H, W, C): one channel per group
    sizes, shifts = ShiftedMLPBlock._groups(5, 5)
    out = _shift(x, dim, sizes, shifts, pad=2)
    assert out.shape == x.shape
    length = x.shape[dim]
    for c, s in enumerate(shifts):
        expected = torch.zeros_like(x[..., c])
        for i in range(length):
            if 0 <= i - s < length:
                expected.select(dim, i).copy_(x[..., c].select(dim, i - s))
        torch.testing.assert_close(out[..., c], expected, rtol=0, atol=0)


def test_unext_channels_last_and_bf16() -> None:
    """The CPU recipe trains in channels-last memory under bf16 autocast: channels-last gives the same result, bf16
    a close one."""
    net = UNeXt(**TINY_UNEXT).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = net(x)
        last = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    torch.testing.assert_close(last, reference, rtol=1e-4, atol=1e-5)
    assert low.shape == reference.shape and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.05)


def test_unext_onnx_matches_eager(tmp_path) -> None:
    """``monai-lgg export`` also writes ONNX: the shift, the LayerNorms and the resizing to the skips' sizes export."""
    pytest.importorskip("onnxruntime")
    from monai_lgg.inference.export import export_onnx

    net = UNeXt(**TINY_UNEXT).eval()
    # a batch size other than the traced one, as monai-lgg export checks
    diff = export_onnx(net, tmp_path / "unext.onnx", torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64), 1e-4)
    assert diff < 1e-4


# DeepSupervisionWrapper


@pytest.mark.parametrize("final_first", [True, False])
def test_wrapper_train_list_eval_tensor(final_first: bool) -> None:
    net = basic_unetplusplus(2, 3, 1, final_first=final_first, **TINY_BUNPP)
    x = torch.rand(BATCH, 3, *SIZE)
    with torch.no_grad():
        train_out, raw_train = net.train()(x), net.network(x)
        eval_out, raw_eval = net.eval()(x), net.network(x)
    assert isinstance(train_out, list) and len(train_out) == 4
    expected = raw_train[::-1] if final_first else raw_train
    assert all(torch.equal(a, b) for a, b in zip(train_out, expected, strict=True))
    assert isinstance(eval_out, torch.Tensor)
    assert torch.equal(eval_out, raw_eval[-1])
    # instance norm without running stats and no dropout: the final head is the same in both modes
    torch.testing.assert_close(eval_out, train_out[0 if final_first else -1])


def test_wrapper_without_deep_supervision() -> None:
    net = basic_unetplusplus(2, 3, 1, deep_supervision=False, **TINY_BUNPP)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert len(net.train()(x)) == 1
        assert net.eval()(x).shape == (1, 1, *SIZE)


def test_wrapper_rejects_single_tensor_network() -> None:
    net = DeepSupervisionWrapper(BasicUNet(2, 3, 1, features=(4, 4, 8, 8, 16, 4))).eval()
    with pytest.raises(TypeError, match="list of tensors"):
        net(torch.rand(1, 3, *SIZE))


def test_scripted_wrapper_follows_mode() -> None:
    net = basic_unetplusplus(2, 3, 1, **TINY_BUNPP)
    scripted = torch.jit.script(net)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert isinstance(scripted.train()(x), list)
        torch.testing.assert_close(scripted.eval()(x), net.eval()(x))


def test_wrapper_with_deep_supervision_loss() -> None:
    net = basic_unetplusplus(2, 3, 1, **TINY_BUNPP).train()
    loss_fn = DeepSupervisionLoss(DiceLoss(sigmoid=True))
    loss = loss_fn(net(torch.rand(BATCH, 3, *SIZE)), (torch.rand(BATCH, 1, *SIZE) > 0.5).float())
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert net.network.final_conv_0_4.weight.grad is not None
    assert net.network.final_conv_0_1.weight.grad is not None
