"""The first hour of a new user (issue #12): what the documented commands write, help, errors, small data sets,
readable pictures and honest log names.

Each test fails on the code before the issue was fixed. The slow ones run the bundle through
``python -m monai.bundle`` on a 3-patient, 32x32 synthetic set.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from ignite.engine import Engine

from monai_lgg.cli import Commands, main
from monai_lgg.data.kaggle import convert_kaggle
from monai_lgg.data.synthetic import generate_synthetic_kaggle
from monai_lgg.engines.handlers import LastCheckpointSaver, ResumeFromCheckpoint
from monai_lgg.engines.reports import PatientReport
from monai_lgg.errors import LGGInputError

from .conftest import PROJECT_ROOT, converted_synthetic

UNET_CONFIGS = PROJECT_ROOT / "bundles" / "unet" / "configs"
MICRO = {"spatial_size": "[32,32]", "batch_size": "4", "num_workers": "0"}


def _bundle_copy(target: Path, published_model: bool = False) -> Path:
    """The UNet bundle copied alone (links resolved); with ``published_model``, a stand-in for its shipped weights."""
    ignore = shutil.ignore_patterns("models", "eval", "logs", "predictions", "runs")
    shutil.copytree(PROJECT_ROOT / "bundles" / "unet", target, symlinks=False, ignore=ignore)
    if published_model:
        (target / "models").mkdir()
        (target / "models" / "model.pt").write_bytes(b"the shipped weights")
        (target / "models" / "model.json").write_text('{"selection": "shipped"}')
    return target


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _env(tmp: Path, **extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MONAI_LGG_CACHE": str(tmp / "cache")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("MONAI_LGG_DEBUG", None)
    return {**env, **extra}


def _bundle_run(configs: list[Path], tmp: Path, *args: str, run_id: str | None = None, **env: str):
    config = str(configs[0]) if len(configs) == 1 else json.dumps([str(c) for c in configs])
    cmd = [sys.executable, "-m", "monai.bundle", "run", *([run_id] if run_id else []), "--config_file", config, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(tmp, **env), cwd=tmp)


def _options(**values: str) -> list[str]:
    return [a for key, value in {**MICRO, **values}.items() for a in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def micro_dataset(tmp_path_factory) -> Path:
    """3 patients (one per split of fold 0), 32x32 slices: a bundle epoch takes a second."""
    root = tmp_path_factory.mktemp("micro")
    return converted_synthetic(root, num_patients=3, num_slices=6, size=32, num_folds=3, seed=3)


# ------------------------------------------------------------------ 1. training never replaces the published model


def test_training_writes_into_a_run_folder_and_evaluate_reads_it(micro_dataset, tmp_path):
    """Default ckpt/log/output dirs are <bundle>/runs/<data set>_fold<k>/..., evaluate.json's checkpoint is the
    run's model, inference.json keeps loading the bundle's published models/model.pt."""
    from monai.bundle import ConfigParser

    bundle = _bundle_copy(tmp_path / "unet")
    configs = bundle / "configs"

    def parsed(files: list[str], **overrides) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        for key, value in {"bundle_root": str(bundle), "dataset_dir": str(micro_dataset), **overrides}.items():
            parser[key] = value
        return parser

    run = bundle / "runs" / f"{micro_dataset.name}_fold0"
    train = parsed(["train.json"])
    assert [train.get_parsed_content(k) for k in ("ckpt_dir", "log_dir", "output_dir")] == [
        str(run / "models"),
        str(run / "logs"),
        str(run / "eval"),
    ]
    runs, name = bundle / "runs", micro_dataset.name
    assert parsed(["train.json"], fold=2).get_parsed_content("ckpt_dir") == str(runs / f"{name}_fold2" / "models")
    assert parsed(["train.json", "final.json"]).get_parsed_content("ckpt_dir") == str(runs / f"{name}_all" / "models")
    synthetic = parsed(["train.json"], dataset_dir="synthetic")
    assert synthetic.get_parsed_content("run_dir") == str(runs / "synthetic_fold0")
    assert parsed(["train.json", "evaluate.json"]).get_parsed_content("ckpt_path") == str(run / "models" / "model.pt")
    mine = parsed(["train.json"], run_dir=str(tmp_path / "mine"))
    assert mine.get_parsed_content("ckpt_dir") == str(tmp_path / "mine" / "models")
    assert parsed(["inference.json"]).get_parsed_content("ckpt_path") == str(bundle / "models" / "model.pt")


def _engine_at(epoch: int, max_epochs: int) -> Engine:
    engine = Engine(lambda engine, batch: None)
    engine.state.max_epochs, engine.state.epoch_length = max_epochs, 4
    engine.state.epoch, engine.state.iteration = epoch, epoch * 4
    return engine


def test_resuming_says_so_and_how_to_start_afresh(tmp_path, caplog):
    path = tmp_path / "models" / "last.ckpt"
    net = torch.nn.Linear(2, 1)
    LastCheckpointSaver(path, {"network": net}, record={"fold": 0})(_engine_at(2, 5))
    with caplog.at_level(logging.INFO, logger="monai_lgg"):
        ResumeFromCheckpoint(path, {"network": net}, record={"fold": 0})(_engine_at(0, 5))
    assert f"resuming the run in {path.parent} after epoch 2 of 5" in caplog.text and "--resume false" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_lgg"):
        ResumeFromCheckpoint(path, {"network": net}, record={"fold": 0})(_engine_at(0, 2))
    assert "is a finished run (2 of 2 epochs): nothing left to train" in caplog.text


@pytest.mark.slow
def test_readme_training_command_keeps_the_published_model(micro_dataset, tmp_path):
    """The README's `python -m monai.bundle run training --config_file <bundle>/configs/train.json`: the bundle's
    models/ is left byte for byte, the run folder is printed, and a re-run says it resumes."""
    bundle = _bundle_copy(tmp_path / "unet", published_model=True)
    published = _digest(bundle / "models")
    train = [bundle / "configs" / "train.json"]
    # cosine: a schedule whose saved state carries no total step count, so a larger --epochs extends the run
    data = ["--dataset_dir", str(micro_dataset), "--scheduler_name", "cosine"]
    first = _bundle_run(train, tmp_path, *data, *_options(epochs=1), run_id="training")
    assert first.returncode == 0, first.stderr[-3000:]
    models = bundle / "runs" / f"{micro_dataset.name}_fold0" / "models"
    assert f"checkpoints go to {models}" in first.stdout
    assert _digest(bundle / "models") == published, "training replaced the published model"
    assert (models / "model.pt").is_file() and (models / "last.ckpt").is_file()

    again = _bundle_run(train, tmp_path, *data, *_options(epochs=2), run_id="training")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming the run in {models} after epoch 1 of 2" in again.stdout and "--resume false" in again.stdout
    assert _digest(bundle / "models") == published

    asked = _bundle_run(train, tmp_path, *data, *_options(epochs=1, ckpt_dir=str(bundle / "models")), run_id="training")
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert "is the bundle's published models folder" in asked.stdout  # written there only when asked, and said so
    assert _digest(bundle / "models")["model.pt"] != published["model.pt"]


# ------------------------------------------------------------------ 2. --help prints help and runs nothing


COMMANDS = sorted(name for name, _ in inspect.getmembers(Commands, inspect.isfunction) if not name.startswith("_"))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_help_prints_help_only(command, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MONAI_LGG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    bundle = _bundle_copy(tmp_path / "unet") if command in ("train", "evaluate") else None
    # what a user might type before asking for help: an old version ran train/evaluate with these
    extra = ["--bundle", str(bundle), "--dataset_dir", str(tmp_path / "nowhere")] if bundle else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, *extra, flag])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err[-2000:]
    text = out.out + out.err
    assert f"monai-lgg {command}" in text and "NAME" in text and ("FLAGS" in text or "POSITIONAL ARGUMENTS" in text)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["unet"] if bundle else []), "help wrote files"
    if bundle:
        assert not (bundle / "runs").exists() and not (bundle / "models").exists()


# ------------------------------------------------------------------ 3. one-line errors through python -m monai.bundle


def test_bundle_runner_ends_a_user_error_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _bundle_run([UNET_CONFIGS / "train.json"], tmp_path, "--dataset_dir", str(empty), run_id="training")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"monai-lgg: error: {empty}: contains no patient folders with .tif slices (expected the kaggle_3m layout)"
    )
    assert "Traceback" not in result.stdout + result.stderr and "ConfigExpression" not in result.stderr
    debug = _bundle_run(
        [UNET_CONFIGS / "train.json"], tmp_path, "--dataset_dir", str(empty), run_id="training", MONAI_LGG_DEBUG="1"
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "Failed to evaluate ConfigExpression" in debug.stderr


@pytest.mark.slow
def test_error_during_a_run_ends_with_one_line(micro_dataset, tmp_path):
    """A user error raised by a handler while the trainer runs (here: a last.ckpt of another fold) is not logged
    with its traceback by MONAI's StatsHandler, and the run ends with the one line, exit code 2."""
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    (models / "last.ckpt").write_bytes(b"not read")
    (models / "last.json").write_text(json.dumps({"fold": 2, "epoch": 1}))
    result = _bundle_run(
        [UNET_CONFIGS / "train.json"],
        tmp_path,
        "--dataset_dir",
        str(micro_dataset),
        *_options(epochs=1, run_dir=str(tmp_path / "run")),
        run_id="training",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"monai-lgg: error: {models / 'last.ckpt'}: was trained with another fold")
    assert "Traceback" not in result.stdout + result.stderr


