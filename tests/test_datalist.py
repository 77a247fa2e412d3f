"""Patient-level folds: balanced, deterministic, never leaking a patient between splits."""

from __future__ import annotations

import numpy as np
import pytest

from monai_lgg.data.datalist import assign_folds, check_disjoint, load_fold, split_fold
from monai_lgg.errors import LGGInputError


def _cases(n: int = 40) -> list[dict]:
    rng = np.random.default_rng(3)
    institutions = ["CS", "DU", "DU", "HT", "FG"]
    return [
        {"case": f"c{i:03d}", "institution": institutions[i % 5], "tumour_voxels": int(rng.integers(0, 10_000))}
        for i in range(n)
    ]


def test_folds_balanced_and_deterministic():
    cases = _cases()
    folds = assign_folds(cases, num_folds=5, seed=0)
    assert folds == assign_folds(cases, num_folds=5, seed=0)
    assert folds != assign_folds(cases, num_folds=5, seed=1)
    sizes = np.bincount(list(folds.values()), minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for institution in {c["institution"] for c in cases}:
        counts = np.bincount([folds[c["case"]] for c in cases if c["institution"] == institution], minlength=5)
        assert counts.max() - counts.min() <= 1, institution
    burden = {c["case"]: c["tumour_voxels"] for c in cases}
    means = [np.mean([burden[k] for k, f in folds.items() if f == fold]) for fold in range(5)]
    overall = np.mean(list(burden.values()))
    assert max(abs(m - overall) for m in means) < 0.25 * overall


def test_split_fold_is_nested_and_disjoint():
    cases = _cases(12)
    folds = assign_folds(cases, num_folds=4)
    items = [dict(c, fold=folds[c["case"]]) for c in cases]
    for fold in range(4):
        parts = split_fold(items, fold, 4)
        check_disjoint(**parts)
        assert {i["fold"] for i in parts["test"]} == {fold}
        assert {i["fold"] for i in parts["validation"]} == {(fold + 1) % 4}
        assert sum(len(p) for p in parts.values()) == 12
    with pytest.raises(LGGInputError, match="fold must be in"):
        split_fold(items, 4, 4)


def test_check_disjoint_detects_leak():
    with pytest.raises(LGGInputError, match="leaks"):
        check_disjoint(train=[{"case": "a"}, {"case": "b"}], test=[{"case": "b"}])


def test_too_few_patients():
    with pytest.raises(LGGInputError, match="cannot fill"):
        assign_folds(_cases(3), num_folds=5)


def test_load_fold_from_converted(synthetic_converted):
    datalist = synthetic_converted / "datalist.json"
    parts = {s: load_fold(datalist, fold=2, split=s) for s in ("train", "validation", "test")}
    check_disjoint(**parts)
    assert sum(len(p) for p in parts.values()) == len(load_fold(datalist, split="all")) == 8
    assert all(len(item["image"]) == 3 for item in parts["train"])
    with pytest.raises(LGGInputError, match="datalist not found"):
        load_fold(synthetic_converted / "missing.json")
