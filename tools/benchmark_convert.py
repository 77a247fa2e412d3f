#!/usr/bin/env python
"""Benchmark the Kaggle -> NIfTI conversion; prints a table (and JSON with --json_out).

The measurement is :mod:`monai_lgg.studies.benchmark_convert`; ``python tools/benchmark_convert.py --help`` lists
its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.benchmark_convert import main

if __name__ == "__main__":
    run_tool(main)
