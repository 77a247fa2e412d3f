"""Does ``monai-lgg predict --uncertainty`` mean something? Rank it against per-patient Dice over a cross-validation.

Every patient is segmented by the model of the cross-validation fold where it is a test patient (never used
for its training or model selection: the tool refuses otherwise), with flip TTA and that fold's post-processing
rule (chosen leave-one-fold-out by ``tools/crossval_report.py``), through the same ``Predictor.uncertainty`` that
``predict --uncertainty`` runs. Its per-case summaries (``entropy_tumour``, ``entropy_border``,
``mutual_info_tumour``, ``mutual_info_border``; definitions in docs/uncertainty.md) are then ranked against the
per-patient Dice: Spearman's rho with a bootstrap 95 % CI and a permutation p-value, the same with the predicted
tumour volume regressed out (small tumours have both lower Dice and relatively more border), and how well each
picks out the patients with Dice below ``--low`` (ROC AUC, their ranks). ::

    python tools/uncertainty_report.py runs/cv_recipe/unet-dicece-adamw data/lgg \\
        --per_patient docs/results/cv_recipe/crossval/per_patient.csv \\
        --crossval docs/results/cv_recipe/crossval/results.json --output docs/results/uncertainty

``CELL_DIR`` holds ``fold<f>/models/model.pt`` (with its ``model.json``); ``DATASET`` is the converted set
(``datalist.json`` with the folds the models were trained on). A fold model is one network, so its passes are
the 2 flips: the mutual information measured here is the flips' disagreement, not the shipped 5-member
ensemble's (every shared patient trained 4 of those members, so no patient can score it honestly).

Writes ``OUTPUT/per_patient.csv``, ``OUTPUT/results.json``, ``OUTPUT/uncertainty_vs_dice.png`` and
``OUTPUT/README.md`` (the table, the command, date and machine). ``--rows OUTPUT/per_patient.csv`` re-scores saved
rows without running any model (the README then names the command that collected them too).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.data.datalist import load_fold
from monai_lgg.errors import LGGInputError, as_list
from monai_lgg.inference import Predictor, find_cases, load_case, load_network
from monai_lgg.inference.uncertainty import BORDER_WIDTH, UNCERTAINTY_COLUMNS, uncertainty_rows
from monai_lgg.io import atomic_path, write_json
from monai_lgg.metrics.correlation import correlation_test, detection_auc
from monai_lgg.report import figure_png, new_figure
from monai_lgg.studies.experiments import format_number, machine_info

SUMMARIES = (*UNCERTAINTY_COLUMNS, "predicted_voxels")
"""The per-case quantities ranked against Dice; the predicted volume is a reference, not an uncertainty."""

LABELS = {
    "entropy_tumour": "mean entropy in the predicted tumour",
    "entropy_border": f"mean entropy within {BORDER_WIDTH} px of its border",
    "mutual_info_tumour": "mean mutual information (flips) in the tumour",
    "mutual_info_border": f"mean mutual information (flips) within {BORDER_WIDTH} px of the border",
    "predicted_voxels": "predicted tumour volume (voxels; reference, not an uncertainty)",
}


def _dice(mask: np.ndarray, label: np.ndarray) -> float:
    total = int(mask.sum()) + int(label.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(mask, label).sum()) / total


def _fold_rules(crossval: str | Path | None, folds: Sequence[int]) -> dict[int, tuple[float, float]]:
    """(threshold, min component fraction) per fold from ``crossval_report``'s ``results.json``; 0.5 / 0 without."""
    if crossval is None:
        return {f: (0.5, 0.0) for f in folds}
    record = json.loads(Path(crossval).read_text())
    chosen = record.get("chosen_per_fold", {})
    missing = [f for f in folds if str(f) not in chosen]
    if missing:
        raise LGGInputError(crossval, f"has no post-processing rule for fold(s) {missing} (chosen_per_fold)")
    return {f: (float(chosen[str(f)]["threshold"]), float(chosen[str(f)]["min_component_fraction"])) for f in folds}


