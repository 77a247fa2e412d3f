"""The real shared LGG data (66 of 110 patients): counts, voxel-exact round trip, patient-disjoint folds.

Skips with a reason when ../shared/data is absent (a user's clone); runs in CI.
"""

from __future__ import annotations

import json

import pytest

from monai_lgg.data.datalist import check_disjoint, load_fold
from monai_lgg.data.kaggle import convert_kaggle

from .test_kaggle_convert import assert_round_trip

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_converted(shared_lgg, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "lgg"
    result = convert_kaggle(shared_lgg, out, progress=False)
    assert result.ok, result.report["errors"][:5]
    return out


def test_counts(real_converted):
    report = json.loads((real_converted / "conversion_report.json").read_text())
    assert (report["patients"], report["slices"], report["positive_slices"]) == (66, 2446, 860)
    assert report["errors"] == [] and report["skipped_cases"] == []
    dataset = json.loads((real_converted / "dataset.json").read_text())
    assert sum(c["clinical"] is not None for c in dataset["cases"].values()) == 66


def test_round_trip_every_voxel(shared_lgg, real_converted):
    assert assert_round_trip(shared_lgg, real_converted) == 2446


def test_folds_disjoint_and_balanced(real_converted):
    datalist = real_converted / "datalist.json"
    items = load_fold(datalist, split="all")
    sizes = [sum(i["fold"] == f for i in items) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1, sizes
    for fold in range(5):
        check_disjoint(**{s: load_fold(datalist, fold=fold, split=s) for s in ("train", "validation", "test")})
