"""``monai-lgg report``: turn an evaluation output into a readable HTML (or Markdown + PNG) report.

Input: the folder written by a bundle's ``evaluate.json`` (``per_patient.csv``, ``summary.json``,
``overlays/<case>_<slice>.png``) and, optionally, the bundle's TensorBoard ``logs/``. The report holds
the metrics table (mean, median, bootstrap 95 % CI), a per-patient Dice bar chart with mean and
median lines, box plots of the per-patient scores, the training curves, a grid of overlays of the
best and worst patients, and the per-patient table. Figures are PNGs made with matplotlib's
object API (no GUI backend); the HTML embeds them, so it is one self-contained file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir, atomic_path, read_json

__all__ = [
    "Evaluation",
    "load_evaluation",
    "read_training_curves",
    "new_figure",
    "figure_png",
    "make_figures",
    "make_report",
]

SCORES = ("dice", "iou", "precision", "recall", "f1", "slice_dice")
TABLE_METRICS = ("dice", "iou", "precision", "recall", "f1", "accuracy", "hd95", "slice_dice")
COLOURS = {"bar": "#4C72B0", "mean": "#C44E52", "median": "#55A868"}


@dataclass
class Evaluation:
    """An evaluation output folder, read.

    Attributes:
        folder: the folder.
        rows: ``per_patient.csv`` rows (numbers as floats, ``case`` as str).
        summary: ``summary.json`` (empty if absent).
        overlays: ``{case: [overlay PNG paths]}``.
    """

    folder: Path
    rows: list[dict]
    summary: dict = field(default_factory=dict)
    overlays: dict[str, list[Path]] = field(default_factory=dict)

    def scores(self, key: str) -> np.ndarray:
        return np.array([r[key] if isinstance(r[key], (int, float)) else np.nan for r in self.rows], dtype=float)

    @property
    def class_columns(self) -> list[str]:
        """Per-class score columns of a multi-class evaluation (``dice_<class>``, ``iou_<class>``), else none."""
        return [k for k in self.rows[0] if k.startswith(("dice_", "iou_"))]


def _number(value: str) -> int | float | str:
    """A CSV cell as a number: counts stay integers (``25``, not ``25.000`` in the tables)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def load_evaluation(folder: str | Path) -> Evaluation:
    """Read an evaluation output folder.

    Raises:
        LGGInputError: no ``per_patient.csv``, or it has no patients.
    """
    folder = Path(folder)
    table = folder / "per_patient.csv"
    if not table.is_file():
        raise LGGInputError(folder, "is not an evaluation output (no per_patient.csv; run monai-lgg evaluate first)")
    with open(table, newline="") as f:
        rows = [{k: (v if k == "case" else _number(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    if not rows or "dice" not in rows[0]:
        raise LGGInputError(table, "has no patients or no 'dice' column")
    summary = read_json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
    overlays: dict[str, list[Path]] = {}
    for png in sorted((folder / "overlays").glob("*.png")):
        case = png.stem.rsplit("_", 1)[0]
        overlays.setdefault(case, []).append(png)
    return Evaluation(folder, rows, summary, overlays)


def read_training_curves(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Scalar curves of every TensorBoard event file in ``log_dir``, merged.

    A resumed or repeated run writes new files; for a step logged more than once the latest value wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for events in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                previous = latest.setdefault(tag, {}).get(event.step)
                if previous is None or event.wall_time >= previous[0]:
                    latest[tag][event.step] = (event.wall_time, event.value)
    return {tag: sorted((step, value) for step, (_, value) in steps.items()) for tag, steps in latest.items()}


def new_figure(width: float, height: float):
    """A matplotlib figure for the PNG plots (no pyplot state, so it is safe off the main thread)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def figure_png(fig) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def dice_bar_chart(evaluation: Evaluation) -> bytes:
    """Per-patient Dice as horizontal bars, best at the top, with mean and median lines.

    Horizontal, so that every patient's name stays readable however many there are. Tumour-free patients
    are hatched: one scores 1 when nothing is predicted and 0 otherwise, which is not what a tumour
    patient's bar means. With few patients each bar carries its value.
    """
    order = np.argsort(-evaluation.scores("dice"), kind="stable")
    rows = [evaluation.rows[i] for i in order]
    dice = evaluation.scores("dice")[order]
    n = len(rows)
    fig = new_figure(9.0, max(2.6, 0.19 * n + 1.3))
    ax = fig.add_subplot()
    tumour_free = [r.get("gt_voxels") == 0 for r in rows]
    bars = ax.barh(
        range(n),
        dice,
        color=COLOURS["bar"],
        height=0.8 if n > 4 else 0.5,
        hatch=["//" if free else "" for free in tumour_free],
        edgecolor="white",
    )
    # values on the bars when there is room, and always on the near-zero bars that are otherwise invisible
    ax.bar_label(bars, labels=[f"{d:.3f}" if n <= 30 or d < 0.05 else "" for d in dice], fontsize=8, padding=2)
    # equal mean and median lines stay visible: the mean is drawn wide underneath, the median thin on top
    ax.axvline(
        np.nanmean(dice),
        color=COLOURS["mean"],
        linestyle="--",
        linewidth=3.0,
        alpha=0.7,
        zorder=2,
        label=f"mean {np.nanmean(dice):.3f}",
    )
    ax.axvline(
        np.nanmedian(dice),
        color=COLOURS["median"],
        linestyle=":",
        linewidth=1.6,
        zorder=3,
        label=f"median {np.nanmedian(dice):.3f}",
    )
    handles = ax.get_legend_handles_labels()[0]
    if any(tumour_free):
        from matplotlib.patches import Patch

        handles.append(
            Patch(
                facecolor=COLOURS["bar"],
                hatch="//",
                edgecolor="white",
                label="tumour-free patient:\n1 if nothing predicted, else 0",
            )
        )
    ax.set_yticks(range(n), [r["case"] for r in rows], fontsize=8)
    ax.set_ylim(n - 0.4, -0.6)  # best at the top
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("Dice (3D, per patient)")
    ax.set_title(f"Per-patient Dice, best first ({n} patients)", loc="left")
    ax.grid(axis="x", alpha=0.3)
    # beside the axes: never over the bars
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return figure_png(fig)


def score_box_plot(evaluation: Evaluation) -> bytes:
    """Box plots of the per-patient scores with every patient as a jittered point."""
    keys = [k for k in SCORES if k in evaluation.rows[0]] + [
        k for k in evaluation.class_columns if k.startswith("dice_")
    ]
    fig = new_figure(7.5 + 0.6 * max(0, len(keys) - len(SCORES)), 4.2)
    ax = fig.add_subplot()
    data = [evaluation.scores(k)[~np.isnan(evaluation.scores(k))] for k in keys]
    ax.boxplot(
        data,
        tick_labels=[k.replace("_", " ") for k in keys],
        showmeans=True,
        showfliers=False,
        widths=0.5,
        meanprops={
            "marker": "D",
            "markerfacecolor": COLOURS["mean"],
            "markeredgecolor": COLOURS["mean"],
            "markersize": 5,
        },
    )
    jitter = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=10, color="black", alpha=0.45, zorder=3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("score per patient")
    ax.set_title("Per-patient scores (box: quartiles, line: median, diamond: mean)")
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


# Validation curves, drawn in this order: each has its own colour, marker and dash, and the earlier ones are
# drawn wider underneath, so that curves with equal values (IoU and precision often are, early on) stay visible.
CURVE_STYLES = {
    "val_mean_dice": ("Dice (per patient)", "#4C72B0", "o", "-"),
    "val_slice_dice": ("Dice (per slice)", "#8172B2", "D", (0, (5, 2))),
    "val_iou": ("IoU", "#55A868", "s", "--"),
    "val_precision": ("precision", "#C44E52", "^", "-."),
    "val_recall": ("recall", "#DD8452", "v", ":"),
}


def training_curves_plot(curves: dict[str, list[tuple[int, float]]]) -> bytes | None:
    """Training loss and validation scores per epoch; None without curves.

    The validation panel marks the epoch with the best per-patient Dice (the one a best-epoch run saves).
    """
    losses = {t: v for t, v in curves.items() if "loss" in t}
    scores = {t: curves[t] for t in CURVE_STYLES if t in curves}
    if not losses and not scores:
        return None
    from matplotlib.ticker import MaxNLocator

    # a run without validation (a fixed schedule) has no score panel rather than an empty one
    panels = int(bool(losses)) + int(bool(scores))
    fig = new_figure(5.5 * panels + (1.6 if scores else 0.0), 4.0)
    loss_ax = fig.add_subplot(1, panels, 1) if losses else None
    score_ax = fig.add_subplot(1, panels, panels) if scores else None
    for tag, points in sorted(losses.items()):
        steps, values = zip(*points, strict=True)
        loss_ax.plot(steps, values, marker="o", markersize=3, label=tag.replace("_", " "))
    if loss_ax is not None:
        loss_ax.set(title="Training loss", xlabel="epoch", ylabel="loss")
    for order, (tag, points) in enumerate(scores.items()):
        label, colour, marker, dash = CURVE_STYLES[tag]
        steps, values = zip(*points, strict=True)
        score_ax.plot(
            steps,
            values,
            color=colour,
            marker=marker,
            markersize=6 - order * 0.7,
            linestyle=dash,
            linewidth=3.2 - order * 0.5,
            alpha=0.9,
            label=label,
            zorder=2 + order,
        )
    if "val_mean_dice" in scores:
        best_epoch, best = max(scores["val_mean_dice"], key=lambda p: (p[1], -p[0]))
        score_ax.axvline(
            best_epoch,
            color="grey",
            linewidth=1,
            linestyle=":",
            zorder=1,
            label=f"best Dice {best:.3f} (epoch {best_epoch})",
        )
    if score_ax is not None:
        # a little room beyond 0 and 1, so that curves lying on them stay visible
        score_ax.set(title="Validation patients", xlabel="epoch", ylabel="score", ylim=(-0.03, 1.03))
    for ax in (a for a in (loss_ax, score_ax) if a is not None):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if loss_ax is not None:
        loss_ax.legend(fontsize=8, loc="upper right")
    if score_ax is not None:  # beside the axes: curves near 0 and 1 are common and a legend inside would hide them
        score_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure_png(fig)


def best_and_worst(ranked: Sequence[dict], num_patients: int = 3) -> list[tuple[str, dict]]:
    """The best and the worst ``num_patients`` of ``ranked`` (best first), never one patient twice.

    With fewer than ``2 * num_patients`` patients the set is split in halves (the odd one out counts as
    best): two patients are one best and one worst, not two "best".

    Returns:
        ``("best" | "worst", row)`` pairs, best first.
    """
    n_best = min(num_patients, (len(ranked) + 1) // 2)
    n_worst = min(num_patients, len(ranked) - n_best)
    return [("best", r) for r in ranked[:n_best]] + [("worst", r) for r in ranked[len(ranked) - n_worst :]]


def overlay_grid(evaluation: Evaluation, num_patients: int = 3) -> bytes | None:
    """Overlays of the best and worst patients (by Dice), one row per patient; None without overlays.

    Each overlay picture carries its own caption (slice, why it was chosen, slice Dice, legend).
    """
    import cv2

    ranked = sorted((r for r in evaluation.rows if evaluation.overlays.get(r["case"])), key=lambda r: -r["dice"])
    if not ranked:
        return None
    chosen = best_and_worst(ranked, num_patients)
    columns = max(len(evaluation.overlays[r["case"]]) for _, r in chosen)
    pictures = {
        r["case"]: [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in evaluation.overlays[r["case"]]]
        for _, r in chosen
    }
    aspect = max(p.shape[0] / p.shape[1] for row in pictures.values() for p in row)
    fig = new_figure(3.3 * columns + 0.3, (3.3 * aspect + 0.35) * len(chosen) + 0.4)
    grid = fig.add_gridspec(len(chosen), columns)
    rank = {r["case"]: i for i, r in enumerate(ranked, start=1)}
    for row, (kind, record) in enumerate(chosen):
        for col, picture in enumerate(pictures[record["case"]]):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(picture)
            ax.set_axis_off()
            if col == 0:
                place = f"{kind} (#{rank[record['case']]} of {len(ranked)})" if len(ranked) > 1 else "the only patient"
                ax.set_title(
                    f"{place}: {record['case']}  Dice {record['dice']:.3f}", loc="left", fontsize=10, fontweight="bold"
                )
    shown = (
        "all"
        if len(chosen) == len(ranked)
        else f"best {sum(k == 'best' for k, _ in chosen)} and worst {sum(k == 'worst' for k, _ in chosen)}"
    )
    fig.suptitle(
        f"Patients by per-patient Dice ({shown} of {len(ranked)}); each picture's caption says why that slice is shown",
        fontsize=11,
    )
    return figure_png(fig)


def make_figures(evaluation: Evaluation, log_dir: str | Path | None = None, num_patients: int = 3) -> dict[str, bytes]:
    """The report's PNG figures by name (absent ones left out)."""
    figures = {"dice_per_patient": dice_bar_chart(evaluation), "score_boxplot": score_box_plot(evaluation)}
    if log_dir is not None and Path(log_dir).is_dir():
        curves = training_curves_plot(read_training_curves(log_dir))
        if curves:
            figures["training_curves"] = curves
    grid = overlay_grid(evaluation, num_patients)
    if grid:
        figures["best_worst_overlays"] = grid
    return figures


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return "n/a" if value is None else str(value)


def metrics_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary metrics (from ``summary.json``, else computed from the CSV)."""
    stats = evaluation.summary.get("per_patient", {})
    header = ["metric", "mean", "median", "std", "95% CI", "min", "max", "n"]
    rows = []
    for key in list(TABLE_METRICS) + evaluation.class_columns:  # multi-class: per-class rows after the means
        if key not in evaluation.rows[0]:
            continue
        values = evaluation.scores(key)
        s = stats.get(key) or {
            "mean": float(np.nanmean(values)),
            "median": float(np.nanmedian(values)),
            "std": float(np.nanstd(values)),
            "min": float(np.nanmin(values)),
            "max": float(np.nanmax(values)),
            "n": int((~np.isnan(values)).sum()),
        }
        ci = f"{_fmt(s['ci_low'])} - {_fmt(s['ci_high'])}" if "ci_low" in s else "n/a"
        n = f"{s['n']}" + (f" (+{s['n_nan']} NaN)" if s.get("n_nan") else "")
        rows.append([key, _fmt(s["mean"]), _fmt(s["median"]), _fmt(s["std"]), ci, _fmt(s["min"]), _fmt(s["max"]), n])
    return header, rows


# The per-patient table of the report, with short headers so that it fits the page; every column (F1, which
# equals Dice for binary masks, voxel accuracy, per-class IoU) stays in per_patient.csv.
PATIENT_COLUMNS = {
    "case": "patient",
    "dice": "Dice",
    "iou": "IoU",
    "precision": "precision",
    "recall": "recall",
    "hd95": "HD95",
    "slice_dice": "slice Dice",
    "gt_voxels": "tumour voxels",
    "pred_voxels": "predicted voxels",
    "slices": "slices",
    "tumour_free_slices": "tumour-free slices",
    "false_positive_slices": "false-positive slices",
}
PATIENT_TABLE_NOTE = "Best Dice first. All columns (also F1 and voxel accuracy) are in per_patient.csv."


def patient_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-patient table, best Dice first (the columns of :data:`PATIENT_COLUMNS`
    present, plus the per-class Dice of a multi-class evaluation)."""
    keys = [k for k in PATIENT_COLUMNS if k in evaluation.rows[0]]
    after_dice = keys.index("dice") + 1
    keys[after_dice:after_dice] = [k for k in evaluation.class_columns if k.startswith("dice_")]
    header = [PATIENT_COLUMNS.get(k, k.replace("_", " ")) for k in keys]
    ranked = sorted(evaluation.rows, key=lambda r: -r["dice"])
    rows = [[_fmt(r[k]) if k != "case" else r[k] for k in keys] for r in ranked]
    return header, rows


def _extra_lines(evaluation: Evaluation) -> list[str]:
    s = evaluation.summary
    lines = [f"{k}: {s[k]}" for k in ("bundle", "checkpoint", "fold", "split", "datalist") if k in s]
    lines.append(f"patients: {len(evaluation.rows)}")
    if "pooled_slice_dice" in s:
        pooled = s["pooled_slice_dice"]
        lines.append(f"pooled per-slice Dice: {_fmt(pooled['mean'])} over {pooled['slices']} slices")
    for name, rate in s.get("false_positive_rate", {}).items():
        counts = f"{rate.get('false_positives')} of {rate.get('of')}"
        lines.append(f"false-positive rate on {name.replace('_', ' ')}: {_fmt(rate.get('rate'))} ({counts})")
    if "empty_mask_rules" in s:
        lines.append(f"empty masks: {s['empty_mask_rules']}")
    return lines


CAPTIONS = {
    "dice_per_patient": "Per-patient Dice",
    "score_boxplot": "Per-patient score distributions",
    "training_curves": "Training curves (TensorBoard logs)",
    "best_worst_overlays": "Best and worst patients",
}
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}.wide{overflow-x:auto}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{vertical-align:bottom;max-width:6em}"
    "td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee}"
    "ul{font-size:14px}"
)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(evaluation: Evaluation, figures: dict[str, bytes], title: str) -> str:
    """One self-contained HTML page (figures embedded as base64 PNG)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in _extra_lines(evaluation))
        + "</ul>",
        "<h2>Metrics</h2>",
        _html_table(*metrics_table(evaluation)),
    ]
    for name, png in figures.items():
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{CAPTIONS[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    parts += [
        "<h2>Per-patient results</h2>",
        f"<p>{html.escape(PATIENT_TABLE_NOTE)}</p><div class='wide'>{_html_table(*patient_table(evaluation))}</div>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def render_markdown(evaluation: Evaluation, figures: dict[str, bytes], title: str) -> str:
    """Markdown referring to the figures as ``<name>.png`` beside it."""
    parts = [
        f"# {title}",
        "\n".join(f"- {line}" for line in _extra_lines(evaluation)),
        "## Metrics",
        _md_table(*metrics_table(evaluation)),
    ]
    parts += [f"## {CAPTIONS[name]}\n\n![{name}]({name}.png)" for name in figures]
    parts += ["## Per-patient results", PATIENT_TABLE_NOTE, _md_table(*patient_table(evaluation))]
    return "\n\n".join(parts) + "\n"


def make_report(
    eval_dir: str | Path,
    output: str | Path | None = None,
    log_dir: str | Path | None = None,
    format: str = "html",
    num_patients: int = 3,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the report of an evaluation output.

    Args:
        eval_dir: evaluation output folder (``per_patient.csv``, ``summary.json``, ``overlays/``).
        output: ``html``: the HTML file (default ``<eval_dir>/report.html``); ``md``: a folder for
            ``report.md`` and its PNGs (default ``<eval_dir>/report``).
        log_dir: TensorBoard logs for the training curves (default ``<eval_dir>/../logs`` when present).
        format: ``html`` (one self-contained file) or ``md`` (Markdown + PNG files).
        num_patients: best and worst patients shown in the overlay grid.
        title: report title (default from the bundle name and split).
        overwrite: replace an existing report.

    Returns:
        the HTML file or the Markdown folder.
    """
    if format not in ("html", "md"):
        raise LGGInputError(None, f"format must be 'html' or 'md', got {format!r}")
    evaluation = load_evaluation(eval_dir)
    default_logs = Path(eval_dir).resolve().parent / "logs"
    log_dir = log_dir if log_dir is not None else (default_logs if default_logs.is_dir() else None)
    if log_dir is not None and not Path(log_dir).is_dir():
        raise LGGInputError(log_dir, "log folder not found")
    target = Path(output) if output else Path(eval_dir) / ("report.html" if format == "html" else "report")
    if target.exists() and not overwrite:
        raise LGGInputError(target, "output exists (pass --overwrite to replace it)")
    s = evaluation.summary
    title = title or f"Evaluation report: {s.get('bundle', Path(eval_dir).resolve().parent.name)}" + (
        f" (fold {s['fold']}, {s['split']} split)" if "fold" in s and "split" in s else ""
    )
    figures = make_figures(evaluation, log_dir, num_patients)
    if format == "html":
        with atomic_path(target) as tmp:
            tmp.write_text(render_html(evaluation, figures, title))
    else:
        with atomic_dir(target) as tmp:
            for name, png in figures.items():
                (tmp / f"{name}.png").write_bytes(png)
            (tmp / "report.md").write_text(render_markdown(evaluation, figures, title))
    return target