def collect(
    cell_dir: str | Path,
    dataset: str | Path,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    crossval: str | Path | None = None,
    bundle: str = "unet",
    precision: str = "fp32",
) -> list[dict]:
    """One row per test patient of each fold: its Dice and uncertainty summaries from the fold's own model.

    Raises:
        LGGInputError: a missing model, or a patient the fold's model trained or was selected on.
    """
    cell_dir, dataset = Path(cell_dir), Path(dataset)
    datalist = dataset / "datalist.json" if dataset.is_dir() else dataset
    cases = {case.name: case for case in find_cases(datalist.parent)}
    rules = _fold_rules(crossval, folds)
    rows = []
    for fold in folds:
        checkpoint = cell_dir / f"fold{fold}" / "models" / "model.pt"
        network, info = load_network(bundle, checkpoint)
        threshold, fraction = rules[fold]
        predictor = Predictor(
            [network],
            info.spatial_size,
            "cpu",
            batch_size=16,
            tta=True,
            threshold=threshold,
            precision=precision,
            out_channels=info.out_channels,
            geometry=info.geometry,
            min_component_fraction=fraction,
        )
        sidecar = sidecar_path(checkpoint)
        record = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        seen = set(record.get("training_cases", [])) | set(record.get("validation_cases", []))
        for item in load_fold(datalist, fold, "test"):
            name = item["case"]
            if name in seen:
                raise LGGInputError(checkpoint, f"trained or was selected on {name}: not a test patient of fold {fold}")
            start = time.perf_counter()
            image, _ = load_case(cases[name], info.in_channels, "none" if info.geometry == "brain" else "zscore")
            result = predictor.uncertainty(image)
            mask = predictor.mask(result.probability).numpy() > 0
            label = np.asarray(nib.load(item["label"]).dataobj) > 0
            information = None if result.mutual_information is None else result.mutual_information.numpy()
            summary = uncertainty_rows(mask, result.entropy.numpy(), information)[-1]
            row = {
                "case": name,
                "fold": fold,
                "dice": _dice(mask, label),
                "predicted_voxels": int(mask.sum()),
                **{k: summary[k] for k in UNCERTAINTY_COLUMNS},
                "passes": result.passes,
            }
            stored = cell_dir / "oof" / f"{name}.npz"
            if stored.is_file():  # the probabilities crossval_report kept (uint8 x 255): same model, same inputs?
                with np.load(stored) as oof:
                    row["max_diff_stored_prob"] = float(np.abs(result.probability.numpy() - oof["prob"] / 255.0).max())
            row["seconds"] = round(time.perf_counter() - start, 2)
            rows.append(row)
            print(f"fold {fold} {name}: Dice {row['dice']:.3f}, entropy tumour {row['entropy_tumour']}", flush=True)
    return rows


def _as_float(value: object) -> float:
    return math.nan if value in ("", None) else float(value)


def evaluate(rows: Sequence[dict], low: float = 0.5, n_resamples: int = 10_000) -> dict:
    """Rank statistics of every summary against Dice (see the module docstring)."""
    dice = np.array([_as_float(r["dice"]) for r in rows])
    volume = np.array([_as_float(r["predicted_voxels"]) for r in rows])
    poor = dice < low
    results = {}
    for key in SUMMARIES:
        values = np.array([_as_float(r[key]) for r in rows])
        if np.isnan(values).all():
            results[key] = {"available": False}
            continue
        finite = np.isfinite(values)
        order = np.argsort(-np.where(finite, values, -np.inf), kind="stable")  # most uncertain first
        rank = np.empty(len(values), dtype=int)
        rank[order] = np.arange(1, len(values) + 1)
        results[key] = {
            "available": True,
            "spearman": correlation_test(values, dice, n_resamples=n_resamples),
            "partial_spearman_given_volume": None
            if key == "predicted_voxels"
            else correlation_test(values, dice, control=volume, n_resamples=n_resamples),
            # larger uncertainty should mean lower Dice; for the volume, smaller volume is the "risk" direction
            "auc_low_dice": detection_auc(
                -values[finite] if key == "predicted_voxels" else values[finite], poor[finite]
            ),
            "low_dice_ranks": sorted(
                int(len(values) + 1 - rank[i]) if key == "predicted_voxels" else int(rank[i])
                for i in np.flatnonzero(poor)
            ),
        }
    return {
        "patients": len(rows),
        "low": low,
        "low_dice_patients": sorted(r["case"] for r, p in zip(rows, poor, strict=True) if p),
        "summaries": results,
    }


