#!/usr/bin/env python
"""Inference latency of a bundle (default: unet): same as ``monai-lgg benchmark [options]``.

    python tools/benchmark_inference.py [--bundle unet] [--num_slices 40] [--threads 2] [--json FILE]

Prints a Markdown table (1 slice and one ~40-slice 256x256 volume, CPU and CUDA when present, with
and without flip TTA) and writes the numbers with their context (load average, versions) to
``benchmark_inference.json`` unless ``--json`` names another file. The timer is the project's only one
(``monai_lgg.inference.benchmark``), shared with ``tools/benchmark.py`` and ``tools/gpu_suite.py``.
"""

import sys

from monai_lgg.cli import command
from monai_lgg.errors import run_tool

if __name__ == "__main__":
    if not any(a == "--json" or a.startswith("--json=") for a in sys.argv[1:]):
        sys.argv += ["--json", "benchmark_inference.json"]  # the script keeps its numbers by default
    run_tool(command("benchmark"))
