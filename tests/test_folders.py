"""Generic images/ + masks/ folders: conversion (binary, labels, palette, mapping; grey and RGB; any size),
one-line errors naming the file with nothing written, the LGG datalist format, a fixed test list, and a
tiny training + evaluation through the UNet bundle."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile

from monai_lgg.cli import main
from monai_lgg.data.datasets import VolumeSliceDataset
from monai_lgg.data.folders import convert_folders, parse_mapping
from monai_lgg.data.kaggle import convert_kaggle
from monai_lgg.data.synthetic import generate_synthetic_kaggle
from monai_lgg.engines.bundle import load_split
from monai_lgg.engines.performance import train_loader
from monai_lgg.errors import LGGInputError
from monai_lgg.transforms.presets import train_slice_transforms

from .conftest import PROJECT_ROOT

SIZES = {"a": (40, 56), "b": (72, 48), "c": (64, 64), "d": (33, 71), "e": (50, 50), "f": (80, 36)}


def _disk(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A bool disk at a seeded position (the foreground) of about a fifth of the smaller side."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centre = rng.uniform(0.3, 0.7, 2) * shape
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < (min(shape) / 5) ** 2


def write_folder(
    root: Path, kind: str = "binary", rgb: bool = False, suffix: str = ".png", sizes: dict = SIZES
) -> Path:
    """Images (grey or RGB uint8, noise + a brighter disk) and masks of ``kind`` in ``root/images``, ``root/masks``.

    Masks: ``binary`` {0, 255}; ``binary01`` {0, 1}; ``labels`` 0 / 1 (disk) / 2 (its centre); ``palette``
    black / red / green for the same classes; ``inverted`` 255 background, 0 disk (ISBI style).
    """
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (name, shape) in enumerate(sizes.items()):
        rng = np.random.default_rng(i)
        disk = _disk(shape, i)
        core = disk & _disk(shape, i) & (np.add.outer(np.arange(shape[0]), np.zeros(shape[1])) % 2 == 0)
        grey = np.clip(rng.normal(80, 10, shape) + 90 * disk, 1, 255).astype(np.uint8)
        image = np.stack([grey, 255 - grey, grey // 2], -1) if rgb else grey
        classes = disk.astype(np.uint8) + core.astype(np.uint8)
        mask = {
            "binary": disk.astype(np.uint8) * 255,
            "binary01": disk.astype(np.uint8),
            "labels": classes,
            "inverted": (~disk).astype(np.uint8) * 255,
            "palette": np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)[classes],
        }[kind]
        for folder, array in (("images", image), ("masks", mask)):
            path = root / folder / f"{name}{suffix}"
            if suffix == ".png":
                cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)  # OpenCV writes BGR
            else:
                tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else "minisblack")
    return root


def _volume(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def _read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize(
    "kind, rgb, suffix, options, expected",
    [
        ("binary", False, ".png", {}, lambda m: m // 255),
        ("binary01", True, ".tif", {}, lambda m: m),
        (
            "inverted",
            False,
            ".png",
            {"mapping": "{0: 1, 255: 0}", "class_names": ["cell", "membrane"]},
            lambda m: m == 0,
        ),
        ("labels", False, ".tif", {"mask_mode": "labels", "class_names": ["bg", "body", "nucleus"]}, lambda m: m),
        (
            "palette",
            True,
            ".png",
            {"mask_mode": "palette", "mapping": {"0,0,0": 0, "#ff0000": 1, "(0, 255, 0)": 2}},
            lambda m: (m[..., 2] > 0) * 1 + (m[..., 1] > 0) * 2,
        ),  # cv2 reads BGR: red is channel 2
    ],
)
def test_round_trip(tmp_path, kind, rgb, suffix, options, expected):
    """Every pixel of every image and mask survives, in (row, column) order, as a one-slice volume."""
    source = write_folder(tmp_path / "src", kind, rgb, suffix)
    result = convert_folders(source, tmp_path / "out", progress=False, num_folds=3, **options)
    out = result.output
    channels = 3 if rgb else 1
    for name, shape in SIZES.items():
        image = _read(source / "images" / f"{name}{suffix}")
        if rgb and suffix == ".png":
            image = image[..., ::-1]
        image = image.reshape(*shape, channels)
        for c in range(channels):
            stored = _volume(out / "imagesTr" / f"{name}_{c:04d}.nii.gz")
            assert stored.shape == (*shape, 1) and stored.dtype == np.uint8
            np.testing.assert_array_equal(stored[..., 0], image[..., c])
        label = _volume(out / "labelsTr" / f"{name}.nii.gz")
        assert label.shape == (*shape, 1) and label.dtype == np.uint8
        np.testing.assert_array_equal(label[..., 0], expected(_read(source / "masks" / f"{name}{suffix}").astype(int)))
    dataset = json.loads((out / "dataset.json").read_text())
    names = options.get("class_names") or (
        ["background", "foreground"] if kind != "palette" else ["background", "class_1", "class_2"]
    )
    assert dataset["labels"] == {n: i for i, n in enumerate(names)}
    assert len(dataset["channel_names"]) == channels and dataset["numTraining"] == len(SIZES)


def test_datalist_has_the_lgg_format(tmp_path):
    """Same top-level keys and item keys as convert_kaggle's datalist, and the same fold rules."""
    generate_synthetic_kaggle(tmp_path / "k", num_patients=3, num_slices=4, size=32)
    lgg = json.loads(
        (
            convert_kaggle(tmp_path / "k", tmp_path / "lgg", num_folds=3, progress=False, num_workers=1).output
            / "datalist.json"
        ).read_text()
    )
    ours = json.loads(
        (
            convert_folders(write_folder(tmp_path / "src"), tmp_path / "out", num_folds=3, progress=False).output
            / "datalist.json"
        ).read_text()
    )
    assert set(ours) == set(lgg) and set(ours["training"][0]) == set(lgg["training"][0])
    assert (
        ours["training"][0]["image"] == ["imagesTr/a_0000.nii.gz"]
        and ours["training"][0]["label"] == "labelsTr/a.nii.gz"
    )
    sizes = np.bincount([item["fold"] for item in ours["training"]])
    assert sizes.tolist() == [2, 2, 2]
    splits = {
        s: {i["case"] for i in load_split(tmp_path / "out" / "datalist.json", 0, s)}
        for s in ("train", "validation", "test")
    }
    assert set.union(*splits.values()) == set(SIZES) and sum(map(len, splits.values())) == len(SIZES)


