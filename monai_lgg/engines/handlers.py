"""Ignite handlers and the handler sets every bundle uses (written once here, referenced by configs).

Crash safety: checkpoints are written to a temporary file, flushed to disk and renamed (MONAI's
``CheckpointSaver`` writes in place), so a run killed during a save never leaves a corrupt
``last.ckpt`` or ``model.pt``; leftovers of a killed save are removed at the next start. ``last.ckpt``
holds everything a resumed run needs (network, optimizer, scheduler, AMP scaler, early-stopping
state, engine counters, RNG states), and :class:`EpochSeed` makes each epoch's randomness depend
only on ``(seed, epoch)``, so a run killed at any point and restarted with the same command ends
with the same weights and metrics as an uninterrupted one (exactly, on CPU).

Security and leakage: every checkpoint is loaded with ``weights_only=True`` (:func:`load_checkpoint`),
and each has a JSON sidecar naming the patients it was trained and selected on, which evaluation uses
to refuse leaking test sets.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.handlers import (
    CheckpointLoader,
    EarlyStopHandler,
    LrScheduleHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    from_engine,
    stopping_fn_from_metric,
)
from monai.utils import get_seed

from monai_lgg.bundle.record import sidecar_path, write_record
from monai_lgg.engines.distributed import rank
from monai_lgg.errors import LGGInputError, as_flag, debug_enabled, input_error_in
from monai_lgg.io import read_json, remove_stale_parts, save_checkpoint

__all__ = [
    "is_main_process",
    "unwrap",
    "sidecar_path",
    "load_checkpoint",
    "SafeCheckpointLoader",
    "epoch_seed",
    "EpochSeed",
    "LastCheckpointSaver",
    "ResumeFromCheckpoint",
    "BestModelSaver",
    "FinalModelSaver",
    "ProgressBarHandler",
    "QuietStatsHandler",
    "RunFolderLog",
    "is_published_models_folder",
    "EpochLoss",
    "EarlyStopping",
    "TrainingHandlers",
    "train_handlers",
    "val_handlers",
]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel, so state dicts have no ``module.`` prefix."""
    return (
        network.module
        if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel))
        else network
    )


REFUSED_PICKLE = (
    "refused: it holds pickled Python objects, which could run code when loaded "
    "(checkpoints are loaded with weights_only=True: tensors and plain data only)"
)


@contextmanager
def _checkpoint_errors(path: str | Path) -> Iterator[None]:
    """Turn the errors of loading a checkpoint into one-line :class:`LGGInputError` naming it."""
    try:
        yield
    except LGGInputError:
        raise
    except pickle.UnpicklingError as err:  # what weights_only=True raises for any non-allowlisted object
        raise LGGInputError(path, REFUSED_PICKLE) from err
    except FileNotFoundError as err:
        raise LGGInputError(path, "checkpoint not found") from err
    except (RuntimeError, KeyError, ValueError, EOFError, OSError) as err:  # truncated file, wrong network
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise LGGInputError(path, f"cannot be loaded ({type(err).__name__}: {first_line})") from err


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never pickled code.

    Raises:
        LGGInputError: the file is missing, damaged, or holds pickled objects (refused, not run).
    """
    with _checkpoint_errors(path):
        return torch.load(path, map_location=map_location, weights_only=True)


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (which loads with ``weights_only=True``) with one-line errors.

    A checkpoint holding pickled objects, a damaged file or one that does not fit the network raises
    :class:`LGGInputError` naming the file instead of a library traceback. Arguments: as
    ``CheckpointLoader``.
    """

    def __call__(self, engine: Engine) -> None:
        with _checkpoint_errors(self.load_path):
            super().__call__(engine)


def _numbers(metrics: Mapping) -> dict[str, float]:
    """The scalar entries of an engine's metrics, as floats (for a JSON sidecar)."""
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch, rank)``, well mixed (NumPy ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0])


