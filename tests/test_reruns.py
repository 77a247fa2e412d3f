"""Comparing recipes that were cross-validated more than once (monai_lgg.studies.reruns, tools/compare_crossvals.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from monai_lgg.errors import LGGInputError
from monai_lgg.studies.reruns import compare_reruns, render_reruns

from .conftest import PROJECT_ROOT

CASES = [f"P{i}" for i in range(6)]


def _record(dice: list[float], raw_shift: float = -0.01) -> dict:
    rows = [
        {"case": c, "fold": i % 3, "dice": d, "dice_raw": d + raw_shift}
        for i, (c, d) in enumerate(zip(CASES, dice, strict=True))
    ]
    summary = {
        "mean": sum(dice) / len(dice),
        "ci_low": 0.0,
        "ci_high": 1.0,
        "median": sorted(dice)[3],
        "min": min(dice),
        "below_0.5": sum(d < 0.5 for d in dice),
        "fp_slices": 2,
        "empty_slices": 100,
        "fp_rate": 0.02,
    }
    return {"per_patient": rows, "lofo": summary, "raw": {**summary, "mean": summary["mean"] + raw_shift}}


@pytest.fixture
def spec(tmp_path):
    values = {
        "a1": [0.8, 0.7, 0.9, 0.6, 0.85, 0.75],
        "a2": [0.9, 0.7, 0.8, 0.6, 0.85, 0.95],  # a1 again: +0.1, 0, -0.1, 0, 0, +0.2
        "b1": [0.7, 0.6, 0.8, 0.5, 0.75, 0.65],  # 0.1 below a1 on every patient
    }
    for name, dice in values.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(_record(dice)))
    return {
        "title": "t",
        "runs": [{"label": n, "recipe": n[0], "results": f"{n}.json"} for n in values],
        "compare": [["a", "b"]],
        "notes": ["a note"],
    }


def test_spread_and_comparison_are_paired_per_patient(spec, tmp_path):
    result = compare_reruns(spec, tmp_path)
    (spread,) = result["spreads"]
    assert spread["runs"] == ["a1", "a2"] and spread["patients"] == 6
    assert spread["mean_difference"] == pytest.approx(-0.2 / 6)  # a1 - a2
    assert (spread["better"], spread["worse"]) == (1, 2)
    diffs = [-0.1, 0.0, 0.1, 0.0, 0.0, -0.2]
    mean = sum(diffs) / 6
    assert spread["sd_difference"] == pytest.approx((sum((d - mean) ** 2 for d in diffs) / 5) ** 0.5)
    (comparison,) = result["comparisons"]
    # a's runs averaged per patient, then paired with b: a1 - b1 is 0.1 everywhere, a2 - a1 adds half of its diffs
    assert comparison["mean_difference"] == pytest.approx(0.1 + 0.2 / 12)
    assert (comparison["runs"], comparison["reference_runs"], comparison["better"]) == (2, 1, 6)
    # raw per-fold means of a1 (fold = index % 3; raw = LOFO - 0.01): (0.8 + 0.6) / 2, (0.7 + 0.85) / 2, ...
    expected = {0: 0.69, 1: 0.765, 2: 0.815}
    assert result["runs"][0]["raw_fold_means"] == {f: pytest.approx(v) for f, v in expected.items()}
    page = render_reruns(result, "cmd", {"a1.json": "../a1.json"})
    assert "[a1](../a1.json)" in page and "| a | a1 − a2 | -0.033" in page and "| a | b | 6 | 2 |" in page
    assert "- a note" in page and "2.0 % (2/100)" in page


def test_a_run_of_fewer_folds_is_compared_on_its_own_patients(spec, tmp_path):
    """A lever stopped after some folds: both means of its comparison cover only the patients it has."""
    record = _record([0.9, 0.2, 0.9, 0.2, 0.9, 0.2])
    record["per_patient"] = [r for r in record["per_patient"] if r["fold"] != 1]  # P1 and P4 not scored
    (tmp_path / "c1.json").write_text(json.dumps(record))
    spec = {
        **spec,
        "runs": [*spec["runs"], {"label": "c1", "recipe": "c", "results": "c1.json"}],
        "compare": [["c", "b"]],
    }
    result = compare_reruns(spec, tmp_path)
    (comparison,) = result["comparisons"]
    b1 = [0.7, 0.8, 0.5, 0.65]  # P0, P2, P3, P5
    assert comparison["patients"] == 4
    assert comparison["mean"] == pytest.approx((0.9 + 0.9 + 0.2 + 0.2) / 4)
    assert comparison["reference_mean"] == pytest.approx(sum(b1) / 4)  # not b1's 6-patient mean
    assert result["runs"][-1]["patients"] == 4
    page = render_reruns(result)
    assert "[c1](c1.json) | c |" in page and "| c | b | 4 | 1 | 0.550 |" in page


def test_tail_follows_the_lowest_patients_of_the_complete_runs(spec, tmp_path):
    result = compare_reruns({**spec, "tail": 2}, tmp_path)
    tail = result["tail"]
    # averaged over a1, a2, b1: P3 (0.567) and P1 (0.667) are the two lowest
    assert tail["patients"] == ["P3", "P1"] and tail["chosen_by"] == ["a1", "a2", "b1"]
    a1 = tail["runs"][0]
    assert (a1["tail_patients"], a1["other_patients"]) == (2, 4)
    assert a1["tail_mean"] == pytest.approx((0.6 + 0.7) / 2) and a1["other_mean"] == pytest.approx(3.3 / 4)
    assert "| a1 | 2, 0.650 | 4, 0.825 |" in render_reruns(result)
    assert compare_reruns({**spec, "tail": 0}, tmp_path)["tail"] is None
    for name, fold in (("p1", 0), ("p2", 1)):  # two partial runs, neither scoring every patient: no tail section
        record = _record([0.8] * 6)
        record["per_patient"] = [r for r in record["per_patient"] if r["fold"] == fold]
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    partial = compare_reruns(
        {"runs": [{"label": n, "recipe": n, "results": f"{n}.json"} for n in ("p1", "p2")]}, tmp_path
    )
    assert partial["tail"] is None and "Where the mean is lost" not in render_reruns(partial)
    with pytest.raises(LGGInputError, match="tail must be a whole number"):
        compare_reruns({**spec, "tail": "six"}, tmp_path)


def test_bad_specs_fail_in_one_line_naming_the_file(spec, tmp_path):
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(LGGInputError, match="broken.json: is not valid JSON"):
        compare_reruns({**spec, "runs": [{"label": "x", "recipe": "x", "results": "broken.json"}]}, tmp_path)
    with pytest.raises(LGGInputError, match="missing.json: results file not found"):
        compare_reruns({**spec, "runs": [{"label": "x", "recipe": "x", "results": "missing.json"}]}, tmp_path)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(LGGInputError, match="not a crossval_report results.json"):
        compare_reruns({**spec, "runs": [{"label": "x", "recipe": "x", "results": "other.json"}]}, tmp_path)
    with pytest.raises(LGGInputError, match="a run in the spec has no recipe"):
        compare_reruns({**spec, "runs": [{"label": "x", "results": "a1.json"}]}, tmp_path)
    with pytest.raises(LGGInputError, match="compare names recipe 'c'"):
        compare_reruns({**spec, "compare": [["a", "c"]]}, tmp_path)


def test_the_tool_writes_the_folder_and_reports_bad_input_in_one_line(tmp_path):
    tool = [sys.executable, str(PROJECT_ROOT / "tools" / "compare_crossvals.py")]
    bad = subprocess.run(tool + [str(tmp_path / "nope.json"), str(tmp_path / "out")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("nope.json: spec file not found")
    assert "Traceback" not in bad.stderr and not (tmp_path / "out").exists()
    shipped = PROJECT_ROOT / "docs" / "results" / "ablation" / "reruns" / "spec.json"
    done = subprocess.run(tool + [str(shipped), str(tmp_path / "out")], capture_output=True, text=True, check=True)
    assert "wrote" in done.stdout
    written = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert written["comparisons"]
    assert json.loads((tmp_path / "out" / "spec.json").read_text()) == json.loads(shipped.read_text())
