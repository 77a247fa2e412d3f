"""Tumour (or class) probabilities and masks for 2D slices and slice stacks (volumes).

``brain`` geometry (the LGG models): the volume's square brain box is resized to the network's size and
normalised per volume (:mod:`monai_lgg.transforms.brain`, the training preprocessing), the network runs on
whole slices, and the probabilities are resized back into the box and pasted into the input's grid, so the
masks keep the input's geometry.

``patch`` geometry (images of any size, e.g. ``convert_folders`` data): every slice is segmented in 2D with MONAI's ``sliding_window_inference`` at the training patch size:
larger images (e.g. 512 x 512) are tiled with overlapping windows, smaller ones are padded to one
window and cropped back, never resized. The slices of a volume form the batch, so ``batch_size``
windows run in one forward pass (MONAI's ``SliceInferer``, used by the bundle configs, gives the same
result but runs the slices one by one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import AsDiscrete, KeepLargestConnectedComponent
from monai.utils import convert_to_tensor

from monai_lgg.engines.performance import FastInferer, prepare_network
from monai_lgg.transforms.brain import BrainCrop, BrainNormalizeIntensity, paste_back
from monai_lgg.transforms.components import remove_small_components

__all__ = ["Predictor"]


class Predictor:
    """Segment ``(C, H, W)`` slices or ``(C, H, W, D)`` volumes with one network or an ensemble.

    The probability is the mean of the sigmoid outputs over the ensemble members and, with ``tta``,
    over the image and its left-right mirror (the flip used in training). The mask thresholds it;
    ``min_component_fraction`` then drops 3D connected components smaller than that fraction of the largest
    (:func:`~monai_lgg.transforms.components.remove_small_components`), and ``largest_component`` keeps only
    the largest one (full connectivity), as the post-processing of the data set's authors (Buda et al. 2019)
    does; it can delete a small true tumour next to a larger false positive.

    Multi-class networks (``out_channels = K > 1``, class 0 the background) are averaged the same way on
    their softmax probabilities, ``(K, H, W)`` for a slice and ``(K, H, W, D)`` for a volume; the mask is the
    argmax label map (uint8 ``0 .. K-1``, ``threshold`` unused) and ``largest_component`` keeps the largest
    connected component of each foreground class separately.

    Args:
        networks: eval-mode networks mapping ``(N, C, h, w)`` to ``(N, out_channels, h, w)`` logits.
        roi_size: sliding-window size (the training patch size).
        device: where the networks run; inputs are moved there and results come back to the CPU.
        batch_size: windows per forward pass.
        overlap: sliding-window overlap for images larger than ``roi_size``.
        tta: average with the left-right flipped prediction.
        threshold: mask threshold on the probability.
        largest_component: keep only the largest connected component of each mask.
        precision: ``"fp32"`` or ``"bf16"`` (forward under bfloat16 autocast; about 2x faster on CPUs
            with native bf16, probabilities within about 1e-2 of fp32).
        channels_last: run the networks in channels-last memory format (faster for the UNet on CPU).
        out_channels: the networks' outputs: 1 (binary, sigmoid) or the number of classes ``K`` (softmax).
        geometry: ``"patch"`` (inputs already normalised, sliding windows of ``roi_size``) or ``"brain"`` (raw
            inputs: brain box resized to ``roi_size``, normalised per volume, probabilities pasted back).
        min_component_fraction: drop 3D components below this fraction of the largest (binary; 0: keep all).

    Example::

        >>> net = torch.nn.Conv2d(3, 1, 1).eval()
        >>> prob, mask = Predictor([net], roi_size=(64, 64))(torch.rand(3, 100, 80, 5))
        >>> prob.shape, mask.dtype
        (torch.Size([100, 80, 5]), torch.uint8)
        >>> net3 = torch.nn.Conv2d(3, 3, 1).eval()
        >>> prob, mask = Predictor([net3], roi_size=(64, 64), out_channels=3)(torch.rand(3, 100, 80))
        >>> prob.shape, mask.shape, int(mask.max()) <= 2
        (torch.Size([3, 100, 80]), torch.Size([100, 80]), True)
    """

    def __init__(
        self,
        networks: Sequence[torch.nn.Module],
        roi_size: Sequence[int],
        device: torch.device | str = "cpu",
        batch_size: int = 8,
        overlap: float = 0.25,
        tta: bool = False,
        threshold: float = 0.5,
        largest_component: bool = False,
        precision: str = "fp32",
        channels_last: bool = False,
        out_channels: int = 1,
        geometry: str = "patch",
        min_component_fraction: float = 0.0,
    ) -> None:
        if geometry not in ("patch", "brain"):
            raise ValueError(f"geometry must be 'patch' or 'brain', got {geometry!r}")
        if not networks:
            raise ValueError("at least one network is needed")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be at least 1, got {out_channels}")
        self.device = torch.device(device)
        self.networks = [prepare_network(n, self.device, channels_last) for n in networks]
        self.roi_size = tuple(int(s) for s in roi_size)
        self.tta = tta
        window = SlidingWindowInferer(self.roi_size, batch_size, overlap)
        self.inferer = FastInferer(window, precision=precision, channels_last=channels_last)
        self.out_channels = int(out_channels)
        self.geometry = geometry
        self.crop = BrainCrop(self.roi_size) if geometry == "brain" else None
        self.normalize = BrainNormalizeIntensity()
        self.min_component_fraction = float(min_component_fraction)
        self.discrete = AsDiscrete(threshold=threshold) if out_channels == 1 else AsDiscrete(argmax=True)
        foreground = list(range(1, max(2, out_channels)))
        self.largest = (
            KeepLargestConnectedComponent(applied_labels=foreground, is_onehot=False, independent=True)
            if largest_component
            else None
        )

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, K, H, W)`` logits -> sigmoid ``(N, H, W)`` (binary) or softmax ``(N, K, H, W)``."""
        logits = convert_to_tensor(logits, track_meta=False).float()
        if logits.shape[1] != self.out_channels:
            raise ValueError(
                f"the network gives {logits.shape[1]} output channel(s), expected out_channels={self.out_channels}"
            )
        return torch.sigmoid(logits)[:, 0] if self.out_channels == 1 else torch.softmax(logits, dim=1)

    def _mean_probability(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> mean probability over members and flips: ``(N, H, W)`` or ``(N, K, H, W)``."""
        total = None
        flips = (False, True) if self.tta else (False,)
        for network in self.networks:
            for flip in flips:
                x = batch.flip(-1) if flip else batch
                prob = self._activate(self.inferer(x, network))
                prob = prob.flip(-1) if flip else prob
                total = prob if total is None else total + prob
        return total / (len(self.networks) * len(flips))

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities of a ``(C, H, W)`` slice or a ``(C, H, W, D)`` volume.

        Binary: the tumour probability ``(H, W)`` / ``(H, W, D)``; ``K`` classes: ``(K, H, W)`` / ``(K, H, W, D)``.
        """
        if image.ndim not in (3, 4):
            raise ValueError(f"expected (C, H, W) or (C, H, W, D), got shape {tuple(image.shape)}")
        volume = image.ndim == 4
        batch = convert_to_tensor(image, track_meta=False).float()
        box = None
        if self.crop is not None:
            grid = batch.shape[1:3]
            box = self.crop.compute_box(batch)
            batch = self.normalize(self.crop(batch, box))
        batch = batch.permute(3, 0, 1, 2) if volume else batch[None]
        prob = self._mean_probability(batch.to(self.device)).cpu()  # (N, h, w) or (N, K, h, w)
        if box is not None:  # back into the input's grid: (N, K, h, w) -> (N, K, H, W), 0 outside the box
            channels = prob[:, None] if self.out_channels == 1 else prob
            prob = paste_back(channels.permute(1, 2, 3, 0), box, grid).permute(3, 0, 1, 2)
            prob = prob[:, 0] if self.out_channels == 1 else prob
        if not volume:
            return prob[0]
        return (prob.permute(1, 2, 0) if self.out_channels == 1 else prob.permute(1, 2, 3, 0)).contiguous()

    def mask(self, probability: torch.Tensor) -> torch.Tensor:
        """uint8 mask of a probability map: binary {0, 1}, or the argmax label map ``0 .. K-1`` (class axis
        first in ``probability``, gone in the mask); then the optional largest-component filter."""
        mask = self.discrete(probability[None] if self.out_channels == 1 else probability)
        if self.min_component_fraction > 0 and self.out_channels == 1:
            mask = torch.as_tensor(remove_small_components(convert_to_tensor(mask, track_meta=False).numpy(), self.min_component_fraction))
        if self.largest is not None:
            mask = self.largest(mask)
        return convert_to_tensor(mask, track_meta=False)[0].to(torch.uint8)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probability, mask)`` of a slice or volume."""
        probability = self.probabilities(image)
        return probability, self.mask(probability)
