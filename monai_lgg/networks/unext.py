"""UNeXt: a lightweight U-shaped network with convolutional early stages and shifted-MLP latent stages."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["UNeXt", "ShiftedMLPBlock", "TokenizedMLPStage"]


def _shift(x: torch.Tensor, dim: int, sizes: list[int], shifts: list[int], pad: int) -> torch.Tensor:
    """Shift channel groups of a channels-last map ``(B, H, W, C)`` along spatial ``dim`` (1: rows, 2: columns).

    Group ``i`` (``sizes[i]`` channels) moves by ``shifts[i]`` pixels; what moves in from outside the map is zero.
    Done as one zero pad of the axis and one slice per group, which is what UNeXt's pad-roll-crop computes.
    """
    length = x.shape[dim]
    # F.pad lists (before, after) pairs from the last dimension backwards: C, W, H
    padding = [0, 0, 0, 0, pad, pad] if dim == 1 else [0, 0, pad, pad, 0, 0]
    padded = F.pad(x, padding)
    groups: list[torch.Tensor] = []
    for i, group in enumerate(torch.split(padded, sizes, dim=3)):
        groups.append(group.narrow(dim, pad - shifts[i], length))
    return torch.cat(groups, dim=3)


class ShiftedMLPBlock(nn.Module):
    """UNeXt's tokenized MLP block on a channels-last map ``(B, H, W, C)`` (Valanarasu & Patel 2022).

    ``x + fc2(shift_H(GELU(DWConv(fc1(shift_W(LN(x)))))))``: the channels are split into ``shift_size`` groups
    shifted by ``-(shift_size // 2) .. shift_size // 2`` pixels across the width before the first token MLP and
    across the height before the second, so each MLP mixes a local, axis-aligned neighbourhood (as axial
    attention does); the 3x3 depth-wise convolution between them encodes position without a position
    embedding, so any input size works.

    Args:
        channels: token (embedding) dimension ``C``.
        mlp_ratio: hidden dimension of the MLP as a multiple of ``channels``.
        shift_size: number of channel groups, odd (5 in the paper: shifts -2..2).
        dropout: dropout after the activation and after the second MLP.
    """

    def __init__(self, channels: int, mlp_ratio: float = 1.0, shift_size: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, int(round(channels * mlp_ratio)))
        self.pad = shift_size // 2
        self.sizes_in, self.shifts_in = self._groups(channels, shift_size)
        self.sizes_hidden, self.shifts_hidden = self._groups(hidden, shift_size)
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def _groups(channels: int, shift_size: int) -> tuple[list[int], list[int]]:
        """Channel-group sizes (as equal as possible, empty groups dropped) and the shift of each group."""
        base, extra = divmod(channels, shift_size)
        pairs = [(base + (i < extra), i - shift_size // 2) for i in range(shift_size)]
        sizes = [size for size, _ in pairs if size]
        shifts = [shift for size, shift in pairs if size]
        return sizes, shifts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: tokens laid out as a channels-last map ``(B, H, W, channels)``.

        Returns:
            the same shape.
        """
        y = _shift(self.norm(x), 2, self.sizes_in, self.shifts_in, self.pad)  # across the width
        y = self.fc1(y)
        # (B, H, W, C) permuted to (B, C, H, W) is a channels-last view: no copy for the depth-wise conv
        y = self.dwconv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.drop(self.act(y))
        y = _shift(y, 1, self.sizes_hidden, self.shifts_hidden, self.pad)  # across the height
        return x + self.drop(self.fc2(y))


class TokenizedMLPStage(nn.Module):
    """A UNeXt latent stage: optional tokenization, shifted-MLP blocks and a final LayerNorm, on ``(B, C, H, W)``.

    With ``downsample=True`` (encoder) the map is first tokenized and halved by a 3x3 stride-2 convolution to
    ``out_channels`` followed by a LayerNorm (the paper's overlapping patch embedding); in the decoder
    (``downsample=False``) the map already has ``out_channels`` channels and is tokenized as it is.

    Args:
        in_channels: channels of the input map.
        out_channels: token dimension (``E`` in the paper).
        downsample: tokenize with a stride-2 convolution (encoder) or not (decoder).
        num_blocks: shifted-MLP blocks in the stage (1 in the paper).
        mlp_ratio: see :class:`ShiftedMLPBlock`.
        shift_size: see :class:`ShiftedMLPBlock`.
        dropout: see :class:`ShiftedMLPBlock`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        downsample: bool = True,
        num_blocks: int = 1,
        mlp_ratio: float = 1.0,
        shift_size: int = 5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not downsample and in_channels != out_channels:
            raise ValueError(
                f"a decoder stage keeps its channels: in_channels {in_channels} != out_channels {out_channels}."
            )
        self.embed = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
                _ChannelsLastNorm(out_channels),
            )
            if downsample
            else _ChannelsLast()
        )
        self.blocks = nn.Sequential(
            *(ShiftedMLPBlock(out_channels, mlp_ratio, shift_size, dropout) for _ in range(num_blocks))
        )
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')`` (``H' = ceil(H / 2)`` when downsampling)."""
        return self.norm(self.blocks(self.embed(x))).permute(0, 3, 1, 2)


class _ChannelsLast(nn.Module):
    """``(B, C, H, W)`` -> ``(B, H, W, C)``: the token layout (a view when the input is in channels-last memory)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class _ChannelsLastNorm(nn.Module):
    """``(B, C, H, W)`` -> tokens ``(B, H, W, C)`` normalised over ``C``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1))


