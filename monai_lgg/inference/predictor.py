"""Tumour probabilities and masks for 2D slices and slice stacks (volumes).

Every slice is segmented in 2D with MONAI's ``sliding_window_inference`` at the training patch size:
larger images (e.g. 512 x 512) are tiled with overlapping windows, smaller ones are padded to one
window and cropped back, never resized. The slices of a volume form the batch, so ``batch_size``
windows run in one forward pass (MONAI's ``SliceInferer``, used by the bundle configs, gives the same
result but runs the slices one by one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from monai.transforms import AsDiscrete, KeepLargestConnectedComponent
from monai.utils import convert_to_tensor

__all__ = ["Predictor"]


class Predictor:
    """Segment ``(C, H, W)`` slices or ``(C, H, W, D)`` volumes with one network or an ensemble.

    The probability is the mean of the sigmoid outputs over the ensemble members and, with ``tta``,
    over the image and its left-right mirror (the flip used in training). The mask thresholds it;
    ``largest_component`` then keeps the largest 3D connected component (full connectivity), as the
    post-processing of the data set's authors (Buda et al. 2019) does.

    Args:
        networks: eval-mode networks mapping ``(N, C, h, w)`` to ``(N, 1, h, w)`` logits.
        roi_size: sliding-window size (the training patch size).
        device: where the networks run; inputs are moved there and results come back to the CPU.
        batch_size: windows per forward pass.
        overlap: sliding-window overlap for images larger than ``roi_size``.
        tta: average with the left-right flipped prediction.
        threshold: mask threshold on the probability.
        largest_component: keep only the largest connected component of each mask.

    Example::

        >>> net = torch.nn.Conv2d(3, 1, 1).eval()
        >>> prob, mask = Predictor([net], roi_size=(64, 64))(torch.rand(3, 100, 80, 5))
        >>> prob.shape, mask.dtype
        (torch.Size([100, 80, 5]), torch.uint8)
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
    ) -> None:
        if not networks:
            raise ValueError("at least one network is needed")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.networks = list(networks)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.device = torch.device(device)
        self.batch_size, self.overlap, self.tta = batch_size, overlap, tta
        self.discrete = AsDiscrete(threshold=threshold)
        self.largest = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False) if largest_component else None

    def _mean_probability(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, H, W)`` mean sigmoid over members and flips."""
        total = torch.zeros(batch.shape[0], *batch.shape[2:], device=self.device)
        flips = (False, True) if self.tta else (False,)
        for network in self.networks:
            for flip in flips:
                x = batch.flip(-1) if flip else batch
                logits = sliding_window_inference(x, self.roi_size, self.batch_size, network, overlap=self.overlap)
                prob = torch.sigmoid(convert_to_tensor(logits, track_meta=False).float())[:, 0]
                total += prob.flip(-1) if flip else prob
        return total / (len(self.networks) * len(flips))

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Tumour probability ``(H, W)`` for a ``(C, H, W)`` slice, ``(H, W, D)`` for a ``(C, H, W, D)`` volume."""
        if image.ndim not in (3, 4):
            raise ValueError(f"expected (C, H, W) or (C, H, W, D), got shape {tuple(image.shape)}")
        volume = image.ndim == 4
        batch = convert_to_tensor(image, track_meta=False).float()
        batch = batch.permute(3, 0, 1, 2) if volume else batch[None]
        prob = self._mean_probability(batch.to(self.device)).cpu()
        return prob.permute(1, 2, 0).contiguous() if volume else prob[0]

    def mask(self, probability: torch.Tensor) -> torch.Tensor:
        """Binary uint8 mask {0, 1} of a probability map, with the optional largest-component filter."""
        mask = self.discrete(probability[None])
        if self.largest is not None:
            mask = self.largest(mask)
        return convert_to_tensor(mask, track_meta=False)[0].to(torch.uint8)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probability, mask)`` of a slice or volume."""
        probability = self.probabilities(image)
        return probability, self.mask(probability)
