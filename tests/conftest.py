"""Shared fixtures: the synthetic data set (generated once per session) and the optional real data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from monai_lgg.data.kaggle import convert_kaggle
from monai_lgg.data.synthetic import generate_synthetic_kaggle

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MONAI_LGG_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
SHARED_LGG = SHARED_DATA / "lgg" / "kaggle_3m"
# The installed console script beside the running interpreter: `make test` runs .venv/bin/python
# without activating the environment, so the script is not on PATH.
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "monai-lgg")


def converted_synthetic(root: Path, num_patients: int, num_slices: int, size: int, num_folds: int, seed: int) -> Path:
    """A small synthetic Kaggle set generated under ``root`` and converted to ``root / "lgg"``."""
    generate_synthetic_kaggle(
        root / "kaggle_3m", num_patients=num_patients, num_slices=num_slices, size=size, seed=seed
    )
    result = convert_kaggle(root / "kaggle_3m", root / "lgg", num_folds=num_folds, progress=False, num_workers=1)
    assert result.ok, result.report
    return root / "lgg"


def converted_real(shared_lgg: Path, root: Path, patients: list[str]) -> Path:
    """Real patients (symlinked from the shared copy) converted by ``convert_kaggle`` to ``root / "lgg"``."""
    (root / "kaggle").mkdir(parents=True)
    for patient in patients:
        (root / "kaggle" / patient).symlink_to(shared_lgg / patient)
    result = convert_kaggle(root / "kaggle", root / "lgg", progress=False, num_workers=1)
    assert result.ok, result.report["errors"]
    return root / "lgg"


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in this process on a command line it must refuse; return its single stderr line."""
    from monai_lgg.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("monai-lgg: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """5 synthetic patients x 8 slices of 64 x 64, 5 folds (fold 0: 3 training, 1 validation, 1 test patient)."""
    return converted_synthetic(
        tmp_path_factory.mktemp("tiny"), num_patients=5, num_slices=8, size=64, num_folds=5, seed=1
    )


@pytest.fixture(scope="session")
def synthetic_kaggle(tmp_path_factory) -> Path:
    """8 synthetic patients x ~24 slices in the Kaggle layout."""
    return generate_synthetic_kaggle(tmp_path_factory.mktemp("synthetic") / "kaggle_3m")


@pytest.fixture(scope="session")
def synthetic_converted(synthetic_kaggle, tmp_path_factory) -> Path:
    """The synthetic set converted to NIfTI with 5 folds."""
    out = tmp_path_factory.mktemp("converted") / "lgg"
    result = convert_kaggle(synthetic_kaggle, out, progress=False, num_workers=1)
    assert result.ok, result.report
    return out


@pytest.fixture(scope="session")
def shared_lgg() -> Path:
    """The real Kaggle LGG copy beside the project; skips when a user's clone does not have it."""
    if not (SHARED_LGG / "data.csv").is_file():
        pytest.skip(f"real LGG data not found at {SHARED_LGG} (only present on the project's machines and CI)")
    return SHARED_LGG