def _ci(test: dict) -> str:
    floor = 1 / (1 + test["n_resamples"])  # no permutation reached |rho|: p is below what the test can resolve
    p = f"p < {2 * floor:.1g}" if test["p_value"] <= floor * 1.000001 else f"p {test['p_value']:.2g}"
    return (
        f"{format_number(test['rho'], 2)} ({format_number(test['ci'][0], 2)} to {format_number(test['ci'][1], 2)}), {p}"
    )


def table(result: dict) -> list[str]:
    """The Markdown table of :func:`evaluate`."""
    n_low = len(result["low_dice_patients"])
    lines = [
        f"| per-case summary | Spearman rho with Dice (95 % CI), p | partial rho given predicted volume | "
        f"AUC for Dice < {result['low']} | ranks of the {n_low} low-Dice patients (1 = most uncertain) | "
        f"low-Dice among the {n_low} most uncertain |",
        "|---|---|---|---:|---|---:|",
    ]
    for key, r in result["summaries"].items():
        if not r["available"]:
            lines.append(f"| {LABELS[key]} | n/a (one pass) | | | | |")
            continue
        partial = r["partial_spearman_given_volume"]
        ranks = r["low_dice_ranks"]
        lines.append(
            f"| {LABELS[key]} | {_ci(r['spearman'])} | {'—' if partial is None else _ci(partial)} | "
            f"{format_number(r['auc_low_dice'], 2)} | {', '.join(map(str, ranks))} | "
            f"{sum(k <= n_low for k in ranks)} of {n_low} |"
        )
    return lines


def scatter(rows: Sequence[dict], result: dict) -> bytes:
    """Dice against each summary, low-Dice patients in red."""
    keys = [k for k in SUMMARIES if result["summaries"][k]["available"]]
    fig = new_figure(4.2 * min(3, len(keys)), 3.6 * math.ceil(len(keys) / 3))
    dice = np.array([_as_float(r["dice"]) for r in rows])
    poor = dice < result["low"]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(math.ceil(len(keys) / 3), min(3, len(keys)), i + 1)
        values = np.array([_as_float(r[key]) for r in rows])
        ax.scatter(values[~poor], dice[~poor], s=16, color="#2e86c1", label=f"Dice ≥ {result['low']}")
        ax.scatter(values[poor], dice[poor], s=22, color="#c0392b", label=f"Dice < {result['low']}")
        if key == "predicted_voxels":
            ax.set_xscale("log")
        test = result["summaries"][key]["spearman"]
        ax.set_title(f"rho = {test['rho']:.2f} ({test['ci'][0]:.2f} to {test['ci'][1]:.2f})", fontsize=9)
        ax.set_xlabel(LABELS[key].replace(" (reference, not an uncertainty)", ""), fontsize=8)
        ax.set_ylabel("per-patient 3D Dice", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Out-of-fold uncertainty vs per-patient Dice ({len(rows)} patients, each by the fold model that never saw it)",
        fontsize=10,
    )
    return figure_png(fig)