class _DecoderLevel(nn.Module):
    """One UNeXt decoder level: ``stage(upsample(block(x)) + skip)``, upsampled bilinearly to the skip's size."""

    def __init__(self, block: nn.Module, stage: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.stage = stage

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.block(x), size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.stage(x + skip)


class UNeXt(nn.Module):
    """UNeXt after Valanarasu & Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network", MICCAI 2022
    (https://arxiv.org/abs/2203.04967), written from the paper with MONAI blocks.

    Layout, with ``features = (C1, C2, C3, C4, C5)``:

    * Convolutional encoder: three blocks of 3x3 convolution + batch norm + ReLU (to ``C1``, ``C2``, ``C3``) and 2x2
      max pooling (1/2, 1/4, 1/8 resolution); each output is a skip.
    * Tokenized MLP encoder: two :class:`TokenizedMLPStage`\\ s, a stride-2 3x3 tokenization to ``C4`` (1/16, a
      skip) then to ``C5`` (1/32, the bottleneck), each with a shifted-MLP block and a LayerNorm.
    * Decoder, mirrored: at each level a 3x3 convolution + batch norm + ReLU to the next level's channels, bilinear
      upsampling to the skip's size and the skip added (additions, as in the authors' released code); the two
      deepest levels (``C4``, ``C3``) are followed by a tokenized MLP stage, then three convolutional levels
      (``C2``, ``C1`` and a last ``C1`` convolution at 1/2 resolution), a 1x1 output head and bilinear upsampling
      to the input size.

    ``features`` defaults to the channels of the authors' released code (16, 32, 128, 160, 256): 1.47 M parameters
    for 3 input channels, the count the paper reports; the paper's text gives (32, 64, 128, 160, 256), 1.58 M.
    The MLP hidden size is ``mlp_ratio x`` the token dimension (1 in the released code). Upsampling goes to each
    skip's size, so any input of at least 32 x 32 pixels works; sizes divisible by 32 keep every level exactly
    half of the one above. Unlike the released code, the decoder's ReLUs come before the upsampling (cheaper,
    at the lower resolution) and its last convolution has batch norm too.

    The network can be scripted (``torch.jit.script``) and traced (``torch.jit.trace``); the outputs match
    eager mode.

    Args:
        spatial_dims: number of spatial dimensions; only 2 (the shifted MLP is defined on 2D maps).
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no activation).
        features: five channel numbers, ``C1..C3`` of the convolutional stages and ``C4, C5`` of the tokenized
            MLP stages.
        mlp_ratio: MLP hidden dimension as a multiple of the token dimension.
        shift_size: channel groups of the shifted MLP, odd (shifts ``-(shift_size // 2) .. shift_size // 2``).
        num_blocks: shifted-MLP blocks per tokenized stage.
        dropout: dropout inside the shifted-MLP blocks, in ``[0, 1]``.

    Raises:
        ValueError: ``spatial_dims`` other than 2, non-positive channels, ``features`` not five positive numbers,
            a non-positive ``mlp_ratio`` or ``num_blocks``, an even or non-positive ``shift_size``, or ``dropout``
            outside ``[0, 1]``.

    Example::

        >>> net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.rand(2, 3, 128, 128)).shape
        torch.Size([2, 1, 128, 128])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        features: Sequence[int] = (16, 32, 128, 160, 256),
        mlp_ratio: float = 1.0,
        shift_size: int = 5,
        num_blocks: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"UNeXt is defined for 2D images only: spatial_dims must be 2, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        features = tuple(int(f) for f in features)
        if len(features) != 5 or min(features) < 1:
            raise ValueError(f"features must be five positive channel numbers (C1..C5), got {features}.")
        if mlp_ratio <= 0 or num_blocks < 1:
            raise ValueError(f"mlp_ratio and num_blocks must be positive, got {mlp_ratio} and {num_blocks}.")
        if shift_size < 1 or shift_size % 2 == 0:
            raise ValueError(f"shift_size must be a positive odd number, got {shift_size}.")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}.")
        c1, c2, c3, c4, c5 = features
        mlp = {"mlp_ratio": mlp_ratio, "shift_size": shift_size, "num_blocks": num_blocks, "dropout": dropout}

        def conv(c_in: int, c_out: int) -> Convolution:
            return Convolution(spatial_dims, c_in, c_out, kernel_size=3, act="relu", norm="batch")

        def down(c_in: int, c_out: int) -> nn.Sequential:
            # conv + norm, then pooling, then ReLU: the same as ReLU before pooling (both are monotone), with the
            # ReLU on a quarter of the pixels (the authors' order)
            block = Convolution(spatial_dims, c_in, c_out, kernel_size=3, act=None, norm="batch")
            return nn.Sequential(block, nn.MaxPool2d(2), nn.ReLU())

        self.encoder = nn.ModuleList([down(in_channels, c1), down(c1, c2), down(c2, c3)])
        self.tokenized_encoder = nn.ModuleList(
            [TokenizedMLPStage(c3, c4, downsample=True, **mlp), TokenizedMLPStage(c4, c5, downsample=True, **mlp)]
        )
        # decoder levels, deepest first: a conv to the skip's channels, upsampling, the skip added, then a
        # tokenized MLP stage at the two deepest levels only
        self.decoder = nn.ModuleList(
            [
                _DecoderLevel(conv(c5, c4), TokenizedMLPStage(c4, c4, downsample=False, **mlp)),
                _DecoderLevel(conv(c4, c3), TokenizedMLPStage(c3, c3, downsample=False, **mlp)),
                _DecoderLevel(conv(c3, c2), nn.Identity()),
                _DecoderLevel(conv(c2, c1), nn.Identity()),
            ]
        )
        self.final = conv(c1, c1)
        self.out = Convolution(spatial_dims, c1, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input of shape ``(B, in_channels, H, W)``, ``H, W >= 32``.

        Returns:
            logits of shape ``(B, out_channels, H, W)``.
        """
        size = x.shape[2:]
        # channels-last memory whatever the caller uses: on CPU max pooling is several times slower in the default
        # layout, and the token layout (B, H, W, C) is then a view; the values are the same either way
        x = x.contiguous(memory_format=torch.channels_last)
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        for stage in self.tokenized_encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for level in self.decoder:
            x = level(x, skips.pop())
        # the 1x1 head before the last upsampling: both are linear (bilinear weights sum to 1), so the order does not
        # change the result, and upsampling out_channels instead of C1 maps is cheaper at full resolution
        return F.interpolate(self.out(self.final(x)), size=size, mode="bilinear", align_corners=False)
