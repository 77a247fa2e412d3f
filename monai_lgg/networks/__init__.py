"""networks for monai_lgg."""

from monai_lgg.networks.ensemble import ProbabilityEnsemble
from monai_lgg.networks.transunet import TransUNet
from monai_lgg.networks.unext import UNeXt
from monai_lgg.networks.wrappers import DeepSupervisionWrapper, basic_unetplusplus

__all__ = ["ProbabilityEnsemble", "TransUNet", "UNeXt", "DeepSupervisionWrapper", "basic_unetplusplus"]
