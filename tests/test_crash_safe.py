"""Crash-safe training: atomic checkpoints, exact resume after SIGKILL, identical runs with one seed.

The fast tests drive the real trainer handlers (``train_handlers``) in process with a tiny network;
the slow ones run the ``unet`` bundle through ``python -m monai.bundle`` on a 3-patient, 32x32
synthetic set and kill it with SIGKILL in the middle of an epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from monai.utils import set_determinism

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.engines.components import make_scheduler
from monai_lgg.engines.handlers import (
    EpochSeed,
    LastCheckpointSaver,
    ResumeFromCheckpoint,
    load_checkpoint,
    train_handlers,
)
from monai_lgg.errors import LGGInputError
from monai_lgg.io import remove_stale_parts

from .conftest import PROJECT_ROOT, converted_synthetic

SEED = 7


# ---------------------------------------------------------------- in-process trainer with the real handlers


class _Crash(Exception):
    """Stands in for a kill in the middle of an epoch (in-process tests)."""


def _crash_at(epoch: int, iteration: int):
    def handler(engine: Engine) -> None:
        if engine.state.epoch == epoch and (engine.state.iteration - 1) % engine.state.epoch_length + 1 == iteration:
            raise _Crash()

    return handler


def _tiny_trainer(
    workdir: Path, epochs: int = 3, epoch_seed: bool = True, crash: tuple[int, int] | None = None, num_workers: int = 0
):
    """What a bundle's train.json builds, in miniature: set_determinism first, then every object anew."""
    set_determinism(seed=SEED)
    rng = np.random.RandomState(0)  # the data are fixed; only training randomness depends on the seed
    data = [
        {"image": rng.rand(1, 16, 16).astype(np.float32), "label": (rng.rand(1, 16, 16) > 0.7).astype(np.float32)}
        for _ in range(14)
    ]
    transform = Compose(
        [RandFlipd(["image", "label"], prob=0.5, spatial_axis=1), RandGaussianNoised("image", prob=0.5)]
    )
    loader = DataLoader(Dataset(data, transform), batch_size=4, shuffle=True, num_workers=num_workers)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Conv2d(4, 1, 1),
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    scheduler = make_scheduler(optimizer, "cosine", max_epochs=epochs)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(sigmoid=True),
        amp=False,
    )
    handlers = train_handlers(
        validator=Engine(lambda engine, batch: None),
        lr_scheduler=scheduler,
        save_dict={"network": network, "optimizer": optimizer, "lr_scheduler": scheduler},
        ckpt_dir=workdir / "models",
        log_dir=workdir / "logs",
        progress=False,
        record={"fold": 0},
        seed=SEED,
    )
    for handler in handlers:
        if epoch_seed or not isinstance(handler, EpochSeed):
            handler.attach(trainer)
    if crash is not None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _crash_at(*crash))
    return trainer


def _final(workdir: Path) -> tuple[dict, dict]:
    return load_checkpoint(workdir / "models" / "last.ckpt"), json.loads((workdir / "models" / "last.json").read_text())


def _same_tensors(a, b) -> bool:
    """Exact equality of nested state dicts (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        same_length = isinstance(b, (list, tuple)) and len(a) == len(b)
        return same_length and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[dict, dict]:
    workdir = tmp_path_factory.mktemp("reference")
    _tiny_trainer(workdir).run()
    return _final(workdir)


def test_same_seed_same_result_in_process(reference_run, tmp_path):
    _tiny_trainer(tmp_path).run()
    checkpoint, sidecar = _final(tmp_path)
    assert _same_tensors(checkpoint["network"], reference_run[0]["network"])
    assert sidecar["metrics"] == reference_run[1]["metrics"] and sidecar["epoch"] == 3


@pytest.mark.parametrize("crash", [(2, 1), (2, 3), (3, 2)])
def test_crash_mid_epoch_then_resume_is_exact(reference_run, tmp_path, crash):
    """Crash in the middle of an epoch, build everything again (as a restarted command does), resume."""
    with pytest.raises(_Crash):
        _tiny_trainer(tmp_path, crash=crash).run()
    assert json.loads((tmp_path / "models" / "last.json").read_text())["epoch"] == crash[0] - 1
    _tiny_trainer(tmp_path).run()
    checkpoint, sidecar = _final(tmp_path)
    reference, reference_sidecar = reference_run
    for key in ("network", "optimizer", "lr_scheduler", "trainer"):
        assert _same_tensors(checkpoint[key], reference[key]), key
    assert sidecar["metrics"] == reference_sidecar["metrics"]


def test_crash_resume_exact_with_dataloader_workers(tmp_path):
    """With worker processes, transforms are seeded from torch's generator per epoch: still exact."""
    _tiny_trainer(tmp_path / "reference", num_workers=2).run()
    with pytest.raises(_Crash):
        _tiny_trainer(tmp_path / "resumed", crash=(2, 2), num_workers=2).run()
    _tiny_trainer(tmp_path / "resumed", num_workers=2).run()
    resumed, resumed_sidecar = _final(tmp_path / "resumed")
    reference, reference_sidecar = _final(tmp_path / "reference")
    assert _same_tensors(resumed["network"], reference["network"])
    assert resumed_sidecar["metrics"] == reference_sidecar["metrics"]


