"""Factories that bundle configs call (``"$import monai_lgg.engines as lgg"``): written once, used by every bundle."""

from monai_lgg.data.datasets import VolumeSliceDataset
from monai_lgg.engines.bundle import (
    SYNTHETIC,
    bundle_network,
    bundle_root,
    bundle_setting,
    cache_root,
    default_device,
    default_geometry,
    inference_items,
    load_split,
    prepare_dataset,
    run_dir,
    trained_members,
    trained_setting,
)
from monai_lgg.engines.components import (
    LOSSES,
    MULTICLASS_LOSSES,
    additional_metrics,
    case_name_formatter,
    class_names,
    inference_postprocessing,
    key_metric,
    make_loss,
    make_optimizer,
    make_scheduler,
    postprocessing,
)
from monai_lgg.engines.distributed import destroy_distributed, distributed, distributed_device, init_distributed, rank
from monai_lgg.engines.handlers import is_main_process, provenance, train_handlers, unwrap, val_handlers
from monai_lgg.engines.inferers import FlipTTAInferer
from monai_lgg.engines.performance import FastInferer, fast_default, prepare_network, train_loader
from monai_lgg.engines.reports import PatientReport, check_no_leakage, evaluation_handlers
from monai_lgg.errors import as_flag
from monai_lgg.transforms.presets import cached_volume_transforms, train_slice_transforms, volume_transforms

__all__ = [
    "SYNTHETIC",
    "as_flag",
    "LOSSES",
    "MULTICLASS_LOSSES",
    "VolumeSliceDataset",
    "PatientReport",
    "additional_metrics",
    "case_name_formatter",
    "inference_items",
    "inference_postprocessing",
    "bundle_network",
    "bundle_root",
    "bundle_setting",
    "cache_root",
    "check_no_leakage",
    "class_names",
    "default_device",
    "default_geometry",
    "trained_members",
    "trained_setting",
    "destroy_distributed",
    "distributed",
    "distributed_device",
    "init_distributed",
    "rank",
    "evaluation_handlers",
    "fast_default",
    "FastInferer",
    "FlipTTAInferer",
    "is_main_process",
    "key_metric",
    "load_split",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "postprocessing",
    "prepare_dataset",
    "prepare_network",
    "run_dir",
    "provenance",
    "train_handlers",
    "train_loader",
    "train_slice_transforms",
    "unwrap",
    "val_handlers",
    "volume_transforms",
    "cached_volume_transforms",
]
