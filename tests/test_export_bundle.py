"""``monai-lgg export_bundle``: every bundle either exported in the form the MONAI Model Zoo accepts, or refused.

The Model Zoo's CI (``ci/verify_bundle.py``) is not available here, so these tests run the project's own
implementation of its checks (:func:`monai_lgg.bundle_checks.verify_zoo_bundle`: pre-commit rules,
directory, version/changelog, metadata schema, inference properties, input/output at the default size
multiplier, TorchScript export) on the export, in-process and from the built wheel installed in a fresh
virtual environment. Bundles without trained weights must be refused with a plain message, since the
zoo requires ``models/model.pt`` for every bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from monai_lgg import __version__
from monai_lgg.bundle_checks import (
    check_zoo_network,
    check_zoo_version,
    verify_zoo_bundle,
    zoo_format_problems,
    zoo_json_text,
)
from monai_lgg.bundle_export import (
    ZOO_PYTHON,
    check_zoo_pins,
    export_bundle,
    measured_eval_metrics,
    zoo_bundle_name,
)
from monai_lgg.errors import LGGInputError

from .conftest import CONSOLE_SCRIPT, PROJECT_ROOT

BUNDLES_DIR = PROJECT_ROOT / "bundles"
BUNDLES = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "model.json").is_file())
TRAINED = [b for b in BUNDLES if (BUNDLES_DIR / b / "models" / "model.pt").is_file()]
UNTRAINED = [b for b in BUNDLES if b not in TRAINED]


def _fresh_copy(folder: Path, target: Path) -> Path:
    """The exported zoo folder alone, as a zoo checkout would hold it (no weights until large_files.yml runs)."""
    shutil.copytree(folder, target)
    return target


@pytest.fixture(scope="module")
def unet_export(tmp_path_factory):
    """The shipped UNet exported once into a fresh zoo-style models/ folder."""
    if "unet" not in TRAINED:
        pytest.skip("bundles/unet/models/model.pt is absent (the UNet ships trained weights in the repository)")
    output = tmp_path_factory.mktemp("zoo") / "models"
    return export_bundle("unet", output)


def test_every_bundle_is_exported_or_refused():
    """The project's bundles split into those with weights (exportable) and those refused; the UNet has weights."""
    assert "unet" in TRAINED and set(TRAINED) | set(UNTRAINED) == set(BUNDLES) and len(BUNDLES) >= 4


@pytest.mark.parametrize("bundle", UNTRAINED)
def test_untrained_bundle_is_refused_plainly(bundle, tmp_path):
    """No weights: one clear line saying the zoo requires models/model.pt and what to train first; nothing written."""
    out = tmp_path / "models"
    result = subprocess.run(
        [CONSOLE_SCRIPT, "export_bundle", bundle, str(out)], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monai-lgg: error: "), result.stderr
    assert "no trained weights" in lines[0] and "Model Zoo requires models/model.pt" in lines[0]
    assert f"monai-lgg train --bundle {bundle}" in lines[0] and "eval_metrics.json" in lines[0]
    assert not out.exists()


def test_export_layout_and_metadata(unet_export):
    """Real files in zoo layout, weights referenced by large_files.yml (with hash), measured eval_metrics, pins."""
    folder = unet_export.bundle
    assert unet_export.name == zoo_bundle_name("unet") == folder.name == "lgg_mri_unet_segmentation"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert {
        "LICENSE",
        "large_files.yml",
        "configs/metadata.json",
        "configs/inference.json",
        "configs/train.json",
        "configs/logging.conf",
        "configs/model.json",
        "docs/README.md",
        "docs/data_license.txt",
    } <= set(files)
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    assert not list(folder.rglob("*.pt")), "weights must not be in the folder submitted to the zoo"
    record = json.loads((BUNDLES_DIR / "unet" / "models" / "model.json").read_text())
    assert json.loads((folder / "models" / "model.json").read_text()) == record  # the weights' record travels
    assert zoo_format_problems(folder) == []

    source_weights = BUNDLES_DIR / "unet" / "models" / "model.pt"
    assert unet_export.weights.read_bytes() == source_weights.read_bytes()
    import hashlib

    import yaml

    large = yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]
    assert large == [
        {
            "path": "models/model.pt",
            "url": unet_export.weights.resolve().as_uri(),
            "hash_val": hashlib.sha256(source_weights.read_bytes()).hexdigest(),
            "hash_type": "sha256",
        }
    ]

    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["required_packages_version"]["monai-lgg"] == __version__
    assert meta["version"] in meta["changelog"]
    # eval_metrics are the measured numbers the bundle's docs/eval_metrics.json names, read independently here
    spec = json.loads((BUNDLES_DIR / "unet" / "docs" / "eval_metrics.json").read_text())
    results = json.loads((BUNDLES_DIR / "unet" / spec["source"]).read_text())

    def at(tree, path: str):  # a '#'-path of dict keys or list entries matched by their "name"
        for key in filter(None, path.split("#")):
            tree = next(r for r in tree if r.get("name") == key) if isinstance(tree, list) else tree[key]
        return tree

    dice = at(at(results, spec["entry"]), spec["metrics"]["mean_dice_per_patient"])
    assert meta["eval_metrics"]["mean_dice_per_patient"] == round(dice, 4) and 0.0 < dice < 1.0
    assert set(meta["eval_metrics"]) == set(spec["metrics"])
    card = (folder / "docs" / "README.md").read_text()
    assert "## Published weights and measured accuracy" in card and unet_export.sha256 in card
    assert f"{meta['eval_metrics']['mean_dice_per_patient']:.4f}" in card
    assert "CC BY-NC-SA 4.0" in (folder / "docs" / "data_license.txt").read_text()


