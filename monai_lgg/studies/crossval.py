"""Out-of-fold predictions of a cross-validation, post-processing chosen without the test fold, robustness checks.

After ``tools/experiment_grid.py`` has trained one model per fold (each fold's test patients never used for its
training or model selection), this module:

1. predicts every patient with the model of the fold where it is a test patient (:func:`out_of_fold`), with
   the shipped inference settings (the bundle's geometry, flip TTA), and keeps the probabilities;
2. scores candidate post-processings (threshold x minimum component fraction, :data:`CANDIDATES`) per
   patient, and picks one per test fold by **leave-one-fold-out**: the rule applied to fold ``f`` is the
   best on the other folds' patients only (:func:`select_postprocessing`), so the pooled score stays an
   estimate for unseen patients; the rule for the shipped model is the best over all folds;
3. measures robustness to missing sequences: every test patient is predicted again with pre-contrast,
   post-contrast or both replaced by FLAIR (as the data release does for missing sequences), and patients
   whose release data already lack a sequence are reported separately (:func:`missing_sequences`).

Per-patient Dice is the 3D Dice over the patient's slices (1 when both masks are empty); the false-positive
rate counts tumour-free slices (by the reference) with any predicted voxel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.data.datalist import load_fold
from monai_lgg.inference.loading import load_network
from monai_lgg.inference.predictor import Predictor
from monai_lgg.io import atomic_path, read_json, write_json
from monai_lgg.metrics import bootstrap_ci, summarize
from monai_lgg.transforms.components import keep_largest_component, remove_small_components

__all__ = [
    "CANDIDATES",
    "SEQUENCE_VARIANTS",
    "out_of_fold",
    "average_out_of_fold",
    "load_out_of_fold",
    "postprocess_mask",
    "score_mask",
    "score_case",
    "score_rule",
    "select_postprocessing",
    "missing_sequences",
    "replaced_sequences",
]

CANDIDATES: tuple[tuple[float, float], ...] = tuple(
    (threshold, fraction) for threshold in (0.4, 0.5, 0.6) for fraction in (0.0, 0.05, 0.1, 0.2, 0.3, 1.0)
)
"""(threshold, minimum component fraction of the largest) pairs; fraction 1.0 keeps only the largest component."""

SEQUENCE_VARIANTS = {"pre": (0,), "post": (2,), "both": (0, 2)}
"""Channels replaced by FLAIR (channel 1) to test robustness to a missing sequence. They are replaced in the raw
3-channel volume, before the predictor stacks context slices, so every neighbour of a 2.5D input lacks them too."""

TRAINED_SETTINGS = (
    "bundle",
    "version",
    "in_channels",
    "out_channels",
    "class_names",
    "geometry",
    "spatial_size",
    "normalization",
    "context_slices",
    "network_args",
)
"""What the ensemble's sidecar keeps from its members' (how inputs reach the network)."""


def _load_volume(files: Sequence[str] | str, channels: int | None = 3) -> torch.Tensor:
    """A converted volume as stored, ``(C, H, W, D)`` float32, read by the pipeline's pinned loader."""
    from monai.transforms import Compose

    from monai_lgg.transforms.presets import load

    image = Compose(load("volume", label_key=None, image_channels=channels))({"image": files})["image"]
    return torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image).float()


def replaced_sequences(image: torch.Tensor, flair: int = 1) -> list[str]:
    """The channels of a raw ``(3, H, W, D)`` LGG volume that are copies of FLAIR (how the release marks a missing
    one)."""
    names = {0: "pre-contrast", 2: "post-contrast"}
    return [names[c] for c in (0, 2) if torch.equal(image[c], image[flair])]


def _with_flair(image: torch.Tensor, channels: Iterable[int], flair: int = 1) -> torch.Tensor:
    image = image.clone()
    for c in channels:
        image[c] = image[flair]
    return image


