"""monai-lgg: MONAI bundles, honest per-patient evaluation and a CLI for 2D LGG segmentation."""

__version__ = "0.2.0"
