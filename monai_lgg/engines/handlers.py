"""Ignite handlers and the handler sets every bundle uses (written once here, referenced by configs).

Checkpoints are written to a temporary file and renamed (MONAI's ``CheckpointSaver`` writes in
place), so a run killed during a save never leaves a corrupt ``last.pt`` or ``model.pt``. Every
checkpoint has a JSON sidecar naming the patients it was trained and selected on, which evaluation
uses to refuse leaking test sets.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import (
    EarlyStopHandler,
    LrScheduleHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    from_engine,
    stopping_fn_from_metric,
)

from monai_lgg.io import atomic_path, write_json

__all__ = [
    "is_main_process",
    "unwrap",
    "sidecar_path",
    "LastCheckpointSaver",
    "ResumeFromCheckpoint",
    "BestModelSaver",
    "ProgressBarHandler",
    "EpochLoss",
    "EarlyStopping",
    "TrainingHandlers",
    "train_handlers",
    "val_handlers",
]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel, so state dicts have no ``module.`` prefix."""
    return network.module if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else network


def sidecar_path(checkpoint: str | Path) -> Path:
    """``model.pt`` -> ``model.json``: the checkpoint's provenance (fold, patients, epoch, metric)."""
    return Path(checkpoint).with_suffix(".json")


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _rng_state() -> dict:
    """RNG states as tensors and plain types, so they load with ``weights_only=True``."""
    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()[1:]), "python": repr(random.getstate())}
    state["numpy"][0] = torch.as_tensor(state["numpy"][0])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LastCheckpointSaver:
    """Save the full training state (objects, engine counters, RNG) after every epoch, atomically.

    Args:
        path: checkpoint file (``last.pt``).
        save_dict: ``{name: object with state_dict()}`` (network, optimizer, scheduler, ...); the engine
            it is attached to is added as ``trainer``.
        record: JSON-serialisable provenance written to the sidecar.
    """

    def __init__(self, path: str | Path, save_dict: Mapping[str, Any], record: Mapping | None = None) -> None:
        self.path, self.save_dict, self.record = Path(path), dict(save_dict), dict(record or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        state = {name: unwrap(obj).state_dict() for name, obj in self.save_dict.items() if obj is not None}
        state["trainer"] = engine.state_dict()
        state["rng"] = _rng_state()
        _save(state, self.path)
        write_json(sidecar_path(self.path), {**self.record, "epoch": engine.state.epoch})


class ResumeFromCheckpoint:
    """At the start of a run, restore a :class:`LastCheckpointSaver` checkpoint if one exists.

    The engine continues from the saved epoch; ``max_epochs`` keeps the value of the current run, so
    a finished run can be extended with a larger ``max_epochs``. Loads with ``weights_only=True``.
    """

    def __init__(self, path: str | Path, save_dict: Mapping[str, Any], map_location: Any = "cpu") -> None:
        self.path, self.save_dict, self.map_location = Path(path), dict(save_dict), map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.path.is_file():
            return
        checkpoint = torch.load(self.path, map_location=self.map_location, weights_only=True)
        for name, obj in self.save_dict.items():
            if obj is not None and name in checkpoint:
                unwrap(obj).load_state_dict(checkpoint[name])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(checkpoint["trainer"])
        engine.state.max_epochs = max(max_epochs, engine.state.epoch)
        if "rng" in checkpoint:
            _set_rng_state(checkpoint["rng"])
        logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}")


class BestModelSaver:
    """On each validation, save the network's state dict when the key metric improves (model-zoo ``model.pt``).

    Args:
        path: file to write.
        network: the network.
        metric_name: key metric to maximise.
        record: JSON-serialisable provenance for the sidecar (fold, training and validation patients).
    """

    def __init__(self, path: str | Path, network: torch.nn.Module, metric_name: str = "val_mean_dice", record: Mapping | None = None) -> None:
        self.path, self.network, self.metric_name, self.record = Path(path), network, metric_name, dict(record or {})
        self.best = -float("inf")
        sidecar = sidecar_path(self.path)
        if sidecar.is_file() and self.path.is_file():  # a resumed run keeps the best so far
            previous = json.loads(sidecar.read_text())
            if previous.get("fold") == self.record.get("fold"):
                self.best = float(previous.get("metric_value", self.best))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric_name])
        if not is_main_process() or not value > self.best:
            return
        self.best = value
        _save(unwrap(self.network).state_dict(), self.path)
        write_json(sidecar_path(self.path), {**self.record, "epoch": engine.state.epoch, "metric": self.metric_name, "metric_value": value})


