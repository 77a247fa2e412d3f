"""Former home of the image readers, kept so that ``from monai_lgg.data.readers import ...`` keeps working.

They live in :mod:`monai_lgg.imaging.readers`, below both ``transforms/`` and ``data/``.
"""

from monai_lgg.imaging.readers import (
    AtomicNibabelWriter,
    NiftiVolumeReader,
    SliceImageReader,
    check_finite,
    read_slice_image,
)

__all__ = ["SliceImageReader", "NiftiVolumeReader", "AtomicNibabelWriter", "read_slice_image", "check_finite"]