class EpochSeed:
    """Re-seed all the randomness of training at the start of every epoch from ``(seed, epoch, rank)``.

    MONAI random transforms keep their own ``RandomState`` (seeded once, when their ``Compose`` is
    built) and the DataLoader shuffle draws from torch's global generator, so normally an epoch's
    augmentations and order depend on every epoch before it, which a checkpoint cannot capture.
    At ``Events.EPOCH_STARTED`` this seeds torch (CPU and CUDA), NumPy and Python's ``random`` and
    the training dataset's random transforms (MONAI ``set_rnd``, as its DataLoader workers are
    seeded), so a run resumed from the checkpoint of epoch ``k`` replays epoch ``k + 1`` exactly.

    Args:
        seed: base seed; ``None``: the seed given to ``monai.utils.set_determinism`` (nothing is
            re-seeded when there is none).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = get_seed() if seed is None else int(seed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.seed is None:
            return
        seed = epoch_seed(self.seed, engine.state.epoch, rank())
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        loader = getattr(engine, "data_loader", None) or engine.state.dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            set_rnd(dataset, seed)


def _rng_state() -> dict:
    """RNG states as tensors and plain types, so they load with ``weights_only=True``."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": list(np.random.get_state()[1:]),
        "python": repr(random.getstate()),
    }
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
    """Save the full training state after every epoch, atomically (temporary file, fsync, rename).

    Saved: every object of ``save_dict``, the engine's counters (``trainer``), its AMP ``GradScaler``
    (``scaler``, when it has one) and the RNG states. The sidecar ``last.json`` holds ``record``,
    the epoch and the epoch's training and validation metrics. On attach, leftovers of a save that
    a kill interrupted are deleted (they are never read).

    Args:
        path: checkpoint file (``last.ckpt``).
        save_dict: ``{name: object with state_dict()}`` (network, optimizer, scheduler, ...).
        record: JSON-serialisable provenance written to the sidecar.
        validator: the evaluator whose latest metrics go into the sidecar.
    """

    def __init__(
        self,
        path: str | Path,
        save_dict: Mapping[str, Any],
        record: Mapping | None = None,
        validator: Engine | None = None,
    ) -> None:
        self.path, self.save_dict, self.record = Path(path), dict(save_dict), dict(record or {})
        self.validator = validator

    def attach(self, engine: Engine) -> None:
        if is_main_process():
            for target in (self.path, sidecar_path(self.path)):
                for stale in remove_stale_parts(target):
                    logger.warning(f"removed {stale}, left by an interrupted save")
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        state = {name: unwrap(obj).state_dict() for name, obj in self.save_dict.items() if obj is not None}
        state["trainer"] = engine.state_dict()
        if getattr(engine, "scaler", None) is not None:
            state["scaler"] = engine.scaler.state_dict()
        state["rng"] = _rng_state()
        save_checkpoint(state, self.path)
        info = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        info["metrics"] = _numbers(engine.state.metrics)
        if self.validator is not None and self.validator.state.epoch:
            info["validation_metrics"] = _numbers(self.validator.state.metrics)
        write_record(self.path, {**self.record, **info})


