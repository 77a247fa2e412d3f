"""One table over finished grid runs: recipe ablations and equal-budget model comparisons.

Each row is one cell of a finished :mod:`monai_lgg.studies.experiments` grid (its ``results.json``), read back
per patient from ``<work_dir>/<cell>/fold<f>/eval/per_patient.csv`` for the folds that record names. Rows
are compared with a baseline row **patient by patient**: the difference of per-patient Dice on the patients
both rows tested, with a percentile-bootstrap CI of its mean, so a lever is judged on the same patients
rather than on two independent means. Inference latency is re-measured for every row in one process (so the
numbers are ratios within one run, not timings taken under different machine loads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir, atomic_path, write_json
from monai_lgg.metrics import bootstrap_ci, summarize
from monai_lgg.studies.experiments import _read_rows, format_number, machine_info

__all__ = ["Row", "load_rows", "compare", "comparison_table", "write_comparison"]

# A patient below this Dice is counted as a failure (the target: none below 0.5).
FAILURE_DICE = 0.5


@dataclass
class Row:
    """One finished grid cell: what was run and its per-patient results."""

    label: str
    lever: str
    record: Mapping[str, Any]
    result: Mapping[str, Any]
    patients: list[dict]

    @property
    def folds(self) -> list[int]:
        return list(self.record["folds"])

    def checkpoint(self) -> Path:
        """The first fold's trained weights (what the latency is measured on)."""
        return Path(self.record["work_dir"]) / self.result["name"] / f"fold{self.folds[0]}" / "models" / "model.pt"


