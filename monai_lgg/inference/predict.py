"""``monai-lgg predict``: segment slices or volumes with a bundle (or an ensemble) and write the results.

Outputs mirror the input form:

* slices: ``<out_dir>/<name>_mask.tif`` (or ``.png`` like the input), uint8 {0, 255}, in the input's
  folder structure (Kaggle naming: ``<case>_<n>.tif`` -> ``<case>_<n>_mask.tif``);
* volumes: ``<case>.nii.gz``, uint8 {0, 1} on the input's grid (its shape, affine and header), whatever
  the stored orientation: volumes are segmented in the model's frame (axial slices, :mod:`.orientation`) and
  every volume output is mapped back losslessly.

Optionally probability maps (``<name>_prob.tif`` / ``<case>_prob.nii.gz``, float32) and overlay PNGs
(``overlays/``); always ``<case>_tumour.csv`` (tumour area per slice, volume in voxels and mm³) and
``tumour_summary.csv`` (one row per case). For volumes the per-slice rows and the overlays follow the model's
axial slices (after reorientation, slice 1 the most inferior), not necessarily the stored array's last axis.

With ``uncertainty``: the predictive entropy of every voxel (``<name>_uncertainty.tif`` /
``<case>_uncertainty.nii.gz``, float32 bits in ``[0, 1]``, the mask's geometry), its mean inside the predicted
tumour and in a band around its border (and the mutual information over the ensemble members x flips) in both
tables, and ``overlays/<case>_uncertainty.png`` (:mod:`monai_lgg.inference.uncertainty`, docs/uncertainty.md).

A multi-class bundle (``out_channels = K > 1``) writes label maps instead of binary masks: slice masks hold
the class indices ``0 .. K-1`` as uint8 pixel values (not scaled: they look black in an image viewer; the
overlays show each class in colour), volumes uint8 ``0 .. K-1``; probability maps hold the K softmax
channels (TIFF pages ``(K, H, W)``, NIfTI ``(H, W, D, K)``); "tumour" counts are foreground (any class > 0)
and the per-slice table adds ``class<c>_pixels`` columns.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from monai_lgg.engines.performance import fast_default
from monai_lgg.errors import LGGInputError, OutputError
from monai_lgg.inference.formats import find_cases, format_of, load_case
from monai_lgg.inference.inputs import Case, input_error
from monai_lgg.inference.loading import load_members, resolve_device
from monai_lgg.inference.output_folder import CaseStage, OutputFolder
from monai_lgg.inference.predictor import Predictor, Uncertainty
from monai_lgg.inference.review import review_cells, review_score
from monai_lgg.inference.uncertainty import BORDER_WIDTH, UNCERTAINTY_COLUMNS, uncertainty_rows
from monai_lgg.inference.writers import tumour_rows, write_csv, write_overlay, write_uncertainty_overlay
from monai_lgg.networks.ensemble import ProbabilityEnsemble

__all__ = ["predict", "planned_outputs", "PredictFailures", "Shard", "FAILED_CSV", "SUMMARY_CSV"]

FLAIR = 1
SUMMARY_CSV = "tumour_summary.csv"
FAILED_CSV = "failed.csv"


class PredictFailures(LGGInputError):
    """Some cases could not be segmented; the others were written. ``rows``: the committed cases' summary rows,
    ``failures``: one ``{"case", "file", "problem"}`` per failed case (also in ``failed.csv``)."""

    exit_code = 1  # the run did work (unlike a usage error, 2), but not all of it

    def __init__(self, output: Path, rows: list[dict], failures: list[dict], total: int) -> None:
        first = failures[0]
        super().__init__(
            output / FAILED_CSV,
            f"{len(failures)} of {total} case(s) failed (first: {first['file']}: "
            f"{first['problem']}); the other cases were written",
        )
        self.rows, self.failures = rows, failures

    def __reduce__(self):
        return LGGInputError, (self.path, self.problem)


def planned_outputs(
    case: Case, probabilities: bool = False, uncertainty: bool = False, dicom_seg: bool = False
) -> list[Path]:
    """Output files of a case whose names do not depend on the prediction (overlays do)."""
    fmt = format_of(case)
    files = fmt.mask_files(case)
    files += fmt.seg_files(case) if dicom_seg else []
    files += fmt.map_files(case, "prob") if probabilities else []
    files += fmt.map_files(case, "uncertainty") if uncertainty else []
    files += [case.out_dir / "overlays" / f"{case.name}_uncertainty.png"] if uncertainty else []
    return files + [case.out_dir / f"{case.name}_tumour.csv"]


def _overlay_slices(mask: np.ndarray) -> list[int]:
    """Slices with predicted tumour, or the middle slice when there is none."""
    area = (mask > 0).reshape(-1, mask.shape[-1]).sum(0)
    return [int(k) for k in np.flatnonzero(area)] or [mask.shape[-1] // 2]


def _write_case(
    stage: CaseStage,
    case: Case,
    image: torch.Tensor,
    reference,
    probability: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    probabilities: bool,
    overlays: bool,
    out_channels: int = 1,
    uncertainty: Uncertainty | None = None,
    seg_algorithm: tuple[str, str] | None = None,
) -> dict:
    """Stage every output of one case and return its summary row (``uncertainty``: also its maps, columns, picture;
    ``seg_algorithm``: also its DICOM Segmentation, naming that model)."""
    multiclass, fmt = out_channels > 1, format_of(case)
    labels = fmt.slice_labels(case, mask.shape[-1])
    fmt.write_mask([stage.path(p) for p in fmt.mask_files(case)], mask, reference, multiclass)
    if seg_algorithm is not None:
        fmt.write_seg([stage.path(p) for p in fmt.seg_files(case)], mask, reference, seg_algorithm)
    if probabilities:  # multi-class: (K, H, W, D)
        fmt.write_map([stage.path(p) for p in fmt.map_files(case, "prob")], probability, reference, multiclass)
    if overlays:
        channel = min(FLAIR, image.shape[0] - 1)  # FLAIR for LGG; the one channel of grey images
        depth, pixel_mm2 = mask.shape[-1], float(spacing[0]) * float(spacing[1])
        for k in _overlay_slices(mask):
            pixels = int((mask[..., k] > 0).sum())
            position = f"slice {k + 1} of {depth}"
            area = f"predicted tumour: {pixels} px = {pixels * pixel_mm2:.1f} mm2" if pixels else "no tumour predicted"
            write_overlay(
                stage.path(case.out_dir / "overlays" / fmt.overlay_name(case, labels[k])),
                image[channel, ..., k].numpy(),
                mask[..., k],
                label_map=multiclass,
                title=fmt.overlay_title(case, labels[k], position),
                notes=[area],
            )
    columns = fmt.table_columns(case, reference)  # e.g. which sequences were given
    rows = [{**row, **columns} for row in tumour_rows(mask, spacing, labels, num_classes=max(2, out_channels))]
    extra: dict = {}
    if uncertainty is not None:
        rows = _write_uncertainty(stage, case, image, reference, mask, uncertainty, labels, rows)
        extra = {**{k: rows[-1][k] for k in UNCERTAINTY_COLUMNS}, "uncertainty_passes": uncertainty.passes}
    write_csv(stage.path(case.out_dir / f"{case.name}_tumour.csv"), rows)
    return {
        "case": case.name,
        "input": fmt.input_name(case),
        "output": fmt.output_name(stage.root, case),
        **columns,
        "slices": int(mask.shape[-1]),
        "tumour_slices": sum(1 for r in rows[:-1] if r["tumour_pixels"]),
        "tumour_voxels": rows[-1]["tumour_pixels"],
        "tumour_volume_mm3": rows[-1]["tumour_volume_mm3"],
        **extra,
    }


def _write_uncertainty(
    stage: CaseStage,
    case: Case,
    image: torch.Tensor,
    reference,
    mask: np.ndarray,
    uncertainty: Uncertainty,
    labels: Sequence[int | str],
    rows: list[dict],
) -> list[dict]:
    """Stage a case's entropy map(s) and uncertainty picture; return its tumour rows with the uncertainty columns."""
    entropy_map = uncertainty.entropy.numpy()
    information = None if uncertainty.mutual_information is None else uncertainty.mutual_information.numpy()
    fmt = format_of(case)
    fmt.write_map([stage.path(p) for p in fmt.map_files(case, "uncertainty")], entropy_map, reference, False)
    rows = [{**row, **extra} for row, extra in zip(rows, uncertainty_rows(mask, entropy_map, information), strict=True)]
    k = int(np.argmax(entropy_map.reshape(-1, entropy_map.shape[-1]).sum(0)))  # where the model doubts most
    case_row, pixels = rows[-1], int((mask[..., k] > 0).sum())

    def bits(value: float | str) -> str:
        return "n/a" if value == "" else f"{value:.3f}"

    notes = [
        f"slice with the most uncertainty (sum of entropy); predicted tumour {pixels} px",
        f"case mean entropy: {bits(case_row['entropy_tumour'])} bits in the tumour, "
        f"{bits(case_row['entropy_border'])} within {BORDER_WIDTH} px of its border",
        f"mutual information over {uncertainty.passes} passes: {bits(case_row['mutual_info_tumour'])} tumour, "
        f"{bits(case_row['mutual_info_border'])} border"
        if information is not None
        else "1 pass (one network, no TTA): no mutual information",
    ]
    channel = min(FLAIR, image.shape[0] - 1)
    position = f"slice {k + 1} of {mask.shape[-1]}"
    title = fmt.overlay_title(case, labels[k], position)
    write_uncertainty_overlay(
        stage.path(case.out_dir / "overlays" / f"{case.name}_uncertainty.png"),
        image[channel, ..., k].numpy(),
        mask[..., k],
        entropy_map[..., k],
        title,
        notes,
    )
    return rows


