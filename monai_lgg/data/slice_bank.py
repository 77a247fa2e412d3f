"""All training slices in one tensor on the training device, served and augmented a batch at a time.

The fast path of :class:`~monai_lgg.data.datasets.VolumeSliceDataset`: the same cached volumes, the
same slices and the same oversampled epoch index, but instead of running the MONAI per-sample chain in
the DataLoader every epoch, :class:`SliceBank` preprocesses every slice once (the deterministic half of
the chain: per-slice normalisation, binary label or checked class indices), keeps the results in one tensor on
the training device, gathers a batch with one indexing operation and augments it with
:class:`~monai_lgg.transforms.batch.RandBatchAugment` there. Images are stored as float16 (values of the
z-scored slices, clipped to +-5, keep ~3 significant digits: at most 2.5e-3 from the float32 chain) and
labels as uint8: 0.46 MB per 256 x 256 slice, 1.1 GB for the 2446 slices of the 66 shared patients and
1.8 GB for the 3929 of the full set (a training split is about 60 % of that), so it fits on any GPU.

It is an ordinary map-style dataset with ``__getitems__`` (which ``torch.utils.data.DataLoader`` calls
with a whole batch of indices), so shuffling, ``DistributedSampler`` and epoch bookkeeping stay those of
the standard DataLoader; :func:`batch_loader` builds one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_lgg.data.datasets import VolumeSliceDataset
from monai_lgg.transforms.array import CheckLabelValues
from monai_lgg.transforms.batch import RandBatchAugment
from monai_lgg.transforms.presets import slice_normalizer

__all__ = ["SliceBank", "AreaWeightedSampler", "SAMPLINGS", "batch_loader", "stack_slices"]

SAMPLINGS = ("uniform", "area")


def stack_slices(
    dataset: VolumeSliceDataset,
    key: str,
    transform=None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Every slice of the cached volumes of ``dataset`` as one ``(N, C, H, W)`` tensor.

    Slices follow ``dataset.slices`` (volume by volume, slice by slice; only the slices it lists). Each volume
    ``(C, H, W, D)`` is passed through ``transform`` first (e.g. a per-slice normaliser with ``slice_dim=-1``), then
    cast to ``dtype`` (``None``: kept) and moved to ``device`` one volume at a time.

    Raises:
        ValueError: the volumes' slices differ in size (use the per-sample loader instead).
    """
    sizes = {tuple(dataset.volumes[v][key].shape[:-1]) for v in range(len(dataset.volumes))}
    if len(sizes) > 1:
        raise ValueError(f"a slice bank needs equal slice sizes, got {sorted(sizes)}; use augmentation='loader'")
    chosen: dict[int, list[int]] = {}
    for v, z in dataset.slices:
        chosen.setdefault(v, []).append(z)
    parts = []
    for v in range(len(dataset.volumes)):
        volume = torch.as_tensor(dataset.volumes[v][key])
        volume = transform(volume) if transform is not None else volume
        volume = volume.as_tensor() if hasattr(volume, "as_tensor") else volume
        parts.append(volume.permute(3, 0, 1, 2)[chosen.get(v, [])].to(device=device, dtype=dtype or volume.dtype))
    return torch.cat(parts).contiguous()


def _binary(label: torch.Tensor) -> torch.Tensor:
    return (label >= 0.5).to(torch.uint8)  # as presets.preprocess: AsDiscrete(threshold=0.5)


def _label_transform(out_channels: int):
    """The label preprocessing of ``presets.preprocess``: binary threshold, or checked class indices (uint8)."""
    return _binary if out_channels == 1 else CheckLabelValues(out_channels)


def _identity(batch):
    return batch


