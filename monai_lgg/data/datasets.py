"""Datasets that feed 2D networks: slices of cached patient volumes, or Kaggle TIFF slices directly."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data import CacheDataset
from monai.transforms import Compose

from monai_lgg.data.datalist import assign_folds, split_fold
from monai_lgg.data.kaggle import failed_cases, find_kaggle_root, read_case, scan_kaggle
from monai_lgg.errors import DataProblem, LGGInputError, reraise_input_errors
from monai_lgg.transforms import presets

__all__ = ["oversample_index", "VolumeSliceDataset", "kaggle_slice_datalist", "kaggle_slice_dataset"]

logger = logging.getLogger(__name__)


def oversample_index(positive: Sequence[bool], positive_fraction: float | None = None) -> list[int]:
    """Indices of one epoch: every item once, tumour slices repeated until they make ``positive_fraction``.

    Like the dataset authors' sampler, this shows the network tumour slices more often than their
    share of the data (about a third of LGG slices), but it keeps every slice in every epoch and a
    fixed epoch length, so it works with ``DistributedSampler``.

    Args:
        positive: per item, whether its mask has tumour.
        positive_fraction: wanted minimum share of tumour slices per epoch in [0, 1); ``None``: no repeats.
    """
    items = list(range(len(positive)))
    pos = [i for i, p in enumerate(positive) if p]
    if positive_fraction is None or not pos or len(pos) == len(items):
        return items
    if not 0 <= positive_fraction < 1:
        raise LGGInputError(None, f"positive_fraction must be in [0, 1), got {positive_fraction}")
    neg = len(items) - len(pos)
    repeats = max(1, math.ceil(positive_fraction * neg / ((1 - positive_fraction) * len(pos))))
    return items + pos * (repeats - 1)


class VolumeSliceDataset(torch.utils.data.Dataset):
    """2D slices of 3D patient volumes, with the volumes loaded once and cached in memory.

    The deterministic ``volume_transform`` (loading) runs once per patient through MONAI's
    ``CacheDataset``; each item is then one slice ``(C, H, W)`` passed through ``slice_transform``
    (preprocessing and random augmentation). Cached volumes keep their stored dtype (uint8 for
    converted LGG data: about 0.5 GB for 66 patients).

    Args:
        data: datalist items (``image``: the modality files, ``label``: the mask file, ``case``: id).
        volume_transform: deterministic transform producing channel-first volumes ``(C, H, W, D)``;
            default ``Compose(presets.load("volume"))``.
        slice_transform: transform applied to each slice dict; default: preprocessing + augmentation.
        positive_fraction: see :func:`oversample_index`.
        image_key: key of the image.
        label_key: key of the label.
        cache_num_workers: threads used to fill the cache.
        progress: show the caching progress bar.
        image_channels: channels the images must have, checked by the default ``volume_transform``
            (3 for LGG; 1 for grey images; ``None``: any).

    Items are dicts with ``image``, ``label``, ``case`` and ``slice`` (0-based). A datalist item may
    restrict its volume to some slices with ``slices``: a list of 0-based slice indices (used to
    reproduce a random slice split, see ``tools/leaky_split.py``); without it every slice is used.
    """

    def __init__(
        self,
        data: Sequence[dict],
        volume_transform: Callable | None = None,
        slice_transform: Callable | None = None,
        positive_fraction: float | None = None,
        image_key: str = "image",
        label_key: str = "label",
        cache_num_workers: int = 1,
        progress: bool = True,
        image_channels: int | None = 3,
    ) -> None:
        if not data:
            raise LGGInputError(None, "no volumes to train on (empty datalist split)")
        volume_transform = volume_transform or Compose(presets.load("volume", image_key, label_key, image_channels))
        self.slice_transform = slice_transform or Compose(
            presets.preprocess(image_key, label_key) + presets.augment(image_key, label_key)
        )
        self.image_key, self.label_key = image_key, label_key
        # copy_cache=False: items are sliced and copied per access, never modified in place.
        with reraise_input_errors():  # a bad volume raises its DataProblem, not MONAI's RuntimeError
            self.volumes = CacheDataset(
                data,
                volume_transform,
                cache_rate=1.0,
                num_workers=cache_num_workers,
                progress=progress,
                copy_cache=False,
            )
        self.slices: list[tuple[int, int]] = []
        positive: list[bool] = []
        for v in range(len(self.volumes)):
            label = torch.as_tensor(self.volumes[v][label_key])
            flags = (label.reshape(-1, label.shape[-1]).amax(0) > 0).tolist()
            chosen = data[v].get("slices")
            chosen = range(label.shape[-1]) if chosen is None else sorted(int(z) for z in chosen)
            if chosen and not 0 <= chosen[0] <= chosen[-1] < label.shape[-1]:
                raise LGGInputError(data[v].get("case"), f"'slices' must be in 0..{label.shape[-1] - 1}")
            self.slices += [(v, z) for z in chosen]
            positive += [flags[z] for z in chosen]
        self.index = oversample_index(positive, positive_fraction)
        self.num_positive = int(sum(positive))

    def __len__(self) -> int:
        return len(self.index)

    def tumour_areas(self) -> torch.Tensor:
        """Label pixels above 0 of every item of the epoch index (for area-weighted sampling)."""
        per_volume = {}
        for v in {v for v, _ in self.slices}:
            label = torch.as_tensor(self.volumes[v][self.label_key])
            per_volume[v] = (label > 0.5).reshape(-1, label.shape[-1]).sum(0)
        return torch.stack([per_volume[v][z] for v, z in (self.slices[i] for i in self.index)]).float()

    def __getitem__(self, i: int) -> dict:
        v, z = self.slices[self.index[i]]
        volume = self.volumes[v]
        item = {k: val for k, val in volume.items() if k not in (self.image_key, self.label_key)}
        for key in (self.image_key, self.label_key):
            item[key] = torch.as_tensor(volume[key])[..., z].clone()
        item["slice"] = z
        return self.slice_transform(item)


def kaggle_slice_datalist(source: str | Path, num_folds: int = 5, seed: int = 0, skip_bad: bool = False) -> list[dict]:
    """Datalist of 2D Kaggle slices (no conversion), with the same patient folds the converter assigns.

    Every case is validated as the converter does (names, pairs, image headers, every mask), so
    training straight from the TIFFs accepts exactly what ``monai-lgg convert`` accepts.

    Args:
        source: the ``kaggle_3m`` folder or the root of the unpacked Kaggle zip.
        num_folds: patient-level folds.
        seed: seed of the fold assignment.
        skip_bad: leave out the cases with a problem (logged as warnings, each with its first problem)
            instead of raising.

    Raises:
        DataProblem: the first problem found, naming its file (``monai-lgg convert`` reports them all).
    """
    root, _ = find_kaggle_root(source)
    cases, problems = scan_kaggle(root)
    bad = failed_cases(root, problems)
    items, burdens = [], []
    for case in cases:
        if case.case_id in bad:
            continue
        try:
            _, label, _ = read_case(case, images=False)
        except DataProblem as problem:
            problems.append(problem)
            bad.add(case.case_id)
            continue
        flags = label.reshape(-1, label.shape[2]).any(axis=0)
        for s, positive in zip(case.slices, flags.tolist(), strict=True):
            items.append(
                {
                    "image": str(s.image),
                    "label": str(s.mask),
                    "case": case.case_id,
                    "slice": s.number - 1,
                    "positive": positive,
                }
            )
        burdens.append({"case": case.case_id, "institution": case.institution, "tumour_voxels": int(label.sum())})
    _report_bad(root, problems, bad, skip_bad)
    folds = assign_folds(burdens, num_folds=num_folds, seed=seed)
    for item in items:
        item["fold"] = folds[item["case"]]
    return items


def _report_bad(root: Path, problems: list[DataProblem], bad: set[str], skip_bad: bool) -> None:
    """Raise the first fatal problem, or with ``skip_bad`` log the skipped folders."""
    errors = [p for p in problems if p.fatal]
    if errors and not skip_bad:
        more = f" (and {len(errors) - 1} more problem(s); skip_bad leaves the bad cases out)" if len(errors) > 1 else ""
        raise DataProblem(errors[0].path, errors[0].problem + more)
    for name in sorted(bad):
        first = next((p for p in errors if Path(p.path).is_relative_to(root / name)), None)
        logger.warning(f"skipped {root / name}: {first.problem if first else 'invalid'}")


def kaggle_slice_dataset(
    source: str | Path,
    fold: int = 0,
    split: str = "train",
    num_folds: int = 5,
    seed: int = 0,
    positive_fraction: float | None = None,
    cache_num_workers: int = 1,
    skip_bad: bool = False,
    **augment_args,
) -> torch.utils.data.Dataset:
    """Dataset of one split of Kaggle TIFF slices read directly, with the same transforms as volumes.

    Args:
        source: the ``kaggle_3m`` folder.
        fold: test fold of the nested split (see :func:`monai_lgg.data.datalist.split_fold`).
        split: ``train`` (augmented, oversampled) or ``validation`` / ``test`` (deterministic).
        positive_fraction: see :func:`oversample_index` (train only).
        skip_bad: leave out invalid cases (see :func:`kaggle_slice_datalist`).
        augment_args: arguments of :func:`monai_lgg.transforms.presets.augment`.
    """
    parts = split_fold(kaggle_slice_datalist(source, num_folds, seed, skip_bad), fold, num_folds)
    if split not in parts:
        raise LGGInputError(None, f"split must be train, validation or test, got {split!r}")
    data = parts[split]
    train = split == "train"
    with reraise_input_errors():  # a file damaged past its header raises its DataProblem
        transform = presets.slice_transforms(train=train, **augment_args)
        dataset = CacheDataset(data, transform, num_workers=cache_num_workers)
    if train and positive_fraction is not None:
        dataset = torch.utils.data.Subset(dataset, oversample_index([d["positive"] for d in data], positive_fraction))
    return dataset
