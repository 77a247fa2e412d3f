"""Evaluation outputs: per-patient CSV, summary JSON with bootstrap CIs, overlay PNGs, leakage check."""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_lgg.engines.components import class_key, class_names
from monai_lgg.engines.distributed import all_gather_objects, world_size
from monai_lgg.engines.handlers import QuietStatsHandler, SafeCheckpointLoader, is_main_process, sidecar_path, unwrap
from monai_lgg.errors import LGGInputError, as_flag
from monai_lgg.io import atomic_path, read_json, safe_child, write_json
from monai_lgg.metrics import compute_slice_dice, slice_flags, summarize, volume_scores

__all__ = [
    "check_no_leakage",
    "PatientReport",
    "overlay",
    "class_overlay",
    "overlay_picture",
    "overlay_slices",
    "uncertainty_picture",
    "CLASS_COLOURS",
    "split_prefix",
    "EvaluationMetrics",
    "evaluation_handlers",
]

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "case",
    "dice",
    "iou",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "hd95",
    "slice_dice",
    "gt_voxels",
    "pred_voxels",
    "slices",
    "tumour_free_slices",
    "false_positive_slices",
)
EMPTY_RULES = (
    "3D scores per patient over all its slices. Empty ground truth and empty prediction score 1 (Dice, IoU, "
    "precision, recall, F1) and HD95 0; empty ground truth with any predicted voxel scores 0; HD95 with "
    "exactly one empty mask is NaN and excluded (counted in n_nan). Per-slice Dice pools every slice of "
    "every patient, empty-vs-empty slices scoring 1 and tumour-free slices with any prediction 0."
)
MULTICLASS_RULES = (
    "Multi-class: every score is computed per foreground class (class c against not c) with the rules "
    "above, a class absent from both masks of a patient scoring 1 (HD95 0), then averaged over the "
    "foreground classes (HD95 over the classes where it is defined); dice_<class> and iou_<class> give "
    "each class. Voxel counts, tumour-free and false-positive slices use the union of the foreground "
    "classes."
)
# BGR colours of classes 1, 2, ... in overlays (cycled): red, green, blue, yellow, magenta, cyan.
CLASS_COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0))
# Binary overlays: ground truth green, prediction red, both (blended) yellow.
TRUTH, PREDICTION, BOTH = (0, 255, 0), (0, 0, 255), (0, 255, 255)
# Overlay pictures narrower than this are enlarged (nearest neighbour, whole pixels) so that the caption fits.
MIN_PICTURE_WIDTH = 384
FONT, FONT_SCALE, LINE_HEIGHT = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 22


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
    record = read_json(sidecar)
    if not isinstance(record, dict) or "training_cases" not in record:
        logger.warning(f"{sidecar} records no training_cases: cannot verify that the evaluated patients were not used")
        return
    used = set(record.get("training_cases", [])) | set(record.get("validation_cases", []))
    overlap = sorted(used & {item["case"] for item in items})
    if overlap and not allow_overlap:
        raise LGGInputError(
            checkpoint,
            f"was trained or selected on {len(overlap)} of the evaluated patients ({', '.join(overlap[:5])}"
            f"{', ...' if len(overlap) > 5 else ''}): evaluate on its test fold instead",
        )
    if overlap:
        logger.warning(f"{checkpoint}: evaluating on {len(overlap)} patients it was trained or selected on")


def _grey(image: np.ndarray) -> np.ndarray:
    """A slice as a float32 BGR picture, 1st-99th percentile of its non-zero pixels stretched to 0..255."""
    grey = image.astype(np.float32)
    brain = grey != 0  # normalised images keep the background at exactly 0: show it black
    lo, hi = np.percentile(grey[brain], (1, 99)) if brain.any() else (0.0, 1.0)
    grey = (np.clip((grey - lo) / max(hi - lo, 1e-6) * 255, 0, 255) * brain).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR).astype(np.float32)


def _blend(out: np.ndarray, colour: np.ndarray) -> np.ndarray:
    drawn = colour.any(-1, keepdims=True)
    return np.where(drawn, 0.55 * out + 0.45 * colour, out).astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    """BGR overlay of one slice: grey FLAIR, ground truth green, prediction red (both: yellow)."""
    out = _grey(image)
    colour = np.zeros_like(out)
    if label is not None:
        colour[..., 1] = 255 * (label > 0)
    colour[..., 2] = 255 * (pred > 0)
    return _blend(out, colour)


