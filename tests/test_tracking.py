"""MONAI's experiment tracking (``python -m monai.bundle run ... --tracking mlflow``) on the bundles' configs.

MONAI appends its ``MLFlowHandler`` to ``train#handlers`` and ``validate#handlers``; the shared configs keep
both as lists so it can, and ``TrackedRun`` adds the run's settings as parameters, the model (training) or
the evaluation tables as artefacts, and ends an evaluation's run. The local store is MONAI's default for
MLflow 3: a SQLite file ``<output_dir>/mlruns.db`` with artefacts in ``<output_dir>/mlruns`` (MLflow 3.13+
refuses the older ``file://`` store).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ignite.engine import Engine

from monai_lgg.engines.tracking import TrackedRun, flat_handlers

from .conftest import PROJECT_ROOT, converted_synthetic

NEEDS = (
    "MONAI's --tracking mlflow with a local SQLite store needs mlflow, sqlalchemy and alembic: "
    "pip install 'monai-lgg[tracking]'"
)
BUNDLES = sorted(p.name for p in (PROJECT_ROOT / "bundles").iterdir() if (p / "configs" / "model.json").is_file())
MICRO = ["--spatial_size", "[32,32]", "--batch_size", "4", "--num_workers", "0"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_handler_lists_can_be_appended_to(bundle):
    """``--tracking`` appends to ``validate#handlers`` (and ``train#handlers``): in every bundle they are lists."""
    configs = PROJECT_ROOT / "bundles" / bundle / "configs"
    train = json.loads((configs / "train.json").read_text())
    evaluate = json.loads((configs / "evaluate.json").read_text())
    assert isinstance(train["train"]["handlers"], list)
    assert isinstance(train["validate"]["handlers"], list)
    assert isinstance(evaluate["validate#handlers"], list)


def test_flat_handlers():
    a, b, c = object(), object(), object()
    assert flat_handlers([[a, None, b], c, None]) == [a, b, c]
    assert flat_handlers([]) == [] and flat_handlers(None) == []


def test_tracked_run_is_a_no_op_without_tracking(tmp_path):
    """Without ``--tracking`` the handler finds no MLflow handler and changes nothing (the bundles run as before)."""
    engine = Engine(lambda e, b: None)
    TrackedRun({"fold": 0}, [str(tmp_path / "model.pt")], end_run=True).attach(engine)
    engine.run([0], max_epochs=1)
    assert list(tmp_path.iterdir()) == []


def _needs_mlflow():
    for module in ("mlflow", "sqlalchemy", "alembic"):
        pytest.importorskip(module, reason=NEEDS)
    import mlflow

    return mlflow


def _runs(db: Path) -> tuple:
    mlflow = _needs_mlflow()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs(e.experiment_id)]
    return client, sorted(runs, key=lambda r: r.info.start_time)


def _bundle_run(tmp: Path, configs: list[str], *args: str, run_id: str | None = None) -> str:
    config_dir = PROJECT_ROOT / "bundles" / "unet" / "configs"
    files = [str(config_dir / c) for c in configs]
    config = files[0] if len(files) == 1 else json.dumps(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", *([run_id] if run_id else []), "--config_file", config, *args]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MONAI_LGG_CACHE": str(tmp / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_tracking_mlflow_on_training_and_evaluation(tmp_path):
    """``--tracking mlflow`` on train.json and on train.json + evaluate.json: params, metrics and the model."""
    _needs_mlflow()
    dataset = converted_synthetic(tmp_path / "data", num_patients=3, num_slices=6, size=32, num_folds=3, seed=3)
    run_dir = tmp_path / "run"
    common = ["--dataset_dir", str(dataset), "--run_dir", str(run_dir), *MICRO, "--tracking", "mlflow"]
    _bundle_run(tmp_path, ["train.json"], *common, "--epochs", "1", "--val_interval", "1", run_id="training")
    _bundle_run(tmp_path, ["train.json", "evaluate.json"], *common)

    client, (train, evaluation) = _runs(run_dir / "eval" / "mlruns.db")
    assert train.info.status == evaluation.info.status == "FINISHED"
    params = train.data.params
    assert params["epochs"] == "1" and params["fold"] == "0" and params["learning_rate"] and params["max_epochs"] == "1"
    assert {"train_loss", "val_mean_dice"} <= set(train.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"model.pt", "model.json"} <= artifacts and any(a.startswith("config_") for a in artifacts), artifacts
    logged = client.download_artifacts(train.info.run_id, "model.pt", str(tmp_path / "download"))
    model = run_dir / "models" / "model.pt"
    assert hashlib.sha256(Path(logged).read_bytes()).digest() == hashlib.sha256(model.read_bytes()).digest()

    assert evaluation.data.params["eval_split"] == "test" and evaluation.data.params["ckpt_path"] == str(model)
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert evaluation.data.metrics["test_mean_dice"] == pytest.approx(summary["per_patient"]["dice"]["mean"], abs=1e-6)
    assert {"summary.json", "per_patient.csv"} <= {a.path for a in client.list_artifacts(evaluation.info.run_id)}
