"""Compare finished grid runs in one table: recipe ablations and equal-budget model comparisons.

The study is :mod:`monai_lgg.studies.compare_runs`; ``python tools/compare_runs.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.compare_runs import main

if __name__ == "__main__":
    run_tool(main)
