"""The comparison table over finished grid runs (monai_lgg.studies.ablation, tools/compare_runs.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from monai_lgg.errors import LGGInputError
from monai_lgg.studies.ablation import FAILURE_DICE, compare, comparison_table, load_rows, write_comparison

PROJECT = Path(__file__).resolve().parents[1]
COLUMNS = ["case", "dice", "slices", "tumour_free_slices", "false_positive_slices"]


def _grid(root: Path, name: str, dice_by_fold: dict[int, list[float]], fp: int = 0, bundle: str = "unet") -> Path:
    """A finished grid's results.json plus the per-patient tables it points at."""
    cell = f"{bundle}-dicece-adamw"
    for fold, values in dice_by_fold.items():
        eval_dir = root / name / cell / f"fold{fold}" / "eval"
        eval_dir.mkdir(parents=True)
        with open(eval_dir / "per_patient.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for i, d in enumerate(values):
                writer.writerow([f"case{fold}_{i}", d, 20, 10, fp])
    folds = sorted(dice_by_fold)
    record = {
        "name": name,
        "folds": folds,
        "overrides": {"epochs": 3},
        "work_dir": str(root / name),
        "results": [
            {
                "name": cell,
                "cell": {"bundle": bundle, "loss": "dicece", "optimizer": "adamw"},
                "params": 1_000_000,
                "train_seconds": [60.0 * (f + 1) for f in folds],
                "epochs": [3 for _ in folds],
                "commands": {f"fold{f}": [f"train fold {f}", f"evaluate fold {f}"] for f in folds},
            }
        ],
    }
    path = root / f"{name}_results.json"
    path.write_text(json.dumps(record))
    return path


def _spec(root: Path, rows: list[dict], baseline: str = "base") -> Path:
    path = root / "spec.json"
    path.write_text(json.dumps({"title": "Ablation", "baseline": baseline, "notes": ["a note"], "rows": rows}))
    return path


@pytest.fixture
def two_rows(tmp_path: Path) -> Path:
    base = _grid(tmp_path, "base", {1: [0.9, 0.8, 0.3], 3: [0.7, 0.6]}, fp=1)
    lever = _grid(tmp_path, "lever", {1: [0.95, 0.85, 0.35], 3: [0.75, 0.5]}, fp=0, bundle="unetr")
    return _spec(
        tmp_path,
        [
            {"label": "base", "lever": "-", "results": base.name},
            {"label": "lever", "lever": "x", "results": str(lever)},
        ],
    )


def test_paired_difference_counts_and_rates(two_rows: Path) -> None:
    record = compare(two_rows, latency=False)
    base, lever = record["rows"]
    assert record["baseline"] == "base" and "paired" not in base
    assert base["patients"] == 5 and base["below_failure"] == 1  # 0.3 < 0.5
    assert base["fp_rate"] == pytest.approx(5 / 50) and base["fp_slices"] == [5, 50]
    assert lever["fp_rate"] == 0.0
    paired = lever["paired"]
    # +0.05 on four patients, -0.1 on one: mean +0.02, the CI spans the bootstrap of those five values
    assert paired["patients"] == 5 and paired["better"] == 4 and paired["worse"] == 1
    assert paired["mean_difference"] == pytest.approx(0.02)
    assert -0.1 <= paired["ci_low"] < 0.02 < paired["ci_high"] <= 0.05 + 1e-9
    assert base["train_minutes"] == pytest.approx((120 + 240) / 2 / 60)  # folds 1 and 3: 120 s and 240 s
    assert lever["bundle"] == "unetr"
    table = comparison_table(record)
    assert "+0.020" in table and "| base | - | 5 |" in table and "baseline" in table


def test_folds_subset_and_failure_threshold(tmp_path: Path) -> None:
    results = _grid(tmp_path, "g", {0: [0.2, 0.4], 1: [0.9]})
    _, rows = load_rows(_spec(tmp_path, [{"label": "base", "results": str(results), "folds": [1]}]))
    assert [p["case"] for p in rows[0].patients] == ["case1_0"]
    record = compare(_spec(tmp_path, [{"label": "base", "results": str(results)}]), latency=False)
    assert record["rows"][0]["below_failure"] == sum(d < FAILURE_DICE for d in (0.2, 0.4, 0.9))


@pytest.mark.parametrize(
    "rows, problem",
    [
        ([], "no rows"),
        ([{"label": "base", "results": "missing.json"}], "cannot read a grid's results.json"),
        ([{"label": "base", "results": "GRID", "cell": "nope"}], "no cell 'nope'"),
        ([{"label": "base", "results": "GRID", "folds": [4]}], "not all among"),
        ([{"label": "base", "results": "GRID"}, {"label": "base", "results": "GRID"}], "labels repeat"),
        ([{"label": "other", "results": "GRID"}], "baseline 'base' is not a row label"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path: Path, rows: list[dict], problem: str) -> None:
    grid = _grid(tmp_path, "g", {1: [0.5]})
    rows = [{**r, "results": str(grid) if r["results"] == "GRID" else r["results"]} for r in rows]
    with pytest.raises(LGGInputError, match=problem):
        load_rows(_spec(tmp_path, rows))


def test_missing_fold_evaluation_is_named(tmp_path: Path) -> None:
    grid = _grid(tmp_path, "g", {1: [0.5]})
    (tmp_path / "g" / "unet-dicece-adamw" / "fold1" / "eval" / "per_patient.csv").unlink()
    with pytest.raises(LGGInputError, match="fold1/eval/per_patient.csv: missing"):
        load_rows(_spec(tmp_path, [{"label": "base", "results": str(grid)}]))


def test_written_folder_and_tool(two_rows: Path, tmp_path: Path) -> None:
    out = write_comparison(compare(two_rows, latency=False), tmp_path / "out", "python tools/compare_runs.py spec out")
    text = (out / "README.md").read_text()
    assert "# Ablation" in text and "- a note" in text and "train fold 1" in text
    assert (out / "difference.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "comparison.json").read_text())["rows"][1]["paired"]["better"] == 4
    written = json.loads((out / "spec.json").read_text())
    assert written["title"] == "Ablation" and Path(written["rows"][0]["results"]).is_absolute()
    # a spec kept inside the output folder survives the folder being rewritten, and still reads
    kept = out / "spec.json"
    again = write_comparison(compare(kept, latency=False), out)
    assert json.loads((again / "spec.json").read_text()) == written
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "tools" / "compare_runs.py"),
            str(two_rows),
            str(tmp_path / "cli"),
            "--latency",
            "false",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "n/a |" in done.stdout  # no latency measured
    bad = subprocess.run(
        [sys.executable, str(PROJECT / "tools" / "compare_runs.py"), str(tmp_path / "none.json"), str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and bad.stderr.strip().startswith("monai-lgg: error:") and "Traceback" not in bad.stderr


def test_a_row_pools_records_of_separate_folds(tmp_path: Path) -> None:
    one = _grid(tmp_path, "f1", {1: [0.9, 0.8]})
    three = _grid(tmp_path, "f3", {3: [0.7]})
    _, rows = load_rows(_spec(tmp_path, [{"label": "base", "results": [str(one), str(three)]}]))
    row = rows[0]
    assert row.folds == [1, 3] and len(row.patients) == 3
    assert row.result["train_seconds"] == [120.0, 240.0] and set(row.result["commands"]) == {"fold1", "fold3"}
    with pytest.raises(LGGInputError, match="a patient appears twice"):
        load_rows(_spec(tmp_path, [{"label": "base", "results": [str(one), str(one)]}]))
