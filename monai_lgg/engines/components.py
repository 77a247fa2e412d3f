"""Training components selected by name from bundle configs: loss, optimizer, schedule, metrics.

Binary (``out_channels == 1``): one logit per pixel, sigmoid, threshold. Multi-class (``out_channels == K > 1``,
labels holding the class indices ``0 .. K-1``, class 0 the background): softmax over ``K`` logits, losses with
``to_onehot_y`` and optional per-class weights, argmax masks, metrics on one-hot channels (mean Dice over the
foreground classes as the key metric, per-class Dice and IoU alongside).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.handlers import HausdorffDistance, IgniteMetricHandler, MeanIoUHandler, from_engine
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss, DiceLoss, TverskyLoss
from monai.metrics import ConfusionMatrixMetric, CumulativeIterationMetric, DiceMetric, MeanIoU
from monai.optimizers import WarmupCosineSchedule
from monai.transforms import Activationsd, AsDiscreted, CastToTyped, Compose, Invertd, SaveImaged

from monai_lgg.bundle.settings import THRESHOLD
from monai_lgg.imaging.readers import AtomicNibabelWriter
from monai_lgg.losses import LogCoshDiceLoss, ShapeAwareLoss
from monai_lgg.metrics import SliceDiceMetric
from monai_lgg.transforms.components import RemoveSmallComponentsd

__all__ = [
    "LOSSES",
    "MULTICLASS_LOSSES",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "postprocessing",
    "inference_postprocessing",
    "case_name_formatter",
    "class_names",
    "class_key",
    "key_metric",
    "additional_metrics",
]


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


# The same losses for K > 1 classes: softmax over the K logits, (B, 1, H, W) class-index labels made one-hot.
# Their ``weight`` (per-class weights, background first) scales both torch's cross-entropy and MONAI's Dice term.
_MULTI = {"softmax": True, "to_onehot_y": True}
MULTICLASS_LOSSES: dict[str, Callable[..., torch.nn.Module]] = {
    "dice": partial(DiceLoss, **_MULTI, batch=True),
    "dicece": partial(DiceCELoss, **_MULTI, batch=True),
    "dicefocal": partial(DiceFocalLoss, **_MULTI, batch=True),
    "tversky": partial(TverskyLoss, **_MULTI, alpha=0.3, beta=0.7, batch=True),
    "ce": partial(DiceCELoss, **_MULTI, lambda_dice=0.0),  # cross-entropy alone (as the seed report trained)
    "logcoshdice": partial(LogCoshDiceLoss, **_MULTI, batch=True),
    "shapeaware": partial(ShapeAwareLoss, sigmoid=False, softmax=True, alpha=1.0, lambda_dice=1.0, batch=True),
}
_WEIGHTED = ("dice", "dicece", "dicefocal", "ce", "logcoshdice")


def make_loss(
    name: str = "dicece",
    deep_supervision: bool = False,
    out_channels: int = 1,
    class_weights: Sequence[float] | None = None,
    device: torch.device | str | None = None,
) -> torch.nn.Module:
    """A segmentation loss on logits, by name: binary (``out_channels == 1``) or over ``K`` classes.

    Args:
        name: one of ``dice``, ``dicece`` (default), ``dicefocal``, ``tversky`` (alpha 0.3 / beta 0.7,
            favouring recall), ``bce`` (binary only), ``ce`` (multi-class only: cross-entropy), ``logcoshdice``,
            ``shapeaware`` (boundary-distance-weighted cross-entropy + Dice).
        deep_supervision: wrap in MONAI ``DeepSupervisionLoss`` for networks that return a list of heads
            in training (final head first, weights 1, 1/2, 1/4, ...).
        out_channels: the network's outputs: 1 (binary, sigmoid) or the number of classes ``K > 1`` (softmax;
            the labels hold class indices ``0 .. K-1`` and are made one-hot inside the loss).
        class_weights: ``K`` per-class weights (background first) against class imbalance, e.g. ``[0.5, 1, 2]``;
            ``None``: equal. They weight the cross-entropy (``torch.nn.CrossEntropyLoss(weight=...)``) and the
            per-class Dice terms (MONAI ``DiceLoss(weight=...)``); ``tversky`` and ``shapeaware`` take none.
        device: where the class weights live (the training device).

    Raises:
        ValueError: unknown name, a loss with no form for ``out_channels``, or class weights that do not fit.
    """
    key = name.lower().replace("_", "").replace("-", "")
    table = LOSSES if out_channels == 1 else MULTICLASS_LOSSES
    if key not in table:
        if key in LOSSES or key in MULTICLASS_LOSSES:
            kind = "binary (out_channels=1)" if out_channels == 1 else f"multi-class (out_channels={out_channels})"
            other = {"bce": "ce", "ce": "bce"}.get(key, "dicece")
            raise ValueError(f"loss {name!r} has no {kind} form; use {other!r} (or another of {', '.join(table)})")
        raise ValueError(
            f"unknown loss {name!r}; choose one of {', '.join(sorted(set(LOSSES) | set(MULTICLASS_LOSSES)))}"
        )
    if class_weights is None:
        loss = table[key]()
    else:
        if out_channels == 1:
            raise ValueError("class_weights need out_channels > 1 (a multi-class model); a binary loss takes none")
        if len(class_weights) != out_channels or any(float(w) < 0 for w in class_weights):
            raise ValueError(
                f"class_weights must be {out_channels} non-negative numbers (background first), "
                f"got {list(class_weights)}"
            )
        if key not in _WEIGHTED:
            raise ValueError(f"loss {name!r} takes no class_weights; use one of {', '.join(_WEIGHTED)}")
        loss = table[key](weight=torch.as_tensor([float(w) for w in class_weights]))
    if device is not None:
        loss = loss.to(device)  # the weights are buffers: on the device of the logits
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


class ExtendableOneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """torch's ``OneCycleLR`` whose cycle length comes from the running config, not from a resumed checkpoint.

    Resuming with the same number of epochs replays the same cycle exactly; resuming a finished run with a
    larger ``--epochs`` continues from the step it reached along the new, longer cycle (torch's own
    scheduler would keep the old length and fail past its last step).
    """

    def load_state_dict(self, state_dict: dict) -> None:
        keep = {k: v for k, v in state_dict.items() if k not in ("total_steps", "_schedule_phases")}
        super().load_state_dict(keep)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    max_epochs: int = 100,
    warmup_epochs: int = 0,
    steps_per_epoch: int | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate schedule by name.

    - ``cosine``: per epoch, linear warm-up over ``warmup_epochs``, then cosine decay;
    - ``constant``;
    - ``onecycle``: per iteration (needs ``steps_per_epoch``), torch's ``OneCycleLR`` with its peak at the
      optimizer's learning rate after ``warmup_epochs`` (default: 10 % of the run), annealed to about zero
      at the last step, so the last epoch's weights are a fixed-schedule model (no epoch selection);
    - ``poly``: per iteration, ``(1 - step / total) ** 0.9`` down to zero (nnU-Net's schedule).

    Per-iteration schedules carry ``per_iteration = True``; the training handlers step them every iteration.
    """
    key = name.lower()
    if key in ("onecycle", "poly"):
        if not steps_per_epoch:
            raise ValueError(f"scheduler {name!r} steps every iteration: give steps_per_epoch")
        total = max(1, int(max_epochs) * int(steps_per_epoch))
        if key == "onecycle":
            warmup = warmup_epochs / max_epochs if warmup_epochs else 0.1
            peaks = [group["lr"] for group in optimizer.param_groups]
            scheduler = ExtendableOneCycleLR(
                optimizer,
                max_lr=peaks,
                total_steps=total,
                pct_start=min(max(warmup, 0.01), 0.5),
                anneal_strategy="cos",
                cycle_momentum=False,
                div_factor=25.0,
                final_div_factor=1e4,
            )
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total) ** 0.9)
        scheduler.per_iteration = True
        return scheduler
    if name == "cosine":
        return WarmupCosineSchedule(optimizer, warmup_steps=warmup_epochs, t_total=max(max_epochs, warmup_epochs + 1))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown scheduler {name!r}; choose cosine, constant, onecycle or poly")


