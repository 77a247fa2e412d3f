"""networks for monai_lgg."""

from monai_lgg.networks.transunet import TransUNet
from monai_lgg.networks.wrappers import DeepSupervisionWrapper, basic_unetplusplus

__all__ = ["TransUNet", "DeepSupervisionWrapper", "basic_unetplusplus"]
