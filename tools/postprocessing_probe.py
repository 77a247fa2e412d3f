#!/usr/bin/env python
"""Score post-processing rules beyond the cross-validation's candidates on out-of-fold probabilities.

The study is :mod:`monai_lgg.studies.postprocessing_probe`; ``python tools/postprocessing_probe.py --help`` lists its
options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.postprocessing_probe import main

if __name__ == "__main__":
    run_tool(main)
