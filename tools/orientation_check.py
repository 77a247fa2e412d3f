"""Segment the same converted patients stored in other orientations and grids, and score each in world space.

The study is :mod:`monai_lgg.studies.orientation_check`; ``python tools/orientation_check.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.orientation_check import main

if __name__ == "__main__":
    run_tool(main)
