"""Compare whole cross-validations of recipes that were each run more than once.

One cross-validation of a recipe is one draw: the same recipe trained again (another seed, or the same seed on
another CPU, whose floating point differs) moves single patients by several Dice points and the mean by about
as much as most recipe changes. This module reads the ``results.json`` of ``tools/crossval_report.py`` for
every run, groups the runs by recipe, and reports

- each run's leave-one-fold-out summary and its raw per-fold means;
- the run-to-run spread: every pair of runs of one recipe, paired per patient;
- each recipe comparison on the per-patient Dice averaged over that recipe's runs, paired per patient, so
  the difference is read against the spread instead of against one lucky or unlucky run;
- where the mean is lost: the ``tail`` patients lowest on the Dice averaged over every run that scored all
  patients, and each run's mean over them and over the others (the tail is picked by these same runs, so its
  mean is biased low; what the section shows is how far apart the two groups are and how much each run moves).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_lgg.errors import LGGInputError
from monai_lgg.io import read_json
from monai_lgg.studies.crossval import paired_difference

__all__ = ["load_runs", "compare_reruns", "render_reruns"]

_RUN_KEYS = ("per_patient", "lofo", "raw")


def load_runs(spec: Mapping[str, Any], root: str | Path = ".") -> dict[str, dict]:
    """Read every run named in ``spec["runs"]`` (``{"label", "recipe", "results"}``; paths relative to ``root``).

    Raises:
        LGGInputError: a results file is missing, not JSON, not a cross-validation record, or a label repeats.
    """
    runs: dict[str, dict] = {}
    for entry in spec.get("runs", []):
        absent = [k for k in ("label", "recipe", "results") if k not in entry]
        if absent:
            raise LGGInputError(None, f"a run in the spec has no {', '.join(absent)}: {entry!r}")
        label, path = entry["label"], Path(root) / entry["results"]
        if label in runs:
            raise LGGInputError(path, f"run label {label!r} appears twice in the spec")
        record = read_json(path, "results file not found (written by tools/crossval_report.py)")
        missing = [k for k in _RUN_KEYS if k not in record]
        if missing:
            raise LGGInputError(path, f"is not a crossval_report results.json (no {', '.join(missing)})")
        runs[label] = {**entry, "record": record}
    if not runs:
        raise LGGInputError(None, "the spec names no runs")
    return runs


def _fold_means(per_patient: Sequence[Mapping], key: str = "dice_raw") -> dict[int, float]:
    folds = sorted({int(p["fold"]) for p in per_patient})
    return {f: float(np.mean([p[key] for p in per_patient if int(p["fold"]) == f])) for f in folds}


def _averaged(rows: Sequence[Sequence[Mapping]], key: str = "dice") -> list[dict]:
    """Per-patient ``key`` averaged over several runs (patients present in all of them)."""
    tables = [{r["case"]: float(r[key]) for r in run} for run in rows]
    common = sorted(set.intersection(*(set(t) for t in tables)))
    return [{"case": c, key: float(np.mean([t[c] for t in tables]))} for c in common]


def _tail(rows_of: Mapping[str, Sequence[Mapping]], size: int) -> dict | None:
    """The ``size`` patients lowest on the LOFO Dice averaged over the runs that scored every patient, and each
    run's mean over them and over its other patients."""
    patients = {label: {r["case"] for r in rows} for label, rows in rows_of.items()}
    everyone = set().union(*patients.values())
    complete = [label for label, cases in patients.items() if cases == everyone]
    if not complete:  # only partial runs, none scoring every patient: no common ground to pick the tail on
        return None
    averaged = _averaged([rows_of[label] for label in complete])
    tail = [r["case"] for r in sorted(averaged, key=lambda r: r["dice"])[:size]]
    runs = []
    for label, rows in rows_of.items():
        inside = [float(r["dice"]) for r in rows if r["case"] in tail]
        outside = [float(r["dice"]) for r in rows if r["case"] not in tail]
        runs.append(
            {
                "label": label,
                "tail_mean": float(np.mean(inside)) if inside else float("nan"),
                "tail_patients": len(inside),
                "other_mean": float(np.mean(outside)) if outside else float("nan"),
                "other_patients": len(outside),
            }
        )
    return {"patients": tail, "chosen_by": complete, "runs": runs}


