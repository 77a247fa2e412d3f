"""Security: checkpoints load tensors only (a pickled payload is refused, never run), case names taken from
file or folder names never escape the output folder, and the README warns that bundle configs run code."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import CheckpointLoader

from monai_lgg.engines.components import case_name_formatter
from monai_lgg.engines.handlers import ResumeFromCheckpoint, SafeCheckpointLoader, load_checkpoint
from monai_lgg.engines.reports import PatientReport, evaluation_handlers
from monai_lgg.errors import LGGInputError
from monai_lgg.io import safe_child

from .conftest import PROJECT_ROOT


class Payload:
    """Unpickling this creates ``marker`` (a harmless stand-in for arbitrary code): ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def poisoned(tmp_path) -> tuple[Path, Path]:
    """A checkpoint that looks normal (state dicts, trainer counters) but carries a pickled payload."""
    marker = tmp_path / "payload_ran"
    net = torch.nn.Linear(3, 1)
    path = tmp_path / "models" / "model.pt"
    path.parent.mkdir()
    torch.save(
        {
            "model": net.state_dict(),
            "network": net.state_dict(),
            "trainer": {"epoch_length": 1, "iteration": 1},
            "extra": Payload(marker),
        },
        path,
    )
    return path, marker


def test_payload_is_live_without_weights_only(poisoned):
    """Control: plain pickle loading runs the payload, so the refusals below are meaningful."""
    path, marker = poisoned
    torch.load(path, weights_only=False)
    assert marker.exists()


def _refused(call, marker: Path, error=LGGInputError) -> Exception:
    with pytest.raises(error) as info:
        call()
    assert not marker.exists(), "the payload ran"
    return info.value


def test_project_loaders_refuse_pickled_payload(poisoned):
    path, marker = poisoned
    net = torch.nn.Linear(3, 1)
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 1
    for call in (
        lambda: load_checkpoint(path),
        lambda: ResumeFromCheckpoint(path, {"network": net})(engine),  # last.pt of a resumed run
        lambda: SafeCheckpointLoader(str(path), {"model": net})(engine),
        lambda: evaluation_handlers(net, path, path.parent / "eval", [{"case": "x"}])[0](engine),  # evaluate.json
    ):
        error = _refused(call, marker)
        assert str(error).startswith(f"{path}: refused: it holds pickled Python objects"), str(error)


def test_bundle_inference_checkpoint_loader_refuses_pickled_payload(poisoned):
    """inference.json loads model.pt with MONAI's CheckpointLoader, which uses weights_only=True."""
    path, marker = poisoned
    parser = ConfigParser()
    parser.read_config(str(PROJECT_ROOT / "bundles" / "unet" / "configs" / "inference.json"))
    parser.update({"bundle_root": str(PROJECT_ROOT / "bundles" / "unet"), "ckpt_path": str(path), "device": "cpu"})
    loader = parser.get_parsed_content("handlers#0")
    assert isinstance(loader, CheckpointLoader)
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 1
    _refused(lambda: loader(engine), marker, error=Exception)


def _torch_load_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def test_every_checkpoint_load_is_weights_only():
    """Static check of the package, tools and bundle configs: each torch.load passes weights_only=True."""
    sources = sorted((PROJECT_ROOT / "monai_lgg").rglob("*.py")) + sorted((PROJECT_ROOT / "tools").rglob("*.py"))
    calls = 0
    for source in sources:
        for call in _torch_load_calls(source):
            calls += 1
            flags = {k.arg: k.value for k in call.keywords}
            assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, (
                f"{source}:{call.lineno}: torch.load without weights_only=True"
            )
    assert calls >= 1
    for config in sorted((PROJECT_ROOT / "bundles").rglob("*.json")):
        text = config.read_text()
        for expression in [s for s in json.dumps(json.loads(text)).split('"') if "torch.load(" in s]:
            assert "weights_only=True" in expression, f"{config}: {expression}"


@pytest.mark.parametrize(
    "name", ["../evil", "..", ".", "", "/etc/passwd", "a/../../b", "sub/dir", "a\\..\\b", "x\0y", "/"]
)
def test_case_names_cannot_escape(name, tmp_path):
    with pytest.raises(LGGInputError, match="not a safe case name"):
        safe_child(tmp_path, name)


@pytest.mark.parametrize("name", ["TCGA_CS_4941_19960909", "..hidden", "case 1", "a..b"])
def test_plain_case_names_stay_inside(name, tmp_path):
    child = safe_child(tmp_path, name)
    assert child.parent == tmp_path and child.resolve().is_relative_to(tmp_path.resolve())


def test_evaluation_report_refuses_escaping_case_name(tmp_path):
    """Overlay file names come from the datalist's case ids: a crafted id cannot write outside the report."""
    report = PatientReport(tmp_path / "eval", overlays=1)
    engine = Engine(lambda e, b: None)
    volume = torch.zeros(1, 8, 8, 2)
    volume[0, 2:5, 2:5, 1] = 1
    engine.state.output = [{"pred": volume, "label": volume, "image": torch.zeros(3, 8, 8, 2)}]
    engine.state.batch = [{"case": "../../escaped"}]
    with pytest.raises(LGGInputError, match="not a safe case name"):
        report.collect(engine)
    assert not list(tmp_path.rglob("*escaped*")) and not list(tmp_path.parent.glob("*escaped*"))


@pytest.mark.parametrize("filename", ["/data/../../etc/x_0000.nii.gz", "../up/TCGA_A_0001.nii.gz", "/abs/case.nii"])
def test_prediction_names_are_file_names_only(filename):
    """Saved predictions are named from the input file's name alone (no folders, so no way out)."""
    subject = case_name_formatter({"filename_or_obj": filename}, None)["subject"]
    assert "/" not in subject and "\\" not in subject and subject not in ("", ".", "..")


def test_readme_warns_that_configs_run_code():
    text = (PROJECT_ROOT / "README.md").read_text()
    assert "execute Python expressions" in text and "trusted source" in text


def test_checkpoint_sidecars_and_rng_state_are_plain_data(tmp_path):
    """What the trainer saves loads under weights_only=True (tensors, numbers, strings), so no one needs
    weights_only=False to resume."""
    from monai_lgg.engines.handlers import LastCheckpointSaver

    engine = Engine(lambda e, b: None)
    engine.state.max_epochs, engine.state.epoch_length, engine.state.epoch, engine.state.iteration = 2, 1, 1, 1
    net = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    LastCheckpointSaver(tmp_path / "last.pt", {"network": net, "optimizer": optimizer})(engine)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(state) >= {"network", "optimizer", "trainer", "rng"}
    assert np.asarray(state["rng"]["numpy"][0]).size == 624