# ------------------------------------------------------------------ 4. small data sets convert, file problems first


def _kaggle(root: Path, patients: int) -> Path:
    return generate_synthetic_kaggle(root, num_patients=patients, num_slices=4, size=32, seed=5)


def test_file_problems_come_before_fold_counts(tmp_path, capsys):
    kaggle = _kaggle(tmp_path / "k", 3)
    lost = sorted(kaggle.glob("*/*_2_mask.tif"))[0]
    lost.unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(kaggle), str(tmp_path / "out"), "--progress", "False"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"error: {lost.with_name(lost.name.replace('_mask', ''))}: image without mask" in err, err
    assert "cannot fill" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("patients, folds", [(1, 1), (2, 1), (4, 4), (5, 5)])
def test_small_sets_convert_with_fewer_folds_and_a_warning(tmp_path, patients, folds):
    result = convert_kaggle(_kaggle(tmp_path / "k", patients), tmp_path / "out", progress=False, num_workers=1)
    assert result.ok and result.report["patients"] == patients
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert datalist["num_folds"] == folds and sorted({i["fold"] for i in datalist["training"]}) == list(range(folds))
    warnings = [w["problem"] for w in result.report["warnings"]]
    assert any(f"only {patients} patients" in w for w in warnings) == (folds < 5), warnings