def _spacing(case: Case, reference, spacing: Sequence[float] | None) -> tuple[float, float, float]:
    if spacing is not None:
        if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise LGGInputError(
                None, f"spacing must be three positive numbers (row, column, slice) in mm, got {list(spacing)}"
            )
        return tuple(float(s) for s in spacing)  # type: ignore[return-value]
    if reference is not None:  # along the model's axes, as the tables count slices
        return reference.spacing
    return (1.0, 1.0, 1.0)


def predict(
    source: str | Path | Mapping[str, str | Path],
    output: str | Path,
    bundle: str | Path = "unet",
    checkpoint: str | Path | None = None,
    ensemble: Sequence[str | Path] = (),
    device: str | torch.device | None = "auto",
    batch_size: int = 8,
    threshold: float | None = None,
    tta: bool | None = None,
    largest_component: bool = False,
    probabilities: bool = False,
    overlays: bool = False,
    spatial_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    overlap: float = 0.25,
    precision: str = "auto",
    channels_last: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
    min_component_fraction: float | None = None,
    uncertainty: bool = False,
    resume: bool = False,
    fail_fast: bool = False,
    wait: bool = False,
    num_parts: int | None = None,
    part_id: int | None = None,
    dicom_seg: bool = False,
) -> list[dict]:
    """Segment every case of ``source`` and write the results under the folder ``output``.

    Args:
        source: a slice image, a folder of slices (Kaggle layout), a NIfTI volume (or one of its
            ``_000x`` modality files), a folder of volumes or a converted data set; or one case's sequences as
            separate files, ``{"flair": ..., "t1": ..., "t1c": ...}``
            (:class:`~monai_lgg.inference.formats.SequenceFiles`; a DICOM series folder each); or a folder of
            DICOM files, one case per study (:class:`~monai_lgg.inference.formats.DicomSeries`).
        output: output folder (created; existing outputs are replaced only with ``overwrite``).
        bundle: bundle folder, bundle zip or project bundle name.
        checkpoint: weights of ``bundle`` (default ``<bundle>/models/model.pt``).
        ensemble: further bundles or checkpoints whose probabilities are averaged with ``bundle``'s.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``...
        batch_size: 2D windows per forward pass.
        threshold: probability threshold (default: the bundle's, 0.5).
        tta: average with the left-right flipped image (``None``: the bundle's default, on for the UNet).
        largest_component: keep the largest 3D connected component of each case.
        min_component_fraction: drop 3D components smaller than this fraction of the largest (``None``: the
            bundle's default, chosen on training-side validation; 0 keeps all).
        probabilities: also write probability maps.
        overlays: also write overlay PNGs of the slices with tumour.
        spatial_size: the bundle's training patch size, if it was trained with another one.
        spacing: (row, column, slice) mm for the tumour table of slice inputs (default 1 mm; NIfTI: header).
        overlap: sliding-window overlap for slices larger than the patch size.
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 on CUDA and on CPUs with native bfloat16, else fp32):
            about 2x faster; on 6 real patients the masks agreed with fp32 to a Dice of 0.9995 or more and the
            probabilities to within 0.014 (docs/cli.md).
        channels_last: channels-last memory format (``None``: with bf16, where it is faster for the UNet).
        overwrite: replace existing output files.
        progress: show a progress bar.
        uncertainty: also write each case's per-voxel predictive entropy (``<name>_uncertainty.tif`` /
            ``<case>_uncertainty.nii.gz``, float32 bits in [0, 1]), its mean in the predicted tumour and in a
            band of :data:`~monai_lgg.inference.uncertainty.BORDER_WIDTH` pixels either side of its border
            (``entropy_*`` columns) with the mutual information over ensemble members x flips (``mutual_info_*``,
            blank with one pass) in both tables, and ``overlays/<case>_uncertainty.png``. Masks and probabilities
            are the same as without it.
        resume: continue an interrupted run into ``output``: skip the cases it committed, redo the others
            (``--continue``).
        fail_fast: stop at the first case that fails instead of going on with the others.
        wait: wait for another run writing into ``output`` instead of refusing.
        num_parts: split the cases into this many parts (a SLURM array, an indexed Kubernetes job, several
            machines) and segment only part ``part_id`` (0-based); parts may share ``output``. Under ``torchrun``
            both default to ``WORLD_SIZE`` and ``RANK``, each rank takes its own GPU, and rank 0 writes the run's
            tables when all parts are done. Otherwise each part writes ``tumour_summary.part-K-of-N.csv``; a
            final ``resume`` run without parts writes the whole run's tables (see :class:`Shard`).
        part_id: which part this process segments.
        dicom_seg: also write each DICOM case's mask as a DICOM Segmentation ``<case>_seg.dcm`` referencing its
            FLAIR series (binary, one segment; DICOM inputs only).

    Each case is committed on its own (:class:`~monai_lgg.inference.output_folder.OutputFolder`): its files appear
    together or not at all, and a case that fails is listed in ``failed.csv`` (case, file, problem) while the run
    goes on with the others.

    Returns:
        one summary row per committed case (also written to ``tumour_summary.csv``).

    Raises:
        LGGInputError: bad input, bundle, checkpoint or option, found before any case is segmented; nothing is
            written then.
        PredictFailures: some cases failed (after the others were written; ``failed.csv`` lists them).
        OutputError: the output folder cannot be written (disk full, read-only); committed cases stay.
    """
    all_cases = find_cases(source)
    if dicom_seg:
        _check_dicom_seg(source, all_cases)
    shard = Shard.of(num_parts, part_id)
    cases = all_cases[shard.part_id :: shard.num_parts]
    tables = shard.table_names()
    with OutputFolder(output, overwrite=overwrite, resume=resume, wait=wait, part=shard.label) as folder:
        done = {_case_id(c): row for c in cases if resume and (row := folder.completed(_case_id(c)))}
        todo = [case for case in cases if _case_id(case) not in done]
        folder.check_free((_case_id(c), planned_outputs(c, probabilities, uncertainty, dicom_seg)) for c in todo)
        folder.check_free([("", tables)] if not resume else [])
        torch_device = resolve_device(device)
        if device in (None, "auto"):
            torch_device = shard.device(torch_device)
        if precision == "auto":  # bf16 matches fp32 here (see the docstring); it halves the CPU latency
            precision = fast_default("precision", torch_device)
        if channels_last is None:
            channels_last = precision == "bf16"
        networks, info = load_members(bundle, checkpoint, ensemble, spatial_size, torch_device) if todo else ([], None)
        predictor = (
            None
            if info is None
            else Predictor(
                networks,
                info.spatial_size,
                torch_device,
                batch_size,
                overlap,
                info.tta if tta is None else bool(tta),
                info.threshold if threshold is None else threshold,
                largest_component,
                precision,
                channels_last,
                out_channels=info.out_channels,
                geometry=info.geometry,
                # brain geometry: raw inputs, cropped then normalised by the predictor; patch: normalised on loading
                normalization=info.normalization if info.geometry == "brain" else "none",
                context_slices=info.context_slices,
                min_component_fraction=(
                    info.min_component_fraction if min_component_fraction is None else min_component_fraction
                ),
            )
        )
        review = (
            None
            if info is None
            else _review_threshold(
                info,
                networks,
                checkpoint is None and not ensemble,
                (threshold, tta, min_component_fraction, largest_component) == (None, None, None, False),
            )
        )
        failures: list[dict] = []
        with tqdm(
            total=sum(c.num_files for c in todo), desc="predict", unit="file", disable=not progress, file=sys.stderr
        ) as bar:
            for case in todo:
                try:
                    with folder.case(_case_id(case)) as stage:
                        stage.row = _predict_case(
                            stage,
                            case,
                            predictor,
                            info,
                            spacing,
                            probabilities,
                            overlays,
                            uncertainty,
                            review,
                            dicom_seg,
                        )
                    done[_case_id(case)] = stage.row
                except (OutputError, KeyboardInterrupt):
                    raise  # the folder cannot be written, or the user stopped: no case can succeed
                except Exception as err:
                    failure = _failure(case, err)
                    if fail_fast or len(cases) == 1:  # one input: its own one-line error, nothing written
                        raise input_error(failure["file"], err, "input") from None
                    failures.append(failure)
                    print(f"monai-lgg: {case.name} failed: {failure['file']}: {failure['problem']}", file=sys.stderr)
                bar.update(case.num_files)
        summary = [done[_case_id(case)] for case in cases if _case_id(case) in done]
        folder.write_table(tables[0], summary)
        folder.write_table(tables[1], failures)
        if shard.num_parts == 1:  # the whole run's tables replace those of the parts that ran before it
            for table in folder.root.glob("*.part-*-of-*.csv"):
                table.unlink()
    if shard.torchrun:  # every rank has committed its part: rank 0 writes the run's tables, as one process would
        summary, failures = shard.merge(lambda: _merge_parts(Path(output), all_cases, shard.num_parts))
        cases = all_cases
    if failures:
        raise PredictFailures(Path(output), summary, failures, len(cases))
    return summary


