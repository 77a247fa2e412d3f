"""The evaluation protocol's pieces: the experiment grid, fold pooling, the final-model recipe, flags."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_lgg.engines.handlers import BestModelSaver, sidecar_path
from monai_lgg.errors import LGGInputError, as_flag, as_list
from monai_lgg.inference.predictor import Predictor
from monai_lgg.io import save_checkpoint, write_json
from monai_lgg.studies.experiments import (
    Cell,
    epoch_seconds,
    grid_cells,
    pool_folds,
    run_grid,
    slice_dice_variants,
    write_results,
)

from .conftest import PROJECT_ROOT
from .test_bundles import _ok, _overrides, run_bundle


def test_grid_designs():
    oneway = grid_cells(["unet", "unetr"], ["dicece", "bce"], ["adamw", "sgd"])
    assert [c.name for c in oneway] == ["unet-dicece-adamw", "unetr-dicece-adamw", "unet-bce-adamw", "unet-dicece-sgd"]
    cross = grid_cells(["unet", "unetr"], ["dicece", "bce"], ["adamw", "sgd"], design="cross")
    assert len(cross) == len(set(cross)) == 8
    with pytest.raises(LGGInputError, match="design"):
        grid_cells(["unet"], ["dice"], ["adam"], design="latin")


def _row(case: str, slices: int, tumour_free: int, fp: int, slice_dice: float, dice: float = 0.5, gt: int = 10) -> dict:
    return {
        "case": case,
        "dice": dice,
        "iou": dice / (2 - dice),
        "precision": dice,
        "recall": dice,
        "hd95": 3.0,
        "slice_dice": slice_dice,
        "gt_voxels": gt,
        "pred_voxels": 5,
        "slices": slices,
        "tumour_free_slices": tumour_free,
        "false_positive_slices": fp,
    }


def test_slice_dice_variants_recovers_tumour_slices():
    # patient a: 4 slices, 2 tumour-free (1 with a false positive -> 0, 1 clean -> 1), tumour slices 0.8 and 0.6
    a = _row("a", 4, 2, 1, (0 + 1 + 0.8 + 0.6) / 4)
    # patient b: 2 slices, no tumour-free slice, tumour slices 1.0 and 0.4
    b = _row("b", 2, 0, 0, (1.0 + 0.4) / 2)
    v = slice_dice_variants([a, b])
    assert v["slices"] == 6 and v["tumour_slices"] == 4
    assert v["slice_dice_empty_as_1"] == pytest.approx((0 + 1 + 0.8 + 0.6 + 1.0 + 0.4) / 6)
    assert v["slice_dice_tumour_slices"] == pytest.approx((0.8 + 0.6 + 1.0 + 0.4) / 4)


def _write_fold(cell_dir: Path, fold: int, rows: list[dict]) -> None:
    eval_dir = cell_dir / f"fold{fold}" / "eval"
    (eval_dir / "overlays").mkdir(parents=True)
    with open(eval_dir / "per_patient.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_pool_folds(tmp_path):
    cell = tmp_path / "unet-dicece-adamw"
    _write_fold(cell, 0, [_row("a", 4, 2, 1, 0.6, dice=0.9), _row("b", 2, 0, 0, 0.7, dice=0.7)])
    _write_fold(cell, 1, [_row("c", 3, 3, 0, 1.0, dice=1.0, gt=0)])
    summary = pool_folds(cell, [0, 1])
    assert summary["patients"] == 3
    assert summary["per_patient"]["dice"]["mean"] == pytest.approx((0.9 + 0.7 + 1.0) / 3)
    assert summary["false_positive_rate"]["tumour_free_slices"] == {"rate": 1 / 5, "false_positives": 1, "of": 5}
    # the tumour-free patient c has pred_voxels 5 in the fixture: a false-positive patient
    assert summary["false_positive_rate"]["tumour_free_patients"]["rate"] == 1.0
    pooled = list(csv.DictReader(open(cell / "cv" / "per_patient.csv")))
    assert [(r["case"], r["fold"]) for r in pooled] == [("a", "0"), ("b", "0"), ("c", "1")]

    _write_fold(cell, 2, [_row("a", 4, 2, 1, 0.6)])  # a patient tested in two folds: leaky folds
    with pytest.raises(LGGInputError, match="two folds"):
        pool_folds(cell, [0, 1, 2])


def test_epoch_seconds_counts_a_resumed_epoch_once(tmp_path):
    log = tmp_path / "train.log"
    line = (
        "2026-11-21 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[{}] Complete. Time taken: 00:01:{:06.3f}\n"
    )
    log.write_text(line.format(1, 10) + line.format(2, 20) + "killed\n" + line.format(2, 30) + line.format(3, 5.5))
    assert epoch_seconds(log) == pytest.approx(70 + 90 + 65.5)


@pytest.mark.parametrize(
    "text, expected",
    [("false", False), ("False", False), ("0", False), ("true", True), ("yes", True), (True, True), (0, False)],
)
def test_as_flag(text, expected):
    assert as_flag(text, "resume") is expected


@pytest.mark.parametrize(
    "value, expected",
    [(None, []), ("0, 1,,2", ["0", "1", "2"]), ((1, 3), [1, 3]), ([" a ", ""], ["a"]), (3, [3]), (0.5, [0.5])],
)
def test_as_list_reads_fire_arguments(value, expected):
    """Fire passes a,b as a tuple, one value as a number; a string may hold commas."""
    assert as_list(value) == expected


def test_as_flag_refuses_other_words():
    with pytest.raises(LGGInputError, match="resume must be true or false"):
        as_flag("sometimes", "resume")


def test_best_model_saver_resume_false_starts_afresh(tmp_path):
    net = torch.nn.Conv2d(1, 1, 1)
    path = tmp_path / "model.pt"
    save_checkpoint(net.state_dict(), path)
    write_json(sidecar_path(path), {"fold": 0, "metric_value": 0.99})
    assert BestModelSaver(path, net, record={"fold": 0}).best == 0.99
    assert BestModelSaver(path, net, record={"fold": 0}, resume=False).best == -float("inf")


def test_best_model_saver_resume_with_damaged_sidecar_fails_in_one_line(tmp_path):
    """A sidecar torn by a crash outside our atomic writes names itself, not a JSONDecodeError traceback."""
    net = torch.nn.Conv2d(1, 1, 1)
    path = tmp_path / "model.pt"
    save_checkpoint(net.state_dict(), path)
    sidecar_path(path).write_text('{"fold": 0, "metric_')
    with pytest.raises(LGGInputError, match=r"model\.json: is not valid JSON"):
        BestModelSaver(path, net, record={"fold": 0})


def test_predictor_bf16_close_to_fp32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
    ).eval()
    volume = torch.rand(3, 40, 40, 3)
    p32, _ = Predictor([net], (32, 32))(volume)
    p16, _ = Predictor([net], (32, 32), precision="bf16", channels_last=True)(volume)
    assert p16.dtype == torch.float32 and p16.shape == p32.shape
    assert float((p16 - p32).abs().max()) < 2e-2  # bfloat16 keeps 8 bits of mantissa
    with pytest.raises(ValueError, match="precision"):
        Predictor([net], (32, 32), precision="fp8")


@pytest.mark.slow
def test_final_model_recipe(tmp_path, tiny_dataset):
    """configs/final.json trains on every patient without validation and saves the last epoch as model.pt."""
    bundle = tmp_path / "unet"
    shutil.copytree(
        PROJECT_ROOT / "bundles" / "unet",
        bundle,
        ignore=shutil.ignore_patterns("models", "eval", "logs", "predictions", "runs"),
    )
    cfg = bundle / "configs"
    data = ["--dataset_dir", str(tiny_dataset)]
    out = _ok(run_bundle([cfg / "train.json", cfg / "final.json"], *data, *_overrides(epochs=2), run_id="training"))
    assert "val_mean_dice" not in out  # no validation ran
    models = bundle / "runs" / f"{tiny_dataset.name}_all" / "models"  # the run folder of a run on every patient
    sidecar = json.loads((models / "model.json").read_text())
    all_cases = sorted(i["case"] for i in json.loads((tiny_dataset / "datalist.json").read_text())["training"])
    assert (
        sidecar["training_cases"] == all_cases
        and sidecar["epoch"] == 2
        and sidecar["selection"].startswith("last epoch")
    )
    last = torch.load(models / "last.ckpt", map_location="cpu", weights_only=True)["network"]
    final = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(final[k], last[k]) for k in final)

    # evaluated with the training's configs and options, evaluate.json finds this run's model
    evaluate = [cfg / "train.json", cfg / "final.json", cfg / "evaluate.json"]
    refused = run_bundle(evaluate, *data, *_overrides())
    assert refused.returncode != 0 and "was trained or selected on" in refused.stdout + refused.stderr
    # the command-line word "true" is read as a yes (python-fire passes it as a string)
    _ok(run_bundle(evaluate, *data, *_overrides(allow_overlap="true")))


@pytest.mark.slow
def test_experiment_grid_end_to_end(tmp_path, tiny_dataset):
    """One cell over two folds through the real bundle commands, pooled and written as a results folder."""
    cells, overrides = [Cell("unet", "dicece", "adamw")], {"epochs": 1, "spatial_size": [64, 64], "batch_size": 4}
    record = run_grid(
        "tiny", str(tiny_dataset), cells, [0, 1], overrides, tmp_path / "runs", PROJECT_ROOT / "bundles", "test budget"
    )
    result = record["results"][0]
    assert result["summary"]["patients"] == 2  # one test patient per fold of the 5-patient set
    assert 0.0 <= result["summary"]["per_patient"]["dice"]["mean"] <= 1.0
    assert result["epochs"] == [1, 1] and all(s > 0 for s in result["train_seconds"])
    assert result["params"] > 0 and result["inference_ms_per_slice"] > 0
    out = write_results(record, tmp_path / "results")
    readme = (out / "README.md").read_text()
    assert "| unet | dicece | adamw | 2 |" in readme and "test budget" in readme
    assert (out / "dice_boxplot.png").stat().st_size > 0 and (out / "unet-dicece-adamw" / "report.md").is_file()
    # finished runs are skipped: a second call only pools and re-measures
    again = run_grid(
        "tiny", str(tiny_dataset), cells, [0, 1], overrides, tmp_path / "runs", PROJECT_ROOT / "bundles", "b"
    )
    assert again["results"][0]["train_seconds"] == result["train_seconds"]
    assert np.isclose(
        again["results"][0]["summary"]["per_patient"]["dice"]["mean"], result["summary"]["per_patient"]["dice"]["mean"]
    )


@pytest.mark.slow
def test_experiment_grid_times_a_size_bound_network_at_its_trained_size(tmp_path, tiny_dataset):
    """TransUNet is built for one input size: the grid's latency step must rebuild it from the checkpoint's record.

    Without a ``spatial_size`` override the step used to assume 256² and failed on the position embeddings of a
    network the recipe trained at its default size.
    """
    record = run_grid(
        "tiny",
        str(tiny_dataset),
        [Cell("transunet", "dicece", "adamw")],
        [0],
        {"epochs": 1, "batch_size": 4},
        tmp_path / "runs",
        PROJECT_ROOT / "bundles",
        "b",
    )
    assert record["results"][0]["inference_ms_per_slice"] > 0


class _Nothing(torch.nn.Module):
    """Predicts background everywhere (a very negative logit)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], -20.0)


