"""Leakage: no patient is in two of train / validation / test for any fold (real and synthetic data), and
evaluation refuses a checkpoint whose recorded training or selection patients overlap the evaluated ones.

The disjointness checks here are written with plain sets, independently of ``check_disjoint``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigWorkflow

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.data.datalist import load_fold, split_fold
from monai_lgg.data.datasets import kaggle_slice_datalist
from monai_lgg.engines.handlers import BestModelSaver, LastCheckpointSaver, provenance
from monai_lgg.engines.reports import check_no_leakage, evaluation_handlers
from monai_lgg.errors import LGGInputError, input_error_in

from .conftest import PROJECT_ROOT

SPLITS = ("train", "validation", "test")


def assert_patient_disjoint_folds(items: list[dict], num_folds: int) -> None:
    """For every fold: each patient in exactly one split, no patient in two; test sets partition the patients."""
    patients = {item["case"] for item in items}
    folds_of = {}
    for item in items:  # all slices / volumes of a patient share one fold
        assert folds_of.setdefault(item["case"], item["fold"]) == item["fold"], f"{item['case']} is in two folds"
    tested = []
    for fold in range(num_folds):
        parts = split_fold(items, fold, num_folds)
        cases = {name: {item["case"] for item in parts[name]} for name in SPLITS}
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1 :]:
                assert not cases[a] & cases[b], f"fold {fold}: {sorted(cases[a] & cases[b])} in {a} and {b}"
        assert cases["train"] | cases["validation"] | cases["test"] == patients
        assert all(cases[name] for name in SPLITS), f"fold {fold} has an empty split"
        tested += sorted(cases["test"])
    assert sorted(tested) == sorted(patients), "every patient is tested exactly once over the folds"


def test_folds_synthetic_converted(synthetic_converted):
    items = load_fold(synthetic_converted / "datalist.json", split="all")
    assert len(items) == 8
    assert_patient_disjoint_folds(items, num_folds=5)
    for fold in range(5):  # the entry the bundles call gives the same splits
        datalist = synthetic_converted / "datalist.json"
        loaded = {name: {i["case"] for i in load_fold(datalist, fold, name)} for name in SPLITS}
        expected = split_fold(items, fold, 5)
        assert loaded == {name: {i["case"] for i in expected[name]} for name in SPLITS}


def test_folds_synthetic_slices(synthetic_kaggle):
    """The slice-level datalist (training straight from TIFFs): every slice of a patient in the same split."""
    items = kaggle_slice_datalist(synthetic_kaggle, num_folds=4)
    assert len({i["case"] for i in items}) == 8 and len(items) == 191
    assert_patient_disjoint_folds(items, num_folds=4)


def test_folds_real_data(shared_lgg):
    """The 66 shared patients (2446 slices), with the converter's fold assignment."""
    items = kaggle_slice_datalist(shared_lgg)
    assert len({i["case"] for i in items}) == 66 and len(items) == 2446
    assert_patient_disjoint_folds(items, num_folds=5)


# ---------------------------------------------------------------- evaluation refuses leaking checkpoints


@pytest.fixture
def trained(synthetic_converted, tmp_path) -> tuple[Path, dict[str, list[dict]]]:
    """model.pt + model.json written by the real BestModelSaver with the real provenance record (fold 0)."""
    datalist = synthetic_converted / "datalist.json"
    parts = {name: load_fold(datalist, 0, name) for name in SPLITS}
    net = torch.nn.Conv2d(3, 1, 1)
    record = provenance(0, parts["train"], parts["validation"])
    saver = BestModelSaver(tmp_path / "models" / "model.pt", net, record=record)
    validator = Engine(lambda e, b: None)
    validator.state.metrics, validator.state.epoch = {"val_mean_dice": 0.5}, 1
    saver(validator)
    return tmp_path / "models" / "model.pt", parts


