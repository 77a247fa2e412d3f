#!/usr/bin/env python
"""Convert images/ + masks/ folders to NIfTI: same as ``monai-lgg convert_folders SOURCE OUTPUT [options]``."""

import sys

from monai_lgg.cli import main

if __name__ == "__main__":
    main(["convert_folders", *sys.argv[1:]])