class SliceBank(torch.utils.data.Dataset):
    """Preprocessed slices of a :class:`VolumeSliceDataset` kept as one tensor on ``device``, augmented in batches.

    Item ``i`` is slice ``dataset.index[i]`` (the same oversampled epoch as the dataset). Items are dicts
    ``{"image": (C, H, W) float32, "label": (1, H, W) float32}``, the label {0, 1} or, with ``out_channels``
    ``K > 1``, the class indices 0..K-1 (nearest-neighbour resampling keeps them exact); ``__getitems__`` returns a
    whole batch ``{"image": (B, C, H, W), "label": (B, 1, H, W)}`` (use ``collate_fn`` = identity, as
    :func:`batch_loader` does). Preprocessing is ``presets.preprocess`` (per-slice normalisation, label
    ``>= 0.5``), done once when the bank is built, and ``augment`` matches ``presets.augment``.

    Args:
        dataset: the volume-slice dataset whose cache is read (once).
        device: where the bank lives and batches are made.
        augment: batched augmentation (``None``: none).
        normalization: ``"zscore"`` or ``"percentile"``, as ``presets.preprocess``; ``"volume"`` (or ``"none"``) for
            volumes the dataset caches normalised already (the ``brain`` geometry's default).
        image_key: key of the image.
        label_key: key of the label.
        out_channels: the network's outputs: 1 (binary label, thresholded at 0.5) or the number of classes
            ``K`` (label values must be the class indices 0..K-1; a file with other values raises ``DataProblem``).
    """

    def __init__(
        self,
        dataset: VolumeSliceDataset,
        device: torch.device | str = "cpu",
        augment: RandBatchAugment | None = None,
        normalization: str = "zscore",
        image_key: str = "image",
        label_key: str = "label",
        out_channels: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.images = stack_slices(dataset, image_key, slice_normalizer(normalization), torch.float16, self.device)
        self.labels = stack_slices(dataset, label_key, _label_transform(out_channels), torch.uint8, self.device)
        self.index = torch.as_tensor(dataset.index, dtype=torch.long, device=self.device)
        self.augment = augment
        self.image_key, self.label_key = image_key, label_key

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        positions = torch.as_tensor(indices, dtype=torch.long)
        if self.device.type == "cuda":  # pinned + non_blocking: the copy does not wait for the GPU
            positions = positions.pin_memory().to(self.device, non_blocking=True)
        rows = self.index[positions]
        image, label = self.images[rows].float(), self.labels[rows].float()
        if self.augment is not None:
            image, label = self.augment(image, label)
        return {self.image_key: image, self.label_key: label}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class AreaWeightedSampler(torch.utils.data.Sampler[int]):
    """Half of every batch drawn in proportion to tumour area, half uniformly (the data set authors' scheme).

    The weighted draws pick slice ``i`` with probability proportional to ``area_i + smoothing * mean(area)``
    (with replacement), so large tumours are seen most, small ones often, tumour-free slices still now and
    then; the uniform draws keep the network seeing the data as it is (about two thirds tumour-free), which
    is what keeps false positives on tumour-free slices rare. Weighted and uniform draws alternate, so every
    batch of even size holds exactly ``uniform_fraction`` uniform slices when that is 0.5.

    Randomness comes from torch's global generator (re-seeded every epoch by the training handlers), so a
    resumed run replays the same epochs.

    Args:
        areas: tumour pixels of each item.
        num_samples: items per epoch (default: the number of items).
        uniform_fraction: share of uniform draws in [0, 1].
        smoothing: weight of the mean area added to every slice.
    """

    def __init__(
        self, areas: torch.Tensor, num_samples: int | None = None, uniform_fraction: float = 0.5, smoothing: float = 0.1
    ) -> None:
        areas = torch.as_tensor(areas, dtype=torch.float64).cpu()
        if areas.ndim != 1 or areas.numel() == 0:
            raise ValueError("areas must be a non-empty 1D tensor")
        if not 0.0 <= uniform_fraction <= 1.0:
            raise ValueError(f"uniform_fraction must be in [0, 1], got {uniform_fraction}")
        mean = float(areas.mean())
        self.weights = areas + smoothing * mean if mean > 0 else torch.ones_like(areas)
        self.num_samples = int(num_samples or areas.numel())
        self.uniform_fraction = uniform_fraction

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        n = self.num_samples
        uniform = torch.rand(n) < self.uniform_fraction if self.uniform_fraction not in (0.0, 0.5, 1.0) else None
        if uniform is None:  # exact alternation (0.5) or one kind only
            uniform = torch.zeros(n, dtype=torch.bool)
            if self.uniform_fraction == 1.0:
                uniform[:] = True
            elif self.uniform_fraction == 0.5:
                uniform[1::2] = True
        weighted = torch.multinomial(self.weights, n, replacement=True)
        plain = torch.randint(0, self.weights.numel(), (n,))
        yield from torch.where(uniform, plain, weighted).tolist()


def batch_loader(
    dataset: VolumeSliceDataset,
    batch_size: int,
    device: torch.device | str = "cpu",
    shuffle: bool = True,
    sampler: torch.utils.data.Sampler | None = None,
    num_workers: int = 0,
    augment: RandBatchAugment | None = None,
    sampling: str = "uniform",
    **kwargs,
) -> torch.utils.data.DataLoader:
    """A standard ``DataLoader`` over a :class:`SliceBank`: the index sampling of torch, the batch work of the bank.

    Args:
        dataset: the volume-slice dataset.
        batch_size: slices per batch.
        device: where the bank lives; workers are only used for a CPU bank (a GPU bank needs none).
        shuffle: shuffle each epoch (ignored with a ``sampler``).
        sampler: e.g. ``DistributedSampler`` over the bank's indices (the epoch is set by MONAI's workflow).
        num_workers: DataLoader worker processes (CPU bank only).
        augment: batched augmentation.
        sampling: ``"uniform"`` (every item of the epoch index once, shuffled) or ``"area"``
            (:class:`AreaWeightedSampler` over the bank's slices; ignored with a ``sampler``).
        kwargs: other ``SliceBank`` arguments (``normalization``, keys, ``out_channels``).
    """
    bank = SliceBank(dataset, device, augment, **kwargs)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")
    if sampler is None and sampling == "area":
        areas = bank.labels[bank.index].flatten(1).gt(0).sum(1)
        sampler = AreaWeightedSampler(areas, num_samples=len(bank))
    workers = num_workers if bank.device.type == "cpu" else 0
    return torch.utils.data.DataLoader(
        bank,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_identity,
    )
