"""Experiment grids: bundles x losses x optimizers, each trained and evaluated per patient over folds.

Every run is the bundle's own ``train.json`` then ``train.json + evaluate.json`` on the fold's test
patients, started as ``python -m monai.bundle run`` in a subprocess with config overrides, so a grid
cell is exactly what a user gets from the same command line. Runs write into
``<work_dir>/<cell>/fold<f>/`` (``models/``, ``logs/``, ``eval/``, ``train.log``) and a finished run
is skipped when the grid is started again, so an interrupted grid continues where it stopped.

The cell's per-patient rows of every fold are pooled (each patient is a test patient in exactly one
fold) into ``<work_dir>/<cell>/cv/`` and summarised; :func:`write_results` renders the table and plots
into ``docs/results/<name>/``.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir, atomic_path, read_json, write_json
from monai_lgg.metrics import summarize

__all__ = [
    "Cell",
    "grid_cells",
    "run_cell_fold",
    "pool_folds",
    "run_grid",
    "write_results",
    "machine_info",
    "format_number",
]

BASE = ("unet", "dicece", "adamw")


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid."""

    bundle: str
    loss: str
    optimizer: str

    @property
    def name(self) -> str:
        return f"{self.bundle}-{self.loss}-{self.optimizer}"


def grid_cells(
    bundles: Sequence[str],
    losses: Sequence[str],
    optimizers: Sequence[str],
    design: str = "oneway",
    base: Sequence[str] = BASE,
) -> list[Cell]:
    """The cells of a grid.

    Args:
        bundles, losses, optimizers: the values of each factor.
        design: ``cross`` (every combination) or ``oneway`` (the ``base`` cell, then one factor varied
            at a time: every bundle with the base loss and optimizer, every loss with the base bundle
            and optimizer, ...), which covers every value at a fraction of the cost.
        base: ``(bundle, loss, optimizer)`` of the one-way design.
    """
    if design == "cross":
        return [Cell(*c) for c in itertools.product(bundles, losses, optimizers)]
    if design != "oneway":
        raise LGGInputError(None, f"design must be 'oneway' or 'cross', got {design!r}")
    b0, l0, o0 = base
    cells = (
        [Cell(b, l0, o0) for b in bundles] + [Cell(b0, lo, o0) for lo in losses] + [Cell(b0, l0, o) for o in optimizers]
    )
    return list(dict.fromkeys(cells))  # drop repeats of the base cell, keep order


def _literal(value: Any) -> str:
    """A command-line value that ``monai.bundle run`` (python-fire) parses back to ``value``."""
    return value if isinstance(value, str) else repr(value)


def bundle_command(bundle_root: Path, configs: Sequence[str], run_id: str, overrides: Mapping[str, Any]) -> list[str]:
    """``python -m monai.bundle run`` with config overrides, as a user would type it."""
    files = [str(bundle_root / "configs" / c) for c in configs]
    config = files[0] if len(files) == 1 else repr(files)
    args = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config]
    for key, value in overrides.items():
        args += [f"--{key}", _literal(value)]
    return args


@dataclass
class FoldRun:
    """Where one (cell, fold) run writes, and what it took."""

    folder: Path
    train_seconds: float = float("nan")
    epochs: int = 0
    commands: list[str] = field(default_factory=list)