def class_overlay(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    """BGR overlay of one slice with class-index maps, each class in its :data:`CLASS_COLOURS` colour.

    With a ``label`` the picture has two panels side by side, ground truth left and prediction right;
    without one, the prediction alone.
    """
    panels = []
    for labels in ([label] if label is not None else []) + [pred]:
        colour = np.zeros((*labels.shape, 3), dtype=np.float32)
        for c in np.unique(labels[labels > 0]).astype(int):
            colour[labels == c] = CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]
        panels.append(_blend(_grey(image), colour))
    return np.concatenate(panels, axis=1)


def _fitted(text: str, width: int) -> str:
    """``text`` cut (with ``...``) to fit ``width`` pixels in the caption font."""
    if cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", FONT, FONT_SCALE, 1)[0][0] > width:
        text = text[:-1]
    return text + "..."


def _caption(width: int, lines: Sequence[str], legend: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """A dark band holding text ``lines`` and a colour ``legend`` (swatch + name per entry), BGR uint8."""
    rows = [[(line, None)] for line in lines] + [[]]
    for name, colour in legend:  # legend entries flow onto new rows when a row is full
        used = sum(16 + cv2.getTextSize(n, FONT, FONT_SCALE, 1)[0][0] + 14 for n, _ in rows[-1])
        if rows[-1] and used + 16 + cv2.getTextSize(name, FONT, FONT_SCALE, 1)[0][0] > width - 16:
            rows.append([])
        rows[-1].append((name, colour))
    rows = [row for row in rows if row]
    band = np.full((8 + LINE_HEIGHT * len(rows), width, 3), 32, dtype=np.uint8)
    for i, row in enumerate(rows):
        x, baseline = 8, 4 + LINE_HEIGHT * (i + 1) - 6
        for text, colour in row:
            if colour is not None:
                cv2.rectangle(band, (x, baseline - 11), (x + 11, baseline), colour, thickness=-1)
                x += 16
            text = _fitted(text, width - x - 8)
            cv2.putText(band, text, (x, baseline), FONT, FONT_SCALE, (240, 240, 240), 1, cv2.LINE_AA)
            x += cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0] + 14
    return band


