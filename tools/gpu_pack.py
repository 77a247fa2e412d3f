#!/usr/bin/env python
"""Pack what a bare GPU machine needs for ``tools/gpu_suite.py`` and unpack it there: ``monai_lgg.studies.gpu_pack``.

Runs before the pack's wheels are installed, so it finds the package in this source tree and uses the standard
library only.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # on the GPU machine the package runs from the source tree

from monai_lgg.errors import run_tool  # noqa: E402
from monai_lgg.studies.gpu_pack import main  # noqa: E402

if __name__ == "__main__":
    run_tool(main)