def test_export_passes_zoo_checks_with_weights_from_large_files(unet_export, tmp_path):
    """A zoo checkout of the folder: MONAI downloads the weights through large_files.yml, then every check passes."""
    copy = _fresh_copy(unet_export.bundle, tmp_path / "models" / unet_export.name)
    passed = verify_zoo_bundle(copy, mode="full")
    assert (copy / "models" / "model.pt").read_bytes() == unet_export.weights.read_bytes()
    assert len(passed) == 5 and "TorchScript" in passed[-1]


def test_zip_loads_with_monai_bundle(unet_export, tmp_path):
    """monai.bundle.download (url = the local zip) and monai.bundle.load give the network with the shipped weights."""
    from monai.bundle import download, load

    download(name=unet_export.name, bundle_dir=str(tmp_path), url=unet_export.archive.resolve().as_uri())
    with zipfile.ZipFile(unet_export.archive) as archive:
        assert f"{unet_export.name}/models/model.pt" in archive.namelist()
        assert all(n.startswith(f"{unet_export.name}/") for n in archive.namelist())
    network = load(name=unet_export.name, bundle_dir=str(tmp_path), workflow_type="inference", device="cpu")
    shipped = torch.load(BUNDLES_DIR / "unet" / "models" / "model.pt", map_location="cpu", weights_only=True)
    loaded = network.state_dict()
    assert loaded.keys() == shipped.keys()
    assert all(torch.equal(loaded[k], shipped[k]) for k in shipped)


def test_export_refuses_existing_output_and_bad_names(unet_export, tmp_path):
    with pytest.raises(LGGInputError, match="already exists"):
        export_bundle("unet", unet_export.bundle.parent)
    with pytest.raises(LGGInputError, match="not a Model Zoo bundle name"):
        export_bundle("unet", tmp_path / "models", name="lgg-unet")
    assert not (tmp_path / "models").exists()


def test_released_version_is_refused(unet_export, tmp_path):
    """The zoo's model_info.json lists released versions: the same version again must be bumped."""
    copy = _fresh_copy(unet_export.bundle, tmp_path / unet_export.name)
    info = tmp_path / "model_info.json"
    info.write_text(json.dumps({f"{unet_export.name}_v{unet_export.version}": {"checksum": "x"}}))
    with pytest.raises(ValueError, match="already in"):
        check_zoo_version(copy, info)
    info.write_text("{}")
    check_zoo_version(copy, info)


