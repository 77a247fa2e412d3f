"""Recipe levers as config keys: ``normalization`` (per volume or per slice in the brain geometry) and
``context_slices`` (2.5D input), recorded in the checkpoint's sidecar and followed wherever a model is applied."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.data.datalist import load_fold
from monai_lgg.inference.loading import load_network
from monai_lgg.inference.predict import predict
from monai_lgg.inference.predictor import Predictor
from monai_lgg.studies.crossval import SEQUENCE_VARIANTS, _with_flair
from monai_lgg.transforms import presets
from monai_lgg.transforms.array import AddContextSlices, context_offsets
from monai_lgg.transforms.batch import RandBatchAugment
from monai_lgg.transforms.brain import RandFlairSubstituted
from monai_lgg.transforms.dictionary import AddContextSlicesd

from .conftest import PROJECT_ROOT

UNET = PROJECT_ROOT / "bundles" / "unet"
SMALL_NET = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def _coded_volume(channels: int = 2, depth: int = 5) -> torch.Tensor:
    """``(C, 2, 2, D)`` whose voxels hold ``10 * channel + slice``."""
    codes = 10 * torch.arange(channels)[:, None] + torch.arange(depth)[None, :]
    return codes[:, None, None, :].expand(channels, 2, 2, depth).float()


def test_context_slices_values_at_interior_and_edge_slices():
    out = AddContextSlices(1)(_coded_volume())
    assert out.shape == (6, 2, 2, 5)
    # groups of the 2 channels: the slice itself, the one below, the one above; edges repeat the nearest slice
    assert out[:, 0, 0, 2].tolist() == [2, 12, 1, 11, 3, 13]
    assert out[:, 0, 0, 0].tolist() == [0, 10, 0, 10, 1, 11]
    assert out[:, 0, 0, 4].tolist() == [4, 14, 3, 13, 4, 14]
    assert context_offsets(2) == [0, -1, 1, -2, 2]
    two = AddContextSlices(2)(_coded_volume(channels=1))
    assert two[:, 0, 0, 0].tolist() == [0, 0, 1, 0, 2] and two[:, 0, 0, 4].tolist() == [4, 3, 4, 2, 4]
    one_slice = AddContextSlices(1)(_coded_volume(depth=1))
    assert one_slice[:, 0, 0, 0].tolist() == [0, 10] * 3
    volume = _coded_volume()
    assert AddContextSlices(0)(volume) is volume
    with pytest.raises(ValueError):
        AddContextSlices(-1)


def test_context_slices_dictionary_keeps_meta_and_leaves_the_label():
    image = MetaTensor(_coded_volume(), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    image.applied_operations.append({"class": "BrainCrop"})
    label = torch.zeros(1, 2, 2, 5)
    out = AddContextSlicesd("image", context_slices=1)({"image": image, "label": label})
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == (6, 2, 2, 5)
    assert torch.equal(out["image"].affine, image.affine)
    assert out["image"].applied_operations == image.applied_operations  # Invertd still finds the brain crop
    assert out["label"] is label


def _expected_substitution(image: torch.Tensor, pattern: int) -> torch.Tensor:
    """Each group of 3 channels (pre, FLAIR, post) with pre (bit 1) and/or post (bit 2) replaced by its own FLAIR."""
    expected = image.clone()
    for g in range(0, image.shape[0], 3):
        if pattern & 1:
            expected[g] = image[g + 1]
        if pattern & 2:
            expected[g + 2] = image[g + 1]
    return expected


def test_flair_substitution_replaces_the_same_sequences_in_every_context_group():
    image = torch.arange(9.0)[:, None, None].expand(9, 4, 4).clone()  # 3 context slices x 3 sequences
    batch = image.expand(3, 9, 4, 4)
    out = RandBatchAugment(flair_prob=1.0).substitute_flair(batch, torch.tensor([1, 2, 3]))
    for i, pattern in enumerate((1, 2, 3)):
        assert torch.equal(out[i], _expected_substitution(image, pattern)), pattern
    four = batch[:, :4]  # not groups of 3 channels: unchanged
    assert torch.equal(RandBatchAugment(flair_prob=1.0).substitute_flair(four, torch.tensor([3, 3, 3])), four)

    loader = RandFlairSubstituted("image", prob=1.0)
    loader.set_random_state(0)
    seen = set()
    for _ in range(20):
        result = loader({"image": image})["image"]
        assert torch.equal(result, _expected_substitution(image, loader.pattern))
        seen.add(loader.pattern)
    assert seen == {1, 2, 3}
    assert torch.equal(loader({"image": image[:4]})["image"], image[:4])  # not groups of 3: unchanged


def test_image_channels_and_normalization_checks():
    assert presets.image_channels(9, 1) == 3 and presets.image_channels(1, 0) == 1
    with pytest.raises(ValueError, match="context_slices"):
        presets.image_channels(4, 1)
    assert presets.check_normalization(None, "brain") == "volume"
    assert presets.check_normalization(None, "patch") == "zscore"
    with pytest.raises(ValueError, match="geometry 'brain'"):
        presets.check_normalization("volume", "patch")
    with pytest.raises(ValueError):
        presets.check_normalization("minmax", "brain")


class _Recorder(torch.nn.Module):
    """A 'network' that keeps every input batch and predicts nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.zeros(x.shape[0], 1, *x.shape[2:])


