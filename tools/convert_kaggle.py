#!/usr/bin/env python
"""Convert Kaggle LGG slices to per-patient NIfTI: same as ``monai-lgg convert SOURCE OUTPUT [options]``."""

from monai_lgg.cli import command
from monai_lgg.errors import run_tool

if __name__ == "__main__":
    run_tool(command("convert"))
