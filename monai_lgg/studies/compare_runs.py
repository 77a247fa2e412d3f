"""Compare finished grid runs in one table: recipe ablations and equal-budget model comparisons.

Example (the ablation of docs/results/ablation/)::

    python tools/compare_runs.py docs/results/ablation/spec.json docs/results/ablation

The spec names each row's grid ``results.json`` (written by ``tools/experiment_grid.py``), its cell and
folds, and the baseline row; see :func:`monai_lgg.studies.ablation.load_rows`. Every row is paired with the baseline
on the patients both tested; latency is measured for all rows in this one process.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from monai_lgg.errors import as_flag
from monai_lgg.studies.ablation import compare, comparison_table, write_comparison


def main(spec: str, output: str, latency: bool = True, threads: int = 2, repeats: int = 3) -> None:
    """Write the comparison table of ``spec`` into the folder ``output``.

    Args:
        spec: comparison spec (JSON).
        output: results folder (README.md, comparison.json, difference.png); replaced atomically.
        latency: re-measure fp32 ms/slice of every row's first-fold model, all in this process (run it on a quiet
            machine: other jobs distort the timings, though less their ratios).
        threads: CPU threads for the latency.
        repeats: timed runs per latency (median).
    """
    record = compare(spec, latency=as_flag(latency, "latency"), threads=threads, repeats=repeats)
    command = shlex.join(["python", "tools/compare_runs.py", *sys.argv[1:]])
    write_comparison(record, output, command)
    print(comparison_table(record))
    print(f"wrote {Path(output)}")
