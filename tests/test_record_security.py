"""A trained-model record (the JSON beside ``model.pt``) is data: it can never make monai-lgg run code.

The record travels with downloaded weights. Its ``network_args`` go through MONAI's config parser, which runs
``$`` expressions, follows ``@`` references, reads ``%`` files and instantiates any ``_target_``; a network named
there must therefore be one of the registered networks, looked up by exact name, with plain JSON arguments.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.engines.bundle import MAX_MEMBERS, bundle_network, trained_members, trained_network_args
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.loading import BUNDLES_DIR, load_network
from monai_lgg.networks.registry import NETWORKS, canonical_network_name

from .conftest import CONSOLE_SCRIPT


def _record(tmp_path: Path, record: dict) -> Path:
    """A checkpoint folder ``tmp_path/D`` with tiny weights and ``record`` as its sidecar; returns the checkpoint."""
    folder = tmp_path / "D"
    folder.mkdir(exist_ok=True)
    checkpoint = folder / "model.pt"
    torch.save(torch.nn.Linear(1, 1).state_dict(), checkpoint)
    sidecar_path(checkpoint).write_text(json.dumps(record))
    return checkpoint


@pytest.fixture
def hub_repo(tmp_path) -> tuple[Path, Path]:
    """A local torch.hub repository whose ``hubconf.py`` creates ``marker`` when it is imported."""
    repo, marker = tmp_path / "hub", tmp_path / "hubconf_ran"
    repo.mkdir()
    (repo / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef x(**kwargs):\n    return None\n")
    return repo, marker


def _hub_record(repo: Path) -> dict:
    return {
        "network_args": {
            "_target_": "monai.networks.nets.unet.torch.hub.load",
            "repo_or_dir": str(repo),
            "source": "local",
            "trust_repo": True,
            "model": "x",
        }
    }


def test_hub_payload_is_live(hub_repo):
    """Control: the dotted path below really reaches torch.hub.load, which imports hubconf.py and runs it."""
    import monai.networks.nets.unet as unet_module

    repo, marker = hub_repo
    unet_module.torch.hub.load(str(repo), "x", source="local", trust_repo=True)
    assert marker.exists()


def test_hub_load_through_a_network_module_is_refused(tmp_path, hub_repo):
    repo, marker = hub_repo
    checkpoint = _record(tmp_path, _hub_record(repo))
    for call in (lambda: trained_network_args(checkpoint), lambda: load_network("unet", checkpoint)):
        with pytest.raises(LGGInputError, match=r"model\.json: network_args names .*not a registered network"):
            call()
    assert not marker.exists(), "hubconf.py ran"


def test_predict_with_a_hostile_record_refuses_in_one_line(tmp_path, hub_repo):
    """The reported attack, end to end: ``monai-lgg predict x.tif out/ --checkpoint D/model.pt``."""
    repo, marker = hub_repo
    checkpoint = _record(tmp_path, _hub_record(repo))
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, np.zeros((64, 64, 3), np.uint8))
    done = subprocess.run(
        [CONSOLE_SCRIPT, "predict", str(image), str(tmp_path / "out"), "--checkpoint", str(checkpoint)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode != 0
    assert not marker.exists(), "hubconf.py ran"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.json" in lines[0] and "not a registered network" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_download_url_through_a_network_module_writes_nothing(tmp_path):
    source, target = tmp_path / "attacker.txt", tmp_path / "written.txt"
    source.write_text("chosen by the attacker")
    checkpoint = _record(
        tmp_path,
        {
            "network_args": {
                "_target_": "monai.networks.nets.hovernet.download_url",
                "url": source.as_uri(),
                "filepath": str(target),
            }
        },
    )
    with pytest.raises(LGGInputError, match="not a registered network"):
        load_network("unet", checkpoint)
    assert not target.exists()


@pytest.mark.parametrize(
    "network_args",
    [
        {"_target_": "monai.networks.nets.UNet.__init__.__globals__"},
        {"_target_": "UNet.__init__.__globals__.get"},
        {"_target_": "monai.networks.nets.unet.__builtins__"},
        {"_target_": ["UNet"]},
        {"_target_": None},
        {"_target_": "$UNet"},
        {"channels": "$__import__('os').getcwd()"},
        {"act": ["@network_def"]},
        {"act": {"_target_": "torch.nn.ReLU"}},
        {"_mode_": "debug"},
        {"_requires_": "$print(1)"},
        {"norm": "%/etc/passwd#x"},
        {"a#b": 1},
        {"__class__": 1},
        [16, 32],
        "UNet",
    ],
    ids=[
        "globals",
        "bare_globals",
        "builtins",
        "list_target",
        "null_target",
        "expr_target",
        "expression",
        "reference",
        "nested_target",
        "debug_mode",
        "requires",
        "macro",
        "id_separator",
        "dunder",
        "list",
        "string",
    ],
)
def test_records_that_are_not_plain_data_are_refused_in_one_line(tmp_path, network_args):
    checkpoint = _record(tmp_path, {"network_args": network_args})
    with pytest.raises(LGGInputError, match=r"model\.json: ") as info:
        load_network("unet", checkpoint)
    assert "\n" not in str(info.value)


def _dotted_paths(count: int, seed: int = 0) -> list[str]:
    """Dotted paths an attacker might try: through the network modules' attributes (the modules they import, their
    functions, dunders), and near-misses of the registered names."""
    import monai.networks.nets as nets

    import monai_lgg.networks as ours

    rng = random.Random(seed)
    roots = [("monai.networks.nets", nets), ("monai_lgg.networks", ours)]
    roots += [(f"monai.networks.nets.{n}", obj) for n, obj in vars(nets).items() if type(obj).__name__ == "module"]
    roots += [(obj.__name__, obj) for obj in vars(ours).values() if type(obj).__name__ == "module"]
    dunders = ["__init__", "__globals__", "__builtins__", "__class__", "__subclasses__", "__dict__", "__module__"]
    paths = []
    for _ in range(count):
        path, obj = rng.choice(roots)
        for _ in range(rng.randint(1, 3)):
            names = [n for n in dir(obj) if not n.startswith("_")] + dunders
            name = rng.choice(names)
            try:
                value = getattr(obj, name, None)
            except Exception:  # MONAI's placeholders for missing optional packages raise on any access
                value = None
            path, obj = f"{path}.{name}", value
        paths.append(path)
    for name in list(NETWORKS):
        paths += [
            name.lower(),
            name.upper(),
            f"{name}.",
            f".{name}",
            f" {name}",
            f"{name}.__init__",
            f"{name}.__init__.__globals__",
            f"torch.{name}",
            f"${name}",
            f"@{name}",
            name.replace(".", "/"),
        ]
    return paths


def test_fuzzed_dotted_paths_choose_only_registered_networks(tmp_path):
    checkpoint = tmp_path / "model.pt"
    accepted = []
    for path in _dotted_paths(600):
        sidecar_path(checkpoint).write_text(json.dumps({"network_args": {"_target_": path}}))
        try:
            args = trained_network_args(checkpoint)
        except LGGInputError as err:
            assert "not a registered network" in str(err) and "\n" not in str(err)
            continue
        accepted.append(path)
        assert path in NETWORKS and args["_target_"] == canonical_network_name(path)
    # the near-misses and attribute walks above include no registered spelling except by chance of the walk
    assert all(path in NETWORKS for path in accepted)


@pytest.mark.parametrize("name", sorted({n for n in NETWORKS if "." not in n}))
def test_each_registered_name_resolves_to_its_own_class(name):
    canonical = canonical_network_name(name)
    module, _, attr = canonical.rpartition(".")
    assert getattr(sys.modules[module], attr) is NETWORKS[name]
    assert canonical_network_name(canonical) == canonical


def test_a_record_may_choose_another_registered_network(tmp_path):
    """Training with ``--network_args#_target_ UNet`` records it; inference builds that network from the table."""
    checkpoint = _record(tmp_path, {"network_args": {"_target_": "UNet", "channels": [8, 16, 32, 64, 128, 256]}})
    args = trained_network_args(checkpoint)
    assert args == {"_target_": "monai.networks.nets.unet.UNet", "channels": [8, 16, 32, 64, 128, 256]}
    network = bundle_network(BUNDLES_DIR / "attentionunet", args, in_channels=3, out_channels=1, spatial_size=[64, 64])
    assert type(network).__name__ == "UNet"  # the bundle's own network is an AttentionUnet
    assert tuple(network(torch.zeros(1, 3, 64, 64)).shape) == (1, 1, 64, 64)


def test_a_record_cannot_ask_for_an_enormous_ensemble(tmp_path):
    checkpoint = _record(tmp_path, {"members": MAX_MEMBERS * 1000})
    with pytest.raises(LGGInputError, match="networks in one checkpoint is refused"):
        trained_members(checkpoint)
    assert trained_members(_record(tmp_path, {"members": 5})) == 5
