#!/usr/bin/env python
"""Convert images/ + masks/ folders to NIfTI: same as ``monai-lgg convert_folders SOURCE OUTPUT [options]``."""

from monai_lgg.cli import command
from monai_lgg.errors import run_tool

if __name__ == "__main__":
    run_tool(command("convert_folders"))