def compare_reruns(spec: Mapping[str, Any], root: str | Path = ".") -> dict:
    """Runs, run-to-run spreads within each recipe, and recipe-against-recipe differences (see module docstring).

    Args:
        spec: ``{"title", "runs": [{"label", "recipe", "results", "trained_on"?, "note"?}], "compare": [[recipe,
            reference]], "tail"?, "notes"?}``; ``trained_on`` names the CPU (default: where ``results`` was scored);
            ``tail``: how many of the lowest patients the "where the mean is lost" section follows (default 6, 0:
            none).
        root: folder the ``results`` paths are relative to (the repository root).
    """
    runs = load_runs(spec, root)
    recipes: dict[str, list[str]] = {}
    for label, run in runs.items():
        recipes.setdefault(run["recipe"], []).append(label)
    rows = []
    for label, run in runs.items():
        rec = run["record"]
        rows.append(
            {
                "label": label,
                "recipe": run["recipe"],
                "results": run["results"],
                "note": run.get("note", ""),
                "trained_on": run.get("trained_on", rec.get("machine", {}).get("cpu", "")),
                "lofo": {
                    k: rec["lofo"][k]
                    for k in (
                        "mean",
                        "ci_low",
                        "ci_high",
                        "median",
                        "min",
                        "below_0.5",
                        "fp_slices",
                        "empty_slices",
                        "fp_rate",
                    )
                },
                "patients": len(rec["per_patient"]),
                "raw_mean": rec["raw"]["mean"],
                "raw_fold_means": _fold_means(rec["per_patient"]),
            }
        )
    rows_of = {label: run["record"]["per_patient"] for label, run in runs.items()}
    spreads = [
        {"recipe": r, "runs": [a, b], **paired_difference(rows_of[a], rows_of[b])}
        for r, labels in recipes.items()
        for a, b in itertools.combinations(labels, 2)
    ]
    comparisons = []
    for recipe, reference in spec.get("compare", []):
        for name in (recipe, reference):
            if name not in recipes:
                raise LGGInputError(None, f"compare names recipe {name!r}, but no run has it (runs: {sorted(recipes)})")
        ours = _averaged([rows_of[x] for x in recipes[recipe]])
        theirs = _averaged([rows_of[x] for x in recipes[reference]])
        common = {r["case"] for r in ours} & {r["case"] for r in theirs}  # a run of fewer folds: compare like with like
        ours, theirs = ([r for r in rows if r["case"] in common] for rows in (ours, theirs))
        comparisons.append(
            {
                "recipe": recipe,
                "reference": reference,
                "runs": len(recipes[recipe]),
                "reference_runs": len(recipes[reference]),
                "mean": float(np.mean([r["dice"] for r in ours])),
                "reference_mean": float(np.mean([r["dice"] for r in theirs])),
                **paired_difference(ours, theirs),
            }
        )
    size = spec.get("tail", 6)
    if not isinstance(size, int) or size < 0:
        raise LGGInputError(None, f"tail must be a whole number of patients, got {size!r}")
    return {
        "title": spec.get("title", "Cross-validation reruns"),
        "notes": list(spec.get("notes", [])),
        "runs": rows,
        "spreads": spreads,
        "comparisons": comparisons,
        "tail": _tail(rows_of, size) if size else None,
    }


def _delta(d: Mapping[str, Any]) -> str:
    """``Δ (CI) | better / worse`` table cells of a :func:`~monai_lgg.studies.crossval.paired_difference` record."""
    return f"{d['mean_difference']:+.3f} ({d['ci_low']:+.3f} to {d['ci_high']:+.3f}) | {d['better']} / {d['worse']}"


