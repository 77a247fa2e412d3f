"""What a random slice split reports: the leaky protocol of one-off notebooks, measured next to ours.

A notebook that shuffles all 2D slices and splits them 80/20 trains on neighbouring slices of every
test patient (a slice and its neighbour are nearly identical), so its test score measures memory as
much as generalisation. :func:`random_slice_split` builds exactly that split over a converted data set
(each patient keeps its own volume; the datalist item lists which slices train), the bundle trains on
it unchanged (``VolumeSliceDataset`` honours ``slices``), and :func:`score_held_out_slices` scores the
held-out slices the way such notebooks do (per slice) and per patient over those slices.

:func:`main` (``tools/leaky_split.py``) trains the UNet bundle with the cross-validation recipe on a random 80/20
split of all slices (the one-off-notebook protocol), scores the held-out slices, and writes the comparison with an
honest patient-level cross-validation (its ``results.json`` from ``tools/experiment_grid.py``) to
``docs/results/<name>/``::

    python tools/leaky_split.py --dataset_dir ../shared/data/lgg/kaggle_3m \\
        --honest docs/results/cv_unet/results.json \\
        --overrides "{'epochs': 20, 'spatial_size': [128, 128], 'roi_size': [256, 256], 'batch_size': 16, \\
            'channels_last': True}"
"""

from __future__ import annotations

import ast
import datetime
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from monai_lgg.data.datalist import load_fold
from monai_lgg.engines.bundle import prepare_dataset
from monai_lgg.inference.loading import load_network
from monai_lgg.io import atomic_dir, write_json
from monai_lgg.metrics import compute_slice_dice, summarize, volume_scores
from monai_lgg.studies import PROJECT_ROOT as PROJECT
from monai_lgg.studies.experiments import bundle_command, epoch_seconds, format_number, machine_info

__all__ = ["main", "random_slice_split", "score_held_out_slices"]


def random_slice_split(
    datalist: str | Path, output: str | Path, test_fraction: float = 0.2, train_fraction: float = 0.6, seed: int = 0
) -> dict[str, list[int]]:
    """Split every slice of every patient at random into training, unused and test slices.

    The default 60 / 20 / 20 mirrors the nested patient split's training / validation / test shares,
    so both protocols train on about as many slices; the middle share (validation in a notebook) is
    not used, since the leaky run trains a fixed number of epochs.

    Writes ``output`` (a datalist whose items carry ``slices``: their training slices, absolute paths)
    and returns ``{case: test slice indices}``.
    """
    if not (0 < test_fraction and 0 < train_fraction and test_fraction + train_fraction <= 1):
        raise ValueError(
            f"need 0 < test_fraction, train_fraction and their sum <= 1, got {test_fraction}, {train_fraction}"
        )
    items = load_fold(datalist, split="all")
    rng = np.random.default_rng(seed)
    test: dict[str, list[int]] = {}
    training = []
    for item in items:
        n = int(item["num_slices"])
        draw = rng.random(n)
        test[item["case"]] = np.flatnonzero(draw < test_fraction).tolist()
        training.append({**item, "slices": np.flatnonzero(draw >= 1 - train_fraction).tolist()})
    split = {"test_fraction": test_fraction, "train_fraction": train_fraction, "seed": seed}
    write_json(output, {"name": "random slice split (leaky)", **split, "training": training})
    return test


def score_held_out_slices(
    network: torch.nn.Module,
    datalist: str | Path,
    test_slices: Mapping[str, Sequence[int]],
    roi_size: Sequence[int],
    threshold: float = 0.5,
) -> dict:
    """Per-slice and per-patient Dice of ``network`` on each patient's held-out slices."""
    from monai_lgg.inference.predictor import Predictor
    from monai_lgg.transforms.presets import volume_transforms

    predictor = Predictor([network], roi_size, threshold=threshold)
    transform = volume_transforms()
    slice_dice: list[float] = []
    tumour_slice_dice: list[float] = []
    patient_dice: list[float] = []
    for item in load_fold(datalist, split="all"):
        zs = list(test_slices.get(item["case"], []))
        if not zs:
            continue
        data = transform({"image": item["image"], "label": item["label"]})
        image, label = torch.as_tensor(data["image"])[..., zs], torch.as_tensor(data["label"])[0, ..., zs] > 0
        _, mask = predictor(image)
        pred = mask.bool()
        per_slice = compute_slice_dice(pred[None, None], label[None, None])[:, 0]
        slice_dice += per_slice.tolist()
        tumour = label.reshape(-1, len(zs)).any(0)
        tumour_slice_dice += per_slice[tumour].tolist()
        patient_dice.append(volume_scores(pred.numpy(), label.numpy())["dice"])
    return {
        "test_slices": len(slice_dice),
        "patients": len(patient_dice),
        "slice_dice_empty_as_1": float(np.mean(slice_dice)),
        "slice_dice_tumour_slices": float(np.mean(tumour_slice_dice)),
        "per_patient_dice": summarize(patient_dice),
    }


