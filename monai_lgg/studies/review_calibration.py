"""Choose and measure the ``needs_review`` threshold of ``monai-lgg predict`` by cross-validation.

Every shared patient is segmented by the member of the shipped ensemble that is the cross-validation model of
the fold where the patient is a test patient (so never trained or selected on it), with the bundle's flips,
threshold and post-processing, through :meth:`~monai_lgg.inference.predictor.Predictor.member_probabilities` and
:func:`~monai_lgg.inference.review.review_score` — the code ``predict`` runs, with one member. Each row holds the
patient's 3D Dice and its ``review_entropy``.

The threshold flags patients with Dice below ``dice_below`` (0.7): it maximises Youden's J (sensitivity +
specificity - 1; ties go to the lower, more sensitive threshold) over the candidate cut points (midpoints between
consecutive scores). Its sensitivity and specificity are estimated **out of fold**: for each fold the threshold is
chosen on the other folds' patients only and applied to the fold's, and the counts are pooled (Wilson 95 %
intervals). The shipped threshold is the one chosen on all patients; its in-sample rates are optimistic and are
reported only beside the out-of-fold ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["DICE_BELOW", "collect_rows", "choose_threshold", "confusion", "wilson", "calibrate"]

DICE_BELOW = 0.7
"""A patient whose Dice is below this should be reviewed."""


def collect_rows(
    dataset: str | Path, folds: dict[str, int], bundle: str = "unet", precision: str = "fp32"
) -> list[dict]:
    """One row per patient of ``folds`` (case -> fold): Dice and review score from that fold's ensemble member.

    Args:
        dataset: a converted data set (``monai-lgg convert``): its cases and reference masks.
        folds: each patient's cross-validation fold (the fold whose model never saw it).
        bundle: the bundle whose shipped model is the ensemble of fold models (``member_folds`` in its record).
        precision: ``fp32`` or ``bf16``.

    Raises:
        LGGInputError: a model that is not an ensemble of fold models, or a fold without a member.
    """
    import json
    import time

    from monai_lgg.errors import LGGInputError
    from monai_lgg.inference import Predictor, find_cases, load_case
    from monai_lgg.inference.review import review_score
    from monai_lgg.studies.sequence_study import dice, fold_members

    members, info = fold_members(bundle)
    cases = {case.name: case for case in find_cases(dataset)}
    labels = {}
    for item in json.loads((Path(dataset) / "datalist.json").read_text())["training"]:
        labels[item["case"]] = item["label"]
    rows = []
    for fold in sorted(set(folds.values())):
        if fold not in members:
            raise LGGInputError(info.root / "models" / "model.pt", f"has no member for fold {fold}")
        predictor = Predictor(
            [members[fold]],
            info.spatial_size,
            "cpu",
            batch_size=16,
            tta=True,
            threshold=info.threshold,
            precision=precision,
            out_channels=1,
            geometry=info.geometry,
            min_component_fraction=info.min_component_fraction,
            normalization=info.normalization,
        )
        for name in sorted(c for c, f in folds.items() if f == fold):
            start = time.perf_counter()
            image, _ = load_case(cases[name], info.in_channels, "none" if info.geometry == "brain" else "zscore")
            _, member_probability = predictor.member_probabilities(image)
            score = review_score(member_probability, predictor.mask)
            mask = predictor.mask(member_probability[0]).numpy() > 0
            label = np.asarray(nib.load(Path(dataset) / labels[name]).dataobj) > 0
            rows.append(
                {
                    "case": name,
                    "fold": fold,
                    "dice": round(dice(mask, label), 6),
                    "review_entropy": "" if score.entropy is None else round(score.entropy, 6),
                    "predicted_voxels": int(mask.sum()),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
            print(
                f"fold {fold} {name}: Dice {rows[-1]['dice']:.3f}, review entropy {rows[-1]['review_entropy']}",
                flush=True,
            )
    return rows


def _scores(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(review entropy, positive = Dice below the bar); a case without predicted tumour scores +inf (flagged)."""
    values = np.array([math.inf if r["review_entropy"] in ("", None) else float(r["review_entropy"]) for r in rows])
    return values, np.array([float(r["dice"]) for r in rows])


def confusion(values: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of flagged (``value >= threshold``) against positive."""
    flagged = values >= threshold
    return {
        "tp": int((flagged & positive).sum()),
        "fp": int((flagged & ~positive).sum()),
        "fn": int((~flagged & positive).sum()),
        "tn": int((~flagged & ~positive).sum()),
    }


def choose_threshold(values: np.ndarray, positive: np.ndarray) -> float:
    """The cut point maximising Youden's J (ties: the lowest); candidates are midpoints between distinct values.

    Example::

        >>> choose_threshold(np.array([0.1, 0.2, 0.5, 0.6]), np.array([False, False, True, True]))
        0.35
    """
    finite = np.unique(values[np.isfinite(values)])
    candidates = (finite[:-1] + finite[1:]) / 2 if len(finite) > 1 else finite
    best, best_j = float("inf"), -math.inf
    for cut in candidates:
        counts = confusion(values, positive, float(cut))
        sens = counts["tp"] / max(1, counts["tp"] + counts["fn"])
        spec = counts["tn"] / max(1, counts["tn"] + counts["fp"])
        if sens + spec - 1 > best_j + 1e-12:
            best, best_j = float(cut), sens + spec - 1
    return round(best, 4)


def wilson(successes: int, total: int) -> list[float]:
    """Wilson score 95 % interval of a proportion."""
    if total == 0:
        return [math.nan, math.nan]
    z, p = 1.959964, successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _rates(counts: dict[str, int]) -> dict:
    positives, negatives = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    return {
        **counts,
        "sensitivity": counts["tp"] / positives if positives else math.nan,
        "sensitivity_ci95": wilson(counts["tp"], positives),
        "specificity": counts["tn"] / negatives if negatives else math.nan,
        "specificity_ci95": wilson(counts["tn"], negatives),
        "flagged": counts["tp"] + counts["fp"],
    }


def calibrate(rows: Sequence[dict], dice_below: float = DICE_BELOW) -> dict:
    """The shipped threshold and its out-of-fold and in-sample sensitivity and specificity (module docstring)."""
    from monai_lgg.metrics.correlation import correlation_test, detection_auc

    values, dice = _scores(rows)
    positive = dice < dice_below
    folds = np.array([int(r["fold"]) for r in rows])
    pooled = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    per_fold = {}
    for fold in sorted(set(folds.tolist())):
        inner = folds != fold
        cut = choose_threshold(values[inner], positive[inner])
        counts = confusion(values[~inner], positive[~inner], cut)
        per_fold[str(fold)] = {"threshold": cut, **counts}
        pooled = {k: pooled[k] + counts[k] for k in pooled}
    threshold = choose_threshold(values, positive)
    finite = np.isfinite(values)
    return {
        "patients": len(rows),
        "dice_below": dice_below,
        "positives": int(positive.sum()),
        "threshold": threshold,
        "out_of_fold": {**_rates(pooled), "per_fold": per_fold},
        "in_sample": _rates(confusion(values, positive, threshold)),
        "auc": detection_auc(values[finite], positive[finite]),
        "spearman": correlation_test(values[finite], dice[finite], n_resamples=10_000),
        "no_tumour_predicted": int((~finite).sum()),
    }
