"""Cross-validated accuracy of the shipped UNet when pre- or post-contrast sequences are missing.

The study is :mod:`monai_lgg.studies.missing_sequences`; ``python tools/missing_sequences.py --help`` lists its options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.missing_sequences import main

if __name__ == "__main__":
    run_tool(main)
