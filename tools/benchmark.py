#!/usr/bin/env python
"""Benchmark a bundle: training, data pipeline, inference, conversion; against a plain PyTorch loop in the same run.

The measurement is :mod:`monai_lgg.studies.benchmark`; ``python tools/benchmark.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.benchmark import main

if __name__ == "__main__":
    run_tool(main)
