"""Choose the ``needs_review`` threshold of ``monai-lgg predict`` by cross-validation and write its report.

    python tools/review_threshold.py data/lgg                      # collect and write docs/results/review
    python tools/review_threshold.py --rows docs/results/review/per_patient.csv   # re-score saved rows

DATASET is a converted data set (``monai-lgg convert``) holding the shared patients; the patients' folds are the
cross-validation's (``docs/results/cv_zscore/per_patient.csv``). The method is in
:mod:`monai_lgg.studies.review_calibration`; the report goes to ``OUTPUT`` (README.md, per_patient.csv, results.json,
review_vs_dice.png).
"""

from __future__ import annotations

import csv
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_path, write_json
from monai_lgg.report import figure_png, new_figure
from monai_lgg.studies.experiments import machine_info
from monai_lgg.studies.review_calibration import DICE_BELOW, calibrate, collect_rows


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _figure(rows: list[dict], result: dict) -> bytes:
    values = np.array([float(r["review_entropy"]) if r["review_entropy"] not in ("", None) else np.nan for r in rows])
    dice = np.array([float(r["dice"]) for r in rows])
    poor = dice < result["dice_below"]
    fig = new_figure(5.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(values[~poor], dice[~poor], s=18, color="#2e86c1", label=f"Dice ≥ {result['dice_below']}")
    ax.scatter(values[poor], dice[poor], s=24, color="#c0392b", label=f"Dice < {result['dice_below']}")
    ax.axvline(result["threshold"], color="#555555", linestyle="--", linewidth=1)
    ax.text(result["threshold"], 0.03, f" needs_review from {result['threshold']}", fontsize=8, color="#333333")
    ax.axhline(result["dice_below"], color="#c0392b", linestyle=":", linewidth=0.8)
    ax.set_xlabel("review entropy (bits): mean entropy in the member's predicted tumour", fontsize=8)
    ax.set_ylabel("per-patient 3D Dice (out of fold)", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"{result['patients']} patients, each by the fold model that never saw it", fontsize=9)
    return figure_png(fig)


def _pct(rates: dict, key: str) -> str:
    low, high = rates[f"{key}_ci95"]
    return f"{rates[key]:.2f} ({low:.2f} to {high:.2f})"


def write_report(rows: list[dict], result: dict, output: Path, commands: list[str]) -> None:
    """README.md, per_patient.csv, results.json and review_vs_dice.png under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    _write_rows(output / "per_patient.csv", rows)
    record = {**result, "commands": commands, "date": datetime.date.today().isoformat(), "machine": machine_info()}
    write_json(output / "results.json", record)
    with atomic_path(output / "review_vs_dice.png") as tmp:
        tmp.write_bytes(_figure(rows, result))
    oof, ins = result["out_of_fold"], result["in_sample"]
    rho = result["spearman"]
    dice = [float(r["dice"]) for r in rows]
    seconds = sum(float(r["seconds"]) for r in rows if r.get("seconds") not in ("", None))
    lines = [
        f"# Which segmentations need review? The `needs_review` threshold ({result['patients']} patients)",
        "",
        *[f"{'Command' if i == 0 else 'then'}: `{c}`" for i, c in enumerate(commands)],
        f"({record['date']}, {record['machine'].get('cpu', '')}, {record['machine'].get('cpu_count', '')} CPUs, "
        f"torch {record['machine'].get('torch', '')}; model time {seconds:.0f} s, fp32).",
        "",
        "Each patient is segmented by the shipped ensemble's member that is the cross-validation model of its fold",
        "(never trained or selected on it), with flip TTA and the bundle's threshold and post-processing, through",
        "the code `predict` runs (`Predictor.member_probabilities`, `review_score`). Method:",
        "[docs/uncertainty.md](../../uncertainty.md#which-results-to-review-needs_review).",
        "",
        f"- Shipped threshold (chosen on all patients, Youden's J): **review_entropy ≥ {result['threshold']}** "
        f"flags a patient as likely below Dice {result['dice_below']}.",
        f"- Patients below Dice {result['dice_below']}: {result['positives']} of {result['patients']}. Out-of-fold "
        f"Dice with the shipped mask rule: mean {np.mean(dice):.3f}, median {np.median(dice):.3f} (the published "
        "cross-validation, docs/results/cv_zscore, chose each fold's post-processing on the other folds).",
        f"- Spearman rho of review entropy with Dice: {rho['rho']:.2f} ({rho['ci'][0]:.2f} to {rho['ci'][1]:.2f});"
        f" AUC for Dice < {result['dice_below']}: {result['auc']:.2f}.",
        "",
        "| threshold chosen | sensitivity (95 % CI) | specificity (95 % CI) | flagged | TP / FN / FP / TN |",
        "|---|---|---|---:|---|",
        f"| out of fold (on the other 4 folds, applied to the 5th; pooled) | {_pct(oof, 'sensitivity')} | "
        f"{_pct(oof, 'specificity')} | {oof['flagged']} | {oof['tp']} / {oof['fn']} / {oof['fp']} / {oof['tn']} |",
        f"| in sample (on all patients; optimistic) | {_pct(ins, 'sensitivity')} | {_pct(ins, 'specificity')} | "
        f"{ins['flagged']} | {ins['tp']} / {ins['fn']} / {ins['fp']} / {ins['tn']} |",
        "",
        "Thresholds chosen per fold (on the other folds): "
        + ", ".join(f"fold {f}: {v['threshold']}" for f, v in oof["per_fold"].items())
        + ".",
        "",
        "![review entropy vs Dice](review_vs_dice.png)",
        "",
    ]
    with atomic_path(output / "README.md") as tmp:
        tmp.write_text("\n".join(lines))


def main(
    dataset: str | None = None,
    output: str = "docs/results/review",
    folds: str = "docs/results/cv_zscore/per_patient.csv",
    bundle: str = "unet",
    dice_below: float = DICE_BELOW,
    rows: str | None = None,
) -> None:
    """Collect the out-of-fold rows (or read ``rows``), choose the threshold and write the report.

    Args:
        dataset: the converted data set.
        output: report folder.
        folds: a table with ``case`` and ``fold`` columns (the cross-validation's).
        bundle: the bundle whose shipped model is the ensemble of fold models.
        dice_below: flag patients likely below this Dice.
        rows: re-score a ``per_patient.csv`` without running any model.
    """
    command = shlex.join(["python", "tools/review_threshold.py", *sys.argv[1:]])
    out = Path(output)
    commands = [command]
    if rows is not None:
        table = _read(Path(rows))
        earlier = Path(rows).parent / "results.json"  # name the run that collected the rows first
        if earlier.is_file():
            first = json.loads(earlier.read_text()).get("commands", [""])[0]
            commands = [first, command] if first and first != command else commands
    else:
        if dataset is None:
            raise LGGInputError(None, "give DATASET (a converted data set) or --rows per_patient.csv")
        fold_of = {r["case"]: int(r["fold"]) for r in _read(Path(folds))}
        table = collect_rows(dataset, fold_of, bundle)
    result = calibrate(table, dice_below)
    write_report(table, result, out, commands)
    print(
        f"threshold {result['threshold']}: out of fold sensitivity {result['out_of_fold']['sensitivity']:.2f}, "
        f"specificity {result['out_of_fold']['specificity']:.2f}; written to {out}"
    )
