"""Training components selected by name from bundle configs: loss, optimizer, schedule, metrics."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from monai.handlers import HausdorffDistance, IgniteMetricHandler, MeanIoUHandler, from_engine
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss, DiceLoss, TverskyLoss
from monai.metrics import ConfusionMatrixMetric, CumulativeIterationMetric, DiceMetric, MeanIoU
from monai.optimizers import WarmupCosineSchedule
from monai.transforms import Activationsd, AsDiscreted, Compose, SaveImaged

from monai_lgg.data.readers import AtomicNibabelWriter
from monai_lgg.losses import LogCoshDiceLoss, ShapeAwareLoss
from monai_lgg.metrics import SliceDiceMetric

__all__ = ["LOSSES", "make_loss", "make_optimizer", "make_scheduler", "postprocessing", "inference_postprocessing", "case_name_formatter", "key_metric", "additional_metrics"]


class _BCEWithLogits(torch.nn.Module):
    """BCE on logits that accepts MONAI's float {0, 1} channel-first labels."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(input, target.float())


# Dice terms pool the whole batch (batch=True): a third of LGG slices are tumour-free, and a per-slice
# Dice loss is ~1 on every empty slice whatever the network does, which stalls training.
LOSSES = {
    "dice": lambda: DiceLoss(sigmoid=True, batch=True),
    "dicece": lambda: DiceCELoss(sigmoid=True, batch=True),
    "dicefocal": lambda: DiceFocalLoss(sigmoid=True, batch=True),
    "tversky": lambda: TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, batch=True),
    "bce": _BCEWithLogits,
    "logcoshdice": lambda: LogCoshDiceLoss(sigmoid=True, batch=True),
    "shapeaware": lambda: ShapeAwareLoss(sigmoid=True, alpha=1.0, lambda_dice=1.0, batch=True),
}


def make_loss(name: str = "dicece", deep_supervision: bool = False) -> torch.nn.Module:
    """A binary segmentation loss on logits, by name.

    Args:
        name: one of ``dice``, ``dicece`` (default), ``dicefocal``, ``tversky`` (alpha 0.3 / beta 0.7,
            favouring recall), ``bce``, ``logcoshdice``, ``shapeaware`` (boundary-distance-weighted BCE + Dice).
        deep_supervision: wrap in MONAI ``DeepSupervisionLoss`` for networks that return a list of heads
            in training (final head first, weights 1, 1/2, 1/4, ...).
    """
    key = name.lower().replace("_", "").replace("-", "")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    loss = LOSSES[key]()
    return DeepSupervisionLoss(loss, weight_mode="exp") if deep_supervision else loss


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    momentum: float = 0.9,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """``adam``, ``adamw`` or ``sgd`` (Nesterov momentum), with weight decay.

    Args:
        fused: use torch's fused (single-kernel) implementation; ``None``: when every parameter is on a
            CUDA device (elsewhere torch's default implementation).
    """
    key = name.lower()
    params = list(params)
    if fused is None:
        fused = bool(params) and all(isinstance(p, torch.Tensor) and p.is_cuda for p in params)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if key == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0, fused=fused or None
        )
    raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str = "cosine", max_epochs: int = 100, warmup_epochs: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule: ``cosine`` (linear warm-up, then cosine decay) or ``constant``."""
    if name == "cosine":
        return WarmupCosineSchedule(optimizer, warmup_steps=warmup_epochs, t_total=max(max_epochs, warmup_epochs + 1))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown scheduler {name!r}; choose cosine or constant")


def postprocessing(threshold: float = 0.5, pred_key: str = "pred") -> Compose:
    """Logits -> sigmoid probability -> binary mask at ``threshold``."""
    return Compose([Activationsd(pred_key, sigmoid=True), AsDiscreted(pred_key, threshold=threshold)])


def case_name_formatter(metadict: dict, saver: object) -> dict:
    """Name saved predictions ``<case>.nii.gz`` (the image's file name without its ``_000x`` channel suffix)."""
    name = Path(str(metadict.get("filename_or_obj", "case"))).name.split(".nii")[0]
    stem, _, channel = name.rpartition("_")
    return {"subject": stem if channel.isdigit() and len(channel) == 4 else name, "idx": None}


def inference_postprocessing(output_dir: str, threshold: float = 0.5, pred_key: str = "pred") -> Compose:
    """:func:`postprocessing`, then save each mask as uint8 NIfTI with the input's affine and header."""
    save = SaveImaged(
        pred_key, output_dir=output_dir, output_postfix="", output_ext=".nii.gz", output_dtype=np.uint8,
        resample=False, separate_folder=False, output_name_formatter=case_name_formatter, print_log=False,
        writer=AtomicNibabelWriter,  # a kill mid-write never leaves a truncated prediction
    )
    return Compose(list(postprocessing(threshold, pred_key).transforms) + [save])


def _handler(metric: CumulativeIterationMetric) -> IgniteMetricHandler:
    return IgniteMetricHandler(metric_fn=metric, output_transform=from_engine(["pred", "label"]), save_details=True)


def key_metric() -> dict[str, IgniteMetricHandler]:
    """Per-patient 3D Dice (each validation item is a whole patient volume), empty masks scored.

    ``ignore_empty=False``: a tumour-free patient scores 1 only if nothing is predicted; MONAI's
    default would silently drop it and hide its false positives.
    """
    return {"val_mean_dice": _handler(DiceMetric(include_background=True, reduction="mean", ignore_empty=False))}


def additional_metrics() -> dict[str, IgniteMetricHandler]:
    """IoU, precision, recall, F1, voxel accuracy, HD95 (per patient, averaged) and pooled per-slice Dice."""
    metrics: dict = {
        "val_iou": MeanIoUHandler(include_background=True, output_transform=from_engine(["pred", "label"])),
        "val_hd95": HausdorffDistance(include_background=True, percentile=95, output_transform=from_engine(["pred", "label"])),
        "val_slice_dice": _handler(SliceDiceMetric(empty_score=1.0)),
    }
    for name in ("precision", "recall", "f1 score", "accuracy"):
        metric = ConfusionMatrixMetric(include_background=True, metric_name=name, compute_sample=True, reduction="mean")
        metrics[f"val_{name.split()[0]}"] = _handler(metric)
    # MeanIoU's own default skips empty cases: score them like Dice.
    metrics["val_iou"] = _handler(MeanIoU(include_background=True, reduction="mean", ignore_empty=False))
    return metrics