class ResumeFromCheckpoint:
    """At the start of a run, restore a :class:`LastCheckpointSaver` checkpoint if one exists.

    The engine continues from the saved epoch; ``max_epochs`` keeps the value of the current run, so
    a finished run can be extended with a larger ``max_epochs``. Loads with ``weights_only=True``.
    A checkpoint whose sidecar records another fold or other training / validation patients than
    ``record`` is refused: resuming it would mix two data splits (and could leak test patients).

    Args:
        path: checkpoint file (``last.ckpt``).
        save_dict: the objects to restore, as given to :class:`LastCheckpointSaver`.
        map_location: where to load tensors.
        record: the provenance of the current run (see :func:`provenance`).
    """

    SAME_RUN_KEYS = ("fold", "training_cases", "validation_cases")

    def __init__(
        self, path: str | Path, save_dict: Mapping[str, Any], map_location: Any = "cpu", record: Mapping | None = None
    ) -> None:
        self.path, self.save_dict, self.map_location = Path(path), dict(save_dict), map_location
        self.record = dict(record or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def _check_same_run(self) -> None:
        sidecar = sidecar_path(self.path)
        if not sidecar.is_file():
            return
        previous = read_json(sidecar)
        known = [key for key in self.SAME_RUN_KEYS if key in previous and key in self.record]
        changed = [key for key in known if previous[key] != self.record[key]]
        if changed:
            raise LGGInputError(
                self.path,
                f"was trained with another {', '.join(changed)} than this run: delete it (or its folder) "
                "or pass --resume false to start over",
            )

    def __call__(self, engine: Engine) -> None:
        if not self.path.is_file():
            return
        self._check_same_run()
        checkpoint = load_checkpoint(self.path, self.map_location)
        with _checkpoint_errors(self.path):
            for name, obj in self.save_dict.items():
                if obj is not None and name in checkpoint:
                    unwrap(obj).load_state_dict(checkpoint[name])
            if "scaler" in checkpoint and getattr(engine, "scaler", None) is not None:
                engine.scaler.load_state_dict(checkpoint["scaler"])
            max_epochs = engine.state.max_epochs
            engine.load_state_dict(checkpoint["trainer"])
            engine.state.max_epochs = max(max_epochs, engine.state.epoch)
            if "rng" in checkpoint:
                _set_rng_state(checkpoint["rng"])
        done, total = engine.state.epoch, engine.state.max_epochs
        if done >= total:
            logger.warning(
                f"{self.path} is a finished run ({done} of {total} epochs): nothing left to train. A larger --epochs "
                "continues it; --resume false starts afresh (replacing it); --run_dir DIR trains into another folder"
            )
        else:
            logger.warning(
                f"resuming the run in {self.path.parent} after epoch {done} of {total} (from {self.path.name}); "
                "--resume false starts afresh (replacing it); --run_dir DIR trains into another folder"
            )


class BestModelSaver:
    """On each validation, save the network's state dict when the key metric improves (model-zoo ``model.pt``).

    Args:
        path: file to write.
        network: the network.
        metric_name: key metric to maximise.
        record: JSON-serialisable provenance for the sidecar (fold, training and validation patients).
        resume: start from the best score recorded beside an existing ``path`` (same fold); otherwise
            the first validation of this run replaces it.
    """

    def __init__(
        self,
        path: str | Path,
        network: torch.nn.Module,
        metric_name: str = "val_mean_dice",
        record: Mapping | None = None,
        resume: bool = True,
    ) -> None:
        self.path, self.network, self.metric_name, self.record = Path(path), network, metric_name, dict(record or {})
        self.best = -float("inf")
        sidecar = sidecar_path(self.path)
        if is_main_process():
            for target in (self.path, sidecar):
                remove_stale_parts(target)
        if resume and sidecar.is_file() and self.path.is_file():  # a resumed run keeps the best so far
            previous = read_json(sidecar)
            if previous.get("fold") == self.record.get("fold"):
                self.best = float(previous.get("metric_value", self.best))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric_name])
        if not is_main_process() or not value > self.best:
            return
        self.best = value
        save_checkpoint(unwrap(self.network).state_dict(), self.path)
        record = {"epoch": engine.state.epoch, "metric": self.metric_name, "metric_value": value}
        write_record(self.path, {**self.record, **record})


