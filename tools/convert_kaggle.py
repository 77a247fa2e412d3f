#!/usr/bin/env python
"""Convert Kaggle LGG slices to per-patient NIfTI: same as ``monai-lgg convert SOURCE OUTPUT [options]``."""

import sys

from monai_lgg.cli import main

if __name__ == "__main__":
    main(["convert", *sys.argv[1:]])