def out_of_fold(
    grid_dir: str | Path,
    datalist: str | Path,
    folds: Sequence[int],
    bundle: str = "unet",
    device: str = "cpu",
    variants: bool = True,
    output: str | Path | None = None,
) -> Path:
    """Predict every test patient with its fold's model; save probabilities (uint8, x255) and labels per case.

    Args:
        grid_dir: the cell folder of an experiment grid (``<work_dir>/<cell>``, holding ``fold<f>/models/model.pt``).
        datalist: the converted data set's ``datalist.json`` (the folds the grid used).
        folds: the folds to collect.
        bundle: the bundle whose network and inference settings apply.
        device: where the networks run.
        variants: also predict each patient with sequences replaced by FLAIR (:data:`SEQUENCE_VARIANTS`).
        output: folder of the ``<case>.npz`` files (default ``<grid_dir>/oof``); existing cases are kept.

    Returns:
        the output folder.
    """
    grid_dir = Path(grid_dir)
    output = Path(output or grid_dir / "oof")
    output.mkdir(parents=True, exist_ok=True)
    for fold in folds:
        checkpoint = grid_dir / f"fold{fold}" / "models" / "model.pt"
        network, info = load_network(bundle, checkpoint, device=device)
        predictor = Predictor(  # raw volumes in: the predictor normalises and stacks context slices as trained
            [network],
            info.spatial_size,
            device,
            batch_size=16,
            tta=True,
            threshold=0.5,
            geometry=info.geometry,
            out_channels=info.out_channels,
            normalization=info.normalization,
            context_slices=info.context_slices,
        )
        record = read_json(
            sidecar_path(checkpoint), "not found: the sidecar that names the fold model's training patients"
        )
        seen = set(record.get("training_cases", [])) | set(record.get("validation_cases", []))
        for item in load_fold(datalist, fold, "test"):
            target = output / f"{item['case']}.npz"
            if target.is_file():
                continue
            if item["case"] in seen:
                raise RuntimeError(f"{item['case']} trained or selected the model of fold {fold}: not a test patient")
            image = _load_volume(item["image"], info.image_channels)
            label = _load_volume(item["label"], None)[0] > 0
            arrays = {"label": label.numpy(), "fold": np.array(fold)}
            arrays["prob"] = _quantise(predictor.probabilities(image))
            predictor.tta = False  # the same model without flip TTA: what the test-time augmentation adds
            arrays["prob_notta"] = _quantise(predictor.probabilities(image))
            predictor.tta = True
            arrays["replaced"] = np.array(",".join(replaced_sequences(image)))
            if variants:
                for name, channels in SEQUENCE_VARIANTS.items():
                    arrays[f"prob_{name}"] = _quantise(predictor.probabilities(_with_flair(image, channels)))
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, **arrays)
    return output