class FinalModelSaver:
    """At the end of training, save the network's state dict as ``model.pt`` (no validation-based selection).

    For a model trained on every patient (the shipped weights) there is no held-out patient left to
    pick an epoch with, so the epoch count is fixed beforehand (from cross-validation) and the last
    epoch's weights are the model. The sidecar records that and every training patient, so evaluating
    this model on any of them is refused as leakage.

    Args:
        path: file to write.
        network: the network.
        record: JSON-serialisable provenance for the sidecar.
    """

    def __init__(self, path: str | Path, network: torch.nn.Module, record: Mapping | None = None) -> None:
        self.path, self.network, self.record = Path(path), network, dict(record or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        save_checkpoint(unwrap(self.network).state_dict(), self.path)
        selection = {"epoch": engine.state.epoch, "selection": "last epoch (fixed schedule)"}
        write_record(self.path, {**self.record, **selection})


def is_published_models_folder(folder: str | Path) -> bool:
    """True for a bundle's own ``models/`` folder (beside its ``configs/model.json``): its published model."""
    folder = Path(folder).resolve()
    return folder.name == "models" and (folder.parent / "configs" / "model.json").is_file()


class RunFolderLog:
    """Say where a training run writes before it starts, and where its model is when it ends.

    A run that writes into a bundle's own ``models/`` folder (asked for with ``--ckpt_dir
    <bundle>/models``) replaces the published model that ``inference.json`` and ``monai-lgg predict``
    load, so that is said as a warning too.

    Args:
        ckpt_dir: the run's checkpoint folder.
        log_dir: its TensorBoard folder.
        final_model: ``model.pt`` is the last epoch (a fixed schedule), not the best validation epoch.
        replacing: a previous run's ``last.ckpt`` is there and will be replaced (``resume=False``).
    """

    def __init__(
        self, ckpt_dir: str | Path, log_dir: str | Path, final_model: bool = False, replacing: bool = False
    ) -> None:
        self.ckpt_dir, self.log_dir = Path(ckpt_dir), Path(log_dir)
        self.final_model, self.replacing = final_model, replacing

    def attach(self, engine: Engine) -> None:
        if is_main_process():
            engine.add_event_handler(Events.STARTED, self.started)

    def started(self, engine: Engine) -> None:
        selection = "the last epoch" if self.final_model else "the best validation epoch"
        logger.info(
            f"checkpoints go to {self.ckpt_dir} (model.pt: {selection}; last.ckpt: the state to resume from), "
            f"TensorBoard logs to {self.log_dir}"
        )
        if is_published_models_folder(self.ckpt_dir):
            logger.warning(
                f"{self.ckpt_dir} is the bundle's published models folder: this run replaces the model.pt that "
                "inference.json and monai-lgg predict load (git checkout restores committed weights)"
            )
        if self.replacing:
            logger.warning(f"starting afresh (--resume false): the checkpoints in {self.ckpt_dir} are replaced")
        # registered now, after every other handler's, so it runs once the model has been saved
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine: Engine) -> None:
        model = self.ckpt_dir / "model.pt"
        if model.is_file():
            logger.info(f"model: {model} (segment with it: monai-lgg predict INPUT OUTPUT --checkpoint {model})")


class QuietStatsHandler(StatsHandler):
    """MONAI's ``StatsHandler``, except that a user error is not logged with its traceback.

    ``StatsHandler`` logs every exception of a run with ``logger.exception`` before re-raising it. An
    :class:`LGGInputError` (a wrong file or option) already carries a complete one-line message,
    which the command line prints last, so its traceback is only noise; ``MONAI_LGG_DEBUG=1`` keeps it.
    Arguments: as ``StatsHandler``.
    """

    def exception_raised(self, _engine: Engine, e: Exception) -> None:
        if input_error_in(e) is not None and not debug_enabled():
            raise e
        super().exception_raised(_engine, e)


class ProgressBarHandler:
    """tqdm progress bar with the running loss (ignite's ``ProgressBar``), on the main process only."""

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar

        if is_main_process():
            ProgressBar(persist=False).attach(
                engine, output_transform=lambda out: {"loss": from_engine(["loss"], first=True)(out)}
            )


class EpochLoss:
    """Average training loss of each epoch as the engine metric ``train_loss`` (logged by the stats handlers)."""

    def attach(self, engine: Engine) -> None:
        from ignite.metrics import Average

        Average(output_transform=from_engine(["loss"], first=True)).attach(engine, "train_loss")


class EarlyStopping:
    """Stop training when the validation key metric has not improved for ``patience`` validations.

    Its counter and best score are part of ``last.ckpt`` (``state_dict``), so a resumed run stops at
    the same epoch as an uninterrupted one.
    """

    def __init__(self, validator: Engine, patience: int, metric_name: str = "val_mean_dice") -> None:
        self.validator, self.patience, self.metric_name = validator, patience, metric_name
        self.handler: EarlyStopHandler | None = None

    def attach(self, engine: Engine) -> None:
        stop_fn = stopping_fn_from_metric(self.metric_name)
        self.handler = EarlyStopHandler(self.patience, stop_fn, trainer=engine, epoch_level=True)
        self.handler.attach(self.validator)

    def state_dict(self) -> dict:
        return dict(self.handler._handler.state_dict()) if self.handler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        if self.handler is not None and state:
            self.handler._handler.load_state_dict(state)


