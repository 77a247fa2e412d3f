"""Former home of the model frame's orientation, kept so that ``monai_lgg.inference.orientation`` keeps working.

It lives in :mod:`monai_lgg.imaging.orientation`, below ``transforms/`` (which reorients inputs) and ``data/``.
"""

from monai_lgg.imaging.orientation import (
    MAX_INPLANE_RATIO,
    MAX_OBLIQUE_DEGREES,
    MODEL_AXCODES,
    Reorientation,
    plan_reorientation,
)

__all__ = ["MODEL_AXCODES", "MAX_OBLIQUE_DEGREES", "MAX_INPLANE_RATIO", "Reorientation", "plan_reorientation"]
