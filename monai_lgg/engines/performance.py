"""Speed options of the training path, set from bundle configs, with defaults chosen per device.

Every option is a top-level key of ``bundles/_shared/configs/train.json`` (``--augmentation batch``,
``--precision bf16``, ``--channels_last true``, ``--compile true``); its default comes from
:data:`DEVICE_DEFAULTS` through :func:`fast_default`, so the same bundle trains on CPU and GPU. What
each option does and what it measured is in ``docs/performance.md`` (``tools/benchmark.py``).

- ``augmentation``: ``"loader"`` runs the MONAI per-sample chain (``presets.preprocess`` + ``augment``)
  in the DataLoader; ``"batch"`` keeps the cached slices in one tensor on the training device and
  normalises + augments each batch there with torch ops (:mod:`monai_lgg.data.slice_bank`).
- ``precision``: ``"fp32"`` or ``"bf16"`` (the network forward under ``torch.autocast`` in bfloat16,
  weights and loss in float32, no gradient scaler needed; replaces fp16 ``amp`` in training).
- ``channels_last``: network weights and input batches in ``torch.channels_last`` memory format.
- ``compile``: ``torch.compile`` the training network (MONAI ``SupervisedTrainer(compile=True)``; the
  validator and checkpoints use the same uncompiled module, so state dicts are unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.data import DataLoader
from monai.inferers import Inferer, SimpleInferer

from monai_lgg.data.datasets import VolumeSliceDataset
from monai_lgg.data.slice_bank import SAMPLINGS, AreaWeightedSampler, batch_loader
from monai_lgg.errors import LGGInputError, as_flag
from monai_lgg.transforms.batch import RandBatchAugment

__all__ = [
    "AUGMENTATIONS",
    "PRECISIONS",
    "DEVICE_DEFAULTS",
    "cpu_has_bf16",
    "fast_default",
    "device_defaults",
    "prepare_network",
    "FastInferer",
    "train_loader",
    "check_equal_sizes",
]

AUGMENTATIONS = ("loader", "batch")
PRECISIONS = ("fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_precision() -> str:
    return "bf16" if cpu_has_bf16() else "fp32"


# Chosen from tools/benchmark.py runs on a 2-core AMD EPYC (Zen 4, AVX512-BF16), docs/performance.md:
# batch augmentation cut the data pipeline from +40 % to ~0 % of the model step; bf16 gave 1.5x (UNet) to
# 2.2x (UNet++, TransUNet); channels_last helped UNet (+13-18 %) but slowed UNet++ / TransUNet, and compile
# (+11 %, +37 % with bf16) costs about a minute of compilation per run: both stay options on CPU.
# The CUDA values are the planned GPU defaults, NOT measured yet (no GPU was available).
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"augmentation": "batch", "precision": _cpu_precision, "channels_last": False, "compile": False},
    "cuda": {"augmentation": "batch", "precision": "bf16", "channels_last": True, "compile": False},
}


def fast_default(name: str, device: torch.device | str = "cpu") -> Any:
    """The default of speed option ``name`` on ``device`` (its type: ``cpu``, ``cuda``; others use ``cpu``).

    CPU precision is ``"bf16"`` only where oneDNN runs bfloat16 natively (:func:`cpu_has_bf16`), else ``"fp32"``.
    """
    kind = torch.device(device).type
    table = DEVICE_DEFAULTS.get(kind, DEVICE_DEFAULTS["cpu"])
    if name not in table:
        raise KeyError(f"unknown speed option {name!r}; choose one of {', '.join(table)}")
    value = table[name]
    return value() if callable(value) else value


def device_defaults(device: torch.device | str = "cpu") -> dict[str, Any]:
    """All speed options' defaults on ``device``, resolved (see :func:`fast_default`)."""
    kind = torch.device(device).type
    return {name: fast_default(name, device) for name in DEVICE_DEFAULTS.get(kind, DEVICE_DEFAULTS["cpu"])}


