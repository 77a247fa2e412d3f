"""Compare recipes whose whole cross-validation was run more than once: run-to-run spread, then recipe against recipe.

Example (the reruns of docs/results/ablation/reruns/)::

    python tools/compare_crossvals.py docs/results/ablation/reruns/spec.json docs/results/ablation/reruns

The spec lists each run's ``results.json`` (written by ``tools/crossval_report.py``, paths relative to the
repository root) with its recipe, and which recipes to compare; see :mod:`monai_lgg.studies.reruns`. Writes
``README.md``, ``comparison.json`` and a copy of the spec into OUTPUT (replaced as a whole).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from monai_lgg.io import atomic_dir, read_json, write_json
from monai_lgg.studies import PROJECT_ROOT
from monai_lgg.studies.reruns import compare_reruns, render_reruns

PROJECT = PROJECT_ROOT


def main(spec: str, output: str) -> None:
    """Write the rerun comparison of ``spec`` into the folder ``output``.

    Args:
        spec: comparison spec (JSON); its ``results`` paths are relative to the repository root.
        output: results folder (README.md, comparison.json, spec.json).
    """
    spec_record = read_json(spec, "spec file not found")
    result = compare_reruns(spec_record, PROJECT)
    command = shlex.join(["python", "tools/compare_crossvals.py", *sys.argv[1:]])
    # links from the written README to each results file
    links = {r["results"]: os.path.relpath(PROJECT / r["results"], Path(output).resolve()) for r in result["runs"]}
    page = render_reruns(result, command, links)
    with atomic_dir(output) as tmp:
        (tmp / "README.md").write_text(page)
        write_json(tmp / "comparison.json", result)
        write_json(tmp / "spec.json", spec_record)
    print(page)
    print(f"wrote {output}")
