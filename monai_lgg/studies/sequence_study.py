"""How well a bundle segments patients whose pre- or post-contrast sequence is missing, by cross-validation.

Each patient of a converted data set is given to :class:`~monai_lgg.inference.formats.SequenceFiles`' loading path
as separate sequence files (the converted ``<case>_0000/1/2.nii.gz``: pre-contrast, FLAIR, post-contrast) in four
settings: all three, FLAIR + pre-contrast, FLAIR + post-contrast and FLAIR alone (a missing sequence replaced by
FLAIR, :func:`~monai_lgg.inference.sequences.assemble_sequences`). It is segmented by the one member of the
shipped ensemble that never trained on it: member ``k`` of the UNet bundle's ``models/model.pt`` is the
cross-validation's fold-``k`` model (``member_folds`` of ``models/model.json``), and the patient's test fold is
read from a cross-validation's ``per_patient.csv``. Inference is ``predict``'s (the bundle's threshold, flip TTA
and component filter), in fp32; the score is the per-patient 3D Dice with the reference mask.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai_lgg.errors import LGGInputError

__all__ = [
    "SETTINGS",
    "dice",
    "fold_members",
    "patient_folds",
    "segment_settings",
    "run_study",
    "summarise",
    "read_rows",
    "check_against",
    "write_results",
]

SETTINGS: dict[str, tuple[str, ...]] = {
    "t1+flair+t1c": ("t1", "flair", "t1c"),
    "t1+flair": ("t1", "flair"),
    "flair+t1c": ("flair", "t1c"),
    "flair": ("flair",),
}
"""The sequences given in each setting (the others are replaced by FLAIR)."""

CHANNEL_FILES = {"t1": 0, "flair": 1, "t1c": 2}
"""``<case>_000k.nii.gz`` of each sequence in a converted data set (the model's channel order)."""


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """3D Dice of two binary volumes (1 when both are empty)."""
    a, b = np.asarray(prediction) > 0, np.asarray(reference) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def fold_members(bundle: str | Path = "unet", device: str = "cpu") -> tuple[dict[int, torch.nn.Module], object]:
    """``{fold: network}`` of a bundle whose checkpoint is its cross-validation's fold models, and its settings.

    Raises:
        LGGInputError: the checkpoint is not an ensemble with ``member_folds`` recorded in its ``model.json``.
    """
    from monai_lgg.inference.loading import load_network, resolve_bundle

    root = resolve_bundle(bundle)
    sidecar = root / "models" / "model.json"
    record = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    folds = record.get("member_folds") if isinstance(record, dict) else None
    network, info = load_network(root, None, None, device)
    members = getattr(network, "members", None)
    if not folds or members is None or len(folds) != len(members):
        raise LGGInputError(
            sidecar, "no member_folds matching the checkpoint's ensemble members: not a cross-validation ensemble"
        )
    return {int(fold): member for fold, member in zip(folds, members, strict=True)}, info


def patient_folds(per_patient: Path) -> dict[str, dict]:
    """``{case: row}`` of a cross-validation's ``per_patient.csv`` (``fold``, ``replaced``, ``dice``...)."""
    with open(per_patient, newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def segment_settings(
    files: dict[str, Path], predictor, normalization: str, settings: dict[str, tuple[str, ...]] = SETTINGS
) -> dict[str, np.ndarray]:
    """The mask (on the FLAIR file's grid) of each setting, the sequences read once."""
    from monai_lgg.inference.inputs import volume_in_model_frame
    from monai_lgg.inference.sequences import assemble_sequences, read_sequence

    images = {name: read_sequence(path) for name, path in files.items()}
    masks = {}
    for setting, given in settings.items():
        assembled, _ = assemble_sequences({k: images[k] for k in given}, files["flair"])
        array = np.moveaxis(np.asanyarray(assembled.dataobj), -1, 0).astype(np.float32)
        image, reference = volume_in_model_frame(files["flair"], array, images["flair"], normalization)
        _, mask = predictor(image)
        masks[setting] = reference.reorientation.array_to_input(mask.numpy())
    return masks


def run_study(
    converted: Path,
    per_patient: Path,
    bundle: str | Path = "unet",
    cases: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Per-patient Dice of every setting (:data:`SETTINGS`), each patient segmented by its own fold's member.

    Args:
        converted: a ``monai-lgg convert`` output (``imagesTr/<case>_000k.nii.gz``, ``labelsTr/<case>.nii.gz``).
        per_patient: the cross-validation's ``per_patient.csv`` (columns ``case``, ``fold``, ``replaced``).
        bundle: the bundle whose checkpoint holds the fold models.
        cases: only these patients (default: all of ``per_patient``).
        progress: called with each finished patient's line.
    """
    from monai_lgg.inference.predictor import Predictor

    torch.set_grad_enabled(False)
    members, info = fold_members(bundle)
    folds = patient_folds(per_patient)
    predictors = {
        fold: Predictor(
            [network],
            info.spatial_size,
            "cpu",
            8,
            tta=info.tta,
            threshold=info.threshold,
            precision="fp32",
            out_channels=info.out_channels,
            geometry=info.geometry,
            normalization=info.normalization if info.geometry == "brain" else "none",
            context_slices=info.context_slices,
            min_component_fraction=info.min_component_fraction,
        )
        for fold, network in members.items()
    }
    rows = []
    for case in cases or list(folds):
        row = folds[case]
        files = {k: converted / "imagesTr" / f"{case}_{c:04d}.nii.gz" for k, c in CHANNEL_FILES.items()}
        label = np.asanyarray(nib.load(converted / "labelsTr" / f"{case}.nii.gz").dataobj)
        raw = info.geometry == "brain"
        masks = segment_settings(files, predictors[int(row["fold"])], "none" if raw else info.normalization)
        result = {"case": case, "fold": int(row["fold"]), "release_replaced": row.get("replaced", "")}
        result.update({setting: round(dice(mask, label), 6) for setting, mask in masks.items()})
        rows.append(result)
        if progress is not None:
            progress(" ".join(f"{k}={v}" for k, v in result.items()))
    return rows


def summarise(rows: Sequence[dict], settings: Sequence[str] = tuple(SETTINGS)) -> dict[str, dict[str, float]]:
    """Mean, median, min and the count below 0.5 of each setting's per-patient Dice."""
    summary = {}
    for setting in settings:
        values = np.array([float(r[setting]) for r in rows])
        summary[setting] = {
            "patients": int(values.size),
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "min": float(values.min()),
            "below_0_5": int((values < 0.5).sum()),
        }
    return summary


SETTING_TITLES = {
    "t1+flair+t1c": "all three given",
    "t1+flair": "FLAIR + pre-contrast (no post-contrast)",
    "flair+t1c": "FLAIR + post-contrast (no pre-contrast)",
    "flair": "FLAIR alone",
}


def cpu_model() -> str:
    """The CPU's model name (``lscpu``), or the platform's processor string."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def write_results(
    out: Path, rows: Sequence[dict], command: str, date: str, reference: dict | None = None, notes: Sequence[str] = ()
) -> dict:
    """``per_patient.csv``, ``results.json`` and ``README.md`` of a study under ``out`` (each written to a
    temporary name, then renamed). ``reference``: published ``{setting: {"mean", "median", ...}}`` of the same
    settings (shown beside them); ``notes``: paragraphs added before the links."""
    from monai_lgg.io import atomic_path

    def atomic_write_text(path: Path, text: str) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(text)

    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    cpu = cpu_model()
    record = {
        "command": command,
        "date": date,
        "cpu": cpu,
        "settings": {k: list(v) for k, v in SETTINGS.items()},
        "summary": summary,
        "reference": reference or {},
    }
    lines = ["case,fold,release_replaced," + ",".join(SETTINGS)]
    for r in rows:
        replaced = f'"{r["release_replaced"]}"' if "," in r["release_replaced"] else r["release_replaced"]
        lines.append(f"{r['case']},{r['fold']},{replaced}," + ",".join(f"{r[s]:.6f}" for s in SETTINGS))
    atomic_write_text(out / "per_patient.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps(record, indent=2) + "\n")
    reference = reference or {}
    table = [
        "| sequences given (others replaced by FLAIR) | mean | median | min | patients < 0.5 "
        "| published mean / median |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for setting, s in summary.items():
        ref = reference.get(setting)
        published = f"{ref['mean']:.3f} / {ref['median']:.3f}" if ref else "-"
        table.append(
            f"| {SETTING_TITLES[setting]} (`{setting}`) | {s['mean']:.3f} | {s['median']:.3f} | "
            f"{s['min']:.3f} | {s['below_0_5']} | {published} |"
        )
    released = [r for r in rows if r["release_replaced"]]
    text = [
        f"# Missing sequences given as separate files ({len(rows)} patients, cross-validation)",
        "",
        f"Command: `{command}` ({date}, {cpu}).",
        "",
        "Each patient's converted `<case>_0000/0001/0002.nii.gz` (pre-contrast, FLAIR, post-contrast) are read as "
        "separate sequence files and assembled as `monai-lgg predict --flair/--t1/--t1c` does "
        "(`monai_lgg.inference.sequences.assemble_sequences`: a sequence not given is replaced by FLAIR). Each "
        "patient is segmented by the member of the shipped UNet ensemble that never trained on it (member k = "
        "fold-k model, the patient's fold from `docs/results/cv_zscore/per_patient.csv`), with the bundle's "
        "threshold, flip TTA and component filter, in fp32. Per-patient 3D Dice with the reference mask:",
        "",
        *table,
        "",
    ]
    if reference:
        text += [
            "Published: the same patients, fold models and rule in the cross-validation report "
            '(`docs/results/cv_zscore`, "Test-time augmentation and missing sequences"), where the channels were '
            "replaced by FLAIR in the converted 3-channel array instead of being given as files.",
            "",
        ]
    if released:
        text += [
            "The release itself already stores a missing sequence as a copy of FLAIR for "
            + ", ".join(f"{r['case']} ({r['release_replaced']})" for r in released)
            + ': their "all three" input is the released one.',
            "",
        ]
    text += [*(f"{note}\n" for note in notes)]
    text.append("Per patient: [per_patient.csv](per_patient.csv); summary: [results.json](results.json).")
    atomic_write_text(out / "README.md", "\n".join(text) + "\n")
    return record


def read_rows(path: Path) -> list[dict]:
    """The rows of a study's ``per_patient.csv``."""
    with open(path, newline="") as f:
        return [
            {
                "case": r["case"],
                "fold": int(r["fold"]),
                "release_replaced": r["release_replaced"],
                **{s: float(r[s]) for s in SETTINGS},
            }
            for r in csv.DictReader(f)
        ]


def check_against(rows: Sequence[dict], published: dict, per_patient: Path, tolerance: float = 0.002) -> str:
    """A paragraph comparing the all-three Dice with a cross-validation report's per-patient ``dice`` (its
    post-processing chosen per fold, leave-one-fold-out) and its mean under the shipped rule."""
    folds = patient_folds(per_patient)
    differences = sorted(
        ((abs(float(r["t1+flair+t1c"]) - float(folds[r["case"]]["dice"])), r) for r in rows if r["case"] in folds),
        key=lambda d: -d[0],
    )
    close = sum(1 for d, _ in differences if d <= tolerance)
    others = "; ".join(
        f"{r['case']} (fold {r['fold']}): {float(r['t1+flair+t1c']):.3f} here, {float(folds[r['case']]['dice']):.3f} "
        "published"
        for d, r in differences
        if d > tolerance
    )
    chosen = published.get("chosen_per_fold", {})
    rules = ", ".join(
        f"fold {k}: {v.get('threshold')}/{v.get('min_component_fraction')}"
        for k, v in chosen.items()
        if isinstance(v, dict)
    )
    ship = published.get("ship", {})
    original = published.get("missing_sequences", {}).get("original", {})
    lofo = published.get("lofo", {})
    return (
        f"Check of the all-three row: {close} of {len(differences)} patients are within {tolerance} of the published "
        f"per-patient Dice (`{per_patient.name}`, column `dice`){'; ' + others if others else ''}. That column (mean "
        f"{lofo.get('mean', float('nan')):.3f}) uses the post-processing chosen per fold leave-one-fold-out "
        f"(threshold/min component fraction: {rules}); this study uses the shipped rule "
        f"({ship.get('threshold')}/{ship.get('min_component_fraction')}) for every patient, whose published mean "
        f"with flip TTA is {original.get('mean', float('nan')):.4f} (here "
        f"{summarise(rows)['t1+flair+t1c']['mean']:.4f})."
    )
