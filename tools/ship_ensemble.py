"""Build the shipped model: the ensemble of a cross-validation's fold models, one float16 state dict.

The study is :mod:`monai_lgg.studies.ship_ensemble`; ``python tools/ship_ensemble.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.ship_ensemble import main

if __name__ == "__main__":
    run_tool(main)
