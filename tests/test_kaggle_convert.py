"""Kaggle -> NIfTI conversion: voxel-exact round trip, geometry, metadata, validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from monai.data import load_decathlon_datalist

from monai_lgg.data.kaggle import convert_kaggle, find_kaggle_root, read_case, scan_kaggle
from monai_lgg.data.synthetic import make_synthetic_case
from monai_lgg.errors import LGGInputError


def assert_round_trip(source: Path, converted: Path) -> int:
    """Every voxel of every output equals its source TIFF pixel; returns the number of pairs checked."""
    cases, problems = scan_kaggle(find_kaggle_root(source)[0])
    assert not [p for p in problems if p.fatal]
    pairs = 0
    for case in cases:
        channels = [
            np.asanyarray(nib.load(converted / "imagesTr" / f"{case.case_id}_{c:04d}.nii.gz").dataobj) for c in range(3)
        ]
        label = np.asanyarray(nib.load(converted / "labelsTr" / f"{case.case_id}.nii.gz").dataobj)
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        assert label.shape[2] == len(case.slices)
        for k, item in enumerate(case.slices):
            image = tifffile.imread(item.image)
            for c in range(3):
                np.testing.assert_array_equal(channels[c][:, :, k], image[..., c], err_msg=f"{item.image} channel {c}")
            np.testing.assert_array_equal(label[:, :, k] * 255, tifffile.imread(item.mask), err_msg=str(item.mask))
            pairs += 1
    return pairs


def _copy_case(source: Path, dest_root: Path, case: str | None = None) -> Path:
    case = case or sorted(p.name for p in source.iterdir() if p.is_dir())[0]
    shutil.copytree(source / case, dest_root / case)
    return dest_root / case


def test_round_trip_synthetic(synthetic_kaggle, synthetic_converted):
    assert assert_round_trip(synthetic_kaggle, synthetic_converted) == 191


def test_numeric_slice_order(tmp_path):
    """``_2`` is slice 2 and ``_10`` is slice 10: lexicographic order would swap them."""
    case = "TCGA_XX_0001_20000101"
    folder = tmp_path / "src" / case
    folder.mkdir(parents=True)
    image, mask = make_synthetic_case(num_slices=12, size=32, seed=1)
    for k in range(12):
        tagged = image[k].copy()
        tagged[0, 0, :] = k + 1  # slice number written into a corner pixel
        tifffile.imwrite(folder / f"{case}_{k + 1}.tif", tagged)
        tifffile.imwrite(folder / f"{case}_{k + 1}_mask.tif", mask[k])
    cases, _ = scan_kaggle(tmp_path / "src")
    assert [s.number for s in cases[0].slices] == list(range(1, 13))
    volume, _, _ = read_case(cases[0])
    assert volume[0, 0, :, 0].tolist() == list(range(1, 13))


def test_geometry_and_metadata(synthetic_converted):
    case = json.loads((synthetic_converted / "datalist.json").read_text())["training"][0]
    img = nib.load(synthetic_converted / case["image"][1])
    assert nib.aff2axcodes(img.affine) == ("P", "L", "S")
    assert img.header.get_xyzt_units()[0] == "mm"
    assert int(img.header["sform_code"]) == 1
    dataset = json.loads((synthetic_converted / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "pre-contrast", "1": "FLAIR", "2": "post-contrast"}
    assert dataset["labels"] == {"background": 0, "tumour": 1}
    assert dataset["numTraining"] == 8
    first = next(iter(dataset["cases"].values()))
    assert first["clinical"]["histological_type"] in (1, 2, 3)
    items = load_decathlon_datalist(str(synthetic_converted / "datalist.json"), data_list_key="training")
    assert len(items) == 8 and all(Path(f).is_file() for item in items for f in item["image"] + [item["label"]])
    report = json.loads((synthetic_converted / "conversion_report.json").read_text())
    assert report["patients"] == 8 and report["slices"] == 191 and report["errors"] == []


def test_spacing_override(synthetic_kaggle, tmp_path):
    src = tmp_path / "src"
    for name in sorted(p.name for p in synthetic_kaggle.iterdir() if p.is_dir())[:2]:
        _copy_case(synthetic_kaggle, src, name)
    convert_kaggle(src, tmp_path / "out", spacing=(0.5, 0.5, 3.0), num_folds=2, progress=False)
    img = nib.load(next((tmp_path / "out" / "labelsTr").iterdir()))
    assert img.header.get_zooms() == pytest.approx((0.5, 0.5, 3.0))


def test_rerun_is_idempotent(synthetic_kaggle, tmp_path):
    src = tmp_path / "src"
    for name in sorted(p.name for p in synthetic_kaggle.iterdir() if p.is_dir())[:3]:
        _copy_case(synthetic_kaggle, src, name)
    out = tmp_path / "out"
    convert_kaggle(src, out, num_folds=3, progress=False)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    convert_kaggle(src, out, num_folds=3, progress=False)
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    changed = [k for k in first if first[k] != second[k] and k.name != "conversion_report.json"]
    assert changed == []
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_zip_root_with_duplicate_copy(synthetic_kaggle, tmp_path):
    """The Kaggle zip holds kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/: patients must not count twice."""
    zip_root = tmp_path / "zip"
    shutil.copytree(synthetic_kaggle, zip_root / "kaggle_3m")
    shutil.copytree(synthetic_kaggle, zip_root / "lgg-mri-segmentation" / "kaggle_3m")
    root, warnings = find_kaggle_root(zip_root)
    assert root == zip_root / "kaggle_3m"
    assert [w.path for w in warnings] == [str(zip_root / "lgg-mri-segmentation" / "kaggle_3m")]
    result = convert_kaggle(zip_root, tmp_path / "out", progress=False)
    assert result.report["patients"] == 8
    assert any("duplicate copy" in w["problem"] for w in result.report["warnings"])


def test_semicolon_clinical_csv(synthetic_kaggle, tmp_path):
    from monai_lgg.data.kaggle import read_clinical_csv

    text = (synthetic_kaggle / "data.csv").read_text().replace(",", ";")
    (tmp_path / "data.csv").write_text(text)
    assert read_clinical_csv(tmp_path / "data.csv") == read_clinical_csv(synthetic_kaggle / "data.csv")


def _broken(kind: str, case_dir: Path) -> str:
    """Damage ``case_dir`` in one way; return a fragment of the expected message."""
    case = case_dir.name
    if kind == "unpaired":
        (case_dir / f"{case}_3_mask.tif").unlink()
        return "image without mask"
    if kind == "gap":
        (case_dir / f"{case}_5.tif").unlink()
        (case_dir / f"{case}_5_mask.tif").unlink()
        return "gap in slice numbers: missing 5"
    if kind == "mask_values":
        mask = tifffile.imread(case_dir / f"{case}_4_mask.tif")
        mask[:2, :2] = 7
        tifffile.imwrite(case_dir / f"{case}_4_mask.tif", mask)
        return "not in {0, 255}"
    if kind == "channels":
        tifffile.imwrite(case_dir / f"{case}_2.tif", np.zeros((256, 256), np.uint8))
        return "expected (rows, columns, 3)"
    if kind == "truncated":
        path = case_dir / f"{case}_6.tif"
        path.write_bytes(path.read_bytes()[:5000])
        return "unreadable or truncated TIFF"
    if kind == "mixed_sizes":
        tifffile.imwrite(case_dir / f"{case}_7.tif", np.zeros((128, 128, 3), np.uint8))
        tifffile.imwrite(case_dir / f"{case}_7_mask.tif", np.zeros((128, 128), np.uint8))
        return "differs from the case's"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["unpaired", "gap", "mask_values", "channels", "truncated", "mixed_sizes"])
def test_validation_stops_and_writes_nothing(kind, synthetic_kaggle, tmp_path):
    src = tmp_path / "src"
    names = sorted(p.name for p in synthetic_kaggle.iterdir() if p.is_dir())[:3]
    for name in names:
        _copy_case(synthetic_kaggle, src, name)
    fragment = _broken(kind, src / names[0])
    out = tmp_path / "out"
    result = convert_kaggle(src, out, num_folds=2, progress=False)
    assert not result.ok
    messages = [f"{e['file']}: {e['problem']}" for e in result.report["errors"]]
    assert any(fragment in m and names[0] in m for m in messages), messages
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    skipped = convert_kaggle(src, out, num_folds=2, skip_bad=True, progress=False)
    assert skipped.ok and skipped.report["skipped_cases"] == [names[0]]
    assert skipped.report["patients"] == 2


def test_binarize_option(synthetic_kaggle, tmp_path):
    src = tmp_path / "src"
    names = sorted(p.name for p in synthetic_kaggle.iterdir() if p.is_dir())[:2]
    for name in names:
        _copy_case(synthetic_kaggle, src, name)
    _broken("mask_values", src / names[0])
    result = convert_kaggle(src, tmp_path / "out", num_folds=2, binarize=True, progress=False)
    assert result.ok and any("binarised" in w["problem"] for w in result.report["warnings"])


def test_refuses_foreign_output_and_bad_source(synthetic_kaggle, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LGGInputError, match="not a monai-lgg conversion output"):
        convert_kaggle(synthetic_kaggle, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(LGGInputError, match="contains no patient folders"):
        convert_kaggle(tmp_path / "mine", tmp_path / "out", progress=False)
    with pytest.raises(LGGInputError, match="does not exist"):
        convert_kaggle(tmp_path / "missing", tmp_path / "out", progress=False)