def _check_dicom_seg(source: str | Path, cases: Sequence[Case]) -> None:
    """``dicom_seg`` needs DICOM cases (the SEG references the source series).

    Raises:
        LGGInputError: naming the first case that is not DICOM.
    """
    for case in cases:
        if not hasattr(format_of(case), "seg_files"):
            raise LGGInputError(
                case.files[0],
                f"--dicom_seg writes DICOM Segmentations of DICOM series, and this input is "
                f"{format_of(case).name}; give a folder of DICOM files, or leave --dicom_seg out",
            )


def _seg_algorithm(info) -> tuple[str, str]:
    """``(name, version)`` of the bundle, for the SEG's algorithm identification."""
    import json

    try:
        version = str(json.loads((info.root / "configs" / "metadata.json").read_text()).get("version", ""))
    except (OSError, ValueError, AttributeError):
        version = ""
    return str(info.name), version or "unknown"


def _merge_parts(output: Path, cases: list[Case], num_parts: int) -> tuple[list[dict], list[dict]]:
    """The tables of a run whose parts have all finished: every committed case's row and every part's failures,
    in the order of the cases, written as one run writes them; the parts' own tables are removed."""
    import csv

    with OutputFolder(output, resume=True) as folder:
        summary = [row for case in cases if (row := folder.completed(_case_id(case)))]
        order = {case.name: k for k, case in enumerate(cases)}
        failures = []
        for k in range(num_parts):
            table = folder.root / Shard(num_parts, k).table_names()[1]
            if table.is_file():
                with open(table, newline="") as f:
                    failures += list(csv.DictReader(f))
        failures.sort(key=lambda row: order.get(row["case"], len(order)))
        folder.write_table(SUMMARY_CSV, summary)
        folder.write_table(FAILED_CSV, failures)
        for table in folder.root.glob("*.part-*-of-*.csv"):
            table.unlink()
    return summary, failures