def test_a_set_too_small_to_train_says_why(tmp_path):
    from monai_lgg.engines.bundle import load_split

    convert_kaggle(_kaggle(tmp_path / "k", 1), tmp_path / "out", progress=False, num_workers=1)
    datalist = tmp_path / "out" / "datalist.json"
    assert [i["case"] for i in load_split(datalist, 0, "all")]  # viewable and predictable
    with pytest.raises(LGGInputError, match="too few to train"):
        load_split(datalist, 0, "train")


# ------------------------------------------------------------------ 6. pictures and reports readable on their own


def _volume(depth: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Tumour on slices 1-3 (largest on slice 2); the prediction finds it and adds a small false positive
    on the tumour-free slice 5."""
    label = torch.zeros(1, size, size, depth)
    label[0, 4:10, 4:10, 1:4] = 1
    label[0, 3:12, 3:12, 2] = 1
    pred = label.clone()
    pred[0, 1:3, 1:3, 5] = 1
    return label, pred


def test_evaluation_overlays_show_false_positives_and_explain_themselves(tmp_path):
    label, pred = _volume()
    report = PatientReport(tmp_path, overlays=3)
    engine = Engine(lambda e, b: None)
    engine.state.output = [{"pred": pred, "label": label, "image": torch.rand(3, 16, 16, 6)}]
    engine.state.batch = [{"case": "p1"}]
    report.collect(engine)
    names = sorted(p.name for p in (tmp_path / "overlays").glob("*.png"))
    assert "p1_006.png" in names, f"the false positive on tumour-free slice 6 is not shown: {names}"
    picture = cv2.imread(str(tmp_path / "overlays" / "p1_006.png"))
    assert picture.shape[1] >= 384 and picture.shape[0] > picture.shape[1], "no caption band above the enlarged slice"
    assert tuple(picture[2, 2]) == (32, 32, 32)  # the caption band


def test_two_patients_are_one_best_and_one_worst():
    from monai_lgg.report import best_and_worst

    two = [{"case": "a", "dice": 0.9}, {"case": "b", "dice": 0.2}]
    assert [(kind, r["case"]) for kind, r in best_and_worst(two, 3)] == [("best", "a"), ("worst", "b")]
    many = [{"case": str(i), "dice": 1 - i / 10} for i in range(10)]
    assert [kind for kind, _ in best_and_worst(many, 3)] == ["best"] * 3 + ["worst"] * 3


def _evaluation(folder: Path) -> Path:
    folder.mkdir()
    rows = [
        {
            "case": "TCGA_A",
            "dice": 0.8,
            "iou": 0.67,
            "precision": 0.9,
            "recall": 0.72,
            "f1": 0.8,
            "accuracy": 0.99,
            "hd95": 3.5,
            "slice_dice": 0.85,
            "gt_voxels": 25,
            "pred_voxels": 20,
            "slices": 6,
            "tumour_free_slices": 3,
            "false_positive_slices": 0,
        },
    ]
    with open(folder / "per_patient.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_report_table_counts_are_integers_and_fit_the_page(tmp_path):
    from monai_lgg.report import load_evaluation, make_report, patient_table

    evaluation = load_evaluation(_evaluation(tmp_path / "eval"))
    header, rows = patient_table(evaluation)
    cells = dict(zip(header, rows[0], strict=True))
    assert cells["tumour voxels"] == "25" and cells["slices"] == "6" and cells["Dice"] == "0.800"
    assert len(header) <= 12 and "accuracy" not in header and "f1" not in header  # in the CSV, not the page
    html = make_report(tmp_path / "eval", tmp_path / "r.html").read_text()
    assert "<div class='wide'><table>" in html and "25.000" not in html


def test_validation_curves_that_coincide_stay_visible(monkeypatch):
    """IoU equal to precision (common early in training) must not vanish under it."""
    import monai_lgg.report as report

    figures = []
    monkeypatch.setattr(report, "figure_png", lambda fig: figures.append(fig) or b"png")
    same = [(1, 0.2), (2, 0.4)]
    report.training_curves_plot(
        {
            "train_loss": [(1, 1.0), (2, 0.5)],
            "val_iou": same,
            "val_precision": same,
            "val_mean_dice": [(1, 0.3), (2, 0.5)],
        }
    )
    lines = {line.get_label(): line for ax in figures[0].axes for line in ax.get_lines()}
    iou, precision = lines["IoU"], lines["precision"]
    drawn_later = precision if precision.get_zorder() > iou.get_zorder() else iou
    underneath = iou if drawn_later is precision else precision
    assert underneath.get_linewidth() > drawn_later.get_linewidth()  # its edges show around the one on top
    assert underneath.get_linestyle() != drawn_later.get_linestyle()
    assert iou.get_marker() != precision.get_marker()


def _random_bundle(root: Path) -> Path:
    """The UNet bundle with untrained weights in its models/ (enough to test what predict writes)."""
    from monai_lgg.engines.bundle import bundle_network
    from monai_lgg.io import save_checkpoint

    bundle = _bundle_copy(root)
    torch.manual_seed(0)
    net = bundle_network(bundle, in_channels=3, out_channels=1, spatial_size=[32, 32])
    save_checkpoint(net.state_dict(), bundle / "models" / "model.pt")
    return bundle


def test_predict_overlays_and_summary_name_their_outputs(tmp_path):
    bundle = _random_bundle(tmp_path / "unet")
    kaggle = _kaggle(tmp_path / "k", 1)
    patient = next(p for p in kaggle.iterdir() if p.is_dir())
    out = tmp_path / "out"
    main(
        [
            "predict",
            str(patient),
            str(out),
            "--bundle",
            str(bundle),
            "--spatial_size",
            "[32,32]",
            "--threshold",
            "0",
            "--overlays",
            "--progress",
            "False",
        ]
    )
    with open(out / "tumour_summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    pattern = Path(row["output"])
    masks = sorted(pattern.parent.glob(pattern.name))
    assert pattern.parent == out and len(masks) == len(list(patient.glob("*_mask.tif"))) > 1, row
    overlay = cv2.imread(str(sorted((out / "overlays").glob("*.png"))[0]))
    assert overlay.shape[0] > overlay.shape[1] >= 384 and tuple(overlay[2, 2]) == (32, 32, 32)  # caption band


# ------------------------------------------------------------------ 7. honest logs


def test_hausdorff_deprecation_warning_does_not_repeat(tmp_path):
    script = (
        "import torch\n"
        "from monai.metrics import HausdorffDistanceMetric\n"
        "from monai_lgg.metrics import volume_scores\n"
        "a = torch.zeros(1, 1, 8, 8, 3); a[..., 2:5, 2:5, 1] = 1\n"
        "b = torch.zeros(1, 1, 8, 8, 3); b[..., 3:6, 2:5, 1] = 1\n"
        "for _ in range(3):\n"
        "    HausdorffDistanceMetric(percentile=95)(a, b)\n"
        "    volume_scores(a[0, 0].numpy() > 0, b[0, 0].numpy() > 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("always_return_as_numpy") == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_evaluation_logs_the_split_it_scores(micro_dataset, tmp_path):
    """evaluate.json scores the test patients: logged as test_*, with no "new best metric" of a single evaluation."""
    bundle = _random_bundle(tmp_path / "unet")
    configs = [bundle / "configs" / "train.json", bundle / "configs" / "evaluate.json"]
    result = _bundle_run(
        configs,
        tmp_path,
        "--dataset_dir",
        str(micro_dataset),
        *_options(ckpt_path=str(bundle / "models" / "model.pt"), output_dir=str(tmp_path / "eval")),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "test_mean_dice" in out and "test_iou" in out and "test patients: 1, per-patient Dice" in out
    assert "val_mean_dice" not in out and "best metric" not in out and "Key metric" not in out


# ------------------------------------------------------------------ 8. unknown bundle names list the known ones


def test_unknown_bundle_lists_the_bundles(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--bundle", "nosuchbundle"])
    line = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and line.startswith("monai-lgg: error: nosuchbundle: bundle not found")
    assert all(name in line for name in ("unet", "unetplusplus", "transunet", "unetr", "attentionunet", "unext")), line