def overlay_picture(
    image: np.ndarray,
    label: np.ndarray | None,
    pred: np.ndarray,
    title: str,
    notes: Sequence[str] = (),
    multiclass: bool = False,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """One slice as a picture that explains itself: a caption band (title, notes, colour legend) above the overlay.

    Binary masks: ground truth green, prediction red, both yellow (:func:`overlay`). Class-index maps
    (``multiclass``): each class in its :data:`CLASS_COLOURS` colour, ground truth left and prediction
    right (:func:`class_overlay`). Slices narrower than :data:`MIN_PICTURE_WIDTH` are enlarged by a whole
    factor (nearest neighbour: every voxel stays a sharp square) so the caption is legible.

    Args:
        image: the slice drawn in grey (e.g. FLAIR), any range.
        label: ground truth (None: a prediction alone, as ``monai-lgg predict`` writes).
        pred: the prediction.
        title: first caption line (case and slice).
        notes: more caption lines (why this slice, scores, areas).
        multiclass: ``label`` / ``pred`` hold class indices.
        class_names: names of classes 0..K-1 for the legend (default ``class 1``, ...).

    Returns:
        a BGR uint8 picture.
    """
    if multiclass:
        body = class_overlay(image, label, pred)
        present = set(np.unique(pred).astype(int)) | (set(np.unique(label).astype(int)) if label is not None else set())
        classes = sorted(c for c in present if c > 0) or [1]
        legend = [
            (
                class_names[c] if class_names is not None and c < len(class_names) else f"class {c}",
                CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)],
            )
            for c in classes
        ]
        notes = [*notes, "left: ground truth, right: prediction"] if label is not None else list(notes)
    else:
        body = overlay(image, label, pred)
        legend = (
            [("ground truth", TRUTH), ("prediction", PREDICTION), ("both", BOTH)]
            if label is not None
            else [("predicted tumour", PREDICTION)]
        )
    factor = max(1, math.ceil(MIN_PICTURE_WIDTH / body.shape[1]))
    if factor > 1:
        body = cv2.resize(body, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return np.concatenate([_caption(body.shape[1], [title, *notes], legend), body], axis=0)


def overlay_slices(label: np.ndarray | None, pred: np.ndarray, count: int = 3) -> list[tuple[int, str]]:
    """The slices worth showing of a volume, each with the reason it was chosen, in slice order.

    In turn: the largest tumour; the largest false positive, preferring a tumour-free slice (without
    this slot a false positive would only be shown when it outgrew every tumour slice); the largest
    missed tumour area; then the next largest areas of tumour or prediction. A volume without either
    shows its middle slice. Without ``label`` (a prediction alone): the largest predicted areas.

    Args:
        label: ground truth ``(H, W, D)`` (class indices or binary), or None.
        pred: prediction ``(H, W, D)``.
        count: slices wanted (fewer when fewer differ).
    """
    depth = pred.shape[-1]
    fg_pred = (np.asarray(pred) > 0).reshape(-1, depth)
    fg_label = (np.asarray(label) > 0).reshape(-1, depth) if label is not None else np.zeros_like(fg_pred)
    false_positive = (fg_pred & ~fg_label).sum(0)
    on_tumour_free = false_positive * ~fg_label.any(0)
    ranked = [
        (fg_label.sum(0), "largest tumour"),
        (on_tumour_free, "false positive on a tumour-free slice")
        if on_tumour_free.any()
        else (false_positive, "largest false positive"),
        ((fg_label & ~fg_pred).sum(0), "largest missed tumour"),
    ]
    fill = ((fg_label | fg_pred).sum(0), "tumour or prediction" if label is not None else "predicted tumour")
    chosen: dict[int, str] = {}
    for areas, reason in [*ranked, fill]:
        for k in np.argsort(-areas, kind="stable"):
            if len(chosen) >= count or areas[k] == 0:
                break
            if int(k) not in chosen:
                chosen[int(k)] = reason
                if reason != fill[1]:  # one slice per reason, then the largest remaining areas
                    break
    if not chosen and count > 0:
        chosen[depth // 2] = "middle slice: no tumour, nothing predicted"
    return sorted(chosen.items())


# Uncertainty pictures: the heat map turns opaque from this many bits on (fainter below), on a fixed 0..1 bit scale.
HEAT_OPAQUE_BITS = 0.25


def _heat(uncertainty: np.ndarray) -> np.ndarray:
    """BGR float32 viridis colours of a ``[0, 1]`` map (fixed scale, so pictures of different cases compare)."""
    levels = (np.clip(uncertainty, 0, 1) * 255).round().astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS).astype(np.float32)


def _outline(picture: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Draw the 1-pixel outline of ``mask`` on ``picture`` (BGR uint8, same size)."""
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return cv2.drawContours(np.ascontiguousarray(picture), contours, -1, colour, thickness=1)


def _colour_bar(width: int, label: str) -> np.ndarray:
    """A band naming the heat map (left) beside its colour scale from 0 to 1 with ticks (right), BGR uint8."""
    band = np.full((40, width, 3), 32, dtype=np.uint8)
    small = FONT_SCALE * 0.9
    text = _fitted(label, width // 3)
    cv2.putText(band, text, (8, 19), FONT, small, (240, 240, 240), 1, cv2.LINE_AA)
    left = 8 + cv2.getTextSize(text, FONT, small, 1)[0][0] + 16
    right = width - 16
    ramp = np.linspace(0, 1, max(right - left, 2))[None].repeat(12, 0)
    band[8:20, left:right] = _heat(ramp).astype(np.uint8)
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = int(round(left + value * (right - left - 1)))
        cv2.line(band, (x, 20), (x, 24), (240, 240, 240), 1)
        tick = f"{value:g}"
        size = cv2.getTextSize(tick, FONT, small, 1)[0][0]
        cv2.putText(
            band,
            tick,
            (min(max(x - size // 2, left), width - size - 2), 36),
            FONT,
            small,
            (240, 240, 240),
            1,
            cv2.LINE_AA,
        )
    return band


def uncertainty_picture(
    image: np.ndarray,
    mask: np.ndarray,
    uncertainty: np.ndarray,
    title: str,
    notes: Sequence[str] = (),
    scale_label: str = "predictive entropy (bits)",
) -> np.ndarray:
    """One slice with its uncertainty, as a picture that explains itself.

    Left: the slice in grey with the predicted tumour's outline (red). Right: the uncertainty as a viridis heat
    map on a fixed 0..1 scale over the grey slice, transparent where the model is certain and opaque from
    :data:`HEAT_OPAQUE_BITS` on, with the same outline. Above: a caption (title, notes, legend); below: the colour
    scale. Slices narrower than :data:`MIN_PICTURE_WIDTH` are enlarged by a whole factor (nearest neighbour).

    Args:
        image: the slice drawn in grey (e.g. FLAIR), any range.
        mask: the predicted mask (foreground: > 0).
        uncertainty: the per-pixel uncertainty in ``[0, 1]`` (e.g. entropy in bits).
        title: first caption line (case and slice).
        notes: more caption lines (why this slice, the case's summaries).
        scale_label: the name of the uncertainty under the colour scale.

    Returns:
        a BGR uint8 picture.
    """
    factor = max(1, math.ceil(MIN_PICTURE_WIDTH / np.asarray(image).shape[1]))

    def enlarge(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        return cv2.resize(values, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST) if factor > 1 else values

    grey, heat_values, outline = _grey(enlarge(image)), enlarge(uncertainty), enlarge(mask) > 0
    alpha = (np.clip(heat_values / HEAT_OPAQUE_BITS, 0, 1) * 0.85)[..., None]
    heat = ((1 - alpha) * grey + alpha * _heat(heat_values)).astype(np.uint8)
    panels = [_outline(grey.astype(np.uint8), outline, PREDICTION), _outline(heat, outline, PREDICTION)]
    gap = np.full((grey.shape[0], 4, 3), 32, dtype=np.uint8)
    body = np.concatenate([panels[0], gap, panels[1]], axis=1)
    lines = [title, *notes, f"left: the slice; right: {scale_label}, heat map from 0 (clear) to 1 bit"]
    caption = _caption(body.shape[1], lines, [("predicted tumour (outline)", PREDICTION)])
    return np.concatenate([caption, body, _colour_bar(body.shape[1], scale_label)], axis=0)


def _slice_notes(label: np.ndarray, pred: np.ndarray, reason: str) -> list[str]:
    """Caption lines of an evaluation overlay: why it is shown, then its slice Dice and areas."""
    truth, predicted = int((label > 0).sum()), int((pred > 0).sum())
    both = int(((label > 0) & (pred > 0)).sum())
    dice = "n/a (both empty)" if truth + predicted == 0 else f"{2 * both / (truth + predicted):.2f}"
    return [reason, f"slice Dice {dice}: truth {truth} px, predicted {predicted} px"]


class PatientReport:
    """Score each evaluated patient volume and write the evaluation outputs.

    Writes into ``output_dir``: ``per_patient.csv`` (one row per patient), ``summary.json`` (mean,
    median, bootstrap 95 % CI of each score, pooled per-slice Dice, false-positive rates on
    tumour-free slices and patients, the empty-mask rules) and ``overlays/<case>_<slice>.png`` for
    the ``overlays`` slices per patient with the most tumour (ground truth or predicted).

    Multi-class outputs (one-hot ``pred`` and ``label`` with ``K > 1`` channels, from
    ``components.postprocessing``) are scored per foreground class with the same functions: the
    score columns hold the means over the foreground classes, and ``dice_<class>`` / ``iou_<class>``
    columns (also summarised in ``summary.json``) each class; overlays show ground truth and
    prediction side by side, each class in its colour (:func:`class_overlay`).

    Distributed evaluation (``multi_gpu_evaluate.json``): each rank scores its own whole patients and
    draws their overlays; at the end every rank's rows and per-slice scores are gathered, put back in
    the order of ``cases`` (the evaluated items' order, which one process follows), and rank 0 alone
    writes ``per_patient.csv`` and ``summary.json``, equal to those of one process.

    Args:
        output_dir: folder for the outputs.
        overlays: overlay slices per patient (0: none).
        image_channel: channel drawn under the overlay (1 = FLAIR).
        info: extra fields for ``summary.json`` (checkpoint, split, ...).
        class_names: names of the classes 0..K-1 for the per-class columns (default ``class1``, ...).
        cases: the evaluated patients in their data set's order; rows gathered from several ranks are
            written in this order (patients not in it follow, in rank order).
    """

    def __init__(
        self,
        output_dir: str | Path,
        overlays: int = 3,
        image_channel: int = 1,
        info: dict | None = None,
        class_names: Sequence[str] | None = None,
        cases: Sequence[str] | None = None,
    ) -> None:
        self.output_dir, self.overlays, self.image_channel = Path(output_dir), overlays, image_channel
        self.info = dict(info or {})
        self.class_names = list(class_names) if class_names is not None else None
        self.cases = [str(c) for c in cases] if cases is not None else None
        self.rows: list[dict] = []
        self.slice_dice: list[float] = []
        self.slice_fp: list[tuple[bool, bool]] = []
        # per row: its slices' share of slice_dice and slice_fp, so gathered rows can be put back in order
        self.row_slices: list[tuple[list[float], list[tuple[bool, bool]]]] = []
        self.class_columns: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(
            Events.STARTED,
            lambda _: self.__init__(
                self.output_dir, self.overlays, self.image_channel, self.info, self.class_names, self.cases
            ),
        )
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _names(self, num_classes: int) -> list[str]:
        names = self.class_names if self.class_names is not None and len(self.class_names) == num_classes else None
        return [class_key(n) for n in class_names(num_classes, names)]

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(engine.state.output)
        for item, source in zip(engine.state.output, batch, strict=False):
            pred = torch.as_tensor(item["pred"]).detach().cpu()
            label = torch.as_tensor(item["label"]).detach().cpu()
            case = str(source.get("case", item.get("case", f"case{len(self.rows)}")))
            first_slice = len(self.slice_dice)
            if pred.shape[0] == 1:
                pred_map, label_map = pred[0].numpy() > 0, label[0].numpy() > 0
                row = self._binary_scores(pred_map, label_map)
            else:  # one-hot K classes -> class-index maps
                pred_map, label_map = pred.argmax(0).numpy(), label.argmax(0).numpy()
                row = self._class_scores(pred_map, label_map, pred.shape[0])
            fg_pred, fg_label = pred_map > 0, label_map > 0
            pred_any, gt_any = slice_flags(fg_pred, fg_label)
            flags = list(zip(pred_any.tolist(), gt_any.tolist(), strict=True))
            self.slice_fp += flags
            self.row_slices.append((self.slice_dice[first_slice:], flags))
            self.rows.append(
                {
                    "case": case,
                    **row,
                    "gt_voxels": int(fg_label.sum()),
                    "pred_voxels": int(fg_pred.sum()),
                    "slices": int(fg_label.shape[-1]),
                    "tumour_free_slices": int((~gt_any).sum()),
                    "false_positive_slices": int((pred_any & ~gt_any).sum()),
                }
            )
            if self.overlays:
                image = torch.as_tensor(item["image"]).detach().cpu()
                channel = min(self.image_channel, image.shape[0] - 1)  # grey (1-channel) images have no FLAIR channel
                if tuple(image.shape[1:]) != tuple(label_map.shape):
                    # e.g. a preprocessing that resizes the image but scores on the label's grid: drawing one
                    # over the other would mislead, so say so instead of drawing
                    logger.warning(
                        f"{case}: image {tuple(image.shape[1:])} and masks {label_map.shape} are on different grids: "
                        "no overlay drawn"
                    )
                else:
                    self._write_overlays(case, image[channel].numpy(), label_map, pred_map)

    def _binary_scores(self, pred: np.ndarray, label: np.ndarray) -> dict:
        scores = volume_scores(pred, label)
        volumes = torch.as_tensor(pred)[None, None], torch.as_tensor(label)[None, None]
        per_slice = compute_slice_dice(*volumes)[:, 0].tolist()
        self.slice_dice += per_slice
        return {**{k: scores[k] for k in CSV_COLUMNS[1:8]}, "slice_dice": float(np.mean(per_slice))}

    def _class_scores(self, pred: np.ndarray, label: np.ndarray, num_classes: int) -> dict:
        """Scores of each foreground class (class c against the rest), their means, and per-class columns."""
        names = self._names(num_classes)
        classes = range(1, num_classes)
        scores = [volume_scores(pred == c, label == c) for c in classes]
        one_hot = [torch.as_tensor(np.stack([m == c for c in classes]))[None] for m in (pred, label)]
        per_slice = compute_slice_dice(*one_hot).mean(1).tolist()  # (slices, K-1) -> mean over the classes
        self.slice_dice += per_slice
        row = {k: float(np.mean([s[k] for s in scores])) for k in CSV_COLUMNS[1:7]}
        hd95 = [s["hd95"] for s in scores if not np.isnan(s["hd95"])]
        row["hd95"] = float(np.mean(hd95)) if hd95 else float("nan")
        row["slice_dice"] = float(np.mean(per_slice))
        for c, s in zip(classes, scores, strict=True):
            row[f"dice_{names[c]}"], row[f"iou_{names[c]}"] = s["dice"], s["iou"]
        self.class_columns = [f"{k}_{names[c]}" for c in classes for k in ("dice", "iou")]
        return row

    def _write_overlays(self, case: str, image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> None:
        multiclass = label.dtype != np.bool_
        depth = label.shape[-1]
        for k, reason in overlay_slices(label, pred, self.overlays):
            picture = overlay_picture(
                image[..., k],
                label[..., k],
                pred[..., k],
                f"{case}  slice {k + 1} of {depth}",
                _slice_notes(label[..., k], pred[..., k], reason),
                multiclass=multiclass,
                class_names=self.class_names,
            )
            with atomic_path(safe_child(self.output_dir / "overlays", f"{case}_{k + 1:03d}.png")) as tmp:
                cv2.imwrite(str(tmp), picture)

    def gather(self) -> None:
        """Collect every rank's rows and per-slice scores on every rank, in the order of ``cases``.

        A collective in distributed runs (every rank calls it, from :meth:`write`); nothing changes in one process.
        """
        if world_size() == 1:
            return
        shares = all_gather_objects((self.rows, self.row_slices, self.class_columns))
        records = [record for rows, slices, _ in shares for record in zip(rows, slices, strict=True)]
        position = {case: i for i, case in reversed(list(enumerate(self.cases or [])))}
        order = sorted(range(len(records)), key=lambda k: (position.get(records[k][0]["case"], len(position)), k))
        self.rows = [records[k][0] for k in order]
        self.row_slices = [records[k][1] for k in order]
        self.slice_dice = [score for dice, _ in self.row_slices for score in dice]
        self.slice_fp = [flag for _, flags in self.row_slices for flag in flags]
        self.class_columns = next((columns for _, _, columns in shares if columns), self.class_columns)

    def write(self, engine: Engine | None = None) -> dict:
        """Gather the ranks' rows (distributed runs) and write ``per_patient.csv`` and ``summary.json`` (rank 0).

        Returns:
            the summary (on every rank).
        """
        self.gather()
        columns = list(CSV_COLUMNS[:9]) + self.class_columns + list(CSV_COLUMNS[9:])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        flags = np.array(self.slice_fp, dtype=bool).reshape(-1, 2)
        tumour_free_patients = [r for r in self.rows if r["gt_voxels"] == 0]
        predicted_on_tumour_free = np.array([r["pred_voxels"] > 0 for r in tumour_free_patients], dtype=bool)
        pooled_dice = float(np.mean(self.slice_dice)) if self.slice_dice else float("nan")
        summary = {
            **self.info,
            "patients": len(self.rows),
            "per_patient": {k: summarize([r[k] for r in self.rows]) for k in columns[1 : 9 + len(self.class_columns)]},
            "pooled_slice_dice": {"mean": pooled_dice, "slices": len(self.slice_dice)},
            "false_positive_rate": {
                "tumour_free_slices": _rate(flags[:, 0] & ~flags[:, 1], ~flags[:, 1]),
                "tumour_free_patients": _rate(predicted_on_tumour_free, np.ones(len(tumour_free_patients), dtype=bool)),
            },
            "empty_mask_rules": EMPTY_RULES + (" " + MULTICLASS_RULES if self.class_columns else ""),
        }
        if not is_main_process():
            return summary
        with atomic_path(self.output_dir / "per_patient.csv") as tmp:
            tmp.write_text(buffer.getvalue())
        write_json(self.output_dir / "summary.json", summary)
        if self.rows:
            dice = summary["per_patient"]["dice"]
            split = self.info.get("split", "evaluated")
            logger.info(
                f"{split} patients: {len(self.rows)}, per-patient Dice mean {dice['mean']:.3f} "
                f"(median {dice['median']:.3f}); "
                f"per_patient.csv, summary.json and overlays/ in {self.output_dir}"
            )
        return summary


def _rate(hits: np.ndarray, population: np.ndarray) -> dict:
    n = int(population.sum())
    return {"rate": float(hits.sum() / n) if n else None, "false_positives": int(hits.sum()), "of": n}


def split_prefix(split: str | Path) -> str:
    """The metric-name prefix of an evaluated split (``test``, ``validation``, ...); ``eval`` for a datalist path."""
    split = str(split)
    return split if re.fullmatch(r"[A-Za-z]+", split) else "eval"


class EvaluationMetrics:
    """Attach the evaluator's metrics under the evaluated split's names (``test_mean_dice``, ``test_iou``, ...).

    The bundle's metric factories name them for validation (``val_mean_dice``); an evaluation of the
    test patients logged under those names reads as a validation score. ``evaluate.json`` therefore gives
    the evaluator no key metric (so nothing logs a "new best metric" for a single evaluation) and attaches
    the same metric objects here, renamed, before the stats handler that logs them.

    Args:
        metrics: ``{name: ignite metric}`` (the key metric and the additional metrics).
        split: the evaluated split (see :func:`split_prefix`).
    """

    def __init__(self, metrics: Mapping, split: str | Path = "test") -> None:
        prefix = split_prefix(split)
        self.metrics = {re.sub(r"^val_", f"{prefix}_", name): metric for name, metric in metrics.items()}

    def attach(self, engine: Engine) -> None:
        for name, metric in self.metrics.items():
            metric.attach(engine, name)


def evaluation_handlers(
    network: torch.nn.Module,
    checkpoint: str | Path,
    output_dir: str | Path,
    items: Sequence[dict],
    overlays: int = 3,
    allow_overlap: bool = False,
    info: dict | None = None,
    class_names: Sequence[str] | None = None,
    metrics: Mapping | None = None,
) -> list:
    """Handlers of ``evaluate.json``: load the checkpoint (``weights_only``), check leakage, scores, log, report.

    Args:
        network: the network to load the checkpoint into.
        checkpoint: the model file (``model.pt``) with its ``model.json`` record beside it.
        output_dir: where :class:`PatientReport` writes.
        items: the evaluated items (their patients are checked against the checkpoint's record).
        overlays: overlay pictures per patient.
        allow_overlap: evaluate patients the checkpoint was trained or selected on (with a warning).
        info: extra fields for ``summary.json``; its ``split`` names the logged metrics.
        class_names: names of the classes 0..K-1 for the per-class columns of a multi-class model.
        metrics: ``{val_name: metric}`` to log under the split's names (:class:`EvaluationMetrics`).

    Raises:
        LGGInputError: the checkpoint is missing, or was trained or selected on evaluated patients.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise LGGInputError(
            checkpoint,
            "checkpoint not found: train first with the same options (then evaluate finds the run's model), "
            "or pass --ckpt_path (e.g. the bundle's published models/model.pt)",
        )
    check_no_leakage(checkpoint, items, as_flag(allow_overlap, "allow_overlap"))
    split = (info or {}).get("split", "test")
    # every rank loads the weights, scores its patients and gathers the metrics (collectives); rank 0 logs
    return [
        SafeCheckpointLoader(load_path=str(checkpoint), load_dict={"model": unwrap(network)}, map_location="cpu"),
        *([EvaluationMetrics(metrics, split)] if metrics else []),
        *([QuietStatsHandler(iteration_log=False)] if is_main_process() else []),
        PatientReport(
            output_dir,
            overlays=overlays,
            info={"checkpoint": str(checkpoint), **(info or {})},
            class_names=class_names,
            cases=[str(item["case"]) for item in items if "case" in item],
        ),
    ]