@dataclass(frozen=True)
class Shard:
    """Which part of the cases one process segments: every ``num_parts``-th case from ``part_id`` (the cases are
    sorted by :func:`find_cases`, so every process of a run splits them the same way)."""

    num_parts: int = 1
    part_id: int = 0
    torchrun: bool = False

    @classmethod
    def of(cls, num_parts: int | None, part_id: int | None) -> Shard:
        """From the options, or from torchrun's ``WORLD_SIZE`` / ``RANK`` when neither is given."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if num_parts is None and part_id is None and world > 1:
            return cls(world, int(os.environ.get("RANK", "0")), torchrun=True)
        parts, part = int(num_parts or 1), int(part_id or 0)
        if parts < 1 or not 0 <= part < parts:
            raise LGGInputError(None, f"--part_id must be 0 to {parts - 1} with --num_parts {parts}, got {part}")
        return cls(parts, part)

    @property
    def label(self) -> str:
        return "" if self.num_parts == 1 else f"part-{self.part_id}-of-{self.num_parts}"

    def table_names(self) -> tuple[str, str]:
        """The summary and failure tables this process writes."""
        if self.num_parts == 1:
            return SUMMARY_CSV, FAILED_CSV
        return tuple(name.replace(".csv", f".{self.label}.csv") for name in (SUMMARY_CSV, FAILED_CSV))

    def device(self, device: torch.device) -> torch.device:
        """Under torchrun, one GPU per rank (``LOCAL_RANK``)."""
        if self.torchrun and device.type == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def merge(self, write_tables):
        """Wait for every rank, let rank 0 ``write_tables()``, and give every rank its result."""
        import torch.distributed as dist

        from monai_lgg.engines.distributed import init_distributed

        init_distributed()
        dist.barrier()
        result = [write_tables() if self.part_id == 0 else None]
        dist.broadcast_object_list(result, src=0)
        return result[0]


def _case_id(case: Case) -> str:
    """A case's identity in the output folder (its sub-folder and name)."""
    return str(case.out_dir / case.name)


