"""Measure how much a random slice split (patients leaking between training and test) inflates Dice.

Trains the UNet bundle with the cross-validation recipe on a random 80/20 split of all slices (the
one-off-notebook protocol), scores the held-out slices, and writes the comparison with an honest
patient-level cross-validation (its ``results.json`` from ``tools/experiment_grid.py``) to
``docs/results/<name>/``::

    python tools/leaky_split.py --dataset_dir ../shared/data/lgg/kaggle_3m \\
        --honest docs/results/cv_unet/results.json \\
        --overrides "{'epochs': 20, 'spatial_size': [128, 128], 'roi_size': [256, 256], 'batch_size': 16, 'channels_last': True}"
"""

from __future__ import annotations

import ast
import datetime
import json
import subprocess
from pathlib import Path

import fire

from monai_lgg.engines.bundle import prepare_dataset
from monai_lgg.inference.loading import load_network
from monai_lgg.io import atomic_dir, write_json
from monai_lgg.studies.experiments import bundle_command, epoch_seconds, format_number, machine_info
from monai_lgg.studies.leaky_split import random_slice_split, score_held_out_slices

PROJECT = Path(__file__).resolve().parents[1]


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
            f"leaky: random slice split, {round(100 * train_fraction)} % of slices train, {round(100 * test_fraction)} % test (every test patient also trained)",
            scores["patients"],
            scores["test_slices"],
            scores["slice_dice_empty_as_1"],
            scores["slice_dice_tumour_slices"],
            scores["per_patient_dice"]["mean"],
            scores["per_patient_dice"]["median"],
        ),
    ]
    table = [
        "| protocol | patients | test slices | per-slice Dice (empty = 1) | per-slice Dice (tumour slices) | per-patient Dice mean | median |",
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
        f'Produced by `python tools/leaky_split.py --dataset_dir {dataset_dir} --honest {honest} --overrides "{extra}"` '
        f"on {record['date']}: {m['cpu']} ({m['cpu_count']} cores), GPU: {m['gpu'] or 'none'}, torch {m['torch']}.",
        "",
        "Same network, loss, optimizer and training budget (the bundle overrides above) as the honest cross-validation. "
        f"The leaky model trains on a random {round(100 * train_fraction)} % of every patient's slices (every patient; about the "
        "share of slices the cross-validation's three training folds hold, so both train on about as much data) and is scored "
        f"on another random {round(100 * test_fraction)} %, whose neighbouring slices it has seen. Per-slice Dice: `empty = 1` scores an empty "
        "prediction on a tumour-free slice 1 and a false positive there 0 (as the seed notebooks do). Per-patient Dice of the "
        "leaky row is over each patient's held-out slices only.",
        "",
        *table,
        "",
        f"Leaky run training time: {record['train_seconds'] / 60:.1f} min. The honest numbers come from `{honest}`.",
    ]
    with atomic_dir(Path(output or PROJECT / "docs" / "results" / name)) as tmp:
        (tmp / "README.md").write_text("\n".join(text) + "\n")
        write_json(tmp / "results.json", record)
    print("\n".join(table))


if __name__ == "__main__":
    fire.Fire(main)