class ProgressBarHandler:
    """tqdm progress bar with the running loss (ignite's ``ProgressBar``), on the main process only."""

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar

        if is_main_process():
            ProgressBar(persist=False).attach(engine, output_transform=lambda out: {"loss": from_engine(["loss"], first=True)(out)})


class EpochLoss:
    """Average training loss of each epoch as the engine metric ``train_loss`` (logged by the stats handlers)."""

    def attach(self, engine: Engine) -> None:
        from ignite.metrics import Average

        Average(output_transform=from_engine(["loss"], first=True)).attach(engine, "train_loss")


class EarlyStopping:
    """Stop training when the validation key metric has not improved for ``patience`` validations."""

    def __init__(self, validator: Engine, patience: int, metric_name: str = "val_mean_dice") -> None:
        self.validator, self.patience, self.metric_name = validator, patience, metric_name

    def attach(self, engine: Engine) -> None:
        handler = EarlyStopHandler(self.patience, stopping_fn_from_metric(self.metric_name), trainer=engine, epoch_level=True)
        handler.attach(self.validator)


class TrainingHandlers:
    """Every bundle's trainer handlers as one config entry (after MONAI's ``ValidationHandler``).

    Resume from ``last.pt``, LR schedule, optional early stopping on the validation key metric,
    per-epoch console / TensorBoard logs, a progress bar, and the atomic ``last.pt`` checkpoint.
    Keeping ``ValidationHandler`` as its own entry in ``train#handlers`` is what MONAI's
    ``check_properties`` and the model zoo expect.

    Args: see :func:`train_handlers`.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.handlers = train_handlers(**kwargs)

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)


def train_handlers(
    validator: Engine,
    lr_scheduler: Any,
    save_dict: Mapping[str, Any],
    ckpt_dir: str | Path,
    log_dir: str | Path,
    resume: bool = True,
    early_stop_patience: int = 0,
    progress: bool = True,
    record: Mapping | None = None,
) -> list:
    """Handlers of the trainer besides validation: resume, LR schedule, early stop, logs, progress, last checkpoint.

    Args:
        validator: the evaluator run by ``ValidationHandler`` (early stopping watches its key metric).
        lr_scheduler: the per-epoch scheduler.
        save_dict: objects saved in and restored from ``last.pt`` (network, optimizer, scheduler).
        ckpt_dir: folder of ``last.pt``.
        log_dir: TensorBoard folder.
        resume: continue from ``last.pt`` when it exists.
        early_stop_patience: validations without improvement before stopping (0: never).
        progress: show a progress bar.
        record: provenance for the checkpoint sidecar.
    """
    last = Path(ckpt_dir) / "last.pt"
    handlers: list = [ResumeFromCheckpoint(last, save_dict)] if resume else []
    handlers.append(LrScheduleHandler(lr_scheduler, print_lr=True))
    if early_stop_patience > 0:
        handlers.append(EarlyStopping(validator, early_stop_patience))
    handlers.append(EpochLoss())  # a collective (all-reduce) in distributed runs: every rank attaches it
    if is_main_process():
        # per-epoch logs only: the progress bar shows the running loss
        handlers += [
            StatsHandler(iteration_log=False, epoch_log=True),
            TensorBoardStatsHandler(log_dir=str(log_dir), iteration_log=False, epoch_log=True),
        ]
        if progress:
            handlers.append(ProgressBarHandler())
    handlers.append(LastCheckpointSaver(last, save_dict, record))
    return handlers


def val_handlers(network: torch.nn.Module, ckpt_dir: str | Path, log_dir: str | Path, record: Mapping | None = None) -> list:
    """Handlers of the validator: metric logs and the best-model checkpoint (``model.pt``)."""
    handlers: list = [BestModelSaver(Path(ckpt_dir) / "model.pt", network, record=record)]
    if is_main_process():
        handlers += [StatsHandler(iteration_log=False), TensorBoardStatsHandler(log_dir=str(log_dir), iteration_log=False)]
    return handlers


def provenance(fold: int, train: Sequence[dict], validation: Sequence[dict], **extra: Any) -> dict:
    """The sidecar record: which patients trained the model and which selected it."""
    return {"fold": fold, "training_cases": sorted(i["case"] for i in train), "validation_cases": sorted(i["case"] for i in validation), **extra}
