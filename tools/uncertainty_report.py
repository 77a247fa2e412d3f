"""Does ``monai-lgg predict --uncertainty`` mean something? Rank it against per-patient Dice over a cross-validation.

The study is :mod:`monai_lgg.studies.uncertainty_report`; ``python tools/uncertainty_report.py --help`` lists its
options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.uncertainty_report import main

if __name__ == "__main__":
    run_tool(main)
