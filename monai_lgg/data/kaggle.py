"""Kaggle ``lgg-mri-segmentation`` (``kaggle_3m``) layout: scan, validate, read and convert to NIfTI.

Layout: ``<root>/TCGA_<inst>_<pid>_<date>/TCGA_<inst>_<pid>_<date>_<n>.tif`` (256x256x3 uint8:
pre-contrast, FLAIR, post-contrast) and ``..._<n>_mask.tif`` (256x256 uint8 {0, 255}); ``<n>`` is a
1-based slice number, sorted numerically. The conversion writes one NIfTI per patient and modality in
nnU-Net/MSD style, plus ``dataset.json``, a MONAI datalist with patient-level folds and a report.

Geometry: voxel ``[i, j, k]`` of a converted volume is pixel ``[row i, column j]`` of slice ``k + 1``,
so every slice of the volume equals its TIFF without any transpose. Slice 1 is the most inferior
slice (checked by eye on the released data), rows run anterior to posterior and columns run from the
patient's right to left (radiological display), so the affine maps ``i -> -y`` (posterior),
``j -> -x`` (left), ``k -> +z`` (superior): orientation code ``PLS``, centred on the origin.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_lgg.data.naming import channel_file_name, file_stem, split_mask_slice, split_slice
from monai_lgg.errors import DataProblem, LGGInputError
from monai_lgg.imaging.channels import CHANNEL_NAMES  # re-exported: the public name
from monai_lgg.imaging.orientation import kaggle_affine  # re-exported
from monai_lgg.imaging.tiff import read_tiff, read_tiff_header  # re-exported
from monai_lgg.io import atomic_dir, atomic_path, safe_child, write_json

__all__ = [
    "CHANNEL_NAMES",
    "KaggleSlice",
    "KaggleCase",
    "ConversionResult",
    "find_kaggle_root",
    "scan_kaggle",
    "read_tiff",
    "read_tiff_header",
    "read_case",
    "failed_cases",
    "kaggle_affine",
    "read_clinical_csv",
    "convert_kaggle",
    "save_nifti",
    "check_output_folder",
    "write_conversion",
    "conversion_report",
]

CASE_PATTERN = re.compile(r"^TCGA_(?P<institution>[A-Z0-9]{2})_(?P<patient>[A-Z0-9]{4})_(?P<date>\d{8})$")
OUTPUT_MARKER = "monai_lgg.data.kaggle.convert_kaggle"


@dataclass
class KaggleSlice:
    """One slice number of a case with its image and mask files (either may be missing)."""

    number: int
    image: Path | None = None
    mask: Path | None = None


@dataclass
class KaggleCase:
    """A patient folder: ``case_id`` is the folder name, slices sorted by number."""

    case_id: str
    folder: Path
    slices: list[KaggleSlice] = field(default_factory=list)

    @property
    def institution(self) -> str:
        match = CASE_PATTERN.match(self.case_id)
        return match["institution"] if match else "unknown"

    @property
    def patient(self) -> str:
        """``TCGA_<inst>_<pid>``, the key used by ``data.csv``."""
        return "_".join(self.case_id.split("_")[:3])


@dataclass
class ConversionResult:
    """What :func:`convert_kaggle` did: the report written beside the outputs, and where."""

    output: Path | None
    report: dict

    @property
    def ok(self) -> bool:
        return self.output is not None


def _holds_cases(folder: Path) -> bool:
    """True when some sub-folder of ``folder`` holds .tif slices."""
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    return any(
        child.is_dir() and any(p.suffix.lower() in (".tif", ".tiff") for p in child.iterdir())
        for child in folder.iterdir()
    )


def find_kaggle_root(source: str | Path) -> tuple[Path, list[DataProblem]]:
    """Locate the folder holding the patient folders.

    ``source`` may be the ``kaggle_3m`` folder itself or the root of the unpacked Kaggle zip, which
    holds the whole set twice (``kaggle_3m/`` and ``lgg-mri-segmentation/kaggle_3m/``): the shallowest
    copy is used and the other reported, so no patient is counted twice.

    Returns:
        the root folder and warnings about ignored copies.
    """
    source = Path(source)
    if not source.exists():
        raise LGGInputError(source, "does not exist")
    if source.is_file():
        hint = " (unpack the Kaggle zip first)" if source.suffix.lower() == ".zip" else ""
        raise LGGInputError(source, f"is a file, expected the kaggle_3m folder{hint}")
    candidates = [source] if _holds_cases(source) else []
    for depth in (1, 2, 3):
        candidates += [p for p in sorted(source.glob("/".join(["*"] * depth))) if _holds_cases(p)]
    if not candidates:
        raise LGGInputError(source, "contains no patient folders with .tif slices (expected the kaggle_3m layout)")
    root = candidates[0]  # the shallowest copy; the zip's nested second copy is reported, never read
    warnings = [
        DataProblem(c, f"duplicate copy of the data set ignored (using {root})", fatal=False) for c in candidates[1:]
    ]
    return root, warnings


def scan_kaggle(root: str | Path) -> tuple[list[KaggleCase], list[DataProblem]]:
    """List cases and pair slices by name, without reading pixels.

    Problems found: folders or files that do not follow the naming scheme, unpaired image or mask,
    duplicate or missing slice numbers.
    """
    root = Path(root)
    cases: list[KaggleCase] = []
    problems: list[DataProblem] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        tifs = [p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff")]
        if not tifs:
            problems.append(DataProblem(folder, "folder has no .tif slices", fatal=folder.name.startswith("TCGA_")))
            continue
        if not CASE_PATTERN.match(folder.name):
            problems.append(DataProblem(folder, "folder name does not follow TCGA_<inst>_<pid>_<date>"))
            continue
        case = KaggleCase(folder.name, folder)
        by_number: dict[int, KaggleSlice] = {}
        for path in sorted(tifs):
            mask = split_mask_slice(file_stem(path))  # the input forms' slice and mask names
            slice_case, number = mask or split_slice(file_stem(path))
            if number is None or slice_case != folder.name:
                problems.append(DataProblem(path, f"file name does not follow {folder.name}_<n>[_mask].tif"))
                continue
            item = by_number.setdefault(number, KaggleSlice(number))
            kind = "mask" if mask else "image"
            if getattr(item, kind) is not None:
                problems.append(DataProblem(path, f"duplicate slice number {number} (also {getattr(item, kind).name})"))
                continue
            setattr(item, kind, path)
        case.slices = [by_number[n] for n in sorted(by_number)]
        for item in case.slices:
            if item.image is None:
                problems.append(DataProblem(item.mask, "mask without image"))
            elif item.mask is None:
                problems.append(DataProblem(item.image, "image without mask"))
        numbers = [s.number for s in case.slices]
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers)) if numbers else []
        if missing:
            problems.append(DataProblem(folder, f"gap in slice numbers: missing {_ranges(missing)}"))
        cases.append(case)
    return cases, problems


def _ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``'1-3, 7'``."""
    parts, start = [], numbers[0]
    for prev, cur in zip(numbers, list(numbers[1:]) + [None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = cur
    return ", ".join(parts)


def _check_image(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype != np.uint8:
        raise DataProblem(path, f"image dtype is {dtype}, expected uint8")
    if len(shape) != 3 or shape[-1] != 3:
        raise DataProblem(path, f"image shape is {shape}, expected (rows, columns, 3)")


def _binary_mask(path: Path, mask: np.ndarray, image_shape: tuple[int, ...], binarize: bool) -> np.ndarray:
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise DataProblem(path, f"mask dtype is {mask.dtype}, expected uint8")
    if mask.shape != image_shape[:2]:
        raise DataProblem(path, f"mask shape {mask.shape} differs from image shape {image_shape[:2]}")
    values = np.unique(mask)
    if not np.isin(values, (0, 255)).all():
        if not binarize:
            raise DataProblem(
                path, f"mask values {values.tolist()[:8]} are not in {{0, 255}} (use binarize to threshold at 128)"
            )
        return (mask >= 128).astype(np.uint8)
    return (mask == 255).astype(np.uint8)


def read_case(
    case: KaggleCase, binarize: bool = False, images: bool = True
) -> tuple[np.ndarray | None, np.ndarray, list[DataProblem]]:
    """Read and validate all slices of a case.

    Args:
        case: the case.
        binarize: threshold masks with values outside {0, 255} at 128 (with a warning) instead of failing.
        images: decode the images; ``False`` checks them from their headers only (shape, dtype), which
            is enough to validate a case before loading it elsewhere, and returns ``image = None``.

    Returns:
        ``image`` (rows, columns, slices, 3) uint8, ``label`` (rows, columns, slices) uint8 {0, 1}, and
        non-fatal warnings (binarised masks).

    Raises:
        DataProblem: the first fatal problem (unreadable file, wrong shape, dtype, channels or values,
            mixed sizes inside the case).
    """
    stack, labels, warnings = [], [], []
    case_shape: tuple[int, ...] | None = None
    for item in case.slices:
        if item.image is None or item.mask is None:
            raise DataProblem(item.image or item.mask, "unpaired slice")
        if images:
            image = read_tiff(item.image)
            shape, dtype = image.shape, image.dtype
        else:
            shape, dtype = read_tiff_header(item.image)
        _check_image(item.image, shape, dtype)
        raw_mask = read_tiff(item.mask)
        label = _binary_mask(item.mask, raw_mask, shape, binarize)
        if binarize and not np.isin(np.unique(raw_mask), (0, 255)).all():
            warnings.append(DataProblem(item.mask, "mask values outside {0, 255} binarised at 128", fatal=False))
        if case_shape is not None and shape != case_shape:
            raise DataProblem(item.image, f"slice size {shape} differs from the case's {case_shape}")
        case_shape = shape
        if images:
            stack.append(image)
        labels.append(label)
    if not labels:
        raise DataProblem(case.folder, "case has no slices")
    return (np.stack(stack, axis=2) if images else None), np.stack(labels, axis=2), warnings


def failed_cases(root: str | Path, problems: Sequence[DataProblem]) -> set[str]:
    """Names of the top-level folders of ``root`` that hold a fatal problem (the items to skip).

    A folder is skipped whole when anything in it is wrong (an unpaired, misnamed or unreadable
    file), and a folder whose name breaks the TCGA pattern is named too, so the skip list shows
    every folder that was left out.
    """
    root = Path(root)
    names = set()
    for problem in problems:
        if not problem.fatal or problem.path is None:
            continue
        try:
            parts = Path(problem.path).relative_to(root).parts
        except ValueError:
            continue
        if parts:
            names.add(parts[0])
    return names


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``.nii.gz`` atomically with a fixed gzip timestamp, so re-runs give identical bytes."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def read_clinical_csv(path: str | Path) -> dict[str, dict]:
    """Read ``data.csv`` (comma- or semicolon-separated, as in the two copies of the Kaggle zip).

    Returns:
        ``{patient: {column: int | float | str | None}}`` keyed by ``TCGA_<inst>_<pid>``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise LGGInputError(path, f"cannot read clinical table ({err})") from None
    delimiter = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or "Patient" not in rows[0]:
        raise LGGInputError(path, "clinical table has no 'Patient' column")

    def parse(value: str | None) -> int | float | str | None:
        if value is None or value.strip() in ("", "NA", "NaN"):
            return None
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value.strip()

    return {row["Patient"].strip(): {k: parse(v) for k, v in row.items() if k != "Patient"} for row in rows}


def _convert_case(
    case: KaggleCase, images_dir: Path, labels_dir: Path, spacing: Sequence[float], binarize: bool
) -> tuple[dict | None, list[DataProblem]]:
    """Read, validate and write one case; return its summary (None when it failed) and its problems."""
    try:
        image, label, warnings = read_case(case, binarize=binarize)
    except DataProblem as problem:
        return None, [problem]
    affine = kaggle_affine(label.shape, spacing)
    # a failed write (disk full) raises OutputError: it stops the whole conversion, even with skip_bad
    for channel in range(image.shape[-1]):
        target = safe_child(images_dir, channel_file_name(case.case_id, channel))
        save_nifti(np.ascontiguousarray(image[..., channel]), affine, target)
    save_nifti(label, affine, safe_child(labels_dir, f"{case.case_id}.nii.gz"))
    positive = label.reshape(-1, label.shape[2]).any(axis=0)
    summary = {
        "case": case.case_id,
        "institution": case.institution,
        "shape": list(label.shape),
        "num_slices": int(label.shape[2]),
        "positive_slices": int(positive.sum()),
        "tumour_voxels": int(label.sum()),
    }
    return summary, warnings


def convert_kaggle(
    source: str | Path,
    output: str | Path,
    clinical_csv: str | Path | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    num_folds: int = 5,
    seed: int = 0,
    skip_bad: bool = False,
    binarize: bool = False,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert a Kaggle ``kaggle_3m`` folder into per-patient NIfTI volumes, ``dataset.json`` and folds.

    Output (written under a temporary name, then renamed into ``output``)::

        imagesTr/<case>_0000.nii.gz   pre-contrast   (uint8, rows x columns x slices)
        imagesTr/<case>_0001.nii.gz   FLAIR
        imagesTr/<case>_0002.nii.gz   post-contrast
        labelsTr/<case>.nii.gz        tumour mask, uint8 {0, 1}
        dataset.json                  channels, labels, counts, clinical fields per case
        datalist.json                 MONAI datalist ("training"), each case with its "fold"
        conversion_report.json        patients, slices, positive slices, every problem found

    Args:
        source: the ``kaggle_3m`` folder or the root of the unpacked Kaggle zip.
        output: folder to create. A previous conversion output there is replaced (re-running is
            idempotent); any other existing folder needs ``overwrite``.
        clinical_csv: ``data.csv``; default: ``data.csv`` beside the patient folders, if present.
        spacing: (row, column, slice) voxel size in mm written into the affine.
        num_folds: patient-level folds, stratified by institution and tumour burden.
        seed: seed of the fold assignment.
        skip_bad: convert the valid cases and list the skipped ones instead of failing.
        binarize: threshold masks with values outside {0, 255} at 128 (with a warning) instead of failing.
        overwrite: replace an existing ``output`` that is not a previous conversion.
        num_workers: processes converting cases in parallel (default: CPU count, at most 4).
        progress: show a progress bar.

    Returns:
        the result; ``result.output`` is None when errors stopped the conversion (nothing written).

    Raises:
        LGGInputError: ``source`` or ``output`` cannot be used.
        OutputError: writing the output failed (folder not writable, disk full); nothing is left behind.
    """
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise LGGInputError(None, f"spacing must be three positive numbers (row, column, slice), got {spacing}")
    output = Path(output)
    root, problems = find_kaggle_root(source)
    check_output_folder(output, root, overwrite)
    cases, scan_problems = scan_kaggle(root)
    problems += scan_problems
    clinical_path = Path(clinical_csv) if clinical_csv else root / "data.csv"
    clinical = read_clinical_csv(clinical_path) if clinical_csv or clinical_path.exists() else {}

    bad_folders = failed_cases(root, scan_problems)
    convertible = [c for c in cases if c.case_id not in bad_folders]
    skipped = sorted(bad_folders)
    summaries: list[dict] = []
    try:
        report = _convert_into(
            output,
            root,
            convertible,
            skipped,
            summaries,
            problems,
            clinical,
            spacing,
            num_folds,
            seed,
            skip_bad,
            binarize,
            num_workers,
            progress,
        )
    except _Abort as abort:
        return ConversionResult(None, abort.report)
    return ConversionResult(output, report)


def _convert_into(
    output: Path,
    root: Path,
    convertible: list[KaggleCase],
    skipped: list[str],
    summaries: list[dict],
    problems: list[DataProblem],
    clinical: dict,
    spacing: Sequence[float],
    num_folds: int,
    seed: int,
    skip_bad: bool,
    binarize: bool,
    num_workers: int | None,
    progress: bool,
) -> dict:
    from monai_lgg.data.datalist import assign_folds, fit_num_folds  # local: datalist imports this module

    with atomic_dir(output) as tmp:
        images_dir, labels_dir = tmp / "imagesTr", tmp / "labelsTr"
        images_dir.mkdir()
        labels_dir.mkdir()
        workers = num_workers or min(4, os.cpu_count() or 1)
        jobs = [(c, images_dir, labels_dir, tuple(spacing), binarize) for c in convertible]
        results = _map_cases(jobs, workers, progress)
        for case, (summary, case_problems) in zip(convertible, results, strict=True):
            problems += case_problems
            if summary is None:
                skipped.append(case.case_id)
            else:
                summaries.append(summary)
        errors = [p for p in problems if p.fatal]
        report = conversion_report(root, summaries, problems, sorted(skipped), skip_bad)
        if (errors and not skip_bad) or not summaries:
            if not summaries and not errors:
                problems.append(DataProblem(root, "no case could be converted"))
            report = conversion_report(root, summaries, problems, sorted(skipped), skip_bad)
            raise _Abort(report)
        for summary in summaries:
            summary["clinical"] = clinical.get("_".join(summary["case"].split("_")[:3]))
        # only now, with every file problem found and reported: a small set gets fewer folds, not an error
        num_folds, too_few = fit_num_folds(len(summaries), num_folds, "patients")
        if too_few:
            problems.append(DataProblem(root, too_few, fatal=False))
            report = conversion_report(root, summaries, problems, sorted(skipped), skip_bad)
        folds = assign_folds(summaries, num_folds=num_folds, seed=seed)
        _write_metadata(tmp, summaries, folds, num_folds, seed, spacing, report)
    return report


class _Abort(Exception):
    """Carries the failure report out of :func:`atomic_dir`, which then discards the partial output."""

    def __init__(self, report: dict) -> None:
        super().__init__("conversion stopped")
        self.report = report


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Pool-worker initializer: end this worker when ``parent`` is gone.

    A killed ``convert`` (SIGKILL, an out-of-memory kill) cannot tell its pool to stop, and the workers, each
    holding its share of images, would live on as orphans. A daemon thread watches the parent id instead
    (portable, unlike Linux's ``PR_SET_PDEATHSIG``, which also fires when the thread that started the worker ends).
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _map_cases(jobs: list[tuple], workers: int, progress: bool) -> list[tuple[dict | None, list[DataProblem]]]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="convert", unit="case", disable=not progress, file=sys.stderr)
    results = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_convert_case(*job))
            bar.update()
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=exit_with_parent, initargs=(os.getpid(),))
        with pool:
            for result in pool.map(_convert_case, *zip(*jobs, strict=True)):
                results.append(result)
                bar.update()
    bar.close()
    return results


def _is_previous_output(folder: Path) -> bool:
    """An empty folder, or one whose ``dataset.json`` names a monai-lgg converter (any of them)."""
    meta = folder / "dataset.json"
    if not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        import json

        return str(json.loads(meta.read_text()).get("converter", "")).startswith("monai_lgg.data.")
    except (OSError, ValueError, AttributeError):
        return False


def check_output_folder(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse an ``output`` that is not a previous conversion (unless ``overwrite``) or lies inside ``source``.

    Raises:
        LGGInputError: naming ``output``.
    """
    output, source = Path(output), Path(source)
    if output.exists() and not overwrite and not _is_previous_output(output):
        raise LGGInputError(output, "exists and is not a monai-lgg conversion output (pass overwrite to replace it)")
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise LGGInputError(output, "must not be inside the source folder")


def conversion_report(
    root: Path, summaries: list[dict], problems: list[DataProblem], skipped: list[str], skip_bad: bool
) -> dict:
    """The ``conversion_report.json`` of a conversion: counts (``patients`` = cases), skipped cases, problems."""
    return {
        "source": str(root),
        "patients": len(summaries),
        "slices": sum(s["num_slices"] for s in summaries),
        "positive_slices": sum(s["positive_slices"] for s in summaries),
        "skipped_cases": skipped,
        "skip_bad": skip_bad,
        "errors": [p.as_dict() for p in problems if p.fatal],
        "warnings": [p.as_dict() for p in problems if not p.fatal],
    }


def _write_metadata(
    out: Path,
    summaries: list[dict],
    folds: dict[str, int],
    num_folds: int,
    seed: int,
    spacing: Sequence[float],
    report: dict,
) -> None:
    summaries = sorted(summaries, key=lambda s: s["case"])
    dataset = {
        "name": "LGG-FLAIR-abnormality",
        "description": "TCGA-LGG brain MRI (Buda et al. 2019, Kaggle lgg-mri-segmentation) converted by monai-lgg",
        "reference": "https://doi.org/10.1016/j.compbiomed.2019.05.002",
        "licence": "CC BY-NC-SA 4.0 (Kaggle release)",
        "converter": OUTPUT_MARKER,
        "channel_names": {str(i): name for i, name in enumerate(CHANNEL_NAMES)},
        "labels": {"background": 0, "tumour": 1},
        "numTraining": len(summaries),
        "numSlices": report["slices"],
        "numPositiveSlices": report["positive_slices"],
        "file_ending": ".nii.gz",
        "spacing_mm": {"row": spacing[0], "column": spacing[1], "slice": spacing[2], "note": "not stored in the TIFFs"},
        "orientation": "PLS: voxel [i, j, k] = TIFF pixel [row i, column j] of slice k+1",
        "cases": {s["case"]: {k: v for k, v in s.items() if k != "case"} for s in summaries},
    }
    write_conversion(out, dataset, summaries, folds, num_folds, seed, len(CHANNEL_NAMES), report)


def write_conversion(
    out: Path,
    dataset: dict,
    summaries: list[dict],
    folds: dict[str, int],
    num_folds: int,
    seed: int,
    num_channels: int,
    report: dict,
    extra: dict | None = None,
) -> None:
    """Write ``dataset.json``, the MONAI datalist ``datalist.json`` and ``conversion_report.json`` of a conversion.

    Shared by every converter, so all converted data sets have the same datalist format.

    Args:
        out: the (temporary) output folder holding ``imagesTr/`` and ``labelsTr/``.
        dataset: the content of ``dataset.json``.
        summaries: per case ``case``, ``institution``, ``num_slices``, ``positive_slices``, sorted by case.
        folds: ``{case: fold}``.
        num_folds: number of folds.
        seed: seed of the fold assignment.
        num_channels: image files per case (``<case>_0000.nii.gz`` ...).
        report: the conversion report.
        extra: more top-level datalist keys (e.g. a fixed test fold).
    """
    datalist = {
        "num_folds": num_folds,
        "seed": seed,
        **(extra or {}),
        "training": [
            {
                "image": [f"imagesTr/{channel_file_name(s['case'], c)}" for c in range(num_channels)],
                "label": f"labelsTr/{s['case']}.nii.gz",
                "case": s["case"],
                "fold": folds[s["case"]],
                "institution": s["institution"],
                "num_slices": s["num_slices"],
                "positive_slices": s["positive_slices"],
            }
            for s in summaries
        ],
    }
    write_json(out / "dataset.json", dataset)
    write_json(out / "datalist.json", datalist)
    write_json(out / "conversion_report.json", report)
