"""Score a cross-validation honestly: out-of-fold predictions, leave-one-fold-out post-processing, missing sequences.

The study is :mod:`monai_lgg.studies.crossval_report`; ``python tools/crossval_report.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.crossval_report import main

if __name__ == "__main__":
    run_tool(main)
