"""The factories the bundle configs call: losses, optimizers, schedules, data preparation, names."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

import monai_lgg.engines as lgg
from monai_lgg.errors import LGGInputError


@pytest.mark.parametrize("name", sorted(lgg.LOSSES))
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_losses_learnable(name, deep_supervision):
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, 4:10, 4:10] = 1  # the second image is tumour-free, as a third of LGG slices are
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    loss_fn = lgg.make_loss(name, deep_supervision=deep_supervision)
    prediction = [logits, logits * 0.5] if deep_supervision else logits
    loss = loss_fn(prediction, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and logits.grad.abs().sum() > 0
    perfect = (target * 20 - 10).requires_grad_(False)
    assert loss_fn([perfect, perfect] if deep_supervision else perfect, target) < loss


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown loss"):
        lgg.make_loss("focalish")
    with pytest.raises(ValueError, match="unknown optimizer"):
        lgg.make_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="unknown scheduler"):
        lgg.make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), "step")


@pytest.mark.parametrize(
    "name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizers(name, cls):
    opt = lgg.make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], lr=0.1, weight_decay=0.01)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["weight_decay"] == 0.01


def test_cosine_schedule_with_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lgg.make_scheduler(opt, "cosine", max_epochs=10, warmup_epochs=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == pytest.approx(1.0) and lrs[-1] < 0.1


def test_postprocessing_thresholds_logits():
    out = lgg.postprocessing(0.5)({"pred": torch.tensor([[[-3.0, 0.1, 3.0]]])})
    assert out["pred"].tolist() == [[[0.0, 1.0, 1.0]]]


def test_prepare_dataset_forms(synthetic_kaggle, synthetic_converted, tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_LGG_CACHE", str(tmp_path / "cache"))
    datalist = synthetic_converted / "datalist.json"
    assert lgg.prepare_dataset(synthetic_converted) == str(datalist.resolve())
    assert lgg.prepare_dataset(datalist) == str(datalist.resolve())
    kaggle = tmp_path / "k"
    for case in sorted(p.name for p in synthetic_kaggle.iterdir() if p.is_dir())[:5]:
        shutil.copytree(synthetic_kaggle / case, kaggle / case)
    converted = lgg.prepare_dataset(kaggle)  # converted once into the cache
    assert converted.startswith(str(tmp_path / "cache")) and len(json.loads(open(converted).read())["training"]) == 5
    assert lgg.prepare_dataset(kaggle) == converted
    with pytest.raises(LGGInputError, match="does not exist"):
        lgg.prepare_dataset(tmp_path / "nowhere")


def test_load_split_and_test_list(synthetic_converted, tmp_path):
    datalist = synthetic_converted / "datalist.json"
    parts = {s: lgg.load_split(datalist, 1, s) for s in ("train", "validation", "test")}
    assert sum(len(p) for p in parts.values()) == len(lgg.load_split(datalist, 1, "all")) == 8
    other = tmp_path / "list.json"
    items = json.loads(datalist.read_text())
    items["training"] = [
        {
            **i,
            "image": [str(synthetic_converted / p) for p in i["image"]],
            "label": str(synthetic_converted / i["label"]),
        }
        for i in items["training"][:2]
    ]
    other.write_text(json.dumps(items))
    assert [i["case"] for i in lgg.load_split(datalist, 0, str(other))] == [i["case"] for i in items["training"]]
    with pytest.raises(LGGInputError, match="split must be"):
        lgg.load_split(datalist, 0, "holdout")


def test_inference_items_from_volume_folders(synthetic_converted, tmp_path):
    items = lgg.inference_items(synthetic_converted)
    assert len(items) == 8 and all(len(i["image"]) == 3 and "label" not in i for i in items)
    per_case = lgg.inference_items(synthetic_converted / "imagesTr")
    assert [i["case"] for i in per_case] == [i["case"] for i in items]
    first = nib.load(synthetic_converted / "imagesTr" / f"{items[0]['case']}_0000.nii.gz")
    four_d = tmp_path / "vols"
    four_d.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((*first.shape, 3), np.uint8), first.affine), four_d / "patientA.nii.gz")
    assert lgg.inference_items(four_d) == [{"image": str(four_d / "patientA.nii.gz"), "case": "patientA"}]


def test_case_name_formatter():
    named = lgg.case_name_formatter({"filename_or_obj": "/d/TCGA_CS_4941_19960909_0000.nii.gz"}, None)
    assert named["subject"] == "TCGA_CS_4941_19960909"
    assert lgg.case_name_formatter({"filename_or_obj": "/d/patient_7.nii"}, None)["subject"] == "patient_7"


def test_bundle_model_file(tmp_path):
    (tmp_path / "configs").mkdir()
    with pytest.raises(LGGInputError, match="model.json"):
        lgg.bundle_setting(tmp_path, "learning_rate")
    (tmp_path / "configs" / "model.json").write_text(
        json.dumps(
            {
                "network_def": {
                    "_target_": "UNet",
                    "spatial_dims": 2,
                    "in_channels": "@in_channels",
                    "out_channels": 1,
                    "channels": [4, 8],
                    "strides": [2],
                },
                "learning_rate": 0.01,
            }
        )
    )
    assert lgg.bundle_setting(tmp_path, "learning_rate") == 0.01 and lgg.bundle_setting(tmp_path, "epochs", 3) == 3
    net = lgg.bundle_network(tmp_path, {"channels": [2, 4]}, in_channels=5)
    assert net(torch.zeros(1, 5, 8, 8)).shape == (1, 1, 8, 8)
    first_conv = next(p for p in net.parameters() if p.ndim == 4)
    assert tuple(first_conv.shape[:2]) == (2, 5)  # network_args (channels) and context (in_channels) both applied


def test_patient_sampler_gives_each_patient_to_one_rank():
    """Validation and evaluation shards: whole patients in turn, none repeated to even the shares."""
    shares = [list(lgg.patient_sampler(list(range(5)), num_replicas=2, rank=r)) for r in range(2)]
    assert shares == [[0, 2, 4], [1, 3]]
    with pytest.raises(LGGInputError, match=r"the test split has 1 patient\(s\), fewer than the 2 processes"):
        lgg.patient_sampler([{"case": "a"}], "test", num_replicas=2, rank=0)