def postprocessing(
    threshold: float = THRESHOLD,
    pred_key: str = "pred",
    out_channels: int = 1,
    label_key: str = "label",
    invert: Compose | None = None,
    image_key: str = "image",
    min_component_fraction: float = 0.0,
) -> Compose:
    """Network outputs -> masks for the metrics.

    Binary (``out_channels == 1``): sigmoid, then (with ``invert``) the probabilities mapped back onto the
    input's grid by ``Invertd`` (the ``brain`` geometry's crop and resize), a {0, 1} mask at ``threshold``
    (the label is already binary) and, with ``min_component_fraction``, the 3D components smaller than that
    fraction of the largest removed (:class:`~monai_lgg.transforms.components.RemoveSmallComponentsd`).
    ``K > 1`` classes: argmax of the logits (softmax keeps it) and the label map, both made one-hot ``(K, ...)``
    so MONAI's metrics score each class channel; ``threshold`` is unused.

    Args:
        invert: the preprocessing whose invertible steps are undone on the prediction (``None``: none).
        image_key: the key ``invert`` recorded its steps on.
    """
    if out_channels == 1:
        chain: list = [Activationsd(pred_key, sigmoid=True)]
        if invert is not None:
            # the image too, so reports draw overlays on the input's grid (zero outside the brain box)
            chain.append(
                Invertd(
                    [pred_key, image_key],
                    transform=invert,
                    orig_keys=[image_key, image_key],
                    nearest_interp=False,
                    to_tensor=True,
                    allow_missing_keys=True,
                )
            )
        chain.append(AsDiscreted(pred_key, threshold=threshold))
        if min_component_fraction > 0:
            chain.append(RemoveSmallComponentsd(pred_key, min_fraction=min_component_fraction))
        return Compose(chain)
    chain = [AsDiscreted([pred_key, label_key], argmax=[True, False], to_onehot=out_channels, allow_missing_keys=True)]
    if invert is not None:
        raise ValueError("the inverted (brain) geometry is for binary models; use geometry 'patch' with K > 1 classes")
    return Compose(chain)