def _failure(case: Case, err: BaseException) -> dict:
    """The ``failed.csv`` row of a case: the file and the one-line problem."""
    found = input_error(case.files[0], err, "input")
    return {"case": case.name, "file": found.path or str(case.files[0]), "problem": found.problem}


def _predict_case(
    stage: CaseStage,
    case: Case,
    predictor: Predictor,
    info,
    spacing: Sequence[float] | None,
    probabilities: bool,
    overlays: bool,
    uncertainty: bool,
    review: float | None = None,
    dicom_seg: bool = False,
) -> dict:
    """Load, segment and stage one case; return its summary row (``review``: with the review columns)."""
    raw = info.geometry == "brain"
    image, reference = load_case(case, info.image_channels, "none" if raw else info.normalization)
    cells: dict = {}
    if uncertainty:  # the same probability and mask, with the passes' spread kept
        spread = predictor.uncertainty(image)
        probability, mask = spread.probability.numpy(), predictor.mask(spread.probability).numpy()
    else:
        spread = None
        if review is not None:  # the same probability, with each member's kept for the review score
            mean, members = predictor.member_probabilities(image)
            probability, mask = mean.numpy(), predictor.mask(mean).numpy()
        else:
            probability, mask = (t.numpy() for t in predictor(image))
    if review is not None:
        if uncertainty:
            members = predictor.member_probabilities(image)[1]
        cells = review_cells(review_score(members, predictor.mask), review)
    row = _write_case(
        stage,
        case,
        image,
        reference,
        probability,
        mask,
        _spacing(case, reference, spacing),
        probabilities,
        overlays,
        info.out_channels,
        spread,
        _seg_algorithm(info) if dicom_seg else None,
    )
    return {**row, **cells}


def _review_threshold(info, networks: Sequence[torch.nn.Module], shipped_model: bool, own_rule: bool) -> float | None:
    """The calibrated ``needs_review`` threshold when it applies to this run, else None (no review columns).

    It applies to the bundle's shipped model (no ``checkpoint``, no extra ``ensemble``) when that is an ensemble of
    binary fold models and the masks use its own rule (threshold, flips, post-processing): the conditions under
    which the threshold was chosen (:mod:`monai_lgg.studies.review_calibration`).
    """
    members = sum(len(n.members) if isinstance(n, ProbabilityEnsemble) else 1 for n in networks)
    usable = shipped_model and own_rule and info.out_channels == 1 and members >= 2
    return info.review_threshold if usable else None
