"""Score a cross-validation honestly: out-of-fold predictions, leave-one-fold-out post-processing, missing sequences.

Run after ``tools/experiment_grid.py`` has trained every fold (see docs/evaluation.md)::

    python tools/crossval_report.py runs/cv_recipe/unet-dicece-adamw data/lgg/datalist.json \\
        docs/results/cv_recipe --folds 0,1,2,3,4

An ensemble of several cross-validations of the same folds (two networks, or one recipe with two seeds) is
scored the same way: ``--members attentionunet=runs/cmp_attentionunet/attentionunet-dicece-adamw`` averages
each fold's models' probabilities (:func:`monai_lgg.studies.crossval.average_out_of_fold`).

Writes ``OUTPUT/results.json`` (every number below, the per-fold rule choices and the rule to ship),
``OUTPUT/per_patient.csv``, ``OUTPUT/dice_per_patient.png`` and ``OUTPUT/README.md`` (tables).
Out-of-fold probabilities are kept in ``<cell>/oof/`` so a rerun only scores.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from monai_lgg.errors import as_list
from monai_lgg.io import atomic_path, write_json
from monai_lgg.report import figure_png, new_figure
from monai_lgg.studies.crossval import (
    CANDIDATES,
    average_out_of_fold,
    missing_sequences,
    out_of_fold,
    paired_difference,
    select_postprocessing,
)
from monai_lgg.studies.experiments import format_number, machine_info


def _row(name: str, s: dict) -> str:
    ci = f"{format_number(s['ci95'][0])}–{format_number(s['ci95'][1])}"
    return (
        f"| {name} | {format_number(s['mean'])} ({ci}) | {format_number(s['median'])} | {format_number(s['min'])} | "
        f"{s['below_0.5']} | {100 * s['fp_rate']:.1f} % ({s['fp_slices']}/{s['empty_slices']}) |"
    )


def _plot(rows: list[dict]) -> bytes:
    rows = sorted(rows, key=lambda r: r["dice"])
    fig = new_figure(11, 4)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.bar(x, [r["dice"] for r in rows], color=["#c0392b" if r["replaced"] else "#2e86c1" for r in rows])
    ax.set_xticks(x, [r["case"].replace("TCGA_", "")[:7] for r in rows], rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("per-patient 3D Dice")
    ax.axhline(np.mean([r["dice"] for r in rows]), color="k", lw=1, ls="--", label="mean")
    ax.set_title("Out-of-fold per-patient Dice (red: a sequence replaced by FLAIR in the release)")
    ax.legend(loc="lower right")
    return figure_png(fig)


def _parse_members(members: str | tuple | list | None) -> list[tuple[str, Path]]:
    parsed = []
    for item in (str(i) for i in as_list(members)):
        bundle, sep, cell = item.partition("=")
        if not sep or not bundle or not cell:
            raise SystemExit(f"error: --members entry {item!r} is not BUNDLE=CELL_DIR")
        if not Path(cell).is_dir():
            raise SystemExit(f"error: --members {item!r}: {cell} is not a folder")
        parsed.append((bundle, Path(cell)))
    return parsed


def _candidates(thresholds: str | tuple | list | float | None) -> tuple[tuple[float, float], ...]:
    if thresholds is None:
        return CANDIDATES
    try:
        values = sorted({float(t) for t in as_list(thresholds)})
    except ValueError:
        raise SystemExit(f"error: --thresholds {thresholds!r} is not a comma-separated list of numbers") from None
    if not values or not all(0.0 < t < 1.0 for t in values) or 0.5 not in values:
        raise SystemExit(f"error: --thresholds {thresholds!r}: numbers between 0 and 1, including 0.5 (the raw row)")
    fractions = sorted({f for _, f in CANDIDATES})
    return tuple((t, f) for t in values for f in fractions)


def main(
    cell_dir: str,
    datalist: str,
    output: str,
    folds: str = "0,1,2,3,4",
    bundle: str = "unet",
    baseline: str | None = None,
    members: str | None = None,
    thresholds: str | None = None,
) -> None:
    """Predict out of fold, choose post-processing by leave-one-fold-out, write OUTPUT/ (see module docstring).

    ``baseline``: another cross-validation's ``results.json`` (same patients) to pair the per-patient Dice with.
    ``members``: ``BUNDLE=CELL_DIR[,BUNDLE=CELL_DIR...]``, other cross-validations of the same folds whose fold
    models join ``cell_dir``'s in a per-fold ensemble (probabilities averaged); its averaged out-of-fold
    probabilities are kept in ``cell_dir/oof_ensemble_<hash of the members>/``.
    ``thresholds``: the candidate thresholds (default 0.4,0.5,0.6), each tried with every minimum component
    fraction of :data:`monai_lgg.studies.crossval.CANDIDATES`; 0.5 must be among them (the raw row).
    """
    fold_list = [int(f) for f in as_list(folds)]
    extra = _parse_members(members)
    candidates = _candidates(thresholds)
    oof = out_of_fold(cell_dir, datalist, fold_list, bundle)
    if extra:
        dirs = [oof] + [out_of_fold(cell, datalist, fold_list, name) for name, cell in extra]
        key = hashlib.sha1("|".join(str(d.resolve()) for d in dirs).encode()).hexdigest()[:8]
        oof = average_out_of_fold(dirs, Path(cell_dir) / f"oof_ensemble_{key}", folds=fold_list)
        ensemble = [{"bundle": b, "cell_dir": str(c)} for b, c in [(bundle, Path(cell_dir)), *extra]]
        bundle = " + ".join(m["bundle"] for m in ensemble)
    # the oof folder may hold other folds from an earlier run: score only the folds asked for
    record = select_postprocessing(oof, candidates=candidates, folds=fold_list)
    ship = (record["ship"]["threshold"], record["ship"]["min_component_fraction"])
    record["missing_sequences"] = missing_sequences(oof, ship, folds=fold_list)
    if baseline:
        reference = json.loads(Path(baseline).read_text())["per_patient"]
        record["paired"] = {"baseline": str(baseline), **paired_difference(record["per_patient"], reference)}
    if extra:
        record["members"] = ensemble
    record["command"] = shlex.join([Path(sys.executable).name, *sys.argv])
    record["date"] = datetime.date.today().isoformat()
    record["machine"] = machine_info()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", record)
    with atomic_path(out / "per_patient.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(record["per_patient"][0]))
        writer.writeheader()
        writer.writerows(record["per_patient"])
    with atomic_path(out / "dice_per_patient.png") as tmp:
        tmp.write_bytes(_plot(record["per_patient"]))
    ms = record["missing_sequences"]
    lines = [
        f"# Cross-validation of the {bundle} {'ensemble' if extra else 'bundle'}'s recipe "
        f"({len(record['folds'])} folds, {record['cases']} patients)",
        "",
        f"Command: `{record['command']}` ({record['date']}, {record['machine'].get('cpu', '')}).",
        "Every patient is segmented by the model of the fold where it is a test patient (never used for its",
        "training); post-processing for fold f is chosen on the other folds' patients only (leave-one-fold-out).",
        "",
        "| | per-patient 3D Dice mean (95 % CI) | median | min | patients < 0.5 | FP on tumour-free slices |",
        "|---|---:|---:|---:|---:|---:|",
        _row(f"raw (threshold {record['raw']['rule']['threshold']}, all components)", record["raw"]),
        _row("post-processing chosen leave-one-fold-out", record["lofo"]),
        "",
        f"Rule chosen over all folds (what a model trained this way ships with): threshold {ship[0]}, "
        f"drop components < {ship[1]} of the largest.",
        "Per-fold choices: "
        + ", ".join(
            f"fold {f}: {r['threshold']}/{r['min_component_fraction']}" for f, r in record["chosen_per_fold"].items()
        ),
    ]
    if "paired" in record:
        p = record["paired"]
        lines += [
            "",
            f"Paired with `{p['baseline']}` on the same {p['patients']} patients (leave-one-fold-out Dice): "
            f"mean difference {p['mean_difference']:+.3f} "
            f"(bootstrap 95 % CI {p['ci_low']:+.3f} to {p['ci_high']:+.3f}), "
            f"better on {p['better']}, worse on {p['worse']}.",
        ]
    lines += [
        "",
        "## Test-time augmentation and missing sequences (the shipped rule)",
        "",
        "| input | mean (95 % CI) | median | min | < 0.5 | FP rate |",
        "|---|---:|---:|---:|---:|---:|",
        _row("as released", ms["original"]),
    ]
    if "without_tta" in ms:
        lines.append(_row("as released, without flip TTA", ms["without_tta"]))
    for key, label in (
        ("flair_for_pre", "pre-contrast replaced by FLAIR"),
        ("flair_for_post", "post-contrast replaced by FLAIR"),
        ("flair_for_both", "both replaced by FLAIR"),
    ):
        if key in ms:
            lines.append(_row(label, ms[key]))
    if ms.get("release_complete"):
        lines.append(_row("patients with all three sequences", ms["release_complete"]))
    if ms.get("release_lacking"):
        lines += ["", "Patients whose release data lack a sequence:", ""]
        lines += [
            f"- {n}: {c['replaced']} replaced, Dice {format_number(c['dice'])}"
            for n, c in ms["release_lacking"]["cases"].items()
        ]
    lines += [
        "",
        "## All candidate rules (pooled over folds; for reference only, not a selection)",
        "",
        "| threshold | min component fraction | mean | median | min | FP rate |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['threshold']} | {c['min_component_fraction']} | {format_number(c['mean'])} | "
        f"{format_number(c['median'])} | "
        f"{format_number(c['min'])} | {100 * c['fp_rate']:.1f} % |"
        for c in record["candidates"]
    ]
    lines += ["", "![per-patient Dice](dice_per_patient.png)", ""]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    print(json.dumps({"raw": record["raw"], "lofo": record["lofo"], "ship": record["ship"]}, indent=1))