def test_format_rules_catch_what_the_zoo_hooks_refuse(unet_export, tmp_path):
    """Symlinks, files over 1 MB, JSON not in 4-space ASCII form, trailing whitespace: each is reported."""
    copy = _fresh_copy(unet_export.bundle, tmp_path / unet_export.name)
    meta = copy / "configs" / "metadata.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()), indent=2) + "\n")
    (copy / "docs" / "README.md").write_text("# card \n")
    (copy / "configs" / "link.json").symlink_to(meta)
    (copy / "docs" / "big.bin").write_bytes(b"\0" * (1024 * 1024 + 1))
    problems = "\n".join(zoo_format_problems(copy))
    for fragment in (
        "configs/metadata.json: not in the zoo's JSON format",
        "docs/README.md: has trailing whitespace",
        "configs/link.json: is a symbolic link",
        "docs/big.bin: 1024 KB, over the zoo's 1024 KB limit",
    ):
        assert fragment in problems
    assert zoo_json_text({"a": "±"}) == '{\n    "a": "\\u00b1"\n}\n'


def test_missing_weights_fail_the_directory_check(unet_export, tmp_path):
    copy = _fresh_copy(unet_export.bundle, tmp_path / unet_export.name)
    (copy / "large_files.yml").unlink()
    with pytest.raises(ValueError, match="models/model.pt is missing"):
        verify_zoo_bundle(copy, mode="min")


def test_unetplusplus_passes_the_default_multiplier_check(tmp_path):
    """The zoo runs verify_net_in_out at n = 1: '16*n' gave UNet++ a 1x1 bottleneck (instance norm fails).

    '32*n' passes.
    """
    bundle = tmp_path / "unetplusplus"
    shutil.copytree(
        BUNDLES_DIR / "unetplusplus", bundle, symlinks=False, ignore=shutil.ignore_patterns("models", "eval", "logs")
    )
    from monai_lgg.engines.bundle import bundle_network

    network = bundle_network(bundle, in_channels=3, out_channels=1, spatial_size=[256, 256])
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    check_zoo_network(bundle)  # the repository's metadata: passes at the zoo's default multiplier

    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    for part in ("inputs", "outputs"):
        meta["network_data_format"][part][next(iter(meta["network_data_format"][part]))]["spatial_shape"] = [
            "16*n",
            "16*n",
        ]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="default size multiplier"):
        check_zoo_network(bundle)


def test_pins_the_zoo_cannot_install_are_refused():
    """Versions are checked against monai-lgg's own requirements and, when installed here, the zoo's Python."""
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    with pytest.raises(LGGInputError, match=r"local build; pin the public release 2\.13\.0"):
        check_zoo_pins({"torch": "2.13.0+cpu"}, "metadata.json")
    with pytest.raises(LGGInputError, match="conflicts with monai-lgg's requirement monai"):
        check_zoo_pins({"monai": "1.5.0"}, "metadata.json")
    numpy = importlib.metadata.distribution("numpy")
    requires = numpy.metadata.get("Requires-Python")
    if requires and not SpecifierSet(requires).contains(ZOO_PYTHON):  # e.g. numpy 2.4 needs Python >= 3.11
        with pytest.raises(LGGInputError, match=f"requires Python .* on Python {ZOO_PYTHON}"):
            check_zoo_pins({"numpy": numpy.version}, "metadata.json")
    for bundle in BUNDLES:  # every bundle's own pins pass the offline checks
        meta = json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())
        pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
        pins.update({k: v for k, v in meta["required_packages_version"].items() if k != "monai-lgg"})
        check_zoo_pins(pins, bundle)


def test_metrics_must_be_measured(tmp_path):
    """eval_metrics come from a results file; a missing spec, file or non-number is refused (never 0.0 by default)."""
    bundle = tmp_path / "b"
    (bundle / "docs").mkdir(parents=True)
    with pytest.raises(LGGInputError, match="needs measured accuracy"):
        measured_eval_metrics(bundle)
    (bundle / "summary.json").write_text(json.dumps({"per_patient": {"dice": {"mean": 0.81, "median": None}}}))
    spec = {"protocol": "p", "source": "summary.json", "entry": "", "metrics": {"mean_dice": "per_patient#dice#mean"}}
    (bundle / "docs" / "eval_metrics.json").write_text(json.dumps(spec))
    assert measured_eval_metrics(bundle).values == {"mean_dice": 0.81}
    spec["metrics"] = {"median_dice": "per_patient#dice#median"}
    (bundle / "docs" / "eval_metrics.json").write_text(json.dumps(spec))
    with pytest.raises(LGGInputError, match="not a measured number"):
        measured_eval_metrics(bundle)


