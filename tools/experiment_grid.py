"""Run an experiment grid (bundles x losses x optimizers over patient folds) and write docs/results/<name>/.

The study is :mod:`monai_lgg.studies.experiment_grid`; ``python tools/experiment_grid.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.experiment_grid import main

if __name__ == "__main__":
    run_tool(main)
