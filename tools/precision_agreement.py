"""Do bf16 masks agree with fp32? Segment real patients with both precisions and compare.

The study is :mod:`monai_lgg.studies.precision_agreement`; ``python tools/precision_agreement.py --help`` lists its
options.
"""

from monai_lgg.errors import run_tool
from monai_lgg.studies.precision_agreement import main

if __name__ == "__main__":
    run_tool(main)
