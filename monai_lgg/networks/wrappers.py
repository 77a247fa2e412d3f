"""Wrappers that adapt multi-output (deeply supervised) networks to the single-tensor MONAI workflow."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNetPlusPlus

__all__ = ["DeepSupervisionWrapper", "basic_unetplusplus"]


class DeepSupervisionWrapper(nn.Module):
    """Return all heads of a deeply supervised network in training and only the final head in evaluation.

    The wrapped network must return a list of tensors whose last element is the final output, as MONAI's
    ``BasicUNetPlusPlus`` does (it always returns a list, ``[output_0_1, ..., output_0_4]`` with
    ``deep_supervision=True`` and ``[output_0_4]`` otherwise).

    * ``training`` mode: the list of heads, so ``monai.losses.DeepSupervisionLoss`` can weight all of them.
      With ``final_first=True`` (default) the list is reversed so the final head comes first:
      ``DeepSupervisionLoss`` gives index 0 the largest weight (``"exp"``: 1, 0.5, 0.25, ...; ``"two"``: 1, 0.5,
      ...), whereas ``BasicUNetPlusPlus`` puts its shallowest auxiliary head first.
    * eval mode: the final head as one tensor, for metrics, post-processing, inferers, ``verify_net_in_out``
      and TorchScript export.

    TorchScript: the wrapper can be scripted (``forward`` returns ``Tensor | list[Tensor]``; a
    scripted copy still switches on ``.train()``/``.eval()``). ``torch.jit.trace`` works but freezes the mode
    it was traced in, so trace in eval mode to export the single-tensor network.

    The state-dict keys carry a ``network.`` prefix relative to the bare network's.

    Args:
        network: a module whose ``forward`` returns a list of tensors, the final head last.
        final_first: in training mode, return the heads final-first (reversed) instead of in the network's order.

    Example::

        >>> net = DeepSupervisionWrapper(BasicUNetPlusPlus(spatial_dims=2, deep_supervision=True))
        >>> [h.shape[1] for h in net.train()(torch.rand(2, 1, 64, 64))]
        [2, 2, 2, 2]
        >>> net.eval()(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 2, 64, 64])
    """

    def __init__(self, network: nn.Module, final_first: bool = True) -> None:
        super().__init__()
        self.network = network
        self.final_first = final_first

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        heads: list[torch.Tensor] = self.network(x)
        if not isinstance(heads, (list, tuple)):  # eager only: heads[-1] of a tensor would silently index the batch
            raise TypeError(f"the wrapped network must return a list of tensors, got {type(heads).__name__}.")
        if self.training:
            return heads[::-1] if self.final_first else heads
        return heads[-1]


def basic_unetplusplus(
    spatial_dims: int = 2,
    in_channels: int = 3,
    out_channels: int = 1,
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    deep_supervision: bool = True,
    act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    norm: str | tuple = ("instance", {"affine": True}),
    bias: bool = True,
    dropout: float | tuple = 0.0,
    upsample: str = "deconv",
    final_first: bool = True,
) -> DeepSupervisionWrapper:
    """Build MONAI's ``BasicUNetPlusPlus`` wrapped in :class:`DeepSupervisionWrapper`.

    Meant for bundle configs: ``{"_target_": "monai_lgg.networks.wrappers.basic_unetplusplus", ...}``.
    The arguments other than ``final_first`` are those of ``monai.networks.nets.BasicUNetPlusPlus``, with the
    same defaults except ``spatial_dims=2``, ``in_channels=3``, ``out_channels=1`` and ``deep_supervision=True``.

    With ``deep_supervision=False`` the training output is a one-element list and the three auxiliary 1x1
    heads MONAI still builds get no gradient (set ``find_unused_parameters=True`` under DDP).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels.
        features: six channel numbers, the encoder's five then the final decoder stage's.
        deep_supervision: return the four heads in training (else only the final one).
        act: activation type and arguments.
        norm: normalisation type and arguments.
        bias: whether the convolutions have a bias.
        dropout: dropout ratio.
        upsample: upsampling mode, ``"deconv"``, ``"pixelshuffle"`` or ``"nontrainable"``.
        final_first: see :class:`DeepSupervisionWrapper`.

    Returns:
        the wrapped network.

    Example::

        >>> net = basic_unetplusplus(in_channels=3, out_channels=1)
        >>> net.eval()(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """
    network = BasicUNetPlusPlus(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=features,
        deep_supervision=deep_supervision,
        act=act,
        norm=norm,
        bias=bias,
        dropout=dropout,
        upsample=upsample,
    )
    return DeepSupervisionWrapper(network, final_first=final_first)
