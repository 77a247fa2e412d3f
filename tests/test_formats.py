"""The registry of input forms: one ``<case>_000k`` parser, and a new form is one subclass plus one entry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_lgg.data.kaggle import kaggle_affine
from monai_lgg.engines.bundle import inference_items
from monai_lgg.engines.components import case_name_formatter
from monai_lgg.inference import formats
from monai_lgg.inference.formats import FORMATS, InputFormat, NiftiVolume, find_cases, format_of, split_channel
from monai_lgg.inference.inputs import Case, _stem
from monai_lgg.inference.predict import predict


@pytest.mark.parametrize(
    "stem, expected",
    [
        ("TCGA_CS_4941_19960909_0001", ("TCGA_CS_4941_19960909", 1)),
        ("case_12", ("case_12", None)),
        ("a_b_0000", ("a_b", 0)),
        ("_0001", ("_0001", None)),
        ("case_00001", ("case_00001", None)),
    ],
)
def test_split_channel(stem, expected):
    assert split_channel(stem) == expected


def test_every_reader_groups_channel_files_alike(tmp_path):
    affine = kaggle_affine((8, 8, 2))
    names = ["p1_0000", "p1_0001", "p1_0002", "p_2_0000", "p_2_0001", "p_2_0002", "solo", "x_1"]
    for name in names:
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), affine), tmp_path / f"{name}.nii.gz")
    found = {c.name: [f.name for f in c.files] for c in find_cases(tmp_path)}
    items = {i["case"]: [Path(f).name for f in np.atleast_1d(i["image"])] for i in inference_items(tmp_path)}
    assert found == items
    assert sorted(found) == ["p1", "p_2", "solo", "x_1"] and len(found["p_2"]) == 3
    # a file given alone brings its siblings; the bundle's writer names outputs by the same parser
    assert [f.name for f in find_cases(tmp_path / "p_2_0001.nii.gz")[0].files] == found["p_2"]
    assert case_name_formatter({"filename_or_obj": str(tmp_path / "p_2_0000.nii.gz")}, None)["subject"] == "p_2"
    assert {format_of(c).name for c in find_cases(tmp_path)} == {"nifti_channels", "nifti"}


class NumpyVolume(NiftiVolume):
    """A toy form: ``<case>.npy`` arrays (rows x columns x slices x 3, stored in the model's frame), masks
    written as ``<case>_mask.npy``."""

    name = "numpy"

    def claims_file(self, path: Path) -> bool:
        return path.suffix == ".npy"

    def cases_of_file(self, path: Path) -> list[Case]:
        return [Case(_stem(path), self.form, [path], format_name=self.name)]

    def cases_of_folder(self, folder: Path) -> list[Case]:
        return [c for p in sorted(folder.glob("*.npy")) for c in self.cases_of_file(p)]

    def load(self, case: Case, in_channels: int, normalization: str):
        import torch

        from monai_lgg.transforms.presets import slice_normalizer

        image = torch.from_numpy(np.moveaxis(np.load(case.files[0]), -1, 0).astype(np.float32))
        normalizer = slice_normalizer(normalization, slice_dim=-1)
        return (image if normalizer is None else normalizer(image)), None

    def mask_files(self, case: Case) -> list[Path]:
        return [case.out_dir / f"{case.name}_mask.npy"]

    def map_files(self, case: Case, kind: str) -> list[Path]:
        return [case.out_dir / f"{case.name}_{kind}.npy"]

    def write_mask(self, paths, mask, reference, label_map) -> None:
        with open(paths[0], "wb") as f:
            np.save(f, np.asarray(mask, np.uint8))

    def write_map(self, paths, values, reference, channels_first) -> None:
        with open(paths[0], "wb") as f:
            np.save(f, np.asarray(values, np.float32))


def test_a_new_form_is_one_subclass_and_one_registry_entry(tmp_path, monkeypatch):
    volume = np.random.default_rng(0).integers(0, 200, (32, 32, 2, 3), dtype=np.uint8)
    np.save(tmp_path / "scan.npy", volume)
    with pytest.raises(Exception, match="not a NIfTI volume"):  # unknown before it is registered
        find_cases(tmp_path / "scan.npy")
    monkeypatch.setattr(formats, "FORMATS", [NumpyVolume(), *FORMATS])
    rows = predict(tmp_path / "scan.npy", tmp_path / "out", bundle="unet", progress=False, probabilities=True)
    assert np.load(tmp_path / "out" / "scan_mask.npy").shape == (32, 32, 2)
    assert np.load(tmp_path / "out" / "scan_prob.npy").shape == (32, 32, 2)
    assert (tmp_path / "out" / "scan_tumour.csv").is_file() and rows[0]["output"].endswith("scan_mask.npy")


def test_formats_share_one_interface():
    for fmt in FORMATS:
        assert isinstance(fmt, InputFormat) and fmt.name and fmt.form in ("slices", "volume")
    assert len({fmt.name for fmt in FORMATS}) == len(FORMATS)