def _network_input(image: torch.Tensor, **kwargs) -> torch.Tensor:
    """What a Predictor feeds the network for ``image``: ``(D, C', h, w)``."""
    recorder = _Recorder()
    Predictor([recorder], (32, 32), batch_size=64, **kwargs).probabilities(image)
    return torch.cat(recorder.inputs)


@pytest.fixture(scope="module")
def case(tiny_dataset) -> dict:
    return load_fold(tiny_dataset / "datalist.json", split="all")[0]


@pytest.mark.parametrize("normalization", ["volume", "zscore"])
def test_predictor_builds_the_evaluation_input_for_every_slice(case, normalization):
    """predict / crossval (Predictor on a raw volume) and evaluate / inference.json (volume_transforms) give the
    network the same 2.5D input, the first and last slices included."""
    raw = Compose(presets.load("volume", label_key=None))({"image": case["image"]})["image"].as_tensor().float()
    fed = _network_input(raw, geometry="brain", normalization=normalization, context_slices=1)
    depth = raw.shape[-1]
    assert fed.shape == (depth, 9, 32, 32)
    chain = presets.volume_transforms(
        label_key=None, geometry="brain", spatial_size=(32, 32), normalization=normalization, context_slices=1
    )
    evaluated = chain({"image": case["image"]})["image"].as_tensor()
    torch.testing.assert_close(fed, evaluated.permute(3, 0, 1, 2), atol=1e-5, rtol=1e-5)
    plain = _network_input(raw, geometry="brain", normalization=normalization)
    torch.testing.assert_close(fed[:, :3], plain)  # group 0: the slice itself
    torch.testing.assert_close(fed[1:, 3:6], plain[:-1])  # group 1: the slice below ...
    torch.testing.assert_close(fed[0, 3:6], plain[0])  # ... the first slice repeated at the bottom edge
    torch.testing.assert_close(fed[:-1, 6:9], plain[1:])  # group 2: the slice above ...
    torch.testing.assert_close(fed[-1, 6:9], plain[-1])  # ... the last slice repeated at the top edge
    if normalization == "zscore":  # each slice and channel z-scored over its non-zero pixels
        values = fed[depth // 2, 1][fed[depth // 2, 1] != 0]
        assert abs(float(values.mean())) < 0.05 and abs(float(values.std()) - 1) < 0.05


def test_crossval_missing_sequences_reach_every_context_group(case):
    raw = Compose(presets.load("volume", label_key=None))({"image": case["image"]})["image"].as_tensor().float()
    for name, channels in SEQUENCE_VARIANTS.items():
        fed = _network_input(_with_flair(raw, channels), geometry="brain", context_slices=1)
        for group in range(3):
            for channel in channels:
                torch.testing.assert_close(fed[:, 3 * group + channel], fed[:, 3 * group + 1], msg=name)


def _workflow(dataset: Path, tmp_path: Path, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=str(UNET / "configs" / "train.json"),
        workflow_type="train",
        bundle_root=str(UNET),
        dataset_dir=str(dataset),
        spatial_size=[32, 32],
        batch_size=8,
        epochs=1,
        ckpt_dir=str(tmp_path / "models"),
        log_dir=str(tmp_path / "logs"),
        output_dir=str(tmp_path / "eval"),
        resume=False,
        network_args=SMALL_NET,
        **overrides,
    )
    workflow.initialize()
    return workflow


@pytest.mark.parametrize("augmentation", ["batch", "loader"])
def test_both_training_paths_get_context_channels_and_grouped_flair(tiny_dataset, tmp_path, augmentation):
    workflow = _workflow(tiny_dataset, tmp_path, context_slices=1, flair_prob=1.0, augmentation=augmentation)
    assert workflow.parser.get_parsed_content("in_channels") == 9
    assert workflow.parser.get_parsed_content("image_channels") == 3
    network = workflow.parser.get_parsed_content("network")
    assert next(network.parameters()).shape[1] == 9  # the first convolution takes the 2.5D input
    image = next(iter(workflow.parser.get_parsed_content("train#dataloader")))["image"]
    assert image.shape[1:] == (9, 32, 32)
    for sample in image:  # FLAIR substitution always on: the same sequences replaced in every group
        replaced = [[torch.equal(sample[3 * g + c], sample[3 * g + 1]) for c in (0, 2)] for g in range(3)]
        assert replaced[0] == replaced[1] == replaced[2] and any(replaced[0])


def test_slice_normalization_in_brain_geometry_trains_on_z_scored_slices(tiny_dataset, tmp_path):
    workflow = _workflow(tiny_dataset, tmp_path, normalization="zscore", augmentation="batch")
    cached = workflow.parser.get_parsed_content("train#dataset").volumes[0]["image"]
    assert cached.shape[1:3] == (32, 32) and float(cached.max()) > 20  # cropped and resized, not normalised
    bank = workflow.parser.get_parsed_content("train#dataloader").dataset
    middle = bank.images[bank.images.shape[0] // 2, 1].float()
    values = middle[middle != 0]
    assert abs(float(values.mean())) < 0.05 and abs(float(values.std()) - 1) < 0.05


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("levers", "sidecar"),
    [
        ({"context_slices": 1}, {"context_slices": 1, "in_channels": 9, "normalization": "zscore"}),
        (
            {"normalization": "volume", "augmentation": "loader"},
            {"context_slices": 0, "in_channels": 3, "normalization": "volume"},
        ),
        (  # another width/depth than model.json's: without the recorded arguments the weights would not fit
            {"network_args": {"channels": [8, 16, 32], "strides": [2, 2]}},
            {"context_slices": 0, "in_channels": 3, "normalization": "zscore"},
        ),
    ],
    ids=["context_slices", "volume_normalization", "network_args"],
)
def test_bundle_trains_a_lever_and_its_sidecar_drives_evaluate_and_predict(tiny_dataset, tmp_path, levers, sidecar):
    """python -m monai.bundle run training with a lever (the bundle's own network, which predict rebuilds), then
    evaluate.json and predict without it: the sidecar says how inputs reach the network."""
    common = {
        "dataset_dir": str(tiny_dataset),
        "spatial_size": [32, 32],
        "batch_size": 8,
        "ckpt_dir": str(tmp_path / "models"),
        "log_dir": str(tmp_path / "logs"),
        "output_dir": str(tmp_path / "eval"),
    }
    args = [a for k, v in {**common, **levers}.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]
    config = UNET / "configs"
    _run("run", "training", "--config_file", str(config / "train.json"), *args, "--epochs", "1")
    checkpoint = tmp_path / "models" / "model.pt"
    record = json.loads(sidecar_path(checkpoint).read_text())
    assert {key: record[key] for key in sidecar} == sidecar
    assert record["network_args"] == levers.get("network_args", {})

    evaluate = ConfigWorkflow(  # what `monai.bundle run` does with train.json + evaluate.json, in this process
        config_file=[str(config / "train.json"), str(config / "evaluate.json")],
        workflow_type="eval",
        bundle_root=str(UNET),
        **common,
    )
    evaluate.initialize()
    assert evaluate.parser.get_parsed_content("context_slices") == sidecar["context_slices"]
    evaluate.run()
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["patients"] == 1

    infer = ConfigWorkflow(  # inference.json (and MONAI Label, which runs it) with nothing but the checkpoint
        config_file=str(config / "inference.json"),
        workflow_type="infer",
        bundle_root=str(UNET),
        dataset_dir=str(tiny_dataset),
        ckpt_path=str(checkpoint),
        output_dir=str(tmp_path / "infer"),
    )
    infer.initialize()
    assert [infer.parser.get_parsed_content(k) for k in ("in_channels", "normalization")] == [
        sidecar["in_channels"],
        sidecar["normalization"],
    ]
    infer.run()
    assert len(list((tmp_path / "infer").glob("*.nii.gz"))) == 5

    network, info = load_network("unet", checkpoint, spatial_size=[32, 32])
    assert (info.context_slices, info.in_channels, info.normalization) == tuple(sidecar.values())
    test_case = load_fold(tiny_dataset / "datalist.json", fold=0, split="test")[0]
    predict(
        test_case["image"][0],
        tmp_path / "pred",
        "unet",
        checkpoint,
        spatial_size=[32, 32],
        probabilities=True,
        progress=False,
        device="cpu",
        precision="fp32",
        channels_last=False,
    )
    written = nib.load(tmp_path / "pred" / f"{test_case['case']}_prob.nii.gz").get_fdata()
    raw = Compose(presets.load("volume", label_key=None))({"image": test_case["image"]})["image"].as_tensor().float()

    def probabilities(**preprocessing) -> torch.Tensor:
        return Predictor([network], (32, 32), tta=info.tta, geometry="brain", **preprocessing).probabilities(raw)

    expected = probabilities(normalization=info.normalization, context_slices=info.context_slices)
    torch.testing.assert_close(torch.as_tensor(written, dtype=torch.float32), expected, atol=1e-4, rtol=0)
    other = "zscore" if info.normalization == "volume" else "volume"  # the sidecar's choice mattered
    assert float((expected - probabilities(normalization=other, context_slices=info.context_slices)).abs().max()) > 1e-3


@pytest.mark.parametrize(
    ("network_args", "refusal"),
    [
        ({"channels": "$__import__('os').getcwd()"}, "an expression or reference: refused"),
        ({"act": ["@some_reference"]}, "an expression or reference: refused"),
        (
            {"_target_": "subprocess.run", "args": ["true"]},
            "'subprocess.run' as _target_, not a registered network class",
        ),
        ([16, 32], "must be a mapping"),
    ],
    ids=["expression", "reference", "foreign_target", "not_a_mapping"],
)
def test_recorded_network_args_are_data_not_code(tmp_path, network_args, refusal):
    """A sidecar travels with downloaded weights; what it records goes through MONAI's config parser, so
    expressions, references and non-network targets are refused in one line naming the sidecar."""
    from monai_lgg.engines.bundle import trained_network_args
    from monai_lgg.errors import LGGInputError

    checkpoint = tmp_path / "model.pt"
    sidecar_path(checkpoint).write_text(json.dumps({"network_args": network_args}))
    with pytest.raises(LGGInputError, match=r"model\.json: .*" + re.escape(refusal)):
        trained_network_args(checkpoint)
    with pytest.raises(LGGInputError, match=re.escape(refusal)):
        load_network("unet", checkpoint)


def test_recorded_network_args_may_choose_another_network_class(tmp_path):
    from monai_lgg.engines.bundle import trained_network_args

    checkpoint = tmp_path / "model.pt"
    args = {"_target_": "BasicUNet", "features": [8, 8, 16, 32, 64, 8]}
    sidecar_path(checkpoint).write_text(json.dumps({"network_args": args}))
    assert trained_network_args(checkpoint) == {**args, "_target_": "monai.networks.nets.basic_unet.BasicUNet"}
    assert trained_network_args(tmp_path / "no_sidecar.pt") == {}
