"""Radiogenomics: tumour shape features from any set of masks, tested against genomic subtypes.

Reproduces the analysis of Buda, Saha & Mazurowski 2019 ("Association of genomic subtypes of
lower-grade gliomas with shape features automatically extracted by a deep learning algorithm",
Computers in Biology and Medicine 109:218-225) from a converted data set, a folder of predicted
NIfTI masks or Kaggle-layout slice masks. Definitions: ``docs/radiogenomics.md``.
"""

from monai_lgg.radiogenomics.analysis import measure_masks, run_radiogenomics
from monai_lgg.radiogenomics.associations import agreement, association_tests, fisher_exact_2xk, icc_absolute_agreement
from monai_lgg.radiogenomics.features import shape_features

__all__ = [
    "run_radiogenomics",
    "measure_masks",
    "shape_features",
    "association_tests",
    "agreement",
    "fisher_exact_2xk",
    "icc_absolute_agreement",
]
