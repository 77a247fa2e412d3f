"""MONAI's experiment tracking (``python -m monai.bundle run ... --tracking mlflow``) on the project's bundles.

``--tracking mlflow`` makes MONAI append an ``MLFlowHandler`` to ``train#handlers`` and ``validate#handlers``
(both lists in the shared configs, so they can be appended to). The handler logs parameters (``max_epochs``,
``epoch_length``), the loss per iteration and the metrics per epoch, and as artefacts only the executed
config. :class:`TrackedRun`, in the same lists, adds the run's settings as parameters (fold, epochs,
learning rate, ...) and the files a user wants from it as artefacts (the trained ``model.pt`` and its
``model.json`` record; an evaluation's ``summary.json`` and ``per_patient.csv``), and ends the MLflow run
of an evaluation, which MONAI's validator settings leave open. Without tracking it does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["TrackedRun", "flat_handlers", "tracking_handlers"]


def flat_handlers(items: Sequence[object]) -> list:
    """An engine's handlers from a config list whose items are handlers or lists of handlers.

    ``validate#handlers`` is a list so that ``--tracking`` can append to it; its first item is the list the
    project's factory builds (``lgg.val_handlers(...)``), which this splices in. ``None`` items (disabled
    components) are dropped.
    """
    handlers: list = []
    for item in items or ():
        if isinstance(item, (list, tuple)):
            handlers.extend(h for h in item if h is not None)
        elif item is not None:
            handlers.append(item)
    return handlers


def tracking_handlers(engine: Engine) -> list:
    """The ``MLFlowHandler`` objects attached to ``engine``, in attachment order (none without tracking)."""
    from monai.handlers import MLFlowHandler

    found: list = []
    # ignite keeps no public list of an engine's handlers; the handlers are bound methods of their objects
    for registered in getattr(engine, "_event_handlers", {}).values():
        for entry in registered:
            owner = getattr(entry[0], "__self__", None)
            if isinstance(owner, MLFlowHandler) and all(owner is not f for f in found):
                found.append(owner)
    return found


class TrackedRun:
    """What the MLflow run of an engine records besides MONAI's defaults: parameters and artefacts; its end.

    Attach it before MONAI's tracking handler (the configs list it first; ``--tracking`` appends): at
    ``STARTED`` it hands ``params`` and ``artifacts`` to every ``MLFlowHandler`` on the engine, which logs the
    parameters as it starts and the artefacts when the engine completes, after every earlier handler (the
    checkpoint savers, the evaluation report) has written them. Files that do not exist then are skipped.

    Args:
        params: parameters of the run (values logged as text), e.g. the fold, the epochs, the learning rate.
        artifacts: files to log with the run (missing ones are skipped).
        end_run: end the MLflow run when the engine completes (an evaluation: MONAI's validator settings leave
            its run open; a training run's trainer handler ends its own).
    """

    def __init__(
        self, params: Mapping[str, object] | None = None, artifacts: Sequence[str | Path] = (), end_run: bool = False
    ) -> None:
        self.params = dict(params or {})
        self.artifacts = tuple(str(a) for a in artifacts)
        self.end_run = end_run

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._hand_over)
        if self.end_run:
            engine.add_event_handler(Events.COMPLETED, self._end_runs)

    def _hand_over(self, engine: Engine) -> None:
        for handler in tracking_handlers(engine):
            handler.experiment_param = {**(handler.experiment_param or {}), **self.params}
            handler.artifacts = tuple(dict.fromkeys((*[a for a in handler.artifacts if a], *self.artifacts)))

    def _end_runs(self, engine: Engine) -> None:
        for handler in tracking_handlers(engine):
            if handler.cur_run is not None:
                handler.complete()  # log the artefacts now: close() ends the run, the handler's own complete() skips
                handler.close()
