"""Array transforms of monai_lgg (each has a ``...d`` dictionary wrapper in ``dictionary.py``)."""

from __future__ import annotations

import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import convert_to_tensor

from monai_lgg.errors import DataProblem

__all__ = ["SliceWiseNormalizeIntensity", "CheckChannels", "CheckLabelValues", "context_offsets", "AddContextSlices"]


class SliceWiseNormalizeIntensity(Transform):
    """Normalise each channel of each 2D slice over its non-zero (brain) pixels.

    Normalising per slice, not per volume, makes a single Kaggle slice and the same slice inside a
    patient volume reach the network as identical arrays, so 2D and 3D inference agree.

    Args:
        slice_dim: spatial axis of the slices for a channel-first volume (``-1`` = last); ``None``
            treats the whole input (a 2D ``(C, H, W)`` slice) as one slice.
        method: ``"zscore"``: (x - mean) / std over non-zero pixels; ``"percentile"``: map the
            ``lower``..``upper`` percentiles of the non-zero pixels to 0..1.
        lower: lower percentile for ``"percentile"``.
        upper: upper percentile for ``"percentile"``.
        clip: clip the result to ``[-clip, clip]`` (z-score) or ``[0, clip]`` (percentile); ``None``: no clip.
        eps: floor of the scale, so near-empty slices do not blow up.

    Background (zero) pixels stay zero. Output is float32.

    Example::

        >>> SliceWiseNormalizeIntensity(slice_dim=-1)(torch.rand(3, 64, 64, 20)).shape
        torch.Size([3, 64, 64, 20])
    """

    backend = [convert_to_tensor.__name__]

    def __init__(
        self,
        slice_dim: int | None = -1,
        method: str = "zscore",
        lower: float = 1.0,
        upper: float = 99.0,
        clip: float | None = 5.0,
        eps: float = 1e-3,
    ) -> None:
        if method not in ("zscore", "percentile"):
            raise ValueError(f"method must be 'zscore' or 'percentile', got {method!r}")
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.slice_dim, self.method, self.lower, self.upper, self.clip, self.eps = (
            slice_dim,
            method,
            lower,
            upper,
            clip,
            eps,
        )

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        x = convert_to_tensor(img, track_meta=True).float()
        if self.slice_dim is None:
            flat = x.reshape(x.shape[0], -1, 1)
        else:
            flat = x.movedim(self.slice_dim, -1).reshape(x.shape[0], -1, x.shape[self.slice_dim])
        mask = flat != 0
        if self.method == "zscore":
            count = mask.sum(1, keepdim=True).clamp_min(1)
            mean = (flat * mask).sum(1, keepdim=True) / count
            std = (((flat - mean) * mask) ** 2).sum(1, keepdim=True).div(count).sqrt()
            out = (flat - mean) / std.clamp_min(self.eps)
            low = -self.clip if self.clip is not None else None
        else:
            masked = flat.masked_fill(~mask, float("nan"))
            q = torch.tensor([self.lower / 100, self.upper / 100], dtype=flat.dtype)
            lo, hi = torch.nanquantile(masked, q, dim=1, keepdim=True).nan_to_num(0.0)
            out = (flat - lo) / (hi - lo).clamp_min(self.eps)
            low = 0.0 if self.clip is not None else None
        if self.clip is not None:
            out = out.clamp(low, self.clip)
        out = out * mask
        if self.slice_dim is None:
            out = out.reshape(x.shape)
        else:
            moved = x.movedim(self.slice_dim, -1).shape
            out = out.reshape(moved).movedim(-1, self.slice_dim)
        return out.contiguous()


class CheckChannels(Transform):
    """Refuse a channel-first image whose channel count is not ``channels``, naming its file.

    A 4-channel (RGBA) PNG or a 3-channel RGB mask would otherwise reach the network or the loss and
    fail there with a shape error that names neither the file nor the problem.

    Args:
        channels: the expected number of channels.
        what: what the channels are, for the message (e.g. ``"pre-contrast, FLAIR, post-contrast"``).

    Raises:
        DataProblem: the channel count differs (the file is taken from the MetaTensor's metadata).
    """

    def __init__(self, channels: int, what: str = "") -> None:
        self.channels, self.what = channels, what

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.shape[0] != self.channels:
            name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
            expected = f"{self.channels} ({self.what})" if self.what else str(self.channels)
            raise DataProblem(name, f"has {img.shape[0]} channel(s), expected {expected}")
        return img