def render_reruns(result: Mapping[str, Any], command: str = "", links: Mapping[str, str] | None = None) -> str:
    """The comparison as a Markdown page.

    Args:
        result: :func:`compare_reruns`'s record.
        command: the command that made it, quoted at the top.
        links: each run's ``results`` path as a link relative to where the page is written (default: as given).
    """
    links = links or {}
    folds = sorted({int(f) for r in result["runs"] for f in r["raw_fold_means"]})
    out = [f"# {result['title']}", ""]
    if command:
        out += [f"Made by `{command}`.", ""]
    out += [
        "| run | recipe | trained on | patients | LOFO mean (95 % CI) | median | min | < 0.5 "
        "| FP on tumour-free slices | raw mean | " + " | ".join(f"raw fold {f}" for f in folds) + " |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(folds),
    ]
    for r in result["runs"]:
        lo = r["lofo"]
        cells = [
            f"[{r['label']}]({links.get(r['results'], r['results'])})",
            r["recipe"],
            r["trained_on"],
            str(r["patients"]),
            f"{lo['mean']:.3f} ({lo['ci_low']:.3f}–{lo['ci_high']:.3f})",
            f"{lo['median']:.3f}",
            f"{lo['min']:.3f}",
            str(lo["below_0.5"]),
            f"{100 * lo['fp_rate']:.1f} % ({lo['fp_slices']}/{lo['empty_slices']})",
            f"{r['raw_mean']:.3f}",
        ]
        cells += [f"{r['raw_fold_means'][f]:.3f}" if f in r["raw_fold_means"] else "" for f in folds]
        out.append("| " + " | ".join(cells) + " |")
    out += [""] + [f"- {r['label']}: {r['note']}" for r in result["runs"] if r["note"]]
    out += [
        "",
        "LOFO: post-processing chosen leave-one-fold-out (each run's own choice); raw: threshold 0.5, every "
        "component, flip TTA. Every patient is scored by the fold model that never trained on it.",
        "",
    ]
    if result["spreads"]:
        out += [
            "## Run-to-run spread (the same recipe run again)",
            "",
            "| recipe | runs | Δ mean (95 % CI) | better / worse | SD of the per-patient Δ |",
            "|---|---|---:|---:|---:|",
        ]
        for s in result["spreads"]:
            out.append(f"| {s['recipe']} | {s['runs'][0]} − {s['runs'][1]} | {_delta(s)} | {s['sd_difference']:.3f} |")
        out.append("")
    if result["comparisons"]:
        out += [
            "## Recipes compared on the per-patient Dice averaged over their runs",
            "",
            "| recipe | against | patients | runs | mean | against: runs, mean | Δ mean (95 % CI) | better / worse |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in result["comparisons"]:
            out.append(
                f"| {c['recipe']} | {c['reference']} | {c['patients']} | {c['runs']} | {c['mean']:.3f} | "
                f"{c['reference_runs']}, {c['reference_mean']:.3f} | {_delta(c)} |"
            )
        out.append("")
    out += [
        "Δ: per-patient LOFO Dice difference, percentile-bootstrap 95 % CI over patients. Averaging a recipe's "
        "runs per patient before pairing removes part of the run-to-run noise from the comparison (not all of "
        "it: two runs are still few)."
    ]
    if result.get("tail"):
        tail = result["tail"]
        out += [
            "",
            "## Where the mean is lost",
            "",
            f"The {len(tail['patients'])} patients lowest on the LOFO Dice averaged over "
            f"{', '.join(tail['chosen_by'])}: {', '.join(tail['patients'])}. Picked by these runs, so the tail "
            "column is biased low; read how far apart the columns are and how much each moves from run to run.",
            "",
            "| run | tail: patients, mean | other patients, mean |",
            "|---|---:|---:|",
        ]
        for r in tail["runs"]:
            out.append(
                f"| {r['label']} | {r['tail_patients']}, {r['tail_mean']:.3f} | "
                f"{r['other_patients']}, {r['other_mean']:.3f} |"
            )
    if result["notes"]:
        out += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(out) + "\n"
