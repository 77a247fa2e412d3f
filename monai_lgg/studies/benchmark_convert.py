"""Benchmark the Kaggle -> NIfTI conversion; prints a table (and JSON with --json_out).

    python tools/benchmark_convert.py [SOURCE] [--workers N] [--repeats R]

SOURCE defaults to ../shared/data/lgg/kaggle_3m beside the project, else a synthetic set. The speed
target is 3929 pairs (110 patients) in <= 60 s on 2 cores; the shared copy has 2446 pairs, so the
table also extrapolates at the measured rate.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from monai_lgg.data.kaggle import convert_kaggle
from monai_lgg.data.synthetic import generate_synthetic_kaggle
from monai_lgg.studies import PROJECT_ROOT

FULL_SET_PAIRS = 3929
SHARED = PROJECT_ROOT.parent / "shared" / "data" / "lgg" / "kaggle_3m"


def measure(source: str | None = None, workers: int | None = None, repeats: int = 2) -> tuple[str, list[dict]]:
    """Convert ``source`` (default: the shared set, else a synthetic one) ``repeats`` times into a temporary folder.

    Returns:
        the source converted and one row per run (patients, pairs, seconds, pairs/s, extrapolated seconds).
    """
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = str(SHARED) if SHARED.is_dir() else str(generate_synthetic_kaggle(Path(tmp) / "synth", 16, 24))
        rows = []
        for r in range(repeats):
            start = time.perf_counter()
            result = convert_kaggle(source, Path(tmp) / "out", num_workers=workers, progress=False)
            seconds = time.perf_counter() - start
            pairs = result.report["slices"]
            rows.append(
                {
                    "run": r,
                    "patients": result.report["patients"],
                    "pairs": pairs,
                    "seconds": round(seconds, 2),
                    "pairs_per_s": round(pairs / seconds, 1),
                    "est_3929_pairs_s": round(FULL_SET_PAIRS * seconds / pairs, 1),
                }
            )
    return source, rows


def main(source: str | None = None, workers: int | None = None, repeats: int = 2, json_out: str | None = None) -> None:
    source, rows = measure(source, workers, repeats)
    print(f"source: {source}  cpus: {os.cpu_count()}  workers: {workers or 'auto'}")
    print(f"{'run':>3} {'patients':>8} {'pairs':>6} {'seconds':>8} {'pairs/s':>8} {'est. 3929 pairs (s)':>20}")
    for row in rows:
        print(
            f"{row['run']:>3} {row['patients']:>8} {row['pairs']:>6} {row['seconds']:>8} {row['pairs_per_s']:>8} "
            f"{row['est_3929_pairs_s']:>20}"
        )
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2))