def _run(args: list[str], log: Path) -> None:
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(args)}\n")
        out.flush()
        env = {**os.environ, "TQDM_DISABLE": "1"}
        code = subprocess.call(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RuntimeError(f"command failed with exit code {code}; see {log}")


def run_cell_fold(
    cell: Cell, fold: int, dataset_dir: str, work_dir: Path, overrides: Mapping[str, Any], bundles_dir: Path
) -> FoldRun:
    """Train and evaluate one cell on one fold (skipped when its ``done.json`` exists).

    Model selection (the best epoch) uses the fold's validation patients; the evaluation uses its test
    patients, which neither trained nor selected the model (checked by ``evaluate.json``).
    """
    folder = work_dir / cell.name / f"fold{fold}"
    done = folder / "done.json"
    if done.is_file():
        record = read_json(done)
        return FoldRun(folder, record["train_seconds"], record["epochs"], record["commands"])
    folder.mkdir(parents=True, exist_ok=True)
    common = {
        "dataset_dir": dataset_dir,
        "fold": fold,
        "loss_name": cell.loss,
        "optimizer_name": cell.optimizer,
        "ckpt_dir": str(folder / "models"),
        "log_dir": str(folder / "logs"),
        "output_dir": str(folder / "eval"),
        **overrides,
    }
    root = bundles_dir / cell.bundle
    train = bundle_command(root, ["train.json"], "training", common)
    evaluate = bundle_command(root, ["train.json", "evaluate.json"], "run", {**common, "eval_split": "test"})
    _run(train, folder / "train.log")
    seconds = epoch_seconds(folder / "train.log")
    _run(evaluate, folder / "evaluate.log")
    last = read_json(folder / "models" / "last.json") if (folder / "models" / "last.json").is_file() else {}
    run = FoldRun(folder, seconds, int(last.get("epoch", 0)), [shlex.join(train), shlex.join(evaluate)])
    write_json(done, {"train_seconds": seconds, "epochs": run.epochs, "commands": run.commands})
    return run


_EPOCH_DONE = re.compile(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def epoch_seconds(log: Path) -> float:
    """Training time from the trainer's log: the sum of its per-epoch times (validation included).

    Read from the log rather than timed around the process so that a resumed run (its log appended)
    counts each epoch once, its latest run, and start-up (data loading) is left out.
    """
    times: dict[int, float] = {}
    for match in _EPOCH_DONE.finditer(log.read_text(errors="replace")):
        epoch, h, m, s = match.groups()
        times[int(epoch)] = 3600 * int(h) + 60 * int(m) + float(s)
    return float(sum(times.values()))


def _read_rows(table: Path, fold: int) -> list[dict]:
    with open(table, newline="") as f:
        return [
            {"fold": fold, **{k: v if k == "case" else float(v) for k, v in row.items()}} for row in csv.DictReader(f)
        ]


def slice_dice_variants(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Pooled per-slice Dice two ways, from the per-patient rows.

    ``slice_dice`` of a row is the mean over the patient's slices with an empty prediction on an empty
    slice scored 1 (and any false positive there 0), as the seed reports computed it. A tumour-free
    slice therefore adds 1 exactly when it has no false positive, which lets the mean over tumour
    slices alone be recovered from the row's counts.
    """
    slices = sum(r["slices"] for r in rows)
    total = sum(r["slice_dice"] * r["slices"] for r in rows)
    empty_hits = sum(r["tumour_free_slices"] - r["false_positive_slices"] for r in rows)
    tumour_slices = slices - sum(r["tumour_free_slices"] for r in rows)
    return {
        "slice_dice_empty_as_1": total / slices if slices else float("nan"),
        "slice_dice_tumour_slices": (total - empty_hits) / tumour_slices if tumour_slices else float("nan"),
        "slices": int(slices),
        "tumour_slices": int(tumour_slices),
    }


def _rate(false_positives: int, of: int) -> dict:
    """The evaluation's false-positive rate record (as in ``summary.json`` of one fold)."""
    return {"rate": false_positives / of if of else None, "false_positives": int(false_positives), "of": int(of)}


def pool_folds(cell_dir: Path, folds: Sequence[int]) -> dict:
    """Pool the folds' test patients of one cell into ``<cell_dir>/cv`` (CSV, summary, overlays)."""
    rows: list[dict] = []
    for fold in folds:
        eval_dir = cell_dir / f"fold{fold}" / "eval"
        rows += _read_rows(eval_dir / "per_patient.csv", fold)
    cases = [r["case"] for r in rows]
    if len(set(cases)) != len(cases):
        raise LGGInputError(cell_dir, "a patient is a test patient in two folds: the folds are not disjoint")
    numeric = [k for k in rows[0] if k not in ("case", "fold")]
    tumour_free = [r for r in rows if r["gt_voxels"] == 0]
    summary = {
        "patients": len(rows),
        "folds": list(folds),
        "per_patient": {
            k: summarize([r[k] for r in rows]) for k in ("dice", "iou", "precision", "recall", "hd95", "slice_dice")
        },
        "per_slice": slice_dice_variants(rows),
        "false_positive_rate": {
            "tumour_free_slices": _rate(
                sum(r["false_positive_slices"] for r in rows), sum(r["tumour_free_slices"] for r in rows)
            ),
            "tumour_free_patients": _rate(sum(r["pred_voxels"] > 0 for r in tumour_free), len(tumour_free)),
        },
    }
    with atomic_dir(cell_dir / "cv") as tmp:
        with open(tmp / "per_patient.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["case", "fold", *numeric])
            writer.writeheader()
            writer.writerows(rows)
        write_json(tmp / "summary.json", summary)
        (tmp / "overlays").mkdir()
        for fold in folds:
            for png in sorted((cell_dir / f"fold{fold}" / "eval" / "overlays").glob("*.png")):
                (tmp / "overlays" / png.name).write_bytes(png.read_bytes())
    return summary


def inference_ms_per_slice(
    cell: Cell,
    checkpoint: Path,
    spatial_size: Sequence[int] | None,
    roi_size: Sequence[int] | None,
    bundles_dir: Path,
) -> tuple[float, int]:
    """CPU milliseconds per 256² slice (a 40-slice volume, fp32, 2 threads) and the parameter count."""
    from monai_lgg.inference.benchmark import benchmark

    rows = benchmark(
        bundles_dir / cell.bundle,
        checkpoint,
        repeats=3,
        devices=["cpu"],
        variants=[("fp32", False)],
        spatial_size=spatial_size,
        roi_size=roi_size,
        tta=[False],
    )
    return rows[0]["volume_ms"] / rows[0]["num_slices"], rows[0]["params"]


def run_grid(
    name: str,
    dataset_dir: str,
    cells: Sequence[Cell],
    folds: Sequence[int],
    overrides: Mapping[str, Any],
    work_dir: str | Path,
    bundles_dir: str | Path,
    budget: str,
) -> dict:
    """Run every (cell, fold), pool each cell's folds, and return the results record."""
    work_dir, bundles_dir = Path(work_dir), Path(bundles_dir)
    # None: the trained checkpoint's own record (sidecar) says what the network was built for
    patch = overrides.get("spatial_size")
    roi = overrides.get("roi_size", patch)
    results = []
    for cell in cells:
        runs = [run_cell_fold(cell, f, dataset_dir, work_dir, overrides, bundles_dir) for f in folds]
        summary = pool_folds(work_dir / cell.name, folds)
        ms, params = inference_ms_per_slice(cell, runs[0].folder / "models" / "model.pt", patch, roi, bundles_dir)
        results.append(
            {
                "cell": asdict(cell),
                "name": cell.name,
                "summary": summary,
                "params": params,
                "inference_ms_per_slice": ms,
                "train_seconds": [r.train_seconds for r in runs],
                "epochs": [r.epochs for r in runs],
                "commands": {f"fold{f}": r.commands for f, r in zip(folds, runs, strict=True)},
            }
        )
        print(
            f"{cell.name}: per-patient Dice mean {summary['per_patient']['dice']['mean']:.3f} "
            f"over {summary['patients']} patients",
            flush=True,
        )
    return {
        "name": name,
        "dataset_dir": dataset_dir,
        "folds": list(folds),
        "overrides": dict(overrides),
        "budget": budget,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "machine": machine_info(),
        "date": datetime.date.today().isoformat(),
        "work_dir": str(work_dir),
        "results": results,
    }


def machine_info() -> dict:
    """CPU model and count, GPU name, torch and Python versions: the machine line of a results table."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def format_number(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, or ``n/a`` for a missing or NaN value."""
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def results_table(record: Mapping) -> str:
    """The Markdown table of a grid (one row per cell)."""
    lines = [
        "| model | loss | optimizer | patients | per-patient Dice mean [95 % CI] | median | IoU mean "
        "| HD95 median (px) | FP rate, tumour-free slices | per-slice Dice (empty = 1) "
        "| per-slice Dice (tumour slices) | train min (per fold) | params (M) | ms/slice (CPU) |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        s, c = r["summary"], r["cell"]
        d = s["per_patient"]["dice"]
        lines.append(
            f"| {c['bundle']} | {c['loss']} | {c['optimizer']} | {s['patients']} "
            f"| {format_number(d['mean'])} [{format_number(d['ci_low'])}, {format_number(d['ci_high'])}] "
            f"| {format_number(d['median'])} | {format_number(s['per_patient']['iou']['mean'])} "
            f"| {format_number(s['per_patient']['hd95']['median'], 1)} "
            f"| {format_number(s['false_positive_rate']['tumour_free_slices']['rate'])} "
            f"| {format_number(s['per_slice']['slice_dice_empty_as_1'])} "
            f"| {format_number(s['per_slice']['slice_dice_tumour_slices'])} "
            f"| {format_number(float(np.mean(r['train_seconds'])) / 60, 1)} "
            f"| {r['params'] / 1e6:.2f} | {format_number(r['inference_ms_per_slice'], 1)} |"
        )
    return "\n".join(lines)


def _plots(record: Mapping, work_dir: Path) -> dict[str, bytes]:
    from monai_lgg.report import figure_png, new_figure, read_training_curves

    names = [r["name"] for r in record["results"]]
    fig = new_figure(max(6.0, 1.1 * len(names)), 4.0)
    ax = fig.subplots()
    data = [
        np.loadtxt(work_dir / n / "cv" / "per_patient.csv", delimiter=",", skiprows=1, usecols=2, ndmin=1)
        for n in names
    ]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("per-patient 3D Dice (test folds)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    box = figure_png(fig)

    fig = new_figure(11.0, 4.0)
    loss_ax, dice_ax = fig.subplots(ncols=2)
    first_fold = record["folds"][0]
    for n in names:
        curves = read_training_curves(work_dir / n / f"fold{first_fold}" / "logs")
        for ax, tag in ((loss_ax, "train_loss"), (dice_ax, "val_mean_dice")):
            if tag in curves:
                steps, values = zip(*curves[tag], strict=True)
                ax.plot(steps, values, marker=".", label=n)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title=f"training loss (fold {first_fold})")
    dice_ax.set(
        xlabel="epoch", ylabel="per-patient Dice", title=f"validation patients (fold {first_fold})", ylim=(0, 1)
    )
    if dice_ax.lines:
        dice_ax.legend(fontsize=7)
    else:  # a fixed schedule (train_split trainval) validates nothing: say so instead of an empty panel
        dice_ax.text(
            0.5,
            0.5,
            "no validation patients:\nfixed schedule, every non-test fold trains",
            ha="center",
            va="center",
            transform=dice_ax.transAxes,
            fontsize=10,
            color="0.35",
        )
    if len(names) > 1:
        loss_ax.legend(fontsize=7)
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    return {"dice_boxplot": box, "learning_curves": figure_png(fig)}


def _split_words(overrides: Mapping[str, Any]) -> str:
    """How the folds were used, in words, from the runs' overrides."""
    if overrides.get("train_split") == "trainval":
        return "patient-level split: test = fold f, training = every other fold, fixed schedule, no epoch selection"
    return "patient-level nested split: test = fold f, validation = fold f+1 selects the epoch, training = the rest"


def write_results(record: Mapping, output: str | Path, report_cells: int = 1) -> Path:
    """Write ``README.md`` (table, command, machine, date), ``results.json`` and PNG plots to ``output``.

    The ``report_cells`` best cells also get the per-patient report (``monai-lgg report`` in Markdown:
    Dice bar chart, box plots, learning curves, best/worst overlays) of their pooled test patients.
    """
    from monai_lgg.report import make_report

    output, work_dir = Path(output), Path(record["work_dir"])
    plots = _plots(record, work_dir)
    ranked = sorted(record["results"], key=lambda r: -r["summary"]["per_patient"]["dice"]["mean"])
    m = record["machine"]
    text = [
        f"# Experiment grid `{record['name']}`",
        "",
        f"Produced by `{record['command']}` on {record['date']}: {m['cpu']} ({m['cpu_count']} cores), "
        f"GPU: {m['gpu'] or 'none'}, torch {m['torch']}. Budget: {record['budget']}.",
        "",
        f"Data: `{record['dataset_dir']}`; folds {record['folds']}. Every number is over the test patients of "
        f"those folds ({_split_words(record['overrides'])}); "
        "each patient is tested exactly once. Config overrides shared by every run: "
        f"`{json.dumps(record['overrides'])}`.",
        "",
        results_table(record),
        "",
        "Per-patient Dice: 3D Dice over all of a patient's slices; a patient without tumour scores 1 only when "
        "nothing is predicted. Per-slice Dice (secondary) is pooled over slices: `empty = 1` scores an empty "
        "prediction on a tumour-free slice 1 and any false positive there 0 (the seed reports' way); `tumour slices` "
        "averages only the slices with tumour. Train minutes: wall time of one fold's training (validation included) "
        "on this machine, which other jobs shared. ms/slice: fp32 inference of a 40-slice 256² volume on 2 CPU "
        "threads.",
        "",
        "![per-patient Dice](dice_boxplot.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    with atomic_dir(output) as tmp:
        for key, png in plots.items():
            (tmp / f"{key}.png").write_bytes(png)
        for r in ranked[:report_cells]:
            make_report(
                work_dir / r["name"] / "cv",
                tmp / r["name"],
                log_dir=work_dir / r["name"] / f"fold{record['folds'][0]}" / "logs",
                format="md",
                title=f"{r['name']}: pooled test patients of folds {record['folds']}",
            )
            text += [f"Per-patient report of `{r['name']}`: [{r['name']}/report.md]({r['name']}/report.md)", ""]
        text += ["Commands of every run (train, then evaluate on the test fold) are in `results.json`."]
        with atomic_path(tmp / "README.md") as md:
            md.write_text("\n".join(text) + "\n")
        write_json(tmp / "results.json", record)
    return output
