#!/usr/bin/env python
"""ISBI 2012 EM membrane segmentation with the UNet bundle: convert, train, evaluate on 5 held-out slices.

The study is :mod:`monai_lgg.studies.isbi2012`; ``python tools/isbi2012.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.isbi2012 import main

if __name__ == "__main__":
    run_tool(main)
