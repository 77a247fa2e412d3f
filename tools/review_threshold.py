"""Choose the ``needs_review`` threshold of ``monai-lgg predict`` by cross-validation and write its report.

The study is :mod:`monai_lgg.studies.review_threshold`; ``python tools/review_threshold.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.review_threshold import main

if __name__ == "__main__":
    run_tool(main)