def test_fixed_test_list(tmp_path):
    """The named cases are fold 0 = the test split of fold 0; the others train / validate; other folds are refused."""
    out = convert_folders(
        write_folder(tmp_path / "src"), tmp_path / "out", test_cases=["e", "f"], num_folds=3, progress=False
    ).output
    datalist = out / "datalist.json"
    assert {i["case"] for i in load_split(datalist, 0, "test")} == {"e", "f"}
    assert {i["case"] for i in load_split(datalist, 0, "train") + load_split(datalist, 0, "validation")} == set("abcd")
    assert json.loads(datalist.read_text())["test_fold"] == 0
    with pytest.raises(LGGInputError, match="fixed test list .* --fold 0"):
        load_split(datalist, 1, "train")
    with pytest.raises(LGGInputError, match=r"test_cases \['zz'\]"):
        convert_folders(tmp_path / "src", tmp_path / "out2", test_cases=["zz"], num_folds=3, progress=False)


def _break(kind: str, src: Path) -> tuple[Path | str, dict]:
    """Damage the folder ``src`` one way; return the file the error must name and the conversion options."""
    images, masks = src / "images", src / "masks"
    if kind == "no mask":
        (masks / "b.png").unlink()
        return images / "b.png", {}
    if kind == "mask without image":
        cv2.imwrite(str(masks / "z.png"), np.zeros((8, 8), np.uint8))
        return masks / "z.png", {}
    if kind == "unreadable image":
        (images / "b.png").write_bytes(b"\x89PNG not really")
        return images / "b.png", {}
    if kind == "empty mask file":
        (masks / "c.png").write_bytes(b"")
        return masks / "c.png", {}
    if kind == "size mismatch":
        cv2.imwrite(str(masks / "c.png"), np.zeros((64, 63), np.uint8))
        return masks / "c.png", {}
    if kind == "not binary":
        cv2.imwrite(str(masks / "d.png"), np.full(SIZES["d"], 7, np.uint8))
        return masks / "d.png", {}
    if kind == "label out of range":
        cv2.imwrite(str(masks / "d.png"), np.full(SIZES["d"], 3, np.uint8))
        return masks / "d.png", {"mask_mode": "labels", "num_classes": 3}
    if kind == "value not in mapping":
        cv2.imwrite(str(masks / "d.png"), np.full(SIZES["d"], 128, np.uint8))
        return masks / "d.png", {"mapping": {0: 1, 255: 0}}
    if kind == "colour not in palette":
        cv2.imwrite(str(masks / "d.png"), np.full((*SIZES["d"], 3), 200, np.uint8))
        return masks / "d.png", {"mask_mode": "palette", "mapping": {"0,0,0": 0, "255,0,0": 1, "0,255,0": 2}}
    if kind == "colour mask in binary mode":
        cv2.imwrite(
            str(masks / "d.png"),
            np.stack([np.zeros(SIZES["d"], np.uint8)] * 2 + [np.full(SIZES["d"], 255, np.uint8)], -1),
        )
        return masks / "d.png", {}
    if kind == "mixed channels":
        cv2.imwrite(str(images / "e.png"), np.zeros((*SIZES["e"], 3), np.uint8))
        return images / "e.png", {}
    if kind == "empty folder":
        for path in [*images.iterdir(), *masks.iterdir()]:
            path.unlink()
        return images, {}
    if kind == "no masks folder":
        for path in masks.iterdir():
            path.unlink()
        masks.rmdir()
        return masks, {}
    raise AssertionError(kind)


