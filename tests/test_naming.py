"""Every reader of the input forms' file names agrees: predict's registry, the bundles' inference items and output
names, and the radiogenomic analysis's mask discovery parse ``<case>_000k``, slice numbers and map names alike
(:mod:`monai_lgg.data.naming`)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from monai_lgg.data.kaggle import kaggle_affine
from monai_lgg.data.naming import channel_file_name, split_channel
from monai_lgg.engines.bundle import inference_items
from monai_lgg.engines.components import case_name_formatter
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.formats import find_cases
from monai_lgg.radiogenomics.io import find_mask_cases

# file -> the case predict and the bundles segment it as
VOLUMES = {
    "TCGA_A_0000.nii.gz": "TCGA_A",  # channel files of one case, .nii.gz and .nii mixed
    "TCGA_A_0001.nii": "TCGA_A",
    "TCGA_CS_4941_19960909.nii.gz": "TCGA_CS_4941_19960909",  # an 8-digit date is no channel
    "x_0001_prob.nii.gz": "x_0001_prob",  # a probability map: its own case, not channel 1 of x
    "x_0001_uncertainty.nii.gz": "x_0001_uncertainty",
    "a_12_mask.nii": "a_12_mask",  # a NIfTI named like a slice mask is a volume
    "case_000.nii.gz": "case_000",  # 3 digits: no channel
    "SOLO.NII.GZ": "SOLO",  # the suffix in any case
}
MASKS = {"TCGA_CS_4941_19960909", "a_12_mask", "case_000", "SOLO"}  # not image channels, not maps


@pytest.fixture
def volumes(tmp_path) -> Path:
    for name in VOLUMES:
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), kaggle_affine((8, 8, 2))), tmp_path / name)
    return tmp_path


def test_predict_bundle_items_and_output_names_agree(volumes):
    expected: dict[str, list[str]] = {}
    for name, case in sorted(VOLUMES.items()):
        expected.setdefault(case, []).append(name)
    found = {c.name: [f.name for f in c.files] for c in find_cases(volumes)}
    items = {i["case"]: [Path(f).name for f in np.atleast_1d(i["image"])] for i in inference_items(volumes)}
    assert found == expected and items == expected
    for name, case in VOLUMES.items():  # the bundles name each output by the same rule, whichever file it carries
        assert case_name_formatter({"filename_or_obj": str(volumes / name)}, None)["subject"] == case
        if name.startswith("TCGA_A_"):  # a channel file given alone brings its siblings
            assert [f.name for f in find_cases(volumes / name)[0].files] == expected["TCGA_A"]


def test_radiogenomics_reads_the_cases_predict_writes_masks_for(volumes):
    # masks are the single-file cases that are neither image channels nor predict's float maps
    assert {c.name for c in find_mask_cases(volumes)} == MASKS
    assert MASKS < {c.name for c in find_cases(volumes)}


def test_slice_masks_and_slices_share_case_and_number(tmp_path):
    for number in (1, 2, 10):
        tifffile.imwrite(tmp_path / f"p_a_{number}.tif", np.zeros((8, 8, 3), np.uint8))
        tifffile.imwrite(tmp_path / f"p_a_{number}_MASK.tif", np.zeros((8, 8), np.uint8))
    (case,) = find_cases(tmp_path)
    (masks,) = find_mask_cases(tmp_path)
    assert case.name == masks.name == "p_a" and masks.numbers == [1, 2, 10]
    assert [f.name for f in case.files] == [f.name.replace("_MASK", "") for f in masks.files]


def test_converters_write_what_the_readers_parse():
    assert channel_file_name("TCGA_x_19960909", 2) == "TCGA_x_19960909_0002.nii.gz"
    assert split_channel(channel_file_name("a_0001", 0, "")) == ("a_0001", 0)
    with pytest.raises(ValueError, match="4 digits"):
        channel_file_name("a", 10000)


def test_sequence_files_are_images_to_every_reader(tmp_path):
    """``<case>_flair|t1|t1c`` files: predict reads them as one case's sequences; radiogenomics never takes them for
    masks (a folder of them holds none)."""
    for name in ("p1_flair.nii.gz", "p1_T1.nii", "p2_FLAIR.nii.gz", "p2_t1c.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), kaggle_affine((8, 8, 2))), tmp_path / name)
    assert {c.name: len(c.files) for c in find_cases(tmp_path)} == {"p1": 2, "p2": 2}
    with pytest.raises(LGGInputError, match="holds no masks"):
        find_mask_cases(tmp_path)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), kaggle_affine((8, 8, 2))), tmp_path / "p1.nii.gz")
    assert [c.name for c in find_mask_cases(tmp_path)] == ["p1"]
