"""Tumour (or class) probabilities and masks for 2D slices and slice stacks (volumes).

``brain`` geometry (the LGG models): the volume's square brain box is resized to the network's size and
normalised per volume (:mod:`monai_lgg.transforms.brain`, the training preprocessing), the network runs on
whole slices, and the probabilities are resized back into the box and pasted into the input's grid, so the
masks keep the input's geometry.

``patch`` geometry (images of any size, e.g. ``convert_folders`` data): every slice is segmented in 2D with
MONAI's ``sliding_window_inference`` at the training patch size: larger images (e.g. 512 x 512) are tiled with
overlapping windows, smaller ones are padded to one window and cropped back, never resized. The slices of a volume
form the batch, so ``batch_size`` windows run in one forward pass (MONAI's ``SliceInferer``, used by the bundle
configs, gives the same result but runs the slices one by one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import AsDiscrete, KeepLargestConnectedComponent
from monai.utils import convert_to_tensor

from monai_lgg.bundle.settings import THRESHOLD
from monai_lgg.engines.performance import FastInferer, prepare_network
from monai_lgg.inference.uncertainty import entropy
from monai_lgg.networks.ensemble import EnsembleWithMembers, ProbabilityEnsemble
from monai_lgg.transforms.array import AddContextSlices
from monai_lgg.transforms.brain import BrainCrop, BrainNormalizeIntensity, paste_back
from monai_lgg.transforms.components import remove_small_components
from monai_lgg.transforms.presets import NORMALIZATIONS, slice_normalizer

__all__ = ["Predictor", "Uncertainty"]


class Uncertainty(NamedTuple):
    """What :meth:`Predictor.uncertainty` returns, every map in the input's grid
    (:mod:`monai_lgg.inference.uncertainty`).

    Attributes:
        probability: the mean probability, exactly as :meth:`Predictor.probabilities` gives it.
        entropy: predictive entropy of ``probability`` in bits, ``[0, 1]``, ``(H, W[, D])``.
        mutual_information: entropy minus the mean entropy of the passes, ``[0, 1]``; None with one pass.
        passes: how many predictions were averaged (ensemble members x flips).
    """

    probability: torch.Tensor
    entropy: torch.Tensor
    mutual_information: torch.Tensor | None
    passes: int


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
        geometry: ``"patch"`` (sliding windows of ``roi_size``) or ``"brain"`` (raw inputs: brain box resized to
            ``roi_size`` and normalised, probabilities pasted back).
        min_component_fraction: drop 3D components below this fraction of the largest (binary; 0: keep all).
        normalization: what the predictor normalises after the brain crop (``presets.NORMALIZATIONS``): ``"volume"``
            (per volume over the brain), ``"zscore"`` / ``"percentile"`` (per slice) or ``"none"``; default
            ``"volume"`` for ``brain`` and ``"none"`` for ``patch`` (inputs normalised by the caller).
        context_slices: stack each slice's neighbours on each side as channels after normalisation (2.5D
            networks, :class:`~monai_lgg.transforms.array.AddContextSlices`; edge slices repeat the nearest).

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
        threshold: float = THRESHOLD,
        largest_component: bool = False,
        precision: str = "fp32",
        channels_last: bool = False,
        out_channels: int = 1,
        geometry: str = "patch",
        min_component_fraction: float = 0.0,
        normalization: str | None = None,
        context_slices: int = 0,
    ) -> None:
        normalization = normalization or ("volume" if geometry == "brain" else "none")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
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
        self.normalize = BrainNormalizeIntensity() if normalization == "volume" else slice_normalizer(normalization)
        self.context = AddContextSlices(context_slices)
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

    def _passes(
        self, batch: torch.Tensor, split_ensembles: bool = False
    ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        """``(N, C, H, W)`` -> for each network and flip, its probability and the probabilities it averaged.

        The second item holds, with ``split_ensembles``, the probabilities of an ensemble's members (run once,
        through :class:`~monai_lgg.networks.ensemble.EnsembleWithMembers`, whose first channel is the ensemble's
        own output, so the probability is the same as without splitting), else the network's probability alone.
        """
        flips = (False, True) if self.tta else (False,)
        for network in self.networks:
            split = split_ensembles and self.out_channels == 1 and isinstance(network, ProbabilityEnsemble)
            opened = EnsembleWithMembers(network) if split else None
            for flip in flips:
                x = batch.flip(-1) if flip else batch
                if opened is not None:
                    outputs = self.inferer(x, opened)  # (N, 1 + members, h, w): the ensemble, then each member
                    prob = self._activate(outputs[:, :1])
                    parts = [torch.sigmoid(outputs[:, m].float()) for m in range(1, outputs.shape[1])]
                else:
                    prob = self._activate(self.inferer(x, network))
                    parts = [prob]
                yield (prob.flip(-1), [p.flip(-1) for p in parts]) if flip else (prob, parts)

    def _mean_probability(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> mean probability over members and flips: ``(N, H, W)`` or ``(N, K, H, W)``."""
        total, count = None, 0
        for prob, _ in self._passes(batch):
            total, count = (prob if total is None else total + prob), count + 1
        return total / count

    def _mean_and_expected_entropy(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """``[mean probability, mean over the passes of their entropy]`` (network grid) and the number of passes."""
        total = expected = None
        count = passes = 0
        class_dim = None if self.out_channels == 1 else 1
        for prob, parts in self._passes(batch, split_ensembles=True):
            total, count = (prob if total is None else total + prob), count + 1
            for part in parts:
                value = entropy(part, class_dim)
                expected, passes = (value if expected is None else expected + value), passes + 1
        return [total / count, expected / passes], passes

    def _mean_and_member_probabilities(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """``[mean probability, then each member's mean over the flips]`` (network grid, binary only).

        The members are every network's, an ensemble opened up into its own members; the mean is accumulated in the
        order :meth:`_mean_probability` uses, so it is bit for bit the same."""
        total, count = None, 0
        members: list[torch.Tensor] = []
        flips = 2 if self.tta else 1
        group: list[list[torch.Tensor]] = []
        for prob, parts in self._passes(batch, split_ensembles=True):
            total, count = (prob if total is None else total + prob), count + 1
            group.append(parts)
            if len(group) == flips:  # one network's flips are done: average each of its members over them
                members += [sum(parts[m] for parts in group) / flips for m in range(len(group[0]))]
                group = []
        return [total / count, *members]

    @torch.inference_mode()
    def member_probabilities(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The probability of :meth:`probabilities` (bit for bit) and each ensemble member's own, in the input's grid.

        A member's probability is its mean over the flips of ``tta``; an ensemble module is opened up into its
        members (each still run once). :mod:`monai_lgg.inference.review` scores them. Binary models only.
        """
        if self.out_channels != 1:
            raise ValueError("member probabilities are defined for binary (one-channel) models")
        maps = self._in_input_grid(image, self._mean_and_member_probabilities)
        return maps[0], maps[1:]

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities of a ``(C, H, W)`` slice or a ``(C, H, W, D)`` volume.

        Binary: the tumour probability ``(H, W)`` / ``(H, W, D)``; ``K`` classes: ``(K, H, W)`` / ``(K, H, W, D)``.
        """
        return self._in_input_grid(image, lambda batch: [self._mean_probability(batch)])[0]

    @torch.inference_mode()
    def uncertainty(self, image: torch.Tensor) -> Uncertainty:
        """The probabilities of :meth:`probabilities` with their per-voxel uncertainty (:class:`Uncertainty`).

        The passes are every ensemble member (a :class:`~monai_lgg.networks.ensemble.ProbabilityEnsemble` is
        opened up into its members, each still run once) times the flips of ``tta``. The
        entropy is that of the mean probability after it is pasted back into the input's grid (so it is highest
        where the mask's threshold cuts); the passes' mean entropy is pasted back alongside (bilinear
        interpolation, a convex combination, keeps the mutual information non-negative).
        """
        passes: list[int] = []

        def reduce(batch: torch.Tensor) -> list[torch.Tensor]:
            maps, count = self._mean_and_expected_entropy(batch)
            passes.append(count)
            return maps

        probability, expected = self._in_input_grid(image, reduce)
        total = entropy(probability, None if self.out_channels == 1 else 0)
        mutual_information = (total - expected).clamp(0, 1) if passes[0] > 1 else None
        return Uncertainty(probability, total, mutual_information, passes[0])

    def _in_input_grid(
        self, image: torch.Tensor, reduce: Callable[[torch.Tensor], list[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Preprocess ``image`` into the networks' batch, ``reduce`` it to maps ``(N, h, w)`` / ``(N, K, h, w)``
        and bring each map back into the input's grid: ``(H, W[, D])`` / ``(K, H, W[, D])``."""
        if image.ndim not in (3, 4):
            raise ValueError(f"expected (C, H, W) or (C, H, W, D), got shape {tuple(image.shape)}")
        volume = image.ndim == 4
        batch = convert_to_tensor(image, track_meta=False).float()
        batch = batch if volume else batch[..., None]  # a slice is a one-slice volume
        box = None
        if self.crop is not None:
            grid = batch.shape[1:3]
            box = self.crop.compute_box(batch)
            batch = self.crop(batch, box)
        if self.normalize is not None:
            batch = self.normalize(batch)
        batch = self.context(batch).permute(3, 0, 1, 2)  # (D, C * (2k + 1), h, w): every slice with its neighbours
        maps = []
        for prob in reduce(batch.to(self.device)):  # (N, h, w) or (N, K, h, w)
            prob = prob.cpu()
            if box is not None:  # back into the input's grid: (N, K, h, w) -> (N, K, H, W), 0 outside the box
                channels = prob[:, None] if prob.ndim == 3 else prob
                pasted = paste_back(channels.permute(1, 2, 3, 0), box, grid).permute(3, 0, 1, 2)
                prob = pasted[:, 0] if prob.ndim == 3 else pasted
            if not volume:
                maps.append(prob[0])
            else:
                maps.append((prob.permute(1, 2, 0) if prob.ndim == 3 else prob.permute(1, 2, 3, 0)).contiguous())
        return maps

    def mask(self, probability: torch.Tensor) -> torch.Tensor:
        """uint8 mask of a probability map: binary {0, 1}, or the argmax label map ``0 .. K-1`` (class axis
        first in ``probability``, gone in the mask); then the optional largest-component filter."""
        mask = self.discrete(probability[None] if self.out_channels == 1 else probability)
        if self.min_component_fraction > 0 and self.out_channels == 1:
            mask = torch.as_tensor(
                remove_small_components(convert_to_tensor(mask, track_meta=False).numpy(), self.min_component_fraction)
            )
        if self.largest is not None:
            mask = self.largest(mask)
        return convert_to_tensor(mask, track_meta=False)[0].to(torch.uint8)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probability, mask)`` of a slice or volume."""
        probability = self.probabilities(image)
        return probability, self.mask(probability)
