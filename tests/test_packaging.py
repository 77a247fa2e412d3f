"""The installed package is the product: its dependencies are used, and the built wheel alone segments.

``pip install monai-lgg`` (a wheel, not the source tree) must be able to run ``monai-lgg predict`` from any
folder: the project's bundles and the UNet's shipped weights travel in the wheel as package data
(``monai_lgg/_bundles``, a link to ``bundles/`` in a checkout). The slow tests build the wheel, install it with
its dependencies into a fresh virtual environment outside the checkout, and check that its masks are
bit-identical to those of the checkout's own install.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from monai_lgg import __version__
from monai_lgg.bundle import settings as bundle_settings
from monai_lgg.engines.bundle import BUNDLES_DIR, bundle_names, output_root, run_dir
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.output_folder import STATE_DIR

from .conftest import CONSOLE_SCRIPT, PROJECT_ROOT

# distribution name -> the module it is imported as, where the two differ
IMPORT_NAMES = {
    "opencv-python-headless": "cv2",
    "pytorch-ignite": "ignite",
    "scikit-image": "skimage",
    "pyyaml": "yaml",
}
# dependencies that monai_lgg never imports itself but needs at run time, with the reason
NEEDED_INDIRECTLY = {
    "einops": "MONAI's self-attention blocks (UNETR, TransUNet's ViT encoder) import it optionally and fail "
    "without it when those bundles build their networks",
}
WHEEL_LIMIT_MB = 50  # the wheel is about 16 MB, nearly all of it the UNet's weights
RUN_OUTPUTS = ("runs", "eval", "logs", "predictions")
OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeout")


def install_requires() -> list[Requirement]:
    """The ``install_requires`` of setup.cfg."""
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip() and not line.strip().startswith("#")]


def imported_modules(package: Path) -> set[str]:
    """Top-level modules that ``package`` imports: import statements and MONAI ``optional_import("name")`` calls."""
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "optional_import"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(str(node.args[0].value).split(".")[0])
    return found


def test_every_dependency_is_imported():
    """Each install_requires entry is imported by monai_lgg, or listed in NEEDED_INDIRECTLY with its reason."""
    imported = imported_modules(PROJECT_ROOT / "monai_lgg")
    names = {
        req.name.lower(): IMPORT_NAMES.get(req.name.lower(), req.name.lower().replace("-", "_"))
        for req in install_requires()
    }
    unused = sorted(dist for dist, module in names.items() if module not in imported and dist not in NEEDED_INDIRECTLY)
    assert not unused, f"install_requires entries that monai_lgg never imports: {unused}"
    stale = sorted(dist for dist in NEEDED_INDIRECTLY if dist not in names or names[dist] in imported)
    assert not stale, f"NEEDED_INDIRECTLY entries that are imported or no longer required: {stale}"


def test_bundle_outputs_of_an_installed_package_go_to_the_working_folder(tmp_path, monkeypatch):
    """A bundle inside an installed monai-lgg is package data: training runs and exports go to ./<name>_outputs."""
    monkeypatch.chdir(tmp_path)
    unet = BUNDLES_DIR / "unet"
    checkout_run = Path(run_dir(unet, "data/lgg", 1))
    assert checkout_run == unet / "runs" / "lgg_fold1"  # a checkout keeps runs beside the bundle's configs
    monkeypatch.setattr(bundle_settings, "_IN_CHECKOUT", False)
    assert output_root(unet) == tmp_path / "unet_outputs"
    assert Path(run_dir(unet, "data/lgg", 1)) == tmp_path / "unet_outputs" / "runs" / "lgg_fold1"
    own = tmp_path / "mine" / "unet"  # a user's own bundle folder still holds its outputs
    assert output_root(own) == own and Path(run_dir(own, "synthetic", 0)) == own / "runs" / "synthetic_fold0"


def test_export_bundle_from_an_installed_package_says_it_needs_a_checkout(tmp_path, monkeypatch):
    """The measured results a zoo export cites live in the checkout's docs/, not in the wheel: one clear line."""
    from monai_lgg.bundle_export import EVAL_METRICS_FILE, measured_eval_metrics

    site = tmp_path / "site-packages" / "monai_lgg" / "_bundles"
    shutil.copytree(BUNDLES_DIR / "unet" / "docs", site / "unet" / "docs")
    monkeypatch.setattr(bundle_settings, "_IN_CHECKOUT", False)
    monkeypatch.setattr(bundle_settings, "BUNDLES_DIR", site)
    with pytest.raises(LGGInputError, match="publishes from a source checkout") as refused:
        measured_eval_metrics(site / "unet")
    assert EVAL_METRICS_FILE in str(refused.value) and "\n" not in str(refused.value)