BAD = [
    "no mask",
    "mask without image",
    "unreadable image",
    "empty mask file",
    "size mismatch",
    "not binary",
    "label out of range",
    "value not in mapping",
    "colour not in palette",
    "colour mask in binary mode",
    "mixed channels",
    "empty folder",
    "no masks folder",
]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, kind):
    source = write_folder(
        tmp_path / "src", {"label out of range": "labels", "colour not in palette": "palette"}.get(kind, "binary")
    )
    culprit, options = _break(kind, source)
    with pytest.raises(LGGInputError) as info:
        convert_folders(source, tmp_path / "out", num_folds=3, progress=False, **options)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{culprit}: "), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temporary folder


def test_bad_input_keeps_a_previous_output(tmp_path):
    source = write_folder(tmp_path / "src")
    out = convert_folders(source, tmp_path / "out", num_folds=3, progress=False).output
    before = (out / "datalist.json").read_text()
    _break("not binary", source)
    with pytest.raises(LGGInputError):
        convert_folders(source, out, num_folds=3, progress=False)
    assert (out / "datalist.json").read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "out",
        "src",
    ]


def test_mapping_forms():
    assert parse_mapping("{0: 1, 255: 0}") == {0: 1, 255: 0} == parse_mapping({"0": 1, "255.0": 0})
    assert parse_mapping({"#FF0000": 1, "0, 0, 0": 0, (0, 255, 0): 2}, palette=True) == {
        (255, 0, 0): 1,
        (0, 0, 0): 0,
        (0, 255, 0): 2,
    }
    for bad, palette in (
        ("{0: 'x'}", False),
        ("[1, 2]", False),
        ({"300,0,0": 1}, True),
        ({"red": 1}, True),
        ({0.5: 1}, False),
    ):
        with pytest.raises(LGGInputError, match="mapping"):
            parse_mapping(bad, palette)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mask_mode": "rgb"}, "mask_mode must be one of"),
        ({"mapping": {0: 0, 255: 2}}, "binary mapping must give classes 0 or 1"),
        ({"mask_mode": "labels", "mapping": {0: 0, 255: 3}, "class_names": ["a", "b"]}, "class 3, but only 2 classes"),
        ({"mask_mode": "palette"}, "needs a mapping"),
        ({"class_names": ["a", "b", "c"]}, "must be 2 distinct names"),
        ({"test_cases": ["a"], "num_folds": 2}, "num_folds >= 3"),
    ],
)
def test_bad_options_write_nothing(tmp_path, options, message):
    source = write_folder(tmp_path / "src", "palette" if options.get("mask_mode") == "palette" else "binary")
    with pytest.raises(LGGInputError, match=message):
        convert_folders(source, tmp_path / "out", progress=False, **{"num_folds": 3, **options})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_cli(tmp_path, capsys):
    source = write_folder(tmp_path / "src", "inverted")
    main(
        [
            "convert_folders",
            str(source),
            str(tmp_path / "out"),
            "--mapping",
            "{0: 1, 255: 0}",
            "--class_names",
            "cell,membrane",
            "--test_cases",
            "e,f",
            "--num_folds",
            "3",
            "--progress",
            "False",
        ]
    )
    assert "converted 6 images" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["labels"] == {"cell": 0, "membrane": 1}
    _break("not binary", source)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert_folders", str(source), str(tmp_path / "out2"), "--progress", "False"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_info.value.code == 2
        and len(lines) == 1
        and lines[0].startswith(f"monai-lgg: error: {source / 'masks' / 'd.png'}")
    )


