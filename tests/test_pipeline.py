"""Data pipeline: transforms, slice sampling, and agreement between the volume and the TIFF entries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.transforms import Compose

from monai_lgg.data.datalist import load_fold
from monai_lgg.data.datasets import VolumeSliceDataset, kaggle_slice_datalist, kaggle_slice_dataset, oversample_index
from monai_lgg.transforms import SliceWiseNormalizeIntensity, SliceWiseNormalizeIntensityd, presets


@pytest.mark.parametrize("method", ["zscore", "percentile"])
def test_slicewise_normalize(method):
    x = torch.zeros(3, 16, 16, 5)
    # seeded: the percentile bounds below hold for this draw, not for every draw of the global RNG
    x[:, 4:12, 4:12] = torch.rand(3, 8, 8, 5, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 6) * 50
    y = SliceWiseNormalizeIntensity(slice_dim=-1, method=method, clip=None)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.all(y[:, :4] == 0), "background must stay zero"
    inside = y[:, 4:12, 4:12]
    if method == "zscore":
        torch.testing.assert_close(inside.mean(dim=(1, 2)), torch.zeros(3, 5), atol=1e-4, rtol=0)
        torch.testing.assert_close(inside.std(dim=(1, 2), unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)
    else:
        assert inside.min() >= -0.05 and inside.max() <= 1.05
    # per slice: each slice equals the 2D transform of that slice alone
    for k in range(5):
        torch.testing.assert_close(
            y[..., k], SliceWiseNormalizeIntensity(slice_dim=None, method=method, clip=None)(x[..., k])
        )
    d = SliceWiseNormalizeIntensityd("image", slice_dim=-1, method=method, clip=None)({"image": x, "other": 1})
    torch.testing.assert_close(d["image"], y)
    with pytest.raises(ValueError, match="method"):
        SliceWiseNormalizeIntensity(method="minmax")


def test_oversample_index():
    positive = [True] * 10 + [False] * 30
    assert oversample_index(positive) == list(range(40))
    index = oversample_index(positive, positive_fraction=0.5)
    share = sum(positive[i] for i in index) / len(index)
    assert share >= 0.5 and set(index) == set(range(40))


def test_volume_and_tiff_entries_agree(synthetic_kaggle, synthetic_converted):
    """Slice k of a preprocessed volume equals the preprocessed TIFF slice k (no transposes, same values)."""
    item = json.loads((synthetic_converted / "datalist.json").read_text())["training"][0]
    volume = presets.volume_transforms()(
        {
            "image": [str(synthetic_converted / p) for p in item["image"]],
            "label": str(synthetic_converted / item["label"]),
        }
    )
    case = item["case"]
    positive = int(torch.nonzero(volume["label"].reshape(-1, volume["label"].shape[-1]).amax(0))[0, 0])
    for k in (0, positive, positive + 2):
        tif = presets.slice_transforms()(
            {
                "image": str(synthetic_kaggle / case / f"{case}_{k + 1}.tif"),
                "label": str(synthetic_kaggle / case / f"{case}_{k + 1}_mask.tif"),
            }
        )
        torch.testing.assert_close(tif["image"].as_tensor(), volume["image"][..., k].as_tensor())
        torch.testing.assert_close(tif["label"].as_tensor(), volume["label"][..., k].as_tensor())
    # the synthetic lesion is off-centre (upper-left quadrant in the TIFF): a transpose or flip would move it
    label = volume["label"][0, ..., positive]
    rows, cols = torch.nonzero(label, as_tuple=True)
    assert rows.float().mean() < 128 and cols.float().mean() < 128
    assert volume["image"].affine.shape == (4, 4), "volume metadata is kept for saving predictions"


def test_volume_slice_dataset_batches(synthetic_converted):
    train = load_fold(synthetic_converted / "datalist.json", fold=0, split="train")
    ds = VolumeSliceDataset(train, positive_fraction=0.4, progress=False)
    assert len(ds.slices) == sum(i["num_slices"] for i in train)
    assert ds.num_positive == sum(i["positive_slices"] for i in train)
    assert len(ds) > len(ds.slices)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=True, num_workers=0)))
    assert batch["image"].shape == (4, 3, 256, 256) and batch["label"].shape == (4, 1, 256, 256)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}
    assert len(batch["case"]) == 4 and batch["slice"].shape == (4,)


def test_deterministic_slice_pipeline_without_augmentation(synthetic_converted):
    train = load_fold(synthetic_converted / "datalist.json", fold=0, split="train")
    ds = VolumeSliceDataset(train, slice_transform=Compose(presets.preprocess()), progress=False)
    a, b = ds[5], ds[5]
    torch.testing.assert_close(a["image"], b["image"])


def test_kaggle_direct_entry_uses_converter_folds(synthetic_kaggle, synthetic_converted):
    converter = {
        i["case"]: i["fold"] for i in json.loads((synthetic_converted / "datalist.json").read_text())["training"]
    }
    direct = kaggle_slice_datalist(synthetic_kaggle)
    assert {i["case"]: i["fold"] for i in direct} == converter
    assert sum(i["positive"] for i in direct) == 76
    ds = kaggle_slice_dataset(synthetic_kaggle, fold=0, split="validation")
    cases = {i["case"] for i in load_fold(synthetic_converted / "datalist.json", fold=0, split="validation")}
    assert len(ds) == sum(1 for i in direct if i["case"] in cases)
    sample = ds[0]
    assert sample["image"].shape == (3, 256, 256) and np.isfinite(sample["image"].numpy()).all()
