"""TransUNet: a CNN-Transformer hybrid encoder with a cascaded upsampling decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetResBlock, UnetrUpBlock
from monai.networks.blocks.dynunet_block import get_conv_layer
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets import ViT
from monai.utils import ensure_tuple_rep

__all__ = ["TransUNet"]


class TransUNet(nn.Module):
    """TransUNet after Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image
    Segmentation", 2021 (https://arxiv.org/abs/2102.04306), built from MONAI blocks.

    Layout, with ``L = len(features)``:

    * CNN stem: a stride-1 residual block to ``features[0]`` channels, then ``L - 1`` stride-2 residual
      blocks (``UnetResBlock``) to ``features[1:]``; every stage but the last is kept as a skip.
    * Transformer encoder: a MONAI ``ViT`` over the last stem feature map (``1 / 2**(L-1)`` resolution) with
      patch size 1, a learnable position embedding and ``classification=False``.
    * The tokens are reshaped back to a feature map and projected to ``features[-1]`` channels by a 3x3
      conv + norm + activation.
    * Cascaded decoder: ``L - 1`` ``UnetrUpBlock``\\ s (transposed conv x2, concatenate the skip, residual block).
    * A 1x1 output head with ``out_channels`` raw logits at full resolution.

    Unlike the paper (ResNet-50 stem, skips at 1/2-1/8 only), the stem here is small and trained from scratch,
    and there is a full-resolution skip, which helps with small lesions.

    The learnable position embedding fixes the token grid, so inputs must have spatial size ``img_size``
    (use ``sliding_window_inference`` with ``roi_size=img_size`` for other sizes).

    The network can be scripted (``torch.jit.script``), traced (``torch.jit.trace``) and exported
    (``torch.export.export``); the outputs match eager mode. It needs ``einops`` (used by MONAI's ``SABlock``).
    The transformer blocks' unused cross-attention LayerNorms are removed, so every parameter gets a gradient
    and the state dict has no ``vit.blocks.*.norm_cross_attn`` keys.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no activation).
        img_size: spatial size of the input; each dimension must be divisible by ``2 ** (len(features) - 1)``.
        features: stem channels per resolution level, full resolution first; its length minus one is the number
            of stride-2 downsamplings before the transformer. The decoder mirrors these channels.
        hidden_size: transformer embedding dimension.
        mlp_dim: transformer feed-forward dimension.
        num_layers: number of transformer blocks.
        num_heads: number of attention heads; must divide ``hidden_size``.
        dropout_rate: dropout in the transformer (embedding, attention and MLP), in ``[0, 1]``.
        norm_name: normalisation of the convolutional blocks, e.g. ``"instance"``, ``"batch"`` or
            ``("group", {"num_groups": 8})``.
        qkv_bias: whether the attention's qkv projection has a bias.

    Raises:
        ValueError: for an unsupported ``spatial_dims``, non-positive channels or sizes, fewer than two
            ``features``, an ``img_size`` not divisible by the stem's total stride, ``hidden_size`` not divisible
            by ``num_heads``, or ``dropout_rate`` outside ``[0, 1]``.

    Example::

        >>> net = TransUNet(spatial_dims=2, in_channels=3, out_channels=1, img_size=256)
        >>> net(torch.rand(2, 3, 256, 256)).shape
        torch.Size([2, 1, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        img_size: Sequence[int] | int = 256,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        hidden_size: int = 256,
        mlp_dim: int = 1024,
        num_layers: int = 4,
        num_heads: int = 8,
        dropout_rate: float = 0.0,
        norm_name: tuple | str = "instance",
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        features = tuple(features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features must hold at least two positive channel numbers, got {features}.")
        size = ensure_tuple_rep(img_size, spatial_dims)
        stride = 2 ** (len(features) - 1)
        if any(s < 1 or s % stride for s in size):
            raise ValueError(
                f"img_size {size} must be positive and divisible by the stem's total stride {stride} "
                f"(2 ** (len(features) - 1))."
            )
        if hidden_size < 1 or num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a positive multiple of num_heads ({num_heads}).")
        if mlp_dim < 1 or num_layers < 1:
            raise ValueError(f"mlp_dim and num_layers must be >= 1, got {mlp_dim} and {num_layers}.")
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}.")

        self.img_size = list(size)
        self.grid_size = [s // stride for s in size]
        self.hidden_size = hidden_size

        self.encoder = nn.ModuleList(
            UnetResBlock(spatial_dims, c_in, c_out, kernel_size=3, stride=1 if i == 0 else 2, norm_name=norm_name)
            for i, (c_in, c_out) in enumerate(zip((in_channels,) + features[:-1], features, strict=True))
        )
        self.vit = ViT(
            in_channels=features[-1],
            img_size=self.grid_size,
            patch_size=1,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            classification=False,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            qkv_bias=qkv_bias,
        )
        # MONAI's TransformerBlock always builds a LayerNorm for cross-attention; without cross-attention it gets
        # no gradient, which breaks DDP without find_unused_parameters
        for block in self.vit.blocks:
            block.norm_cross_attn = nn.Identity()
        # a single conv + norm + act, as the paper's "conv_more"; a residual block here would double its cost
        self.bottleneck = nn.Sequential(
            get_conv_layer(spatial_dims, hidden_size, features[-1], kernel_size=3, conv_only=True),
            get_norm_layer(norm_name, spatial_dims, features[-1]),
            get_act_layer(("leakyrelu", {"inplace": True, "negative_slope": 0.01})),
        )
        self.decoder = nn.ModuleList(
            UnetrUpBlock(
                spatial_dims, c_in, c_out, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True
            )
            for c_in, c_out in zip(features[:0:-1], features[-2::-1], strict=True)
        )
        self.out = UnetOutBlock(spatial_dims, features[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input of shape ``(B, in_channels, *img_size)``.

        Returns:
            logits of shape ``(B, out_channels, *img_size)``.
        """
        if list(x.shape[2:]) != self.img_size:
            raise ValueError(f"expected input spatial shape {self.img_size}, got {list(x.shape[2:])}.")
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        tokens, _ = self.vit(skips.pop())  # the deepest stage feeds the transformer, it is not a skip
        x = tokens.transpose(1, 2).reshape([tokens.shape[0], self.hidden_size] + self.grid_size)
        x = self.bottleneck(x)
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.out(x)