def write_report(
    rows: Sequence[dict], output: str | Path, result: dict, commands: Sequence[str], notes: Sequence[str] = ()
) -> Path:
    """``per_patient.csv``, ``results.json``, ``uncertainty_vs_dice.png`` and ``README.md`` under ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_patient.csv") as tmp, open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    record = {
        **result,
        "commands": list(commands),
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
    }
    write_json(out / "results.json", record)
    with atomic_path(out / "uncertainty_vs_dice.png") as tmp:
        tmp.write_bytes(scatter(rows, result))
    lines = [
        f"# Does the predicted uncertainty rank the patients the model segments badly? ({result['patients']} patients)",
        "",
        *[
            f"{('Collected by' if i == 0 else 'scored by') if len(commands) > 1 else 'Command'}: `{c}`"
            + (";" if i < len(commands) - 1 else "")
            for i, c in enumerate(commands)
        ],
        f"({record['date']}, {record['machine'].get('cpu', '')}, {record['machine'].get('cpu_count', '')} CPUs, "
        f"torch {record['machine'].get('torch', '')}).",
        "",
        "Every patient is segmented by the cross-validation model of the fold where it is a test patient, with flip",
        "TTA and that fold's post-processing, through the code of `monai-lgg predict --uncertainty`; definitions in",
        "[docs/uncertainty.md](../../uncertainty.md). Spearman's rho with a percentile-bootstrap 95 % CI (patients",
        "resampled) and a two-sided permutation p-value; negative rho: more uncertainty, lower Dice. The partial rho",
        "removes the predicted volume's ranks from both. AUC: probability that a patient with Dice < "
        f"{result['low']} is more uncertain than one above.",
        "",
        *table(result),
        "",
        f"Low-Dice patients (< {result['low']}): {', '.join(result['low_dice_patients']) or 'none'}.",
        "",
        *notes,
        "",
        "![uncertainty vs Dice](uncertainty_vs_dice.png)",
        "",
    ]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    return out


def _read_rows(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(
    cell_dir: str | None = None,
    dataset: str | None = None,
    output: str = "docs/results/uncertainty",
    per_patient: str | None = "docs/results/cv_recipe/crossval/per_patient.csv",
    crossval: str | None = "docs/results/cv_recipe/crossval/results.json",
    folds: str = "0,1,2,3,4",
    bundle: str = "unet",
    low: float = 0.5,
    resamples: int = 10_000,
    rows: str | None = None,
) -> None:
    """Collect (or read ``rows``), score and write the report (see the module docstring).

    Args:
        cell_dir: the cross-validation cell (``fold<f>/models/model.pt``; ``oof/`` is compared when present).
        dataset: the converted data set (or its ``datalist.json``) the folds come from.
        output: report folder.
        per_patient: ``crossval_report``'s per-patient table: its ``dice`` (the published per-patient Dice) is
            ranked, and the Dice recomputed here is checked against it. ``none``: use the recomputed Dice.
        crossval: ``crossval_report``'s ``results.json`` (each fold's post-processing). ``none``: 0.5 / keep all.
        folds: comma-separated folds.
        bundle: the bundle whose network the fold checkpoints hold.
        low: Dice below which a patient counts as badly segmented.
        resamples: bootstrap resamples and permutations.
        rows: a ``per_patient.csv`` written by this tool: re-score it without running any model.
    """
    command = shlex.join(["python", "tools/uncertainty_report.py", *sys.argv[1:]])
    fold_list = [int(f) for f in as_list(folds)]
    commands = [command]
    if rows is not None:
        table_rows = _read_rows(rows)
        earlier = Path(rows).parent / "results.json"  # the run that collected these rows
        if earlier.is_file():
            record = json.loads(earlier.read_text())
            first = (record.get("commands") or [record.get("command")])[0]
            commands = [first, command] if first and first != command else commands
    else:
        if cell_dir is None or dataset is None:
            raise LGGInputError(None, "give CELL_DIR and DATASET (or --rows per_patient.csv)")
        table_rows = collect(cell_dir, dataset, fold_list, None if crossval in (None, "none") else crossval, bundle)
        if per_patient not in (None, "none"):
            published = {r["case"]: float(r["dice"]) for r in _read_rows(per_patient)}
            missing = [r["case"] for r in table_rows if r["case"] not in published]
            if missing:
                raise LGGInputError(
                    per_patient, f"has no Dice for {len(missing)} patient(s) ({', '.join(missing[:3])})"
                )
            for r in table_rows:
                r["dice_recomputed"], r["dice"] = r["dice"], published[r["case"]]
    result = evaluate(table_rows, low, resamples)
    out = write_report(table_rows, output, result, commands, _notes(table_rows))
    print("\n".join(table(result)))
    print(f"written to {out}")


def _notes(rows: Sequence[dict]) -> list[str]:
    """What the rows say about how they were made: time, agreement with the stored and published results."""
    notes = []
    if all(r.get("seconds") not in (None, "") for r in rows):
        notes.append(
            f"Model time: {sum(float(r['seconds']) for r in rows):.0f} s for {len(rows)} patients "
            "(fp32, one thread, shared machine)."
        )
    diffs = [float(r["max_diff_stored_prob"]) for r in rows if r.get("max_diff_stored_prob") not in (None, "")]
    if diffs:
        notes.append(
            f"The probabilities match the out-of-fold ones `tools/crossval_report.py` stored (uint8, x255) "
            f"within {max(diffs):.4f} on all {len(diffs)} patients (rounding to 1/255: up to 0.002)."
        )
    if all(r.get("dice_recomputed") not in (None, "") for r in rows):
        gap = max(abs(float(r["dice"]) - float(r["dice_recomputed"])) for r in rows)
        notes.append(
            f"Dice: the published per-patient values (`crossval_report`'s per_patient.csv); recomputed from "
            f"the masks `predict` makes (float instead of uint8 probabilities) they agree within {gap:.4f}."
        )
    return notes
