"""Measure how much a random slice split (patients leaking between training and test) inflates Dice.

The study is :mod:`monai_lgg.studies.leaky_split`; ``python tools/leaky_split.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.leaky_split import main

if __name__ == "__main__":
    run_tool(main)