def _project_copy(target: Path) -> Path:
    """The checkout's tracked and new files (symlinks kept), plus local training output a wheel must not take."""
    listed = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listed.returncode:
        pytest.skip(f"the project is not a git checkout here ({listed.stderr.decode().strip()[:200]})")
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        source, dest = PROJECT_ROOT / name, target / name
        if not os.path.lexists(source):  # deleted in the work tree, not yet committed
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest, follow_symlinks=False)
    for bundle in bundle_names():
        for part in RUN_OUTPUTS:
            planted = target / "bundles" / bundle / part / "lgg_fold0" / "models"
            planted.mkdir(parents=True)
            (planted / "model.pt").write_bytes(b"local run")
        (target / "bundles" / bundle / "models").mkdir(exist_ok=True)
        (target / "bundles" / bundle / "models" / "last.pt").write_bytes(b"local checkpoint")
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``python -m build --wheel`` of a copy of the checkout holding local run output in every bundle."""
    root = tmp_path_factory.mktemp("wheel")
    project = _project_copy(root / "project")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), str(project)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return root / "dist" / f"monai_lgg-{__version__}-py3-none-any.whl"


def test_wheel_holds_the_bundles_and_no_run_output(wheel):
    """Every bundle's configs (links resolved to files), docs and licence, the UNet's weights; nothing else."""
    size_mb = wheel.stat().st_size / 1e6
    print(f"wheel: {wheel.name}, {size_mb:.1f} MB")
    assert size_mb < WHEEL_LIMIT_MB, f"the wheel is {size_mb:.1f} MB"
    prefix = "monai_lgg/_bundles/"
    with zipfile.ZipFile(wheel) as archive:
        entries = {
            info.filename[len(prefix) :]: info for info in archive.infolist() if info.filename.startswith(prefix)
        }
        for name, info in entries.items():
            assert not stat.S_ISLNK(info.external_attr >> 16), f"{name} is a link in the wheel"
        expected = {"unet/models/model.pt", "unet/models/model.json"}
        for bundle in bundle_names():
            source = BUNDLES_DIR / bundle
            files = [p for part in ("configs", "docs") for p in (source / part).iterdir()] + [source / "LICENSE"]
            expected |= {str(p.relative_to(BUNDLES_DIR)) for p in files}
        assert set(entries) == expected, (sorted(set(entries) - expected), sorted(expected - set(entries)))
        for name in sorted(expected):
            assert archive.read(prefix + name) == (BUNDLES_DIR / name).read_bytes(), f"{name} differs from the source"
    assert len(bundle_names()) >= 6 and "_shared" not in {name.split("/")[0] for name in entries}


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def _folder_mb(folder: Path) -> float:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Iterator[dict[str, object]]:
    """A fresh virtual environment outside the checkout with torch (this environment's build) and the wheel.

    The wheel is installed as a user would: not editable, its dependencies resolved by pip. torch is
    installed first at this environment's exact version, so pip takes the CPU build and not several GB of
    CUDA wheels.
    """
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    timings = {}
    for label, spec in (("torch", f"torch=={torch.__version__}"), ("wheel", str(wheel))):
        started = time.perf_counter()
        install = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", spec], capture_output=True, text=True, env=env, timeout=1200
        )
        if install.returncode and any(marker in install.stderr for marker in OFFLINE):
            pytest.skip(f"the package index cannot be reached here: {install.stderr.strip()[-300:]}")
        assert install.returncode == 0, f"pip install {spec}: {install.stderr[-3000:]}"
        timings[label] = time.perf_counter() - started
    print(
        f"fresh environment: {time.perf_counter() - start:.0f} s (torch {timings['torch']:.0f} s, wheel and its "
        f"dependencies {timings['wheel']:.0f} s), {_folder_mb(venv):.0f} MB"
    )
    work = root / "work"
    work.mkdir()
    probe = _run(
        [python, "-c", "import monai_lgg.engines.bundle as b; print(b.__file__); print(b.BUNDLES_DIR)"], work, env
    )
    site = str(venv)
    assert all(line.startswith(site) for line in probe.stdout.split()), probe.stdout  # the wheel's, not the checkout's
    yield {"script": str(venv / "bin" / "monai-lgg"), "env": env, "work": work, "venv": venv}
    shutil.rmtree(venv, ignore_errors=True)  # 1.5 GB that pytest would otherwise keep for three runs


def _same_outputs(first: Path, second: Path) -> None:
    """Same files, byte for byte (masks, tumour tables)."""

    def outputs(root: Path) -> list[str]:  # the run's bookkeeping (lock holder, manifests) is left out
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and STATE_DIR not in p.parts)

    names = outputs(first)
    assert names == outputs(second)
    assert any(name.endswith(("_mask.tif", ".nii.gz")) for name in names), names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs"


def _predict_both(installed: dict, source: Path, tag: str, *options: str) -> tuple[Path, Path]:
    """``monai-lgg predict SOURCE out`` with the wheel and with this checkout's install, each from its own folder."""
    outputs = []
    for label, script, env in (
        ("wheel", installed["script"], installed["env"]),
        ("checkout", CONSOLE_SCRIPT, dict(os.environ)),
    ):
        cwd = installed["work"] / f"{tag}-{label}"
        cwd.mkdir()
        _run([script, "predict", str(source), "out", "--progress", "False", *options], cwd, env)
        outputs.append(cwd / "out")
    return outputs[0], outputs[1]


@pytest.mark.slow
def test_installed_wheel_segments_synthetic_data_like_the_checkout(installed):
    """With only the wheel installed: synth, then predict with the shipped UNet, by name and as a copied folder, on
    the Kaggle slices and on a NIfTI volume converted from them."""
    script, env, work = installed["script"], installed["env"], installed["work"]
    _run([script, "synth", "kaggle_3m", "--num_patients", "2", "--num_slices", "10"], work, env)
    from_wheel, from_checkout = _predict_both(installed, work / "kaggle_3m", "synthetic")
    _same_outputs(from_wheel, from_checkout)

    # a user's own bundle folder (here a copy of the installed UNet) is taken as given
    site_unet = next(installed["venv"].glob("lib/python*/site-packages/monai_lgg/_bundles/unet"))
    shutil.copytree(site_unet, work / "my_unet")
    own = work / "own"
    own.mkdir()
    _run([script, "predict", str(work / "kaggle_3m"), "out", "--progress", "False", "--bundle", "../my_unet"], own, env)
    _same_outputs(own / "out", from_wheel)

    # a NIfTI case (the converter's <case>_0000..0002 channel files), converted by the installed package
    _run([script, "convert", "kaggle_3m", "lgg", "--num_folds", "2", "--progress", "False"], work, env)
    volume = sorted((work / "lgg" / "imagesTr").glob("*_0001.nii.gz"))[0]
    from_wheel, from_checkout = _predict_both(installed, volume, "nifti")
    assert list(from_wheel.glob("*.nii.gz"))
    _same_outputs(from_wheel, from_checkout)

    missing = subprocess.run(
        [script, "predict", "kaggle_3m", "x", "--bundle", "nosuch"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=900,
    )
    assert missing.returncode == 2 and re.search(r"bundle not found .*: attentionunet, .*unet, .*unext", missing.stderr)


@pytest.mark.slow
@pytest.mark.realdata
def test_installed_wheel_segments_a_real_patient_like_the_checkout(installed, shared_lgg):
    """The shipped UNet from the wheel on one real TCGA patient: the checkout's masks, bit for bit."""
    patient = sorted(p for p in shared_lgg.iterdir() if p.is_dir())[0]
    from_wheel, from_checkout = _predict_both(installed, patient, "real")
    _same_outputs(from_wheel, from_checkout)


@pytest.mark.slow
def test_installed_wheel_reads_dicom_and_writes_a_seg(installed):
    """With only the wheel installed: a DICOM series in, the checkout's NIfTI mask and tables out, and a DICOM SEG
    with the same frames and references (its own UIDs and dates differ by design)."""
    import nibabel as nib
    import numpy as np
    import pydicom

    from monai_lgg.data.synthetic import make_synthetic_case

    from .dicom_helpers import realistic_affine, write_series

    image, _ = make_synthetic_case(12, 128, seed=5)
    flair = np.moveaxis(image[..., 1], 0, -1).astype(np.float32)
    write_series(installed["work"] / "dicom" / "p1", nib.Nifti1Image(flair, realistic_affine(flair.shape)))
    from_wheel, from_checkout = _predict_both(installed, installed["work"] / "dicom" / "p1", "dicom", "--dicom_seg")
    seg = "p1_seg.dcm"
    assert (from_wheel / seg).is_file() and (from_wheel / "p1.nii.gz").is_file()
    for folder in (from_wheel, from_checkout):
        (folder.parent / seg).write_bytes((folder / seg).read_bytes())
        (folder / seg).unlink()
    _same_outputs(from_wheel, from_checkout)
    wheel_seg, checkout_seg = (pydicom.dcmread(folder.parent / seg) for folder in (from_wheel, from_checkout))
    np.testing.assert_array_equal(wheel_seg.pixel_array, checkout_seg.pixel_array)

    def references(ds) -> list[str]:
        return [
            str(g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for g in ds.PerFrameFunctionalGroupsSequence
        ]

    assert references(wheel_seg) == references(checkout_seg)