def _load_record(path: Path, cell: str | None, folds: Sequence[int] | None) -> tuple[dict, dict, list[dict]]:
    """One grid record, its ``cell`` result and that cell's per-patient rows of ``folds``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LGGInputError(path, f"cannot read a grid's results.json ({e})") from None
    cells = {r["name"]: r for r in record["results"]}
    cell = cell or next(iter(cells))
    if cell not in cells:
        raise LGGInputError(path, f"no cell {cell!r}; it has {sorted(cells)}")
    folds = list(folds or record["folds"])
    if not set(folds) <= set(record["folds"]):
        raise LGGInputError(path, f"folds {folds} are not all among the record's folds {record['folds']}")
    patients: list[dict] = []
    for fold in folds:
        table = Path(record["work_dir"]) / cell / f"fold{fold}" / "eval" / "per_patient.csv"
        if not table.is_file():
            raise LGGInputError(table, "missing: the fold's evaluation has not run")
        patients += _read_rows(table, fold)
    # keep only the chosen folds' entries of the per-fold lists
    index = [record["folds"].index(f) for f in folds]
    result = dict(cells[cell])
    for key in ("train_seconds", "epochs"):
        result[key] = [result[key][i] for i in index]
    result["commands"] = {f"fold{f}": result["commands"][f"fold{f}"] for f in folds}
    return {**record, "folds": folds}, result, patients


def _load_row(spec: Mapping[str, Any], base: Path) -> Row:
    """A spec row; ``results`` may list several records (e.g. one per fold, run as separate lanes)."""
    paths = spec["results"] if isinstance(spec["results"], list) else [spec["results"]]
    parts = [
        _load_record(Path(p) if Path(p).is_absolute() else base / p, spec.get("cell"), spec.get("folds")) for p in paths
    ]
    record, result, patients = parts[0]
    for other_record, other_result, other_patients in parts[1:]:
        if other_result["cell"] != result["cell"] or other_record["overrides"] != record["overrides"]:
            raise LGGInputError(paths[0], "the records of one row differ in cell or overrides")
        record = {**record, "folds": record["folds"] + other_record["folds"]}
        result = {
            **result,
            "train_seconds": result["train_seconds"] + other_result["train_seconds"],
            "epochs": result["epochs"] + other_result["epochs"],
            "commands": {**result["commands"], **other_result["commands"]},
        }
        patients = patients + other_patients
    cases = [p["case"] for p in patients]
    if len(set(cases)) != len(cases):
        raise LGGInputError(paths[0], "a patient appears twice in one row: its records share a fold")
    return Row(str(spec.get("label", result["name"])), str(spec.get("lever", "")), record, result, patients)


def _absolute(results: str | list[str], base: Path) -> str | list[str]:
    if isinstance(results, list):
        return [str(_absolute(r, base)) for r in results]
    return str(Path(results) if Path(results).is_absolute() else (base / results).resolve())


def load_rows(spec_path: str | Path) -> tuple[dict, list[Row]]:
    """Read a comparison spec (JSON) and the rows it names.

    The spec: ``{"title": ..., "baseline": <label>, "notes": [...], "rows": [{"label", "lever", "results",
    "cell", "folds"}, ...]}``; ``results`` is a grid's ``results.json`` (relative paths are relative to the
    spec), or a list of them whose folds are pooled (grids run one fold per lane); ``cell`` defaults to the
    record's first cell and ``folds`` to all of the record's folds.
    """
    spec_path = Path(spec_path)
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
        raise LGGInputError(spec_path, f"cannot read the comparison spec ({e})") from None
    if not spec.get("rows"):
        raise LGGInputError(spec_path, "the spec lists no rows")
    rows = [_load_row(r, spec_path.parent) for r in spec["rows"]]
    # paths made absolute, so the spec can be written elsewhere (into the output) and still be read back
    spec = {**spec, "rows": [{**r, "results": _absolute(r["results"], spec_path.parent)} for r in spec["rows"]]}
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise LGGInputError(spec_path, f"row labels repeat: {labels}")
    if spec.get("baseline", labels[0]) not in labels:
        raise LGGInputError(spec_path, f"baseline {spec.get('baseline')!r} is not a row label")
    return spec, rows


def _row_summary(row: Row, baseline: Row | None) -> dict:
    dice = {p["case"]: p["dice"] for p in row.patients}
    values = np.array(list(dice.values()), dtype=float)
    free = sum(p["tumour_free_slices"] for p in row.patients)
    fp = sum(p["false_positive_slices"] for p in row.patients)
    out: dict[str, Any] = {
        "label": row.label,
        "lever": row.lever,
        "bundle": row.result["cell"]["bundle"],
        "loss": row.result["cell"]["loss"],
        "folds": row.folds,
        "patients": len(values),
        "dice": summarize(values),
        "below_failure": int((values < FAILURE_DICE).sum()),
        "fp_rate": fp / free if free else None,
        "fp_slices": [int(fp), int(free)],
        "train_minutes": float(np.mean(row.result["train_seconds"])) / 60,
        "epochs": row.result["epochs"],
        "params": int(row.result["params"]),
        "overrides": row.record["overrides"],
        "commands": row.result["commands"],
    }
    if baseline is not None:
        reference = {p["case"]: p["dice"] for p in baseline.patients}
        common = sorted(set(dice) & set(reference))
        diff = np.array([dice[c] - reference[c] for c in common], dtype=float)
        low, high = bootstrap_ci(diff) if len(diff) else (float("nan"), float("nan"))
        out["paired"] = {
            "patients": len(common),
            "mean_difference": float(diff.mean()) if len(diff) else float("nan"),
            "ci_low": low,
            "ci_high": high,
            "better": int((diff > 0).sum()),
            "worse": int((diff < 0).sum()),
        }
    return out


def _latency(rows: Sequence[Row], threads: int, repeats: int) -> dict[str, float]:
    """fp32 ms per 256² slice (a 40-slice volume, no TTA) of each row's first-fold model, in one process."""
    from monai_lgg.inference.benchmark import benchmark

    timings = {}
    for row in rows:
        timed = benchmark(
            row.result["cell"]["bundle"],  # a project bundle's name (see resolve_bundle)
            row.checkpoint(),
            threads=threads,
            repeats=repeats,
            devices=["cpu"],
            variants=[("fp32", False)],
            tta=[False],
        )
        timings[row.label] = timed[0]["volume_ms"] / timed[0]["num_slices"]
    return timings


def compare(spec_path: str | Path, latency: bool = True, threads: int = 2, repeats: int = 3) -> dict:
    """The comparison record: one summary per row, paired against the spec's baseline row."""
    spec, rows = load_rows(spec_path)
    baseline = next(r for r in rows if r.label == spec.get("baseline", rows[0].label))
    summaries = [_row_summary(r, None if r is baseline else baseline) for r in rows]
    if latency:
        timings = _latency(rows, threads, repeats)
        for s in summaries:
            s["ms_per_slice"] = timings[s["label"]]
    return {
        "spec": spec,
        "title": spec.get("title", "Comparison"),
        "baseline": baseline.label,
        "notes": list(spec.get("notes", [])),
        "machine": machine_info(),
        "latency": {"threads": threads, "precision": "fp32", "tta": False} if latency else None,
        "rows": summaries,
    }