def _check(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def prepare_network(
    network: torch.nn.Module, device: torch.device | str, channels_last: bool = False
) -> torch.nn.Module:
    """Move ``network`` to ``device``, its 4D weights to ``channels_last`` memory format when asked."""
    network = network.to(device)
    return network.to(memory_format=torch.channels_last) if as_flag(channels_last, "channels_last") else network


def _to_float(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float(o) for o in output)
    return output


class FastInferer(Inferer):
    """Run another inferer with the speed options: bf16 autocast and channels-last inputs.

    Outputs are returned in float32 (a list of heads stays a list), so losses and metrics run in full
    precision whatever the forward used.

    Args:
        inferer: the inferer wrapped (default ``SimpleInferer``).
        precision: ``"fp32"`` or ``"bf16"`` (autocast on the input's device type).
        channels_last: convert 4D inputs ``(B, C, H, W)`` to ``torch.channels_last``.
    """

    def __init__(self, inferer: Inferer | None = None, precision: str = "fp32", channels_last: bool = False) -> None:
        super().__init__()
        self.inferer = inferer or SimpleInferer()
        self.precision = _check("precision", precision, PRECISIONS)
        self.channels_last = as_flag(channels_last, "channels_last")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.precision == "fp32":
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _to_float(output)


def check_equal_sizes(dataset: VolumeSliceDataset) -> None:
    """Refuse training volumes of different slice sizes for the ``"batch"`` path (it stacks all slices in one tensor).

    Raises:
        LGGInputError: naming the first image whose size differs, and telling to use ``--augmentation loader``
            (per-sample random crops of ``spatial_size``, which takes any size).
    """
    first: tuple[tuple[int, ...], str] | None = None
    for v in range(len(dataset.volumes)):
        size = tuple(dataset.volumes[v][dataset.image_key].shape[1:-1])
        image = dataset.volumes.data[v].get(dataset.image_key)
        name = str(image[0] if isinstance(image, (list, tuple)) else image)
        if first is None:
            first = (size, name)
        elif size != first[0]:
            raise LGGInputError(
                name,
                f"slice size {size} differs from {first[0]} of {first[1]}: augmentation 'batch' stacks all "
                "training slices in one tensor; pass --augmentation loader to train on images of different sizes",
            )


def train_loader(
    dataset: VolumeSliceDataset,
    batch_size: int,
    augmentation: str = "loader",
    device: torch.device | str = "cpu",
    shuffle: bool = True,
    num_workers: int = 0,
    sampler: torch.utils.data.Sampler | None = None,
    spatial_size: Sequence[int] | None = None,
    out_channels: int = 1,
    sampling: str = "uniform",
    normalization: str = "zscore",
    **augment_args: Any,
) -> Iterable:
    """The training DataLoader of a bundle, for either augmentation path.

    Args:
        dataset: the training :class:`~monai_lgg.data.datasets.VolumeSliceDataset` (its ``slice_transform``
            is the ``"loader"`` path's chain; the ``"batch"`` path reads only its cache and index).
        batch_size: slices per batch.
        augmentation: ``"loader"`` (MONAI per-sample transforms in the DataLoader) or ``"batch"``
            (:func:`~monai_lgg.data.slice_bank.batch_loader` on ``device``).
        device: the training device.
        shuffle: shuffle every epoch (a ``sampler`` replaces it).
        num_workers: DataLoader workers (a GPU bank uses none).
        sampler: e.g. ``DistributedSampler`` (``multi_gpu_train.json``).
        spatial_size: training patch size of the ``"batch"`` path (pad / random crop, as ``presets.augment``).
        out_channels: the network's outputs, for the ``"batch"`` path's labels (1: binary; ``K``: class indices,
            see :class:`~monai_lgg.data.slice_bank.SliceBank`); the ``"loader"`` chain gets it from the config.
        sampling: ``"uniform"`` (the dataset's epoch index, shuffled) or ``"area"`` (half of each batch drawn in
            proportion to tumour area, :class:`~monai_lgg.data.slice_bank.AreaWeightedSampler`; ``"batch"`` path).
        normalization: per-slice normalisation of the ``"batch"`` path (``"volume"`` or ``"none"``: the dataset
            caches normalised volumes, as in the ``brain`` geometry by default).
        augment_args: other arguments of ``presets.augment`` / ``RandBatchAugment`` for the ``"batch"`` path.
    """
    _check("augmentation", augmentation, AUGMENTATIONS)
    if augmentation == "loader":
        if sampling not in SAMPLINGS:
            raise LGGInputError(None, f"sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")
        if sampler is None and sampling == "area":
            sampler = AreaWeightedSampler(dataset.tumour_areas())
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=torch.device(device).type == "cuda",
        )
    check_equal_sizes(dataset)
    augment = RandBatchAugment(spatial_size=spatial_size, **augment_args)
    return batch_loader(
        dataset,
        batch_size,
        device,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        augment=augment,
        out_channels=out_channels,
        sampling=sampling,
        normalization=normalization,
    )