class CheckLabelValues(Transform):
    """Refuse a label map whose values are not the class indices ``0 .. num_classes - 1``, naming its file.

    Multi-class labels are used as they are (no threshold), so a mask saved as ``{0, 127, 255}`` or with
    a class the network has no output for would otherwise fail inside the loss or one-hot conversion.

    Args:
        num_classes: the number of classes, background included (the network's ``out_channels``).

    Raises:
        DataProblem: a value is not an integer in ``0 .. num_classes - 1``.

    Example::

        >>> CheckLabelValues(3)(torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])).shape
        torch.Size([1, 2, 2])
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        values = torch.unique(convert_to_tensor(img, track_meta=False))
        bad = values[(values < 0) | (values >= self.num_classes) | (values != torch.round(values))]
        if bad.numel():
            name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
            shown = ", ".join(f"{float(v):g}" for v in bad[:5])
            raise DataProblem(
                name,
                f"label holds value(s) {shown}: expected class indices 0..{self.num_classes - 1} "
                f"(out_channels={self.num_classes})",
            )
        return img


def context_offsets(context_slices: int) -> list[int]:
    """Slice offsets of the channel groups of :class:`AddContextSlices`: ``[0, -1, 1, -2, 2, ...]``.

    The slice itself comes first, so channels ``0 .. C-1`` stay the slice's own (e.g. FLAIR is still channel 1
    for overlays and reports); then the neighbours by distance, the one below before the one above.
    """
    if context_slices < 0:
        raise ValueError(f"context_slices must be at least 0, got {context_slices}")
    return [0] + [sign * d for d in range(1, context_slices + 1) for sign in (-1, 1)]


class AddContextSlices(Transform):
    """2.5D input: each slice of a channel-first volume with its ``context_slices`` neighbours on each side as channels.

    ``(C, H, W, D)`` becomes ``(C * (2k + 1), H, W, D)``: channel group ``g`` (channels ``g*C .. g*C + C-1``)
    holds slice ``z + context_offsets(k)[g]``, so group 0 is the slice itself. Beyond the first and last slice
    the nearest slice is repeated, so every slice (edges included) gets a full set of channels and a 2D
    network, or a slice-wise inferer, sees the same layout everywhere. A one-slice volume gets its slice
    ``2k + 1`` times. Apply it after normalisation: per-slice normalisation would treat the copies alike
    anyway, per-volume normalisation must see each voxel once.

    Args:
        context_slices: neighbours ``k`` on each side (0: the input unchanged).
        slice_dim: the slice axis (``-1``: last).

    Example::

        >>> volume = torch.arange(4.0).reshape(1, 1, 1, 4)  # slice z holds the value z
        >>> AddContextSlices(1)(volume)[:, 0, 0].tolist()  # columns: slices 0..3; rows: z, z - 1, z + 1
        [[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 2.0], [1.0, 2.0, 3.0, 3.0]]
    """

    backend = [convert_to_tensor.__name__]

    def __init__(self, context_slices: int = 0, slice_dim: int = -1) -> None:
        self.offsets = context_offsets(int(context_slices))
        self.slice_dim = slice_dim

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if len(self.offsets) == 1:
            return img
        x = convert_to_tensor(img, track_meta=True)
        plain = x.as_tensor() if isinstance(x, MetaTensor) else x
        depth = plain.shape[self.slice_dim]
        slices = torch.arange(depth, device=plain.device)
        out = torch.cat(
            [plain.index_select(self.slice_dim, (slices + offset).clamp(0, depth - 1)) for offset in self.offsets]
        )
        if isinstance(x, MetaTensor):  # same grid, same history: Invertd still maps predictions back
            return MetaTensor(out, meta=x.meta, applied_operations=list(x.applied_operations))
        return out
