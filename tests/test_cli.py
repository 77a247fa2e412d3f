"""The monai-lgg command line: same commands through the console script and python -m, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import CONSOLE_SCRIPT


def run_cli(*args: str, module: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai_lgg", *args] if module else [CONSOLE_SCRIPT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_synth_and_convert(tmp_path):
    synth = run_cli("synth", str(tmp_path / "k"), "--num_patients", "3", "--num_slices", "6", "--size", "64")
    assert synth.returncode == 0, synth.stderr
    out = run_cli("convert", str(tmp_path / "k"), str(tmp_path / "n"), "--num_folds", "3", "--progress", "False", module=False)
    assert out.returncode == 0, out.stderr
    assert "converted 3 patients" in out.stdout
    assert (tmp_path / "n" / "datalist.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["convert", "{tmp}/missing", "{tmp}/out"], "missing: does not exist"),
        (["convert", "{tmp}", "{tmp}/out"], "contains no patient folders"),
    ],
)
def test_bad_input_one_line(tmp_path, args, message):
    result = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monai-lgg: error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands():
    result = run_cli("--help")
    text = result.stdout + result.stderr  # fire pages help to stderr when not on a terminal
    assert result.returncode == 0 and "convert" in text and "synth" in text