def comparison_table(record: Mapping[str, Any]) -> str:
    """Markdown table of :func:`compare`'s record."""
    lines = [
        "| row | lever | patients | per-patient Dice mean [95 % CI] | median | min | < 0.5 | "
        f"Δ mean vs {record['baseline']} [95 % CI], better/worse | FP rate (tumour-free slices) | "
        "train min/fold | epochs | params (M) | ms/slice |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in record["rows"]:
        d, p = s["dice"], s.get("paired")
        delta = (
            f"{p['mean_difference']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}], {p['better']}/{p['worse']}"
            if p
            else "baseline"
        )
        fp = f"{format_number(s['fp_rate'])} ({s['fp_slices'][0]}/{s['fp_slices'][1]})"
        epochs = sorted(set(s["epochs"]))
        lines.append(
            f"| {s['label']} | {s['lever']} | {s['patients']} | {format_number(d['mean'])} "
            f"[{format_number(d['ci_low'])}, {format_number(d['ci_high'])}] | {format_number(d['median'])} "
            f"| {format_number(d['min'])} | {s['below_failure']} | {delta} | {fp} | {s['train_minutes']:.1f} "
            f"| {'/'.join(str(e) for e in epochs)} | {s['params'] / 1e6:.2f} "
            f"| {format_number(s.get('ms_per_slice'), 1)} |"
        )
    return "\n".join(lines)


def _difference_plot(record: Mapping[str, Any]) -> bytes:
    """Paired Δ mean Dice of every row against the baseline, with its CI (a forest plot)."""
    from monai_lgg.report import figure_png, new_figure

    rows = [s for s in record["rows"] if s.get("paired")]
    fig = new_figure(7.0, 0.45 * len(rows) + 1.2)
    ax = fig.add_subplot()
    for y, s in enumerate(reversed(rows)):
        p = s["paired"]
        ax.errorbar(
            p["mean_difference"],
            y,
            xerr=[[p["mean_difference"] - p["ci_low"]], [p["ci_high"] - p["mean_difference"]]],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [s["label"] for s in reversed(rows)])
    ax.set_xlabel(f"per-patient Dice minus {record['baseline']} (same patients), mean and 95 % CI")
    return figure_png(fig)


def write_comparison(record: Mapping[str, Any], output: str | Path, command: str = "") -> Path:
    """Write ``README.md`` (table, notes, commands), ``comparison.json``, ``difference.png`` and ``spec.json``.

    The spec is written back into ``output``, so the folder is self-contained and a spec kept in the output
    folder itself survives the folder being replaced.
    """
    m = record["machine"]
    text = [
        f"# {record['title']}",
        "",
        f"Made by `{command}` on {m['cpu']} ({m['cpu_count']} cores), GPU: {m['gpu'] or 'none'}, torch {m['torch']}."
        if command
        else "",
        "",
        comparison_table(record),
        "",
        "Per-patient Dice: 3D Dice over the patient's slices, each patient tested by a model that never saw it. "
        f"Δ: per-patient Dice of the row minus that of `{record['baseline']}` on the same patients (mean, "
        "percentile-bootstrap 95 % CI, patients better/worse). FP rate: tumour-free slices with any predicted voxel. "
        "Train min/fold: the trainer's summed epoch times, one fold, both lanes of 2 cores busy. "
        + (
            "ms/slice: fp32, no TTA, 40-slice 256² volume, all rows timed in one process "
            f"({record['latency']['threads']} threads) so they compare as ratios."
            if record["latency"]
            else "ms/slice: not measured by this run (`--latency false`)."
        ),
        "",
        *[f"- {n}" for n in record["notes"]],
        "",
        "![paired differences](difference.png)",
        "",
        "## Commands",
        "",
    ]
    for s in record["rows"]:
        text += [f"**{s['label']}** — overrides `{json.dumps(s['overrides'])}`:", ""]
        for fold, commands in s["commands"].items():
            text += [f"- {fold}: `{commands[0]}`"]
        text += [""]
    with atomic_dir(output) as tmp:
        (tmp / "difference.png").write_bytes(_difference_plot(record))
        with atomic_path(tmp / "README.md") as md:
            md.write_text("\n".join(text) + "\n")
        write_json(tmp / "comparison.json", record)
        write_json(tmp / "spec.json", record["spec"])
    return Path(output)
