"""Evaluation outputs: per-patient CSV, summary JSON with bootstrap CIs, overlay PNGs, leakage check."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import StatsHandler

from monai_lgg.engines.handlers import SafeCheckpointLoader, sidecar_path, unwrap
from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_path, safe_child, write_json
from monai_lgg.metrics import compute_slice_dice, slice_flags, summarize, volume_scores

__all__ = ["check_no_leakage", "PatientReport", "overlay", "evaluation_handlers"]

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("case", "dice", "iou", "precision", "recall", "f1", "accuracy", "hd95", "slice_dice", "gt_voxels", "pred_voxels",
               "slices", "tumour_free_slices", "false_positive_slices")
EMPTY_RULES = ("3D scores per patient over all its slices. Empty ground truth and empty prediction score 1 (Dice, IoU, "
               "precision, recall, F1) and HD95 0; empty ground truth with any predicted voxel scores 0; HD95 with exactly "
               "one empty mask is NaN and excluded (counted in n_nan). Per-slice Dice pools every slice of every patient, "
               "empty-vs-empty slices scoring 1 and tumour-free slices with any prediction 0.")


def check_no_leakage(checkpoint: str | Path, items: Sequence[dict], allow_overlap: bool = False) -> None:
    """Refuse to evaluate a checkpoint on patients it was trained or selected on.

    The patient lists come from the checkpoint's sidecar (``model.json``, written by the training
    run with the checkpoint); a checkpoint without them (e.g. one trained elsewhere) cannot be
    verified and is evaluated with a warning.

    Args:
        checkpoint: the checkpoint file.
        items: the evaluated items (each with its ``case``).
        allow_overlap: evaluate anyway (e.g. to measure training-set fit), still with a warning.

    Raises:
        LGGInputError: some evaluated patients trained or selected the checkpoint, or the sidecar is damaged.
    """
    sidecar = sidecar_path(checkpoint)
    if not sidecar.is_file():
        logger.warning(f"{sidecar} not found: cannot verify that the evaluated patients were not used for training")
        return
    try:
        record = json.loads(sidecar.read_text())
    except ValueError as err:
        raise LGGInputError(sidecar, f"is not valid JSON ({err}): cannot verify the training patients") from None
    if not isinstance(record, dict) or "training_cases" not in record:
        logger.warning(f"{sidecar} records no training_cases: cannot verify that the evaluated patients were not used")
        return
    used = set(record.get("training_cases", [])) | set(record.get("validation_cases", []))
    overlap = sorted(used & {item["case"] for item in items})
    if overlap and not allow_overlap:
        raise LGGInputError(
            checkpoint, f"was trained or selected on {len(overlap)} of the evaluated patients ({', '.join(overlap[:5])}"
            f"{', ...' if len(overlap) > 5 else ''}): evaluate on its test fold instead"
        )
    if overlap:
        logger.warning(f"{checkpoint}: evaluating on {len(overlap)} patients it was trained or selected on")


def overlay(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    """BGR overlay of one slice: grey FLAIR, ground truth green, prediction red (both: yellow)."""
    grey = image.astype(np.float32)
    brain = grey != 0  # normalised images keep the background at exactly 0: show it black
    lo, hi = np.percentile(grey[brain], (1, 99)) if brain.any() else (0.0, 1.0)
    grey = (np.clip((grey - lo) / max(hi - lo, 1e-6) * 255, 0, 255) * brain).astype(np.uint8)
    out = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR).astype(np.float32)
    colour = np.zeros_like(out)
    if label is not None:
        colour[..., 1] = 255 * (label > 0)
    colour[..., 2] = 255 * (pred > 0)
    drawn = colour.any(-1, keepdims=True)
    out = np.where(drawn, 0.55 * out + 0.45 * colour, out)
    return out.astype(np.uint8)


class PatientReport:
    """Score each evaluated patient volume and write the evaluation outputs.

    Writes into ``output_dir``: ``per_patient.csv`` (one row per patient), ``summary.json`` (mean,
    median, bootstrap 95 % CI of each score, pooled per-slice Dice, false-positive rates on
    tumour-free slices and patients, the empty-mask rules) and ``overlays/<case>_<slice>.png`` for
    the ``overlays`` slices per patient with the most tumour (ground truth or predicted).

    Args:
        output_dir: folder for the outputs.
        overlays: overlay slices per patient (0: none).
        image_channel: channel drawn under the overlay (1 = FLAIR).
        info: extra fields for ``summary.json`` (checkpoint, split, ...).
    """

    def __init__(self, output_dir: str | Path, overlays: int = 3, image_channel: int = 1, info: dict | None = None) -> None:
        self.output_dir, self.overlays, self.image_channel, self.info = Path(output_dir), overlays, image_channel, dict(info or {})
        self.rows: list[dict] = []
        self.slice_dice: list[float] = []
        self.slice_fp: list[tuple[bool, bool]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.__init__(self.output_dir, self.overlays, self.image_channel, self.info))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(engine.state.output)
        for item, source in zip(engine.state.output, batch):
            pred = torch.as_tensor(item["pred"]).detach().cpu()[0].numpy() > 0
            label = torch.as_tensor(item["label"]).detach().cpu()[0].numpy() > 0
            case = str(source.get("case", item.get("case", f"case{len(self.rows)}")))
            scores = volume_scores(pred, label)
            per_slice = compute_slice_dice(torch.as_tensor(pred)[None, None], torch.as_tensor(label)[None, None])[:, 0].tolist()
            pred_any, gt_any = slice_flags(pred, label)
            self.slice_dice += per_slice
            self.slice_fp += list(zip(pred_any.tolist(), gt_any.tolist()))
            self.rows.append({
                "case": case, **{k: scores[k] for k in CSV_COLUMNS[1:8]}, "slice_dice": float(np.mean(per_slice)),
                "gt_voxels": int(label.sum()), "pred_voxels": int(pred.sum()), "slices": int(label.shape[-1]),
                "tumour_free_slices": int((~gt_any).sum()), "false_positive_slices": int((pred_any & ~gt_any).sum()),
            })
            if self.overlays:
                self._write_overlays(case, torch.as_tensor(item["image"]).detach().cpu()[self.image_channel].numpy(), label, pred)

    def _write_overlays(self, case: str, image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> None:
        area = (label | pred).reshape(-1, label.shape[-1]).sum(0)
        chosen = [int(k) for k in np.argsort(-area, kind="stable")[: self.overlays] if area[k] > 0] or [label.shape[-1] // 2]
        for k in chosen:
            with atomic_path(safe_child(self.output_dir / "overlays", f"{case}_{k + 1:03d}.png")) as tmp:
                cv2.imwrite(str(tmp), overlay(image[..., k], label[..., k], pred[..., k]))

    def write(self, engine: Engine | None = None) -> dict:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_path(self.output_dir / "per_patient.csv") as tmp:
            tmp.write_text(buffer.getvalue())
        flags = np.array(self.slice_fp, dtype=bool).reshape(-1, 2)
        tumour_free_patients = [r for r in self.rows if r["gt_voxels"] == 0]
        summary = {
            **self.info,
            "patients": len(self.rows),
            "per_patient": {k: summarize([r[k] for r in self.rows]) for k in CSV_COLUMNS[1:9]},
            "pooled_slice_dice": {"mean": float(np.mean(self.slice_dice)) if self.slice_dice else float("nan"), "slices": len(self.slice_dice)},
            "false_positive_rate": {
                "tumour_free_slices": _rate(flags[:, 0] & ~flags[:, 1], ~flags[:, 1]),
                "tumour_free_patients": _rate(np.array([r["pred_voxels"] > 0 for r in tumour_free_patients], dtype=bool), np.ones(len(tumour_free_patients), dtype=bool)),
            },
            "empty_mask_rules": EMPTY_RULES,
        }
        write_json(self.output_dir / "summary.json", summary)
        return summary


def _rate(hits: np.ndarray, population: np.ndarray) -> dict:
    n = int(population.sum())
    return {"rate": float(hits.sum() / n) if n else None, "false_positives": int(hits.sum()), "of": n}


def evaluation_handlers(
    network: torch.nn.Module,
    checkpoint: str | Path,
    output_dir: str | Path,
    items: Sequence[dict],
    overlays: int = 3,
    allow_overlap: bool = False,
    info: dict | None = None,
) -> list:
    """Handlers of ``evaluate.json``: load the checkpoint (``weights_only``), check leakage, log, report.

    Raises:
        LGGInputError: the checkpoint is missing, or was trained or selected on evaluated patients.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise LGGInputError(checkpoint, "checkpoint not found (train the bundle first, or pass --ckpt_path)")
    check_no_leakage(checkpoint, items, allow_overlap)
    return [
        SafeCheckpointLoader(load_path=str(checkpoint), load_dict={"model": unwrap(network)}, map_location="cpu"),
        StatsHandler(iteration_log=False),
        PatientReport(output_dir, overlays=overlays, info={"checkpoint": str(checkpoint), **(info or {})}),
    ]