def test_random_slice_split_and_scoring(tmp_path, tiny_dataset):
    from monai_lgg.data.datalist import load_fold
    from monai_lgg.data.datasets import VolumeSliceDataset
    from monai_lgg.studies.leaky_split import random_slice_split, score_held_out_slices

    leaky = tmp_path / "leaky.json"
    test = random_slice_split(tiny_dataset / "datalist.json", leaky, test_fraction=0.25, train_fraction=0.5, seed=3)
    items = load_fold(leaky, split="all")
    for item in items:
        assert not set(item["slices"]) & set(test[item["case"]])  # a slice trains or tests, never both
    trained = sum(len(i["slices"]) for i in items)
    assert 0 < trained < sum(i["num_slices"] for i in items)
    dataset = VolumeSliceDataset(items, progress=False)
    served = sorted((dataset[k]["case"], dataset[k]["slice"]) for k in range(len(dataset)))
    assert served == sorted((i["case"], z) for i in items for z in i["slices"])

    # a network that finds nothing: empty-as-1 per-slice Dice = share of tumour-free test slices, 0 elsewhere
    scores = score_held_out_slices(_Nothing(), leaky, test, roi_size=(64, 64))
    labels = {i["case"]: np.asarray(__import__("nibabel").load(i["label"]).dataobj) > 0 for i in items}
    flags = [bool(labels[c][..., z].any()) for c, zs in test.items() for z in zs]
    assert scores["test_slices"] == len(flags)
    assert scores["slice_dice_empty_as_1"] == pytest.approx(flags.count(False) / len(flags))
    assert scores["slice_dice_tumour_slices"] == 0.0


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize("num_classes, out_channels", [(2, 1), (3, 3), (5, 5)])
def test_num_classes_sets_out_channels(config, num_classes, out_channels):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(PROJECT_ROOT / "bundles" / "unet" / "configs" / config))
    parser["num_classes"] = num_classes
    assert parser.get_parsed_content("out_channels") == out_channels
