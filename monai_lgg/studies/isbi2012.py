"""ISBI 2012 EM membrane segmentation with the UNet bundle: convert, train, evaluate on 5 held-out slices.

    python tools/isbi2012.py [--data ../shared/data/isbi2012_em] [--work runs/isbi2012] [--epochs 100]
        [--spatial_size 256] [--val_interval 10] [--threads 2] [--json_out results.json]

The data (``train/image/0..29.png``, ``train/label/0..29.png``: 512 x 512 grey, label 0 = membrane,
255 = cell) are converted with :func:`monai_lgg.data.folders.convert_folders`, the mapping
``{0: 1, 255: 0}`` (foreground = membrane, the U-Net paper's target) and a fixed split: slices 25-29
(the last five serial sections, so no test slice lies between training slices) are the test fold 0;
the other 25 are spread over folds 1-5, fold 1 (5 slices) selects the best epoch and folds 2-5
(20 slices) train. The bundle is ``bundles/unet`` with ``--in_channels 1`` and random crops of
``spatial_size``; validation and evaluation infer the whole 512 x 512 slices with sliding windows.

The same steps with the command line::

    monai-lgg convert_folders ../shared/data/isbi2012_em/train runs/isbi2012/data --images image --masks label \\
        --mapping "{0: 1, 255: 0}" --class_names cell,membrane --test_cases 25,26,27,28,29 --num_folds 6
    monai-lgg train unet --dataset_dir runs/isbi2012/data --in_channels 1 --spatial_size "[256,256]" \\
        --epochs 100 --val_interval 10 --ckpt_dir runs/isbi2012/models --log_dir runs/isbi2012/logs
    monai-lgg evaluate unet --dataset_dir runs/isbi2012/data --in_channels 1 --spatial_size "[256,256]" \\
        --ckpt_dir runs/isbi2012/models --output_dir runs/isbi2012/eval --eval_split test

The tool also evaluates an untrained network (the same initialisation, seed 0) on the test slices as a
baseline, and prints a Markdown table of foreground (membrane) Dice, IoU and pixel accuracy, the means
over the 5 test slices of the evaluation's ``per_patient.csv`` (one row per slice).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.studies import PROJECT_ROOT

DATA = PROJECT_ROOT.parent / "shared" / "data" / "isbi2012_em"
BUNDLE = PROJECT_ROOT / "bundles" / "unet"
TEST_CASES = ("25", "26", "27", "28", "29")
MAPPING = {0: 1, 255: 0}  # label 0 is the membrane: the foreground
CLASS_NAMES = ("cell", "membrane")
NUM_FOLDS = 6  # test fold 0 (fixed) + validation fold 1 + 4 training folds: 5 + 5 + 20 slices
METRICS = ("dice", "iou", "accuracy")


def convert(data: str | Path = DATA, output: str | Path = "runs/isbi2012/data") -> Path:
    """Convert the ISBI training set with the fixed split; returns the converted folder."""
    from monai_lgg.data.folders import convert_folders

    data = Path(data)
    if not (data / "train" / "image").is_dir():
        from monai_lgg.errors import LGGInputError

        raise LGGInputError(
            data, "ISBI 2012 EM data not found (expected train/image/0..29.png and train/label/0..29.png)"
        )
    result = convert_folders(
        data / "train",
        output,
        images="image",
        masks="label",
        mapping=MAPPING,
        class_names=CLASS_NAMES,
        test_cases=TEST_CASES,
        num_folds=NUM_FOLDS,
        name="ISBI-2012-EM",
        progress=False,
    )
    return Path(result.output)


def bundle_overrides(dataset: Path, work: Path, spatial_size: int = 256, **extra) -> dict:
    """Config overrides of ``bundles/unet`` for the converted ISBI set (grey input, square patches)."""
    return {
        "dataset_dir": str(dataset),
        "in_channels": 1,
        "spatial_size": [spatial_size, spatial_size],
        "ckpt_dir": str(work / "models"),
        "log_dir": str(work / "logs"),
        "fold": 0,
        **extra,
    }


def _run(run_id: str, configs: Sequence[str], overrides: dict) -> None:
    from monai.bundle import run

    files = [str(BUNDLE / "configs" / c) for c in configs]
    run(run_id, config_file=files if len(files) > 1 else files[0], **overrides)


def train(dataset: Path, work: Path, epochs: int, spatial_size: int = 256, val_interval: int = 10, **extra) -> Path:
    """Train the UNet bundle (``training``); returns the best-validation checkpoint ``model.pt``."""
    _run(
        "training",
        ["train.json"],
        bundle_overrides(dataset, work, spatial_size, epochs=epochs, val_interval=val_interval, **extra),
    )
    return work / "models" / "model.pt"


def untrained_checkpoint(dataset: Path, work: Path, spatial_size: int = 256, seed: int = 0) -> Path:
    """The bundle's network as initialised for training (seed ``seed``), saved as a checkpoint: the baseline."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    from monai_lgg.io import save_checkpoint, write_json

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({**bundle_overrides(dataset, work, spatial_size), "bundle_root": str(BUNDLE)})
    set_determinism(seed=seed)
    network = parser.get_parsed_content("network_def")
    path = work / "untrained" / "model.pt"
    save_checkpoint(network.state_dict(), path)
    # the sidecar states that no case trained or selected it, so the evaluation's leakage check passes
    write_json(sidecar_path(path), {"untrained": True, "seed": seed, "training_cases": [], "validation_cases": []})
    return path


