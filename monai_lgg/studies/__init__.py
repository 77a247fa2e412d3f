"""The project's research studies: cross-validation, ablations, reruns and the other measured experiments.

They use the product (training, inference, metrics) and write the pages under ``docs/results/``; no product
module imports them. ``tools/<name>.py`` starts each study's ``main`` from the command line.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout the studies run in: they read its ``bundles/`` and write its ``docs/results/``."""
