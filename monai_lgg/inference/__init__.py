"""Inference: load bundles and checkpoints, segment slices and volumes, write results, export, benchmark.

Example::

    from monai_lgg.inference import load_members, Predictor, load_case, find_cases

    networks, info = load_members("unet")
    predictor = Predictor(networks, info.spatial_size, tta=True, largest_component=True)
    for case in find_cases("data/lgg"):
        image, _ = load_case(case)
        probability, mask = predictor(image)
"""

from monai_lgg.inference.formats import find_cases, load_case
from monai_lgg.inference.inputs import Case
from monai_lgg.inference.loading import (
    BundleInfo,
    bundle_info,
    load_members,
    load_network,
    resolve_bundle,
    resolve_device,
)
from monai_lgg.inference.predict import predict
from monai_lgg.inference.predictor import Predictor

__all__ = [
    "BundleInfo",
    "Case",
    "Predictor",
    "bundle_info",
    "find_cases",
    "load_case",
    "load_members",
    "load_network",
    "predict",
    "resolve_bundle",
    "resolve_device",
]