class TrainingHandlers:
    """Every bundle's trainer handlers as one config entry (after MONAI's ``ValidationHandler``).

    Resume from ``last.ckpt``, LR schedule, optional early stopping on the validation key metric,
    per-epoch console / TensorBoard logs, a progress bar, and the atomic ``last.ckpt`` checkpoint.
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
    seed: int | None = None,
    final_model: bool = False,
    network: torch.nn.Module | None = None,
) -> list:
    """Handlers of the trainer besides validation: where the run writes, epoch seeding, resume, LR schedule,
    early stop, logs, progress, last checkpoint.

    Args:
        validator: the evaluator run by ``ValidationHandler`` (early stopping watches its key metric).
        lr_scheduler: the scheduler, stepped every epoch, or every iteration when it has ``per_iteration = True``.
        save_dict: objects saved in and restored from ``last.ckpt`` (network, optimizer, scheduler).
        ckpt_dir: folder of ``last.ckpt``.
        log_dir: TensorBoard folder.
        resume: continue from ``last.ckpt`` when it exists.
        early_stop_patience: validations without improvement before stopping (0: never).
        progress: show a progress bar.
        record: provenance for the checkpoint sidecar.
        seed: base seed of :class:`EpochSeed` (``None``: the one given to ``set_determinism``).
        final_model: save the last epoch's weights as ``model.pt`` (:class:`FinalModelSaver`).
        network: the network saved by ``final_model`` (default ``save_dict["network"]``).
    """
    last = Path(ckpt_dir) / "last.ckpt"
    resume, final_model = as_flag(resume, "resume"), as_flag(final_model, "final_model")
    save_dict = dict(save_dict)
    replacing = not resume and last.is_file()
    handlers: list = [RunFolderLog(ckpt_dir, log_dir, final_model, replacing), EpochSeed(seed)]
    early_stop = EarlyStopping(validator, early_stop_patience) if early_stop_patience > 0 else None
    if early_stop is not None:
        save_dict["early_stopping"] = early_stop
    if resume:
        handlers.append(ResumeFromCheckpoint(last, save_dict, record=record))
    # per-iteration schedules (onecycle, poly) step every iteration and print nothing (the epoch log shows the LR)
    per_iteration = bool(getattr(lr_scheduler, "per_iteration", False))
    handlers.append(LrScheduleHandler(lr_scheduler, print_lr=not per_iteration, epoch_level=not per_iteration))
    if early_stop is not None:
        handlers.append(early_stop)
    handlers.append(EpochLoss())  # a collective (all-reduce) in distributed runs: every rank attaches it
    if is_main_process():
        # per-epoch logs only: the progress bar shows the running loss
        handlers += [
            QuietStatsHandler(iteration_log=False, epoch_log=True),
            TensorBoardStatsHandler(log_dir=str(log_dir), iteration_log=False, epoch_log=True),
        ]
        if progress:
            handlers.append(ProgressBarHandler())
    handlers.append(LastCheckpointSaver(last, save_dict, record, validator))
    if final_model:
        handlers.append(FinalModelSaver(Path(ckpt_dir) / "model.pt", network or save_dict["network"], record))
    return handlers


def val_handlers(
    network: torch.nn.Module,
    ckpt_dir: str | Path,
    log_dir: str | Path,
    record: Mapping | None = None,
    resume: bool = True,
    save_best: bool = True,
) -> list:
    """Handlers of the validator: metric logs and the best-model checkpoint (``model.pt``).

    ``resume=False`` starts the best-so-far score afresh, so a new run replaces an older ``model.pt``.
    ``save_best=False`` (a fixed schedule, ``final_model``: the last epoch is the model) only logs.
    """
    handlers: list = []
    if as_flag(save_best, "save_best"):
        handlers.append(
            BestModelSaver(Path(ckpt_dir) / "model.pt", network, record=record, resume=as_flag(resume, "resume"))
        )
    if is_main_process():
        handlers += [
            QuietStatsHandler(iteration_log=False),
            TensorBoardStatsHandler(log_dir=str(log_dir), iteration_log=False),
        ]
    return handlers


def provenance(fold: int, train: Sequence[dict], validation: Sequence[dict], **extra: Any) -> dict:
    """The sidecar record: which patients trained the model and which selected it."""
    return {
        "fold": fold,
        "training_cases": sorted(i["case"] for i in train),
        "validation_cases": sorted(i["case"] for i in validation),
        **extra,
    }
