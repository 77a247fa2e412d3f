"""Patient-level folds and the train / validation / test split of a fold.

Splits are always by patient: every slice of a patient lands in the same fold, so no evaluation
ever sees a patient whose other slices were trained on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from monai_lgg.errors import LGGInputError

__all__ = ["MIN_TRAINING_FOLDS", "fit_num_folds", "assign_folds", "split_fold", "load_fold", "check_disjoint"]

# A nested split needs a test fold, a validation fold and at least one training fold.
MIN_TRAINING_FOLDS = 3


def fit_num_folds(num_cases: int, num_folds: int, noun: str = "cases") -> tuple[int, str | None]:
    """The number of folds a converter can make of ``num_cases`` cases, and a warning when it is not ``num_folds``.

    With fewer cases than folds, each case becomes its own fold when that still gives a nested split
    (at least :data:`MIN_TRAINING_FOLDS`); fewer cases get a single fold 0 ("no folds"): the set converts
    for viewing and prediction, and training refuses it with a clear message. Converting one patient to
    look at it needs no ``--num_folds`` then.

    Args:
        num_cases: cases that converted.
        num_folds: folds asked for.
        noun: what the cases are called in the warning (``patients``, ``images``).

    Returns:
        ``(folds to make, warning or None)``.
    """
    if num_cases >= num_folds:
        return num_folds, None
    if num_cases >= MIN_TRAINING_FOLDS:
        return num_cases, f"only {num_cases} {noun} for {num_folds} folds: made {num_cases} folds of one each"
    return 1, (
        f"only {num_cases} {noun}: too few for {num_folds} folds or for training (a nested split needs "
        f"{MIN_TRAINING_FOLDS}: test, validation, train); all are in fold 0, for viewing and prediction"
    )


def assign_folds(
    cases: Sequence[dict], num_folds: int = 5, seed: int = 0, burden_key: str = "tumour_voxels"
) -> dict[str, int]:
    """Assign each case to one of ``num_folds`` folds, stratified by institution and tumour burden.

    Within each institution the cases are sorted by ``burden_key`` and cut into consecutive blocks of
    ``num_folds``; each block is spread over distinct folds (the emptiest first, ties broken by the
    seeded generator). Every fold so gets a similar mix of institutions and of small and large
    tumours, and fold sizes differ by at most one.

    Args:
        cases: dicts with ``case``, ``institution`` and ``burden_key``.
        num_folds: number of folds (>= 1 and <= number of cases; 1 puts every case in fold 0).
        seed: seed of the tie-breaking and of the order inside each block.
        burden_key: the per-case tumour burden used for stratification.

    Returns:
        ``{case: fold}`` with folds ``0 .. num_folds - 1``.
    """
    if num_folds < 1:
        raise LGGInputError(None, f"num_folds must be >= 1, got {num_folds}")
    if len(cases) < num_folds:
        raise LGGInputError(
            None, f"{len(cases)} patients cannot fill {num_folds} folds (choose num_folds <= {len(cases)})"
        )
    rng = np.random.default_rng(seed)
    by_institution: dict[str, list[dict]] = defaultdict(list)
    for case in sorted(cases, key=lambda c: c["case"]):
        by_institution[case.get("institution", "unknown")].append(case)
    counts = np.zeros(num_folds, dtype=int)
    folds: dict[str, int] = {}
    # Large institutions first, so the single-case ones fill the folds left smallest.
    for institution in sorted(by_institution, key=lambda k: (-len(by_institution[k]), k)):
        members = sorted(by_institution[institution], key=lambda c: (c.get(burden_key, 0), c["case"]))
        for start in range(0, len(members), num_folds):
            block = members[start : start + num_folds]
            order = np.lexsort((rng.random(num_folds), counts))  # emptiest folds first, random ties
            targets = rng.permutation(order[: len(block)])
            for case, fold in zip(block, targets, strict=True):
                folds[case["case"]] = int(fold)
                counts[fold] += 1
    return folds


def split_fold(datalist: Sequence[dict], fold: int, num_folds: int) -> dict[str, list[dict]]:
    """Nested split for fold ``fold``: test = that fold, validation = the next fold, train = the rest.

    Model selection (best epoch, threshold) uses only ``validation``, never ``test``, so test numbers
    are honest estimates for unseen patients.

    Args:
        datalist: items with a ``fold`` field.
        fold: the test fold.
        num_folds: the number of folds in ``datalist``.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``.
    """
    if not 0 <= fold < num_folds:
        raise LGGInputError(None, f"fold must be in 0..{num_folds - 1}, got {fold}")
    validation_fold = (fold + 1) % num_folds
    split: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for item in datalist:
        if "fold" not in item:
            raise LGGInputError(item.get("case"), "datalist item has no 'fold' field")
        key = "test" if item["fold"] == fold else "validation" if item["fold"] == validation_fold else "train"
        split[key].append(item)
    return split


def load_fold(
    datalist_file: str | Path, fold: int = 0, split: str = "train", base_dir: str | Path | None = None
) -> list[dict]:
    """Items of one split (``train``, ``validation``, ``test`` or ``all``) of a converted data set.

    Paths are made absolute against ``base_dir`` (default: the datalist's folder). This is the entry
    the bundle configs call.
    """
    datalist_file = Path(datalist_file)
    if not datalist_file.is_file():
        raise LGGInputError(datalist_file, "datalist not found (convert the data first: monai-lgg convert)")
    items = load_decathlon_datalist(
        str(datalist_file), is_segmentation=True, data_list_key="training", base_dir=base_dir
    )
    if split == "all":
        return items
    num_folds = max(int(item["fold"]) for item in items) + 1
    parts = split_fold(items, fold, num_folds)
    if split not in parts:
        raise LGGInputError(None, f"split must be one of train, validation, test, all; got {split!r}")
    return parts[split]


def check_disjoint(**splits: Sequence[dict]) -> None:
    """Raise if any patient (``case``) appears in two of the given splits."""
    seen: dict[str, str] = {}
    for name, items in splits.items():
        for item in items:
            other = seen.setdefault(item["case"], name)
            if other != name:
                raise LGGInputError(item["case"], f"patient is in both {other!r} and {name!r}: the split leaks")