def evaluate(
    dataset: Path, work: Path, checkpoint: Path, output_dir: Path, spatial_size: int = 256, overlays: int = 5
) -> dict:
    """Evaluate ``checkpoint`` on the fixed test slices; returns the mean Dice, IoU, accuracy and the per-slice rows."""
    import csv

    overrides = bundle_overrides(
        dataset,
        work,
        spatial_size,
        ckpt_path=str(checkpoint),
        output_dir=str(output_dir),
        eval_split="test",
        overlays=overlays,
    )
    _run("run", ["train.json", "evaluate.json"], overrides)
    with open(output_dir / "per_patient.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cases = sorted(r["case"] for r in rows)
    if cases != sorted(TEST_CASES):
        raise RuntimeError(f"evaluated {cases}, expected the test slices {list(TEST_CASES)}")
    means = {m: sum(float(r[m]) for r in rows) / len(rows) for m in METRICS}
    return {**means, "per_slice": {r["case"]: {m: float(r[m]) for m in METRICS} for r in rows}}


def machine() -> str:
    """CPU model name (lscpu), the threads used, and the GPU state."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model or 'unknown CPU'}, {torch.get_num_threads()} threads, {gpu}"


def table(results: dict) -> str:
    """Markdown table of the test means (membrane = foreground) for the trained and untrained network."""
    lines = ["| model (test slices 25-29) | membrane Dice | membrane IoU | pixel accuracy |", "|---|---|---|---|"]
    for label, key in (("UNet, trained", "trained"), ("UNet, untrained (baseline)", "untrained")):
        if key in results:
            r = results[key]
            lines.append(f"| {label} | {r['dice']:.3f} | {r['iou']:.3f} | {r['accuracy']:.3f} |")
    return "\n".join(lines)


def main(
    data: str = str(DATA),
    work: str = "runs/isbi2012",
    epochs: int = 100,
    spatial_size: int = 256,
    val_interval: int = 10,
    threads: int = 2,
    json_out: str | None = None,
) -> None:
    """Convert, train, evaluate the trained and the untrained network, print the table.

    Args:
        data: the ISBI 2012 EM folder (``train/image``, ``train/label``).
        work: folder for the converted data, checkpoints, logs and evaluations (a finished training resumes).
        epochs: training epochs (20 training slices, batch 8: 3 iterations each).
        spatial_size: square training patch (random crops of the 512 x 512 slices) and sliding-window size.
        val_interval: epochs between validations (model selection on the 5 validation slices).
        threads: torch CPU threads.
        json_out: also write the results here (default ``<work>/results.json``).
    """
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # child processes print without buffering
    import torch

    torch.set_num_threads(threads)
    work_dir = Path(work).resolve()
    dataset = convert(data, work_dir / "data")
    start = time.perf_counter()
    best = train(dataset, work_dir, epochs, spatial_size, val_interval)
    train_seconds = time.perf_counter() - start
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "command": f"python tools/isbi2012.py --epochs {epochs} --spatial_size {spatial_size} "
        f"--val_interval {val_interval} --threads {threads}",
        "train_seconds": round(train_seconds, 1),
        "epochs": epochs,
        "split": {"test": list(TEST_CASES), **_split(dataset)},
        "trained": evaluate(dataset, work_dir, best, work_dir / "eval", spatial_size),
        "untrained": evaluate(
            dataset,
            work_dir,
            untrained_checkpoint(dataset, work_dir, spatial_size),
            work_dir / "eval_untrained",
            spatial_size,
        ),
        "checkpoint_record": json.loads(sidecar_path(best).read_text()) if sidecar_path(best).is_file() else None,
    }
    target = Path(json_out) if json_out else work_dir / "results.json"
    from monai_lgg.io import write_json

    write_json(target, results)
    print(table(results))
    print(f"training took {train_seconds / 60:.1f} min on {results['machine']}; results in {target}")


def _split(dataset: Path) -> dict:
    from monai_lgg.engines.bundle import load_split

    datalist = dataset / "datalist.json"
    return {s: sorted((i["case"] for i in load_split(datalist, 0, s)), key=int) for s in ("validation", "train")}