def test_sidecar_records_training_patients(trained):
    checkpoint, parts = trained
    record = json.loads(sidecar_path(checkpoint).read_text())
    assert record["training_cases"] == sorted(i["case"] for i in parts["train"])
    assert record["validation_cases"] == sorted(i["case"] for i in parts["validation"])


@pytest.mark.parametrize("evaluated", ["train", "validation", "test+one_train"])
def test_evaluation_refuses_overlap(trained, evaluated, tmp_path):
    checkpoint, parts = trained
    items = parts["test"] + parts["train"][:1] if evaluated == "test+one_train" else parts[evaluated]
    leaked = sorted({i["case"] for i in items} - {i["case"] for i in parts["test"]})
    with pytest.raises(LGGInputError, match="was trained or selected on") as info:
        evaluation_handlers(torch.nn.Conv2d(3, 1, 1), checkpoint, tmp_path / "eval", items)
    assert str(info.value).startswith(str(checkpoint)) and leaked[0] in str(info.value)
    assert not (tmp_path / "eval").exists()


def test_evaluation_accepts_the_test_fold(trained, tmp_path):
    checkpoint, parts = trained
    handlers = evaluation_handlers(torch.nn.Conv2d(3, 1, 1), checkpoint, tmp_path / "eval", parts["test"])
    assert handlers


def test_overlap_only_when_asked(trained, caplog):
    checkpoint, parts = trained
    with caplog.at_level(logging.WARNING):
        check_no_leakage(checkpoint, parts["train"], allow_overlap=True)
    assert "trained or selected on" in caplog.text


def test_last_checkpoint_also_records_patients(synthetic_converted, tmp_path):
    datalist = synthetic_converted / "datalist.json"
    train, validation = load_fold(datalist, 1, "train"), load_fold(datalist, 1, "validation")
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs, engine.state.epoch_length, engine.state.epoch, engine.state.iteration = 3, 1, 1, 1
    last = tmp_path / "last.pt"
    LastCheckpointSaver(last, {"network": torch.nn.Linear(1, 1)}, record=provenance(1, train, validation))(engine)
    with pytest.raises(LGGInputError, match="was trained or selected on"):
        check_no_leakage(last, validation)
    check_no_leakage(last, load_fold(datalist, 1, "test"))


def test_unverifiable_or_damaged_records(trained, caplog):
    checkpoint, parts = trained
    sidecar = sidecar_path(checkpoint)
    sidecar.write_text("{ not json")
    with pytest.raises(LGGInputError, match="model.json: is not valid JSON"):
        check_no_leakage(checkpoint, parts["test"])
    sidecar.unlink()  # e.g. a checkpoint trained elsewhere: evaluated, with a warning
    with caplog.at_level(logging.WARNING):
        check_no_leakage(checkpoint, parts["train"])
    assert "cannot verify" in caplog.text


def test_bundle_evaluate_config_refuses_training_split(trained, synthetic_converted, tmp_path):
    """evaluate.json wires the check: evaluating the training split of the fold is refused at parse time."""
    checkpoint, _ = trained
    configs = PROJECT_ROOT / "bundles" / "unet" / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
        meta_file=str(configs / "metadata.json"),
        workflow_type="eval",
        bundle_root=str(PROJECT_ROOT / "bundles" / "unet"),
        dataset_dir=str(synthetic_converted),
        ckpt_dir=str(checkpoint.parent),
        output_dir=str(tmp_path / "eval"),
        eval_split="train",
        device="cpu",
    )
    workflow.initialize()
    with pytest.raises(Exception) as info:  # MONAI's parser wraps it in "Failed to evaluate ConfigExpression"
        workflow.parser.get_parsed_content("validate#handlers")
    found = input_error_in(info.value)
    assert isinstance(found, LGGInputError) and "was trained or selected on" in str(found), repr(info.value)
    workflow.parser["eval_split"] = "test"
    assert workflow.parser.get_parsed_content("validate#handlers")