def test_resume_without_epoch_seeding_differs(reference_run, tmp_path):
    """Control: restoring only the global RNG states does not replay an epoch (MONAI transforms keep their own)."""
    with pytest.raises(_Crash):
        _tiny_trainer(tmp_path, epoch_seed=False, crash=(2, 1)).run()
    _tiny_trainer(tmp_path, epoch_seed=False).run()
    assert not _same_tensors(_final(tmp_path)[0]["network"], reference_run[0]["network"])


def _engine_at(epoch: int, scale: float | None = None) -> Engine:
    """An engine at the end of ``epoch`` (4 iterations per epoch); with ``scale``, an AMP GradScaler as
    ``SupervisedTrainer(amp=True)`` sets as ``engine.scaler``."""
    engine = Engine(lambda engine, batch: None)
    engine.state.max_epochs, engine.state.epoch_length = 10, 4
    engine.state.epoch, engine.state.iteration = epoch, epoch * 4
    if scale is not None:
        engine.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    return engine


def test_checkpoint_holds_scaler_early_stopping_and_rng(tmp_path):
    """GradScaler (AMP), early-stopping counters, engine counters and RNG states go through last.pt."""
    path = tmp_path / "last.pt"
    net = torch.nn.Linear(2, 1)
    engine = _engine_at(2, scale=512.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):  # three good AMP steps move the scaler's growth tracker
        engine.scaler.scale(net(torch.ones(1, 2)).sum()).backward()
        engine.scaler.step(optimizer)
        engine.scaler.update()
    torch.manual_seed(123)
    LastCheckpointSaver(path, {"network": net}, record={"fold": 1})(engine)
    expected_draw = torch.rand(3)

    restored_net = torch.nn.Linear(2, 1)
    fresh = _engine_at(0, scale=65536.0)
    torch.manual_seed(0)
    ResumeFromCheckpoint(path, {"network": restored_net}, record={"fold": 1})(fresh)
    assert fresh.scaler.state_dict() == engine.scaler.state_dict()
    assert fresh.scaler.state_dict()["_growth_tracker"] == 3 and fresh.scaler.get_scale() == 512.0
    assert (fresh.state.epoch, fresh.state.iteration) == (2, 8)
    assert torch.equal(torch.rand(3), expected_draw), "RNG state not restored"
    assert _same_tensors(restored_net.state_dict(), net.state_dict())

    handlers = train_handlers(
        validator=Engine(lambda e, b: None),
        lr_scheduler=torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(net.parameters(), lr=0.1), lambda _: 1.0),
        save_dict={"network": net},
        ckpt_dir=tmp_path / "es",
        log_dir=tmp_path / "logs",
        early_stop_patience=3,
        progress=False,
    )
    saver = next(h for h in handlers if isinstance(h, LastCheckpointSaver))
    assert "early_stopping" in saver.save_dict, "early-stopping counters must be checkpointed"


def test_resume_refuses_checkpoint_of_another_split(tmp_path):
    """A last.pt trained on other patients is not silently continued (it would mix splits and could leak)."""
    path = tmp_path / "last.pt"
    net = torch.nn.Linear(2, 1)
    LastCheckpointSaver(path, {"network": net}, record={"fold": 0, "training_cases": ["a", "b"]})(_engine_at(1))
    resume = ResumeFromCheckpoint(path, {"network": net}, record={"fold": 0, "training_cases": ["a", "c"]})
    with pytest.raises(LGGInputError, match="another training_cases"):
        resume(_engine_at(0))
    ResumeFromCheckpoint(path, {"network": net}, record={"fold": 0, "training_cases": ["a", "b"]})(_engine_at(0))


