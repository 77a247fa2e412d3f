"""Compare recipes whose whole cross-validation was run more than once: run-to-run spread, then recipe against recipe.

The study is :mod:`monai_lgg.studies.compare_crossvals`; ``python tools/compare_crossvals.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.compare_crossvals import main

if __name__ == "__main__":
    run_tool(main)