def case_name_formatter(metadict: dict, saver: object) -> dict:
    """Name saved predictions ``<case>.nii.gz`` (the image's file name without its ``_000x`` channel suffix)."""
    from monai_lgg.data.naming import case_name  # the input forms' <case>_000k parser

    return {"subject": case_name(str(metadict.get("filename_or_obj", "case"))), "idx": None}


def inference_postprocessing(
    output_dir: str,
    threshold: float = THRESHOLD,
    pred_key: str = "pred",
    out_channels: int = 1,
    invert: Compose | None = None,
    image_key: str = "image",
    min_component_fraction: float = 0.0,
) -> Compose:
    """Masks saved as uint8 NIfTI on the input's grid, with its affine and header.

    Binary: :func:`postprocessing` ({0, 1}). ``K > 1`` classes: the argmax label map (values ``0 .. K-1``).

    Args:
        invert: the preprocessing whose invertible steps are undone on the prediction before it is saved: the
            reorientation to the model's frame (``volume_transforms(reorient=True)``) and the ``brain`` crop.
    """
    save = SaveImaged(
        pred_key,
        output_dir=output_dir,
        output_postfix="",
        output_ext=".nii.gz",
        output_dtype=np.uint8,
        resample=False,
        separate_folder=False,
        output_name_formatter=case_name_formatter,
        print_log=False,
        writer=AtomicNibabelWriter,  # a kill mid-write never leaves a truncated prediction
    )
    if out_channels == 1:
        masks = postprocessing(
            threshold, pred_key, invert=invert, image_key=image_key, min_component_fraction=min_component_fraction
        )
    else:  # the class scores go back onto the input's grid first (zero outside a brain box: background wins there)
        back = (
            []
            if invert is None
            else [Invertd(pred_key, transform=invert, orig_keys=image_key, nearest_interp=False, to_tensor=True)]
        )
        masks = Compose([*back, AsDiscreted(pred_key, argmax=True)])
    # uint8 before saving: MONAI Label drops SaveImaged and writes the mask as it is (else a float32 label map)
    return Compose(list(masks.transforms) + [CastToTyped(pred_key, dtype=np.uint8), save])


