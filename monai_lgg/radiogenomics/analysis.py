"""``monai-lgg radiogenomics``: shape features of every patient's mask, tested against ``data.csv``.

Reproduces the analysis of Buda, Saha & Mazurowski 2019 (Computers in Biology and Medicine 109:218)
from any set of masks; see ``docs/radiogenomics.md`` for every definition and choice.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir
from monai_lgg.radiogenomics.associations import (
    ASSOCIATION_COLUMNS,
    CLINICAL_VARIABLES,
    CONTINUOUS_VARIABLES,
    GENOMIC_VARIABLES,
    agreement,
    association_tests,
)
from monai_lgg.radiogenomics.features import (
    FEATURE_COLUMNS,
    INFO_COLUMNS,
    PAPER_FEATURES,
    TESTED_FEATURES,  # re-exported
    shape_features,
)
from monai_lgg.radiogenomics.io import (
    MaskCase,
    find_clinical,
    find_mask_cases,
    folder_list,
    load_clinical,
    load_mask,
    out_of_fold_cases,
)

__all__ = ["MaskSet", "measure_masks", "run_radiogenomics", "TESTED_FEATURES", "AGREEMENT_COLUMNS"]

#: features tested against the clinical variables (``num_components`` and the axis lengths are descriptive)
AGREEMENT_COLUMNS = (
    "feature",
    "n",
    "icc",
    "spearman_rho",
    "spearman_p",
    "mean_reference",
    "mean_masks",
    "bias",
    "loa_low",
    "loa_high",
    "same_median_side",
)


@dataclass
class MaskSet:
    """The shape features of one set of masks.

    Attributes:
        source: the folder(s) read.
        rows: one row per case: ``patient``, ``case`` and :data:`FEATURE_COLUMNS` / ``INFO_COLUMNS``.
        cases: ``{patient: case}`` of the cases read.
    """

    source: str
    rows: list[dict]
    cases: dict[str, MaskCase] = field(default_factory=dict)


def measure_masks(
    source: str | Sequence[str],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    progress: bool = False,
    folds: str | Path | None = None,
) -> MaskSet:
    """Find every mask under ``source`` and measure its shape features.

    Args:
        source: mask folder(s).
        spacing: voxel size of slice masks in mm.
        progress: show a progress bar.
        folds: a ``datalist.json``: ``source`` is then one folder per fold model and each case's mask is
            taken from its own fold's folder (:func:`~monai_lgg.radiogenomics.io.out_of_fold_cases`).

    Raises:
        LGGInputError: no masks, an unreadable mask, or two cases of the same patient.
    """
    cases = out_of_fold_cases(source, folds) if folds else find_mask_cases(source)
    by_patient: dict[str, MaskCase] = {}
    for case in cases:
        if case.patient in by_patient:
            raise LGGInputError(
                case.files[0], f"patient {case.patient} has two cases ({by_patient[case.patient].name}, {case.name})"
            )
        by_patient[case.patient] = case
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="shape features", unit="case")
    rows = []
    for case in iterator:
        mask, voxel = load_mask(case, spacing)
        rows.append({"patient": case.patient, "case": case.name, **shape_features(mask, voxel)})
    return MaskSet(", ".join(str(f) for f in folder_list(source)), rows, by_patient)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _dice_rows(masks: MaskSet, reference: MaskSet, spacing: Sequence[float]) -> list[dict]:
    rows = []
    for patient, case in sorted(masks.cases.items()):
        ref_case = reference.cases.get(patient)
        if ref_case is None:
            continue
        mask, _ = load_mask(case, spacing)
        ref, _ = load_mask(ref_case, spacing)
        dice = _dice(mask, ref) if mask.shape == ref.shape else float("nan")
        rows.append(
            {
                "patient": patient,
                "case": case.name,
                "reference_case": ref_case.name,
                "dice": dice,
                "note": "" if mask.shape == ref.shape else f"shapes differ: {mask.shape} vs {ref.shape}",
            }
        )
    return rows


def _format(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k, "")) for k in columns})
    return buffer.getvalue()


def _clinical_counts(rows: Sequence[dict], clinical: dict, variables: Sequence[str]) -> dict:
    patients = [r["patient"] for r in rows]
    matched = [p for p in patients if p in clinical]
    return {
        "patients_with_masks": len(patients),
        "patients_with_clinical_row": len(matched),
        "patients_without_clinical_row": sorted(set(patients) - set(clinical)),
        "clinical_rows_without_masks": len(set(clinical) - set(patients)),
        "blank_cells_per_variable": {v: sum(clinical[p].get(v) is None for p in matched) for v in variables},
    }


def run_radiogenomics(
    masks: str | Sequence[str],
    output: str | Path,
    clinical: str | Path | None = None,
    reference: str | Sequence[str] | None = None,
    variables: Sequence[str] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    title: str | None = None,
    masks_label: str = "masks",
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = False,
    folds: str | Path | None = None,
) -> dict:
    """Shape features of every patient's mask, their association with ``data.csv``, and a report.

    Writes ``output/`` (built under a temporary name, then moved into place):
    ``shape_features.csv``, ``associations.csv``, ``summary.json``, ``report.md``, ``report.html`` and
    ``figures/*.png``; with ``reference`` also ``reference/shape_features.csv``,
    ``reference/associations.csv``, ``reference/dice.csv`` and ``agreement.csv``.

    Args:
        masks: mask folder(s) (see :mod:`monai_lgg.radiogenomics.io`).
        output: output folder.
        clinical: ``data.csv`` or a converted set's ``dataset.json`` (default: found beside the masks or
            the reference).
        reference: reference mask folder(s) (e.g. the manual ``labelsTr``): features, associations and
            per-feature agreement of ``masks`` with them.
        variables: variables of the clinical table to test (default: the seven genomic clusterings,
            histology, grade, sex, age and death01).
        spacing: voxel size (row, column, slice) in mm for slice masks (TIFFs store none); NIfTI masks
            use their header.
        title: report title.
        masks_label: what ``masks`` are, for the report (e.g. "cross-validated UNet masks").
        overwrite: replace an existing output folder.
        seed: seed of the Monte-Carlo Fisher fallback (used only for very large tables).
        progress: show progress bars.
        folds: a ``datalist.json``: ``masks`` are then one folder per fold model (fold 0 first), each
            holding that model's masks of (at least) its test patients, and each patient's mask is taken
            from its own fold's folder: out-of-fold masks.

    Returns:
        the summary written to ``summary.json``.
    """
    from monai_lgg.radiogenomics.report import write_report

    output = Path(output)
    if output.exists() and not overwrite:
        raise LGGInputError(output, "output already exists (pass --overwrite to replace it)")
    out_of_fold_cases(masks, folds) if folds else find_mask_cases(masks)  # bad mask folders are reported first
    if reference:
        find_mask_cases(reference)
    clinical_path = Path(clinical) if clinical else find_clinical(masks, reference)
    if clinical_path is None:
        raise LGGInputError(
            ", ".join(map(str, folder_list(masks))),
            "no clinical table found beside the masks: pass --clinical data.csv",
        )
    table = load_clinical(clinical_path)
    known = {v for fields in table.values() for v in fields}
    absent: list[str] = []
    if variables:
        variables = list(variables)
        unknown = [v for v in variables if v not in known]
        if unknown:
            raise LGGInputError(clinical_path, f"has no column {', '.join(unknown)}")
    else:  # the default set: the columns of data.csv that this table has
        variables = [v for v in (*GENOMIC_VARIABLES, *CLINICAL_VARIABLES) if v in known]
        absent = [v for v in (*GENOMIC_VARIABLES, *CLINICAL_VARIABLES) if v not in known]
        if not variables:
            raise LGGInputError(clinical_path, "has none of the data.csv columns (pass --variables COLUMN,...)")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(s <= 0 for s in spacing):
        raise LGGInputError(None, f"spacing must be three positive numbers (row, column, slice), got {spacing}")

    measured = measure_masks(masks, spacing, progress, folds)
    primary = [v for v in variables if v in GENOMIC_VARIABLES]
    tests = association_tests(
        measured.rows, table, TESTED_FEATURES, variables, CONTINUOUS_VARIABLES, PAPER_FEATURES, primary, seed
    )
    summary = {
        "masks": measured.source,
        "masks_label": masks_label,
        "folds": str(folds) if folds else None,
        "clinical": str(clinical_path),
        "reference": None,
        "variables": variables,
        "default_variables_absent": absent,
        "primary_variables": primary,
        "tested_features": list(TESTED_FEATURES),
        "slice_spacing_mm": list(spacing),
        "spacing_note": "NIfTI masks use the spacing in their header; "
        "slice masks (TIFF/PNG store none) use slice_spacing_mm",
        "counts": _clinical_counts(measured.rows, table, variables),
        "tests": {
            family: sum(1 for r in tests if r["family"] == family and np.isfinite(r["p"]))
            for family in ("primary", "exploratory")
        },
        "empty_masks": [r["patient"] for r in measured.rows if r["volume_voxels"] == 0],
        "python": platform.python_version(),
    }
    ref_set, ref_tests, agree, dice = None, None, None, None
    if reference:
        ref_set = measure_masks(reference, spacing, progress)
        summary["reference"] = ref_set.source
        ref_tests = association_tests(
            ref_set.rows, table, TESTED_FEATURES, variables, CONTINUOUS_VARIABLES, PAPER_FEATURES, primary, seed
        )
        agree = agreement(measured.rows, ref_set.rows, TESTED_FEATURES)
        dice = _dice_rows(measured, ref_set, spacing)
        dices = np.array([d["dice"] for d in dice], dtype=float)
        summary["reference_counts"] = _clinical_counts(ref_set.rows, table, variables)
        summary["paired_patients"] = len(dice)
        summary["dice_vs_reference"] = {
            "mean": float(np.nanmean(dices)) if len(dices) else None,
            "median": float(np.nanmedian(dices)) if len(dices) else None,
        }
    feature_columns = ["patient", "case", *FEATURE_COLUMNS, *INFO_COLUMNS]
    with atomic_dir(output, overwrite=True) as tmp:
        (tmp / "shape_features.csv").write_text(_csv_text(measured.rows, feature_columns))
        (tmp / "associations.csv").write_text(_csv_text(tests, ASSOCIATION_COLUMNS))
        if ref_set is not None:
            (tmp / "reference").mkdir()
            (tmp / "reference" / "shape_features.csv").write_text(_csv_text(ref_set.rows, feature_columns))
            (tmp / "reference" / "associations.csv").write_text(_csv_text(ref_tests, ASSOCIATION_COLUMNS))
            (tmp / "reference" / "dice.csv").write_text(
                _csv_text(dice, ["patient", "case", "reference_case", "dice", "note"])
            )
            (tmp / "agreement.csv").write_text(_csv_text(agree, AGREEMENT_COLUMNS))
        write_report(
            tmp, summary, measured.rows, tests, table, title, ref_set.rows if ref_set else None, ref_tests, agree
        )
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