def _pip_can_resolve(requirement: str, target: Path) -> subprocess.CompletedProcess:
    """pip resolves ``requirement`` for the zoo's Python (wheel metadata only: --dry-run downloads no wheel)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-deps",
            "--ignore-installed",
            "--only-binary=:all:",
            "--python-version",
            ZOO_PYTHON,
            "--target",
            str(target),
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_pins_install_on_the_zoo_python(unet_export, tmp_path):
    """Every pinned version (but monai-lgg, which is published with the bundle) exists on the index for Python 3.10."""
    meta = json.loads((unet_export.bundle / "configs" / "metadata.json").read_text())
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins.update({k: v for k, v in meta["required_packages_version"].items() if k != "monai-lgg"})
    for name, version in pins.items():
        result = _pip_can_resolve(f"{name}=={version}", tmp_path / "target")
        if result.returncode and (
            "No matching distribution" not in result.stderr or "from versions: none" in result.stderr
        ):
            pytest.skip(f"the package index cannot be reached here: {result.stderr.strip()[-300:]}")
        assert result.returncode == 0, (
            f"{name}=={version} cannot be installed on Python {ZOO_PYTHON}: {result.stderr[-500:]}"
        )


@pytest.mark.slow
def test_built_wheel_exports_and_passes_in_a_fresh_environment(tmp_path):
    """python -m build: wheel + sdist, twine check, data files and version; the wheel alone exports and checks the UNet.

    The fresh virtual environment holds only the wheel (installed without dependencies). The heavy
    third-party packages (torch, MONAI, ...) are reached through a path entry to this environment's
    site-packages, which does not process the .pth files there, so neither the source tree nor the
    editable install of monai-lgg is importable: only what the wheel holds.
    """
    dist = tmp_path / "dist"
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"
    }  # its notes are not setuptools warnings
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(PROJECT_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    warnings_found = [line for line in (build.stdout + build.stderr).splitlines() if "warning" in line.lower()]
    assert not warnings_found, warnings_found
    wheel = dist / f"monai_lgg-{__version__}-py3-none-any.whl"
    sdist = dist / f"monai_lgg-{__version__}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"monai_lgg/schemas/meta_schema.json", "monai_lgg/templates/data_license.txt", "monai_lgg/py.typed"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=900)
    python = venv / "bin" / "python"
    # without PYTHONPATH: a checkout on it (with the monai_lgg.egg-info the build leaves there) looks like
    # monai-lgg already installed to pip, which then skips the wheel
    clean = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    Path(site, "project_dependencies.pth").write_text(ours + "\n")

    work = tmp_path / "work"
    work.mkdir()
    probe = subprocess.run(
        [str(python), "-c", "import monai_lgg; print(monai_lgg.__file__, monai_lgg.__version__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=clean,
        timeout=900,
    )
    assert probe.returncode == 0 and probe.stdout.startswith(site) and __version__ in probe.stdout, (
        probe.stdout + probe.stderr
    )

    models = work / "models"
    export = subprocess.run(
        [str(venv / "bin" / "monai-lgg"), "export_bundle", str(BUNDLES_DIR / "unet"), str(models)],
        capture_output=True,
        text=True,
        cwd=work,
        env=clean,
        timeout=900,
    )
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-3000:]
    name = zoo_bundle_name("unet")
    checkout = _fresh_copy(models / name, tmp_path / "zoo" / "models" / name)
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import sys; from monai_lgg.bundle_checks import verify_zoo_bundle; "
            "print('\\n'.join(verify_zoo_bundle(sys.argv[1], mode='full')))",
            str(checkout),
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=clean,
        timeout=900,
    )
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-3000:]
    assert "TorchScript" in check.stdout and (checkout / "models" / "model.pt").is_file()
    for bundle in UNTRAINED:
        refused = subprocess.run(
            [str(venv / "bin" / "monai-lgg"), "export_bundle", str(BUNDLES_DIR / bundle), str(models)],
            capture_output=True,
            text=True,
            cwd=work,
            env=clean,
            timeout=900,
        )
        assert refused.returncode == 2 and "Model Zoo requires models/model.pt" in refused.stderr