def class_names(
    out_channels: int = 1, names: Sequence[str] | None = None, datalist: str | Path | None = None
) -> list[str]:
    """Names of the classes ``0 .. K-1`` (two for a binary model: background and foreground).

    Args:
        out_channels: the network's outputs (1: binary).
        names: the names, background first (``--class_names "['background', 'cell', 'nucleus']"``).
        datalist: a converted data set's ``datalist.json``: without ``names``, the ``labels`` ({name: value})
            of the ``dataset.json`` beside it are used when they number the classes 0..K-1.

    Returns:
        ``names``, the data set's names, or ``background, class1, class2, ...``.

    Raises:
        ValueError: ``names`` do not number the classes.
    """
    count = max(2, out_channels)
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != count:
            raise ValueError(f"class_names must name {count} classes (background first), got {names}")
        return names
    if datalist is not None:
        meta = Path(datalist).parent / "dataset.json"
        try:
            labels = json.loads(meta.read_text()).get("labels", {}) if meta.is_file() else {}
        except (OSError, ValueError):
            labels = {}
        by_value = {int(v): str(k) for k, v in labels.items() if isinstance(v, int)}
        if sorted(by_value) == list(range(count)):
            return [by_value[v] for v in range(count)]
    return ["background"] + [f"class{c}" for c in range(1, count)]


def class_key(name: str) -> str:
    """A class name as used in metric and column names: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


class _ClassChannel:
    """Ignite output transform: the ``(preds, labels)`` of the engine output, one one-hot class channel kept."""

    def __init__(self, channel: int) -> None:
        self.channel = channel

    def __call__(self, output: Sequence[dict]) -> tuple[list, list]:
        preds, labels = from_engine(["pred", "label"])(output)
        c = self.channel
        return [p[c : c + 1] for p in preds], [y[c : c + 1] for y in labels]


def _handler(metric: CumulativeIterationMetric, channel: int | None = None) -> IgniteMetricHandler:
    transform = from_engine(["pred", "label"]) if channel is None else _ClassChannel(channel)
    return IgniteMetricHandler(metric_fn=metric, output_transform=transform, save_details=True)


def key_metric(out_channels: int = 1) -> dict[str, IgniteMetricHandler]:
    """Per-patient 3D Dice (each validation item is a whole patient volume), empty masks scored.

    ``ignore_empty=False``: a tumour-free patient scores 1 only if nothing is predicted; MONAI's
    default would silently drop it and hide its false positives. With ``K > 1`` classes (one-hot
    inputs from :func:`postprocessing`) it is the mean over the foreground classes 1..K-1 and the
    patients; a class absent from a patient's label and prediction scores 1 there.
    """
    include_background = out_channels == 1  # binary: the single channel is the foreground
    return {
        "val_mean_dice": _handler(
            DiceMetric(include_background=include_background, reduction="mean", ignore_empty=False)
        )
    }


def additional_metrics(
    out_channels: int = 1, names: Sequence[str] | None = None, datalist: str | Path | None = None
) -> dict[str, IgniteMetricHandler]:
    """Binary: IoU, precision, recall, F1, voxel accuracy, HD95 (per patient, averaged) and pooled per-slice Dice.

    ``K > 1`` classes: ``val_iou`` (mean over the foreground classes), and per foreground class
    ``val_dice_<name>`` and ``val_iou_<name>`` (3D per patient, averaged; empty masks scored as in
    :func:`key_metric`), with the names of :func:`class_names` (``names``, ``datalist``).
    """
    if out_channels > 1:
        per_class = {"val_iou": _handler(MeanIoU(include_background=False, reduction="mean", ignore_empty=False))}
        for c, name in enumerate(class_names(out_channels, names, datalist)[1:], start=1):
            per_class[f"val_dice_{class_key(name)}"] = _handler(DiceMetric(reduction="mean", ignore_empty=False), c)
            per_class[f"val_iou_{class_key(name)}"] = _handler(MeanIoU(reduction="mean", ignore_empty=False), c)
        return per_class
    metrics: dict = {
        "val_iou": MeanIoUHandler(include_background=True, output_transform=from_engine(["pred", "label"])),
        "val_hd95": HausdorffDistance(
            include_background=True, percentile=95, output_transform=from_engine(["pred", "label"])
        ),
        "val_slice_dice": _handler(SliceDiceMetric(empty_score=1.0)),
    }
    for name in ("precision", "recall", "f1 score", "accuracy"):
        metric = ConfusionMatrixMetric(include_background=True, metric_name=name, compute_sample=True, reduction="mean")
        metrics[f"val_{name.split()[0]}"] = _handler(metric)
    # MeanIoU's own default skips empty cases: score them like Dice.
    metrics["val_iou"] = _handler(MeanIoU(include_background=True, reduction="mean", ignore_empty=False))
    return metrics