def average_out_of_fold(oof_dirs: Sequence[str | Path], output: str | Path, folds: Sequence[int] | None = None) -> Path:
    """Out-of-fold probabilities of an ensemble: the per-voxel mean of several cross-validations' ``oof`` folders.

    Each fold's ensemble is the average of the members' models of that fold, so every patient is still predicted
    only by models that never trained on it. The members must be cross-validations of the same patients with the
    same folds (checked per case, with the labels); any probability key that every member has (``prob``,
    ``prob_notta``, the missing-sequence variants) is averaged. The uint8 inputs are averaged in float and
    quantised again, an error below 1/255.

    Args:
        oof_dirs: two or more folders written by :func:`out_of_fold`.
        output: folder for the averaged ``<case>.npz`` files (rewritten).
        folds: only the test patients of these folds (default: every case of the folders).

    Returns:
        the output folder.
    """
    dirs = [Path(d) for d in oof_dirs]
    if len(dirs) < 2:
        raise ValueError("an ensemble needs at least two out-of-fold folders")

    def fold_of(path: Path) -> int:
        with np.load(path) as data:
            return int(data["fold"])

    names = [sorted(p.stem for p in d.glob("*.npz") if folds is None or fold_of(p) in folds) for d in dirs]
    if not names[0] or any(n != names[0] for n in names[1:]):
        raise ValueError(f"the out-of-fold folders {', '.join(map(str, dirs))} do not hold the same patients")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for case in names[0]:
        members = []
        for d in dirs:
            with np.load(d / f"{case}.npz") as data:
                members.append({k: data[k] for k in data.files})
        first = members[0]
        for d, m in zip(dirs[1:], members[1:], strict=True):
            if int(m["fold"]) != int(first["fold"]) or not np.array_equal(m["label"], first["label"]):
                raise ValueError(
                    f"{d / case}.npz: fold or label differs from {dirs[0] / case}.npz "
                    "(not the same cross-validation split)"
                )
        keys = [k for k in first if k.startswith("prob") and all(k in m for m in members)]
        arrays = {"label": first["label"], "fold": first["fold"], "replaced": first["replaced"]}
        for key in keys:
            mean = np.mean([m[key].astype(np.float32) for m in members], axis=0)
            arrays[key] = np.round(mean).astype(np.uint8)
        with atomic_path(output / f"{case}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
    return output


def _quantise(prob: torch.Tensor) -> np.ndarray:
    return np.round(prob.numpy() * 255).astype(np.uint8)


def postprocess_mask(prob: np.ndarray, threshold: float = 0.5, min_fraction: float = 0.0) -> np.ndarray:
    """The binary mask one post-processing rule makes of a patient's probabilities.

    Args:
        prob: uint8 probabilities x255 ``(H, W, D)``.
        threshold: probability threshold.
        min_fraction: drop 3D components below this fraction of the largest (1.0: the largest only).
    """
    mask = prob >= threshold * 255
    if min_fraction >= 1.0:
        return keep_largest_component(mask)
    if min_fraction > 0:
        mask = remove_small_components(mask, min_fraction=min_fraction) > 0
    return mask


def score_mask(mask: np.ndarray, label: np.ndarray) -> dict:
    """3D Dice and false-positive slices of one patient's binary ``mask`` against its bool ``label`` ``(H, W, D)``."""
    intersection = int(np.logical_and(mask, label).sum())
    total = int(mask.sum()) + int(label.sum())
    dice = 1.0 if total == 0 else 2.0 * intersection / total
    empty = ~label.reshape(-1, label.shape[-1]).any(0)
    predicted = mask.reshape(-1, mask.shape[-1]).any(0)
    return {"dice": dice, "empty_slices": int(empty.sum()), "fp_slices": int((empty & predicted).sum())}


def score_case(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5, min_fraction: float = 0.0) -> dict:
    """3D Dice and false-positive slices of one patient for one post-processing rule (see
    :func:`postprocess_mask`; ``label``: bool reference ``(H, W, D)``)."""
    return score_mask(postprocess_mask(prob, threshold, min_fraction), label)


def load_out_of_fold(oof_dir: str | Path, folds: Sequence[int] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every ``<case>.npz`` of an out-of-fold folder (``label``, ``prob``, ``fold``, ...); of ``folds`` if given."""
    oof_dir = Path(oof_dir)
    cases = {}
    for path in sorted(oof_dir.glob("*.npz")):
        with np.load(path) as data:
            if folds is None or int(data["fold"]) in folds:
                cases[path.stem] = {k: data[k] for k in data.files}
    return cases


def score_rule(
    cases: Mapping[str, Mapping[str, np.ndarray]], rule: tuple[float, float], key: str = "prob"
) -> dict[str, dict]:
    """Per-case scores of one (threshold, min_fraction) rule on the probabilities under ``key``."""
    return {name: score_case(c[key], c["label"], *rule) for name, c in cases.items()}


def _mean_dice(scores: Mapping[str, dict], names: Iterable[str]) -> float:
    values = [scores[n]["dice"] for n in names]
    return float(np.mean(values)) if values else float("nan")


def select_postprocessing(
    oof_dir: str | Path,
    candidates: Sequence[tuple[float, float]] = CANDIDATES,
    default: tuple[float, float] = (0.5, 0.0),
    folds: Sequence[int] | None = None,
) -> dict:
    """Leave-one-fold-out choice of the post-processing rule, and the pooled CV scores with and without it.

    For each fold ``f`` the rule with the highest mean per-patient Dice on the *other* folds' patients is
    applied to fold ``f`` (ties keep the earlier, simpler candidate). The rule to ship is the best over all
    folds. Returns a JSON-ready record: per-rule pooled scores, the per-fold choices, the per-patient rows of
    the raw (``default``) and the leave-one-fold-out post-processed predictions, and their summaries.
    ``folds``: score only these folds' test patients (default: every case in ``oof_dir``).
    """
    cases = load_out_of_fold(Path(oof_dir), folds)
    if not cases:
        raise RuntimeError(f"no out-of-fold predictions in {oof_dir}")
    folds = {name: int(c["fold"]) for name, c in cases.items()}
    candidates = list(candidates)
    table = {rule: score_rule(cases, rule) for rule in candidates}
    if default not in table:
        table[default] = score_rule(cases, default)
    chosen: dict[int, tuple[float, float]] = {}
    for fold in sorted(set(folds.values())):
        others = [n for n, f in folds.items() if f != fold]
        if not others:  # a single fold: nothing to choose on without its own patients
            chosen[fold] = default
            continue
        chosen[fold] = max(candidates, key=lambda r: (_mean_dice(table[r], others), -candidates.index(r)))
    ship = max(candidates, key=lambda r: (_mean_dice(table[r], cases), -candidates.index(r)))
    raw = table[default]
    lofo = {name: table[chosen[folds[name]]][name] for name in cases}
    return {
        "cases": len(cases),
        "folds": sorted(set(folds.values())),
        "candidates": [{"threshold": t, "min_component_fraction": m, **_summary(table[(t, m)])} for t, m in candidates],
        "chosen_per_fold": {str(f): {"threshold": r[0], "min_component_fraction": r[1]} for f, r in chosen.items()},
        "ship": {"threshold": ship[0], "min_component_fraction": ship[1]},
        "raw": {"rule": {"threshold": default[0], "min_component_fraction": default[1]}, **_summary(raw)},
        "lofo": _summary(lofo),
        "per_patient": [
            {
                "case": n,
                "fold": folds[n],
                "replaced": str(cases[n]["replaced"]),
                "dice_raw": raw[n]["dice"],
                "dice": lofo[n]["dice"],
                "fp_slices": lofo[n]["fp_slices"],
                "empty_slices": lofo[n]["empty_slices"],
            }
            for n in sorted(cases)
        ],
    }


def _summary(scores: Mapping[str, dict]) -> dict:
    dice = np.array([s["dice"] for s in scores.values()], dtype=float)
    empty = sum(s["empty_slices"] for s in scores.values())
    fp = sum(s["fp_slices"] for s in scores.values())
    stats = summarize(dice)
    return {
        "mean": float(dice.mean()),
        "median": float(np.median(dice)),
        "min": float(dice.min()),
        "ci95": [stats["ci_low"], stats["ci_high"]],
        "ci_low": stats["ci_low"],
        "ci_high": stats["ci_high"],
        "below_0.5": int((dice < 0.5).sum()),
        "fp_slices": fp,
        "empty_slices": empty,
        "fp_rate": fp / empty if empty else float("nan"),
    }


def missing_sequences(
    oof_dir: str | Path, rule: tuple[float, float] = (0.5, 0.0), folds: Sequence[int] | None = None
) -> dict:
    """Per-patient Dice with sequences replaced by FLAIR, against the same patients' full input.

    Returns the summaries of the original input and of each :data:`SEQUENCE_VARIANTS` variant, plus the
    patients whose release data already lack a sequence (scored on their data as released). ``folds``: as in
    :func:`select_postprocessing`.
    """
    cases = load_out_of_fold(Path(oof_dir), folds)
    record: dict = {"rule": {"threshold": rule[0], "min_component_fraction": rule[1]}}
    record["original"] = _summary(score_rule(cases, rule))
    with_notta = {n: c for n, c in cases.items() if "prob_notta" in c}
    if with_notta:
        record["without_tta"] = _summary(score_rule(with_notta, rule, key="prob_notta"))
    for name in SEQUENCE_VARIANTS:
        present = {n: c for n, c in cases.items() if f"prob_{name}" in c}
        if present:
            record[f"flair_for_{name}"] = _summary(score_rule(present, rule, key=f"prob_{name}"))
    complete = {n: c for n, c in cases.items() if not str(c["replaced"])}
    lacking = {n: c for n, c in cases.items() if str(c["replaced"])}
    record["release_complete"] = _summary(score_rule(complete, rule)) if complete else None
    record["release_lacking"] = (
        {
            "cases": {
                n: {"replaced": str(c["replaced"]), **score_case(c["prob"], c["label"], *rule)}
                for n, c in lacking.items()
            }
        }
        if lacking
        else None
    )
    return record


def paired_difference(rows: Sequence[Mapping], reference: Sequence[Mapping], key: str = "dice") -> dict:
    """Per-patient difference of two cross-validations on their common patients (``rows`` minus ``reference``).

    Args:
        rows: per-patient records (``case`` and ``key``), e.g. ``select_postprocessing(...)["per_patient"]``.
        reference: the same for the model compared against.
        key: the score to pair (``dice``: leave-one-fold-out post-processed; ``dice_raw``).

    Returns:
        patients, mean difference with its percentile-bootstrap 95 % CI, the standard deviation of the per-patient
        differences (``sd_difference``; NaN for one patient), and how many patients are better/worse.
    """
    ours = {r["case"]: float(r[key]) for r in rows}
    theirs = {r["case"]: float(r[key]) for r in reference}
    common = sorted(set(ours) & set(theirs))
    if not common:
        raise ValueError("the two cross-validations share no patient")
    diff = np.array([ours[c] - theirs[c] for c in common])
    low, high = bootstrap_ci(diff)
    return {
        "patients": len(common),
        "mean_difference": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
        "sd_difference": float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"),
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
    }


def write_record(record: Mapping, path: str | Path) -> Path:
    """Write a JSON record atomically."""
    write_json(Path(path), dict(record))
    return Path(path)


def _half_if_safe(value: torch.Tensor) -> torch.Tensor:
    """``value`` as float16 when that keeps it finite; integer tensors and out-of-range ones unchanged.

    Why: BatchNorm's ``running_var`` reaches 1e5 and more in deep layers of a network trained on per-slice
    z-scored inputs; float16 (largest finite value 65504) stores that as ``inf``, the layer then outputs
    zeros, and the ensemble's predictions collapse while every member alone is fine.
    """
    if not value.is_floating_point():
        return value
    half = value.half()
    return half if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(value).all()) else value


def build_ensemble(
    checkpoints: Sequence[str | Path], output: str | Path, half: bool = True, record: Mapping | None = None
) -> Path:
    """One checkpoint of a :class:`~monai_lgg.networks.ensemble.ProbabilityEnsemble` from single-network checkpoints.

    Args:
        checkpoints: the members' ``model.pt`` files (plain state dicts of the same network), e.g. the fold models.
        output: the ensemble's ``model.pt`` (written atomically) and its sidecar ``model.json``.
        half: store floating-point tensors as float16 (half the size; ``load_state_dict`` casts them back
            to the network's float32; predictions differ by far less than the post-processing threshold).
            A tensor with values beyond float16's range stays float32 (see :func:`_half_if_safe`).
        record: extra sidecar fields (geometry, post-processing, cross-validation scores...).

    Returns:
        the written checkpoint.
    """
    from monai_lgg.io import save_checkpoint

    state: dict[str, torch.Tensor] = {}
    training: set[str] = set()
    validation: set[str] = set()
    sidecars = []
    for i, path in enumerate(checkpoints):
        member = torch.load(Path(path), map_location="cpu", weights_only=True)
        for key, value in member.items():
            state[f"members.{i}.{key}"] = _half_if_safe(value) if half else value
        sidecar = read_json(
            sidecar_path(Path(path)), "not found: the sidecar that names the member's training patients"
        )
        sidecars.append(sidecar)
        training |= set(sidecar.get("training_cases", []))
        validation |= set(sidecar.get("validation_cases", []))
    first = sidecars[0]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, output)
    write_json(
        sidecar_path(output),
        {
            **{k: first[k] for k in TRAINED_SETTINGS if k in first},
            "members": len(sidecars),
            "member_folds": [s.get("fold") for s in sidecars],
            "member_epochs": [s.get("epoch") for s in sidecars],
            "selection": "ensemble of the cross-validation's fold models (each the last epoch of a fixed schedule)",
            "training_cases": sorted(training),
            "validation_cases": sorted(validation - training),
            **dict(record or {}),
        },
    )
    return output