@pytest.fixture
def grey_converted(tmp_path) -> Path:
    return convert_folders(write_folder(tmp_path / "src"), tmp_path / "out", num_folds=3, progress=False).output


def test_batch_augmentation_refuses_mixed_sizes(grey_converted):
    """The default (batch) path stacks slices in one tensor: the error says which file and what to pass."""
    dataset = VolumeSliceDataset(
        load_split(grey_converted / "datalist.json", 0, "train"),
        image_channels=1,
        progress=False,
        slice_transform=train_slice_transforms(spatial_size=[32, 32]),
    )
    with pytest.raises(LGGInputError, match="--augmentation loader") as info:
        train_loader(dataset, 2, "batch", spatial_size=[32, 32])
    assert "imagesTr/" in str(info.value) and "\n" not in str(info.value)
    batch = next(iter(train_loader(dataset, 2, "loader")))  # per-sample random crops of spatial_size
    assert batch["image"].shape[1:] == (1, 32, 32)


def test_tiny_training_and_evaluation_through_the_bundle(grey_converted, tmp_path, monkeypatch):
    """Grey images of six sizes: train on random 32 x 32 crops (loader path), validate, evaluate (sliding windows)."""
    import csv

    from monai.bundle import run

    monkeypatch.setenv("MONAI_LGG_CACHE", str(tmp_path / "cache"))
    configs = PROJECT_ROOT / "bundles" / "unet" / "configs"
    common = {
        "dataset_dir": str(grey_converted),
        "in_channels": 1,
        "spatial_size": [32, 32],
        "batch_size": 2,
        "augmentation": "loader",
        "ckpt_dir": str(tmp_path / "models"),
        "log_dir": str(tmp_path / "logs"),
        "network_args": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
        "resume": False,
    }
    run("training", config_file=str(configs / "train.json"), epochs=2, **common)
    assert (tmp_path / "models" / "model.pt").is_file()
    run(
        "run",
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
        output_dir=str(tmp_path / "eval"),
        eval_split="test",
        **common,
    )
    with open(tmp_path / "eval" / "per_patient.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    test_cases = {i["case"] for i in load_split(grey_converted / "datalist.json", 0, "test")}
    assert {r["case"] for r in rows} == test_cases
    assert all(0 <= float(r["dice"]) <= 1 and 0 <= float(r["accuracy"]) <= 1 for r in rows)


@pytest.mark.parametrize("depth", [1, 5])
def test_saved_masks_keep_the_slice_axis(tmp_path, depth):
    """A one-slice volume's mask is saved (H, W, 1) like its image, not squeezed to 2D; volumes stay 3D."""
    import nibabel as nib
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SaveImage

    from monai_lgg.data.readers import AtomicNibabelWriter

    mask = MetaTensor(torch.ones(1, 6, 4, depth), meta={"filename_or_obj": str(tmp_path / "case.nii.gz")})
    SaveImage(
        output_dir=tmp_path / "out",
        output_postfix="",
        separate_folder=False,
        resample=False,
        writer=AtomicNibabelWriter,
        print_log=False,
    )(mask)
    assert nib.load(tmp_path / "out" / "case.nii.gz").shape == (6, 4, depth)
