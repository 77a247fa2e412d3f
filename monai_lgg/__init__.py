"""monai-lgg: MONAI bundles, honest per-patient evaluation and a CLI for 2D LGG segmentation."""

import logging
import warnings

__version__ = "0.2.0"

# With pydicom installed, every MONAI ``LoadImage`` tries to register a GPU DICOM decoder and logs a warning when
# nvImageCodec is absent (always on CPU machines): noise on every command, not a problem of the user's data.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")