# ---------------------------------------------------------------- atomic saves


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies half-way (here: torch.save writes some bytes, then fails) leaves last.pt as it was."""
    path = tmp_path / "models" / "last.pt"
    net = torch.nn.Linear(4, 2)
    saver = LastCheckpointSaver(path, {"network": net})
    saver(_engine_at(1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(LGGInputError, match="No space left on device"):
        saver(_engine_at(2))
    monkeypatch.undo()
    checkpoint = load_checkpoint(path)
    assert checkpoint["trainer"]["iteration"] == 4 and _same_tensors(checkpoint["network"], before)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.json", "last.pt"], "temporary file left behind"


def test_stale_temporary_file_is_ignored_and_cleaned(tmp_path):
    models = tmp_path / "models"
    path = models / "last.pt"
    net = torch.nn.Linear(4, 2)
    LastCheckpointSaver(path, {"network": net})(_engine_at(3))
    stale = [models / ".last.pt.k2j4_x9a.part.pt", models / ".last.json.abcdefgh.part.json"]
    for p in stale:
        p.write_bytes(b"\x80garbage from a killed save")
    unrelated = [models / "model.pt", models / ".last.pt.notes", models / ".last.pt.old.part.pt"]
    for p in unrelated:
        p.write_bytes(b"keep")

    engine = _engine_at(0)
    ResumeFromCheckpoint(path, {"network": torch.nn.Linear(4, 2)})(engine)  # reads last.pt, never the part file
    assert engine.state.epoch == 3
    LastCheckpointSaver(path, {"network": net}).attach(Engine(lambda e, b: None))  # a restarted run cleans up
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in unrelated)


KILL_DURING_SAVES = """
import sys, torch
from monai_lgg.io import save_checkpoint, write_json  # what LastCheckpointSaver writes with

path = sys.argv[1]
for epoch in range(1, 10**6):
    state = {"network": {"weight": torch.full((1500, 1500), float(epoch))}, "trainer": {"iteration": epoch}}  # 9 MB
    print("saving", epoch, flush=True)
    save_checkpoint(state, path)
    write_json(path[:-3] + ".json", {"epoch": epoch})
