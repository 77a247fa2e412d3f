"""What a random slice split reports: the leaky protocol of one-off notebooks, measured next to ours.

A notebook that shuffles all 2D slices and splits them 80/20 trains on neighbouring slices of every
test patient (a slice and its neighbour are nearly identical), so its test score measures memory as
much as generalisation. :func:`random_slice_split` builds exactly that split over a converted data set
(each patient keeps its own volume; the datalist item lists which slices train), the bundle trains on
it unchanged (``VolumeSliceDataset`` honours ``slices``), and :func:`score_held_out_slices` scores the
held-out slices the way such notebooks do (per slice) and per patient over those slices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from monai_lgg.data.datalist import load_fold
from monai_lgg.io import write_json
from monai_lgg.metrics import compute_slice_dice, summarize, volume_scores

__all__ = ["random_slice_split", "score_held_out_slices"]


def random_slice_split(
    datalist: str | Path, output: str | Path, test_fraction: float = 0.2, train_fraction: float = 0.6, seed: int = 0
) -> dict[str, list[int]]:
    """Split every slice of every patient at random into training, unused and test slices.

    The default 60 / 20 / 20 mirrors the nested patient split's training / validation / test shares,
    so both protocols train on about as many slices; the middle share (validation in a notebook) is
    not used, since the leaky run trains a fixed number of epochs.

    Writes ``output`` (a datalist whose items carry ``slices``: their training slices, absolute paths)
    and returns ``{case: test slice indices}``.
    """
    if not (0 < test_fraction and 0 < train_fraction and test_fraction + train_fraction <= 1):
        raise ValueError(
            f"need 0 < test_fraction, train_fraction and their sum <= 1, got {test_fraction}, {train_fraction}"
        )
    items = load_fold(datalist, split="all")
    rng = np.random.default_rng(seed)
    test: dict[str, list[int]] = {}
    training = []
    for item in items:
        n = int(item["num_slices"])
        draw = rng.random(n)
        test[item["case"]] = np.flatnonzero(draw < test_fraction).tolist()
        training.append({**item, "slices": np.flatnonzero(draw >= 1 - train_fraction).tolist()})
    split = {"test_fraction": test_fraction, "train_fraction": train_fraction, "seed": seed}
    write_json(output, {"name": "random slice split (leaky)", **split, "training": training})
    return test


def score_held_out_slices(
    network: torch.nn.Module,
    datalist: str | Path,
    test_slices: Mapping[str, Sequence[int]],
    roi_size: Sequence[int],
    threshold: float = 0.5,
) -> dict:
    """Per-slice and per-patient Dice of ``network`` on each patient's held-out slices."""
    from monai_lgg.inference.predictor import Predictor
    from monai_lgg.transforms.presets import volume_transforms

    predictor = Predictor([network], roi_size, threshold=threshold)
    transform = volume_transforms()
    slice_dice: list[float] = []
    tumour_slice_dice: list[float] = []
    patient_dice: list[float] = []
    for item in load_fold(datalist, split="all"):
        zs = list(test_slices.get(item["case"], []))
        if not zs:
            continue
        data = transform({"image": item["image"], "label": item["label"]})
        image, label = torch.as_tensor(data["image"])[..., zs], torch.as_tensor(data["label"])[0, ..., zs] > 0
        _, mask = predictor(image)
        pred = mask.bool()
        per_slice = compute_slice_dice(pred[None, None], label[None, None])[:, 0]
        slice_dice += per_slice.tolist()
        tumour = label.reshape(-1, len(zs)).any(0)
        tumour_slice_dice += per_slice[tumour].tolist()
        patient_dice.append(volume_scores(pred.numpy(), label.numpy())["dice"])
    return {
        "test_slices": len(slice_dice),
        "patients": len(patient_dice),
        "slice_dice_empty_as_1": float(np.mean(slice_dice)),
        "slice_dice_tumour_slices": float(np.mean(tumour_slice_dice)),
        "per_patient_dice": summarize(patient_dice),
    }