def main(
    dataset_dir: str = "synthetic",
    honest: str = "docs/results/cv_unet/results.json",
    overrides: str = "{}",
    name: str = "leaky_split",
    test_fraction: float = 0.2,
    train_fraction: float = 0.6,
    seed: int = 0,
    work_dir: str | None = None,
    output: str | None = None,
) -> None:
    """Train on a random slice split, score its held-out slices, and compare with the honest protocol.

    Args:
        dataset_dir: kaggle_3m folder, converted data set, or "synthetic".
        honest: results.json of the patient-level cross-validation to compare with (same recipe).
        overrides: bundle config overrides, a Python dict literal (use the cross-validation's).
        name: results go to docs/results/<name>/.
        test_fraction: share of each patient's slices held out for the test.
        train_fraction: share of each patient's slices trained on (the rest is unused, like the CV's validation fold).
        seed: seed of the random split.
        work_dir: where the run writes (default runs/<name>).
        output: results folder (default docs/results/<name>).
    """
    extra = ast.literal_eval(overrides) if isinstance(overrides, str) else dict(overrides)
    work = Path(work_dir or PROJECT / "runs" / name)
    work.mkdir(parents=True, exist_ok=True)
    leaky = work / "leaky_datalist.json"
    test = random_slice_split(prepare_dataset(dataset_dir), leaky, test_fraction, train_fraction, seed)
    models = work / "models"
    if not (models / "model.pt").is_file():
        command = bundle_command(
            PROJECT / "bundles" / "unet",
            ["train.json", "final.json"],
            "training",
            {
                "datalist": str(leaky),
                "ckpt_dir": str(models),
                "log_dir": str(work / "logs"),
                "output_dir": str(work / "eval"),
                **extra,
            },
        )
        with open(work / "train.log", "a") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    patch = extra.get("spatial_size", [256, 256])
    network, _ = load_network(PROJECT / "bundles" / "unet", models / "model.pt", patch)
    scores = score_held_out_slices(network, leaky, test, extra.get("roi_size", patch))
    reference = json.loads(Path(honest).read_text())["results"][0]
    h = reference["summary"]
    record = {
        "dataset_dir": dataset_dir,
        "overrides": extra,
        "test_fraction": test_fraction,
        "train_fraction": train_fraction,
        "seed": seed,
        "leaky": scores,
        "train_seconds": epoch_seconds(work / "train.log"),
        "honest": {"source": honest, "cell": reference["name"], "summary": h},
        "machine": machine_info(),
        "date": datetime.date.today().isoformat(),
    }
    rows = [
        (
            "honest: patient-level 5-fold CV (test patients never seen)",
            h["patients"],
            h["per_slice"]["slices"],
            h["per_slice"]["slice_dice_empty_as_1"],
            h["per_slice"]["slice_dice_tumour_slices"],
            h["per_patient"]["dice"]["mean"],
            h["per_patient"]["dice"]["median"],
        ),
        (
            f"leaky: random slice split, {round(100 * train_fraction)} % of slices train, "
            f"{round(100 * test_fraction)} % test (every test patient also trained)",
            scores["patients"],
            scores["test_slices"],
            scores["slice_dice_empty_as_1"],
            scores["slice_dice_tumour_slices"],
            scores["per_patient_dice"]["mean"],
            scores["per_patient_dice"]["median"],
        ),
    ]
    table = [
        "| protocol | patients | test slices | per-slice Dice (empty = 1) | per-slice Dice (tumour slices) "
        "| per-patient Dice mean | median |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | " + " | ".join(format_number(x) for x in r[3:]) + " |" for r in rows],
        "| **inflation (leaky − honest)** | | | "
        + " | ".join(f"**{rows[1][i] - rows[0][i]:+.3f}**" for i in range(3, 7))
        + " |",
    ]
    m = record["machine"]
    text = [
        f"# Leaky random slice split vs honest patient split (`{name}`)",
        "",
        f"Produced by `python tools/leaky_split.py --dataset_dir {dataset_dir} --honest {honest} "
        f'--overrides "{extra}"` '
        f"on {record['date']}: {m['cpu']} ({m['cpu_count']} cores), GPU: {m['gpu'] or 'none'}, torch {m['torch']}.",
        "",
        "Same network, loss, optimizer and training budget (the bundle overrides above) as the honest "
        "cross-validation. The leaky model trains on a random "
        f"{round(100 * train_fraction)} % of every patient's slices (every patient; about the share of slices the "
        "cross-validation's three training folds hold, so both train on about as much data) and is scored on another "
        f"random {round(100 * test_fraction)} %, whose neighbouring slices it has seen. Per-slice Dice: `empty = 1` "
        "scores an empty prediction on a tumour-free slice 1 and a false positive there 0 (as the seed notebooks do). "
        "Per-patient Dice of the leaky row is over each patient's held-out slices only.",
        "",
        *table,
        "",
        f"Leaky run training time: {record['train_seconds'] / 60:.1f} min. The honest numbers come from `{honest}`.",
    ]
    with atomic_dir(Path(output or PROJECT / "docs" / "results" / name)) as tmp:
        (tmp / "README.md").write_text("\n".join(text) + "\n")
        write_json(tmp / "results.json", record)
    print("\n".join(table))