"""


def test_sigkill_during_saves_never_corrupts_last(tmp_path):
    """SIGKILL a process that saves last.pt in a loop, just after it starts a save: last.pt always loads, whole,
    and the leftover temporary file is recognised and removed."""
    path = tmp_path / "last.pt"
    rng = np.random.default_rng(0)
    interrupted = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_SAVES, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for _ in range(int(rng.integers(3, 6))):  # let a few saves complete, then kill during the next one
            proc.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 0.02)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        checkpoint = load_checkpoint(path)
        epoch = checkpoint["trainer"]["iteration"]
        assert torch.all(checkpoint["network"]["weight"] == epoch), "a torn checkpoint"
        interrupted += len(remove_stale_parts(path)) + len(remove_stale_parts(sidecar_path(path)))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.pt"]
    print(f"{interrupted} save(s) interrupted by SIGKILL")  # usually 3: each kill lands inside a save


def test_prediction_writer_is_atomic(tmp_path, monkeypatch):
    """Predictions saved through SaveImaged(writer=AtomicNibabelWriter) are whole or absent."""
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.transforms import SaveImaged

    from monai_lgg.data.readers import AtomicNibabelWriter

    save = SaveImaged(
        "pred",
        output_dir=str(tmp_path),
        output_postfix="",
        separate_folder=False,
        print_log=False,
        output_dtype=np.uint8,
        writer=AtomicNibabelWriter,
    )
    pred = MetaTensor(torch.ones(1, 8, 8, 3), meta={"filename_or_obj": "case_a.nii.gz"})
    save({"pred": pred})
    assert np.asanyarray(nib.load(tmp_path / "case_a.nii.gz").dataobj).sum() == 8 * 8 * 3

    def dies_half_way(image, filename):
        Path(filename).write_bytes(b"\x1f\x8b half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", dies_half_way)
    pred = MetaTensor(torch.ones(1, 8, 8, 3), meta={"filename_or_obj": "case_b.nii.gz"})
    with pytest.raises(Exception) as info:
        save({"pred": pred})
    assert "No space left on device" in repr(info.value) or "No space left on device" in repr(info.value.__cause__)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_a.nii.gz"]


# ---------------------------------------------------------------- the bundle, killed with SIGKILL


class KillSwitch:
    """Handler added to the bundle in the slow tests: when ``trigger`` exists, at (``epoch``, ``iteration``)
    it deletes ``trigger``, writes ``<trigger>.blocked`` and hangs so the test can SIGKILL the run
    mid-epoch. The trigger fires once, so the restarted run is the very same command."""

    def __init__(self, trigger: str, epoch: int = 2, iteration: int = 1) -> None:
        self.trigger, self.epoch, self.iteration = Path(trigger), epoch, iteration

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        in_epoch = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        if engine.state.epoch == self.epoch and in_epoch == self.iteration and self.trigger.exists():
            self.trigger.unlink()
            self.trigger.with_suffix(".blocked").touch()
            time.sleep(600)


@pytest.fixture(scope="module")
def micro_dataset(tmp_path_factory) -> Path:
    """3 patients (one per split of fold 0), 32x32 slices: a bundle epoch is 2-3 iterations."""
    return converted_synthetic(
        tmp_path_factory.mktemp("micro"), num_patients=3, num_slices=8, size=32, num_folds=3, seed=3
    )


def _bundle_command(run_dir: Path, dataset: Path) -> list[str]:
    extra = run_dir.parent / "kill_switch.json"
    extra.write_text(
        json.dumps(
            {
                "+train#handlers": [
                    {
                        "_target_": "tests.test_crash_safe.KillSwitch",
                        "trigger": str(run_dir.parent / f"{run_dir.name}.trigger"),
                    }
                ]
            }
        )
    )
    configs = [str(PROJECT_ROOT / "bundles" / "unet" / "configs" / "train.json"), str(extra)]
    overrides = {
        "dataset_dir": str(dataset),
        "ckpt_dir": str(run_dir / "models"),
        "log_dir": str(run_dir / "logs"),
        "spatial_size": "[32,32]",
        "batch_size": "4",
        "num_workers": "0",
        "epochs": "2",
        "seed": str(SEED),
    }
    args = [a for key, value in overrides.items() for a in (f"--{key}", value)]
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(configs), *args]


def _env(tmp: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "MONAI_LGG_CACHE": str(tmp / "cache"),
        "PYTHONUNBUFFERED": "1",
    }


def _run_bundle(run_dir: Path, dataset: Path) -> None:
    result = subprocess.run(
        _bundle_command(run_dir, dataset),
        cwd=PROJECT_ROOT,
        env=_env(run_dir.parent),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _bundle_outputs(run_dir: Path) -> dict:
    models = run_dir / "models"
    return {
        "last": load_checkpoint(models / "last.ckpt"),
        "best": load_checkpoint(models / "model.pt"),
        "last.json": json.loads((models / "last.json").read_text()),
        "model.json": json.loads((models / "model.json").read_text()),
    }


def _assert_same_run(a: dict, b: dict) -> None:
    for key in ("network", "optimizer", "lr_scheduler", "trainer"):
        assert _same_tensors(a["last"][key], b["last"][key]), key
    assert _same_tensors(a["best"], b["best"])
    for sidecar in ("last.json", "model.json"):
        assert a[sidecar] == b[sidecar], sidecar  # epoch, training and validation metrics, patients


@pytest.fixture(scope="module")
def bundle_reference(micro_dataset, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("bundle_ref") / "run"
    _run_bundle(run_dir, micro_dataset)
    return _bundle_outputs(run_dir)


@pytest.mark.slow
def test_bundle_same_seed_identical_metrics(bundle_reference, micro_dataset, tmp_path):
    run_dir = tmp_path / "run"
    _run_bundle(run_dir, micro_dataset)
    _assert_same_run(_bundle_outputs(run_dir), bundle_reference)


@pytest.mark.slow
def test_bundle_sigkill_mid_epoch_then_same_command_resumes_exactly(bundle_reference, micro_dataset, tmp_path):
    run_dir = tmp_path / "run"
    trigger = tmp_path / "run.trigger"
    trigger.touch()
    proc = subprocess.Popen(
        _bundle_command(run_dir, micro_dataset),
        cwd=PROJECT_ROOT,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not trigger.with_suffix(".blocked").exists():
        assert proc.poll() is None, "the run ended before reaching the middle of epoch 2"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert json.loads((run_dir / "models" / "last.json").read_text())["epoch"] == 1
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL

    _run_bundle(run_dir, micro_dataset)  # the very same command
    _assert_same_run(_bundle_outputs(run_dir), bundle_reference)
