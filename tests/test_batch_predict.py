"""Batch prediction that survives faults: per-case commits, ``failed.csv``, ``--continue`` after a kill, one run per
output folder, and output failures in one line.

Uses the tiny trained UNet bundle of :mod:`tests.test_predict` on its 5 synthetic patients (8 slices of 64 x 64).
"""

from __future__ import annotations

import csv
import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monai_lgg.errors import LGGInputError, OutputError
from monai_lgg.inference.output_folder import STATE_DIR, OutputFolder
from monai_lgg.inference.predict import FAILED_CSV, SUMMARY_CSV, PredictFailures, predict

from .test_predict import tiny_bundle

KW = {"spatial_size": [64, 64], "progress": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return tiny_bundle(tmp_path_factory)


def _run(tiny, source: Path, out: Path, **kwargs) -> list[dict]:
    return predict(source, out, bundle=tiny["bundle"], **KW, **kwargs)


def _tree(root: Path) -> dict[str, bytes]:
    """Every output file by relative path (bookkeeping left out); the folder's own path made relative in CSVs."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.parts[0] != STATE_DIR:
            data = path.read_bytes()
            files[str(relative)] = data.replace(str(root).encode(), b"<out>") if path.suffix == ".csv" else data
    return files


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> dict[str, bytes]:
    """An uninterrupted run over the 5 synthetic patients."""
    out = tmp_path_factory.mktemp("reference") / "out"
    _run(tiny, tiny["kaggle"], out)
    return _tree(out)


def test_a_bad_case_is_listed_and_the_others_are_written(tiny, reference, tmp_path):
    patients = tmp_path / "patients"
    shutil.copytree(tiny["kaggle"], patients)
    truncated = sorted(patients.glob("*/*_3.tif"))[2]  # the third of 5 patients
    truncated.write_bytes(truncated.read_bytes()[:300])
    out = tmp_path / "out"
    with pytest.raises(PredictFailures) as info:
        _run(tiny, patients, out)
    assert "1 of 5 case(s) failed" in str(info.value) and truncated.name in str(info.value)
    failed = _rows(out / FAILED_CSV)
    assert [row["case"] for row in failed] == [truncated.parent.name] and failed[0]["file"] == str(truncated)
    written = _tree(out)
    bad = truncated.parent.name
    assert {k: v for k, v in reference.items() if bad not in k and k != SUMMARY_CSV} == {
        k: v for k, v in written.items() if k not in (SUMMARY_CSV, FAILED_CSV)
    }
    assert [row["case"] for row in _rows(out / SUMMARY_CSV)] == [
        row["case"] for row in _rows(tiny_reference_summary(reference)) if row["case"] != bad
    ]
    assert not list((out / STATE_DIR).glob("staging/*"))


def tiny_reference_summary(reference: dict[str, bytes]) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / SUMMARY_CSV
    path.write_bytes(reference[SUMMARY_CSV])
    return path


def test_cli_exit_code_and_lines_for_a_partly_failed_run(tiny, tmp_path, capsys):
    from monai_lgg.cli import main

    patients = tmp_path / "patients"
    shutil.copytree(tiny["kaggle"], patients)
    truncated = sorted(patients.glob("*/*_3.tif"))[1]
    truncated.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                str(patients),
                str(tmp_path / "out"),
                "--bundle",
                str(tiny["bundle"]),
                "--spatial_size",
                "[64,64]",
                "--progress",
                "False",
            ]
        )
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and truncated.name in lines[0] and "1 of 5 case(s) failed" in lines[1], lines
    assert len(_rows(tmp_path / "out" / SUMMARY_CSV)) == 4


def test_fail_fast_stops_at_the_first_bad_case(tiny, tmp_path):
    patients = tmp_path / "patients"
    shutil.copytree(tiny["kaggle"], patients)
    truncated = sorted(patients.glob("*/*_3.tif"))[1]
    truncated.write_bytes(truncated.read_bytes()[:300])
    out = tmp_path / "out"
    with pytest.raises(LGGInputError, match=truncated.name) as info:
        _run(tiny, patients, out, fail_fast=True)
    assert not isinstance(info.value, PredictFailures)
    assert len(list((out / STATE_DIR / "cases").glob("*.json"))) == 1  # the first patient was committed
    assert not (out / FAILED_CSV).exists()


# A run that SIGKILLs itself at the n-th call of one of the commit's steps: os.replace moves a case's files into
# place (mid-commit), _atomic_write writes the journal and the manifest.
KILLER = """
import os, signal, sys
from pathlib import Path
import monai_lgg.inference.output_folder as folder
target, after = sys.argv[1], int(sys.argv[2])
calls = [0]
def counted(original):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper
if target == "replace":
    folder.os = type("os", (), {**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")},
                                "replace": staticmethod(counted(os.replace))})
else:
    folder._atomic_write = counted(folder._atomic_write)
from monai_lgg.inference.predict import predict
predict(sys.argv[3], sys.argv[4], bundle=sys.argv[5], spatial_size=[64, 64], progress=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("step", "after"), [("replace", 1), ("replace", 14), ("write", 1), ("write", 4), ("replace", 37)]
)
def test_kill_then_continue_gives_the_uninterrupted_outputs(tiny, reference, tmp_path, step, after):
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, step, str(after), str(tiny["kaggle"]), str(out), str(tiny["bundle"])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if any(p.is_file() and STATE_DIR not in p.parts for p in out.rglob("*")):
        # a plain rerun keeps what is there
        with pytest.raises(LGGInputError, match="--continue to finish an interrupted run"):
            _run(tiny, tiny["kaggle"], out)
    _run(tiny, tiny["kaggle"], out, resume=True)
    assert _tree(out) == reference
    assert not list((out / STATE_DIR).glob("staging/*"))
    assert not list(tmp_path.glob(".*")), "staging left beside the output"


def test_continue_skips_committed_cases(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _run(tiny, tiny["kaggle"], out)
    module = importlib.import_module("monai_lgg.inference.predict")  # the package exports a function of that name

    def no_prediction(*args, **kwargs):
        raise AssertionError("a committed case was predicted again")

    monkeypatch.setattr(module, "_predict_case", no_prediction)
    rows = _run(tiny, tiny["kaggle"], out, resume=True)
    assert len(rows) == 5 and len(_rows(out / SUMMARY_CSV)) == 5


def test_a_second_run_into_the_same_folder_is_refused_at_once(tiny, tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out):
        started = time.monotonic()
        with pytest.raises(LGGInputError, match=rf"in use by another monai-lgg run \(pid {os.getpid()} on "):
            _run(tiny, tiny["kaggle"], out, overwrite=True)
        assert time.monotonic() - started < 30  # refused before loading or segmenting anything
    assert not list(out.rglob("*_mask.tif"))


def test_wait_waits_for_the_holder(tiny, tmp_path):
    out = tmp_path / "out"
    holder = OutputFolder(out).__enter__()
    threading.Timer(2.0, holder.__exit__, (None, None, None)).start()
    rows = _run(tiny, tiny["kaggle"], out, wait=True)
    assert len(rows) == 5


def test_a_lock_left_by_a_killed_run_is_not_stale(tiny, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from monai_lgg.inference.output_folder import OutputFolder; "
                f"OutputFolder({str(out)!r}).__enter__(); print('held', flush=True); time.sleep(600)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert len(_run(tiny, tiny["kaggle"], out)) == 5


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_an_unwritable_output_stops_in_one_line_and_leaves_no_staging(tiny, tmp_path, monkeypatch, code):
    module = importlib.import_module("monai_lgg.inference.predict")  # the package exports a function of that name

    real = module.write_csv
    calls = [0]

    def failing(path, rows):
        calls[0] += 1
        if calls[0] == 3:  # the third case's table: two cases are committed already
            raise OSError(code, os.strerror(code))
        return real(path, rows)

    monkeypatch.setattr(module, "write_csv", failing)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=os.strerror(code)) as info:
        _run(tiny, tiny["kaggle"], out)
    assert "\n" not in str(info.value)
    assert len(list((out / STATE_DIR / "cases").glob("*.json"))) == 2
    assert not list((out / STATE_DIR).glob("staging/*"))
    assert not list(tmp_path.glob(".*"))


def test_manifest_records_files_and_row(tiny, tmp_path):
    out = tmp_path / "out"
    _run(tiny, tiny["kaggle"], out)
    manifests = [json.loads(p.read_text()) for p in (out / STATE_DIR / "cases").glob("*.json")]
    assert len(manifests) == 5 and all(m["complete"] for m in manifests)
    for manifest in manifests:
        assert all((out / f).is_file() for f in manifest["files"])
        assert manifest["row"]["case"] == manifest["case"].split("/")[-1]


def _cli(tiny, out: Path, *extra: str, env: dict | None = None, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    command = [*launcher] if launcher else [sys.executable, "-m", "monai_lgg"]
    return subprocess.Popen(
        [
            *command,
            "predict",
            str(tiny["kaggle"]),
            str(out),
            "--bundle",
            str(tiny["bundle"]),
            "--spatial_size",
            "[64,64]",
            "--progress",
            "False",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_two_parts_side_by_side_then_continue_equal_one_run(tiny, reference, tmp_path):
    """A SLURM array of two tasks into one folder, then the merge: ``--continue`` without parts."""
    out = tmp_path / "out"
    parts = [_cli(tiny, out, "--num_parts", "2", "--part_id", str(k)) for k in (0, 1)]
    for part in parts:
        _finish(part)
    tables = sorted(p.name for p in out.glob("*.csv"))
    assert tables == ["tumour_summary.part-0-of-2.csv", "tumour_summary.part-1-of-2.csv"]
    assert sum(len(_rows(out / t)) for t in tables) == 5
    _run(tiny, tiny["kaggle"], out, resume=True)
    assert _tree(out) == reference


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_run(tiny, reference, tmp_path):
    out = tmp_path / "out"
    launcher = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "monai_lgg",
    )
    _finish(_cli(tiny, out, launcher=launcher, env={"OMP_NUM_THREADS": "1"}))
    assert _tree(out) == reference


def test_parts_and_whole_runs_exclude_each_other(tiny, tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, part="part-0-of-2"):
        with OutputFolder(out, part="part-1-of-2"):  # another part runs beside it
            pass
        with pytest.raises(LGGInputError, match="in use by another monai-lgg run .*part part-0-of-2"):
            OutputFolder(out, part="part-0-of-2").__enter__()
        with pytest.raises(LGGInputError, match="in use by another monai-lgg run"):
            _run(tiny, tiny["kaggle"], out)  # a whole run never writes beside a part


def test_bad_part_options_are_one_line(tiny, tmp_path):
    with pytest.raises(LGGInputError, match="--part_id must be 0 to 1 with --num_parts 2, got 2"):
        _run(tiny, tiny["kaggle"], tmp_path / "out", num_parts=2, part_id=2)


def test_continue_flag_on_the_command_line(tiny, reference, tmp_path):
    out = tmp_path / "out"
    _run(tiny, tiny["kaggle"], out)
    (out / SUMMARY_CSV).unlink()  # as if the run was killed before its last step
    _finish(_cli(tiny, out, "--continue"))
    assert _tree(out) == reference
