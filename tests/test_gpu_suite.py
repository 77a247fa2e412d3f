"""The prepared GPU run: the pack (wheels + data parts, rebuilt byte for byte on the machine), the device
commands, the one inference timer, the benchmark's time budget, and the whole suite in its CPU smoke mode
with itk and jsonschema made unimportable, as on the bare GPU machine."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from monai_lgg.cli import main as cli_main
from monai_lgg.inference.benchmark import format_table, time_inference
from monai_lgg.studies import gpu_pack

from .conftest import PROJECT_ROOT


def _nifti_contents(root: Path) -> dict[str, bytes]:
    """Every file of a converted set, ``.nii.gz`` files decompressed (their gzip wrapper may differ)."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".pack.json"):
        data = path.read_bytes()
        files[path.relative_to(root).as_posix()] = gzip.decompress(data) if path.name.endswith(".gz") else data
    return files


# --------------------------------------------------------------------------------------------- pack
@pytest.mark.parametrize(
    "total, capacity, last, expected",
    [(10, 50, 40, [10]), (100, 50, 40, [34, 33, 33]), (90, 50, 30, [30, 30, 30]), (95, 50, 20, [38, 37, 20])],
)
def test_part_sizes(total, capacity, last, expected):
    """The fewest parts, each within one call; the last (with the wheels) within what is left beside them."""
    sizes = gpu_pack.part_sizes(total, capacity, last)
    assert sizes == expected
    assert sum(sizes) == total and max(sizes[:-1], default=0) <= capacity and sizes[-1] <= last


def test_part_sizes_refuse_a_full_call():
    with pytest.raises(ValueError, match="no room"):
        gpu_pack.part_sizes(10, 50, 0)


def test_pack_round_trip(tiny_dataset, tmp_path):
    """Parts carried one per call and stashed, then joined: every file comes back identical (NIfTI content
    checked byte for byte), images through lossless WebP; a damaged part is refused."""
    out = tmp_path / "gpu_pack"
    assert (
        gpu_pack.main(
            [
                "build",
                "--source",
                str(tiny_dataset),
                "--out",
                str(out),
                "--no_wheels",
                "--part_mib",
                "0.05",
                "--tree_mib",
                "10",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["parts"]) >= 2 and manifest["data"]["groups"] == 5
    assert manifest["data"]["slices"] == sum(
        i["num_slices"] for i in json.loads((tiny_dataset / "datalist.json").read_text())["training"]
    )
    assert (out / "CALLS.md").read_text().count("run(command=") == len(manifest["parts"])

    store = tmp_path / "store"
    for i, part in enumerate(manifest["parts"]):  # each call: a fresh repository copy with one part and the manifest
        carried = tmp_path / f"call_{part['name']}"
        carried.mkdir()
        (carried / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
        (carried / part["name"]).write_bytes((out / part["name"]).read_bytes())
        state = gpu_pack.stash(carried, store)
        assert state["missing"] == [p["name"] for p in manifest["parts"][i + 1 :]]
        assert not (carried / part["name"]).exists()  # moved out of the repository copy into the store
    rebuilt = gpu_pack.unpack_data(manifest, store, workers=1)
    assert _nifti_contents(rebuilt) == _nifti_contents(tiny_dataset)

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    first = manifest["parts"][0]["name"]
    data = bytearray((out / first).read_bytes())
    data[100] ^= 0xFF
    (damaged / first).write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="SHA-256"):
        gpu_pack.stash(damaged, tmp_path / "store2")


def test_pack_folder_must_be_ignored(tiny_dataset):
    """The data must never be committed: a pack folder that git would track is refused before anything is written."""
    if subprocess.run(["git", "rev-parse"], cwd=PROJECT_ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    target = PROJECT_ROOT / "docs" / "gpu_pack_probe"
    with pytest.raises(SystemExit, match="not ignored by git"):
        gpu_pack.main(["build", "--source", str(tiny_dataset), "--out", str(target), "--no_wheels"])
    assert not target.exists()
    assert subprocess.run(["git", "check-ignore", "-q", "gpu_pack/data.part_00"], cwd=PROJECT_ROOT).returncode == 0


def test_device_calls_fit_the_tool():
    """One call per part, each carrying the manifest and its part; the last also the wheels, and it runs the suite."""
    parts = [{"name": f"data.part_{i:02d}", "bytes": 1} for i in range(3)]
    calls = gpu_pack.device_calls("gpu_pack", parts)
    assert [c["carry"][1] for c in calls] == [f"gpu_pack/data.part_{i:02d}" for i in range(3)]
    assert all(c["carry"][0] == "gpu_pack/manifest.json" and len(c["carry"]) <= 8 for c in calls)
    assert all(len(c["command"]) <= 2000 and c["timeout_s"] <= 600 for c in calls)
    assert calls[-1]["carry"][-1] == "gpu_pack/wheels" and "tools/gpu_suite.py $OUT" in calls[-1]["command"]
    assert all("gpu_suite" not in c["command"] for c in calls[:-1])


# --------------------------------------------------------------------------------------------- timers
def test_time_inference_rows():
    """The one inference timer: a row per variant x TTA x batch size, medians not below the best runs, and the
    caller's network left in its own memory format (each variant runs on a copy)."""
    network = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    rows = time_inference(network, (16, 16), "cpu", num_slices=3, size=16, repeats=2, batch_sizes=(1, 3))
    assert len(rows) == 2 * 2 * 2
    assert {(r["precision"], r["channels_last"], r["tta"], r["batch_size"]) for r in rows} == {
        (p, c, t, b) for p, c in (("fp32", False), ("bf16", True)) for t in (False, True) for b in (1, 3)
    }
    assert all(r["slice_ms"] >= r["slice_ms_best"] > 0 and r["volume_ms"] >= r["volume_ms_best"] > 0 for r in rows)
    assert network.weight.is_contiguous()
    assert format_table(rows).count("\n") == len(rows) + 1


def test_benchmark_cli_refuses_missing_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["benchmark", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_step_budget():
    """A fixed count by default; with max_seconds, a run may stop once min_steps ran and the window is long enough."""
    from monai_lgg.studies.benchmark import StepBudget

    fixed = StepBudget(warmup=2, steps=5)
    assert [fixed.done(i, time.perf_counter()) for i in (3, 6, 7)] == [False, False, True]
    early = StepBudget(warmup=2, steps=100, min_steps=2, max_seconds=0.0)
    long_ago = time.perf_counter() - 1.0
    assert [early.done(i, long_ago) for i in (3, 4)] == [False, True]
    with pytest.raises(ValueError):
        StepBudget(warmup=0, steps=5)


def test_measure_respects_deadline(tiny_dataset):
    """Past its deadline the benchmark starts no run and lists each one it skipped (the suite's time budget)."""
    from monai_lgg.studies.benchmark import measure

    record = measure(
        dataset_dir=str(tiny_dataset),
        device="cpu",
        spatial_size=32,
        batch_size=2,
        sections="train",
        variants="plain,default",
        bare="default",
        repeats=1,
        deadline=time.monotonic() - 1,
        log=lambda line: None,
    )
    assert record["rows"] == []
    assert record["skipped"] == [
        "training plain (repeat 1)",
        "training default (repeat 1)",
        "training reference (repeat 1)",
    ]


# --------------------------------------------------------------------------------------------- the suite
@pytest.mark.slow
def test_gpu_suite_smoke(tmp_path):
    """``tools/gpu_suite.py --smoke``: every section runs on CPU and writes its results, without itk or jsonschema
    (as on the GPU machine); the output folder stays within what the device tool brings back (8 files)."""
    blocked = tmp_path / "blocked"
    for name in ("itk", "jsonschema"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(PROJECT_ROOT)]), "OMP_NUM_THREADS": "2"}
    out, work = tmp_path / "out", tmp_path / "work"
    # a budget no section reaches: this test checks that every section runs, not how fast a busy CI machine is
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "tools" / "gpu_suite.py"),
            str(out),
            "--smoke",
            "--work_dir",
            str(work),
            "--budget_s",
            "20000",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=3000,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    assert results["context"]["mode"] == "smoke" and not any(s.get("error") for s in sections.values())

    networks = sections["throughput"]["networks"]
    assert [n["network_args"] for n in networks] == [{}, {"channels": [32, 64, 128, 256, 512]}]
    for net in networks:
        names = [r["name"] for r in net["rows"]]
        assert names[:2] == ["reference", "plain"] and "default" in names and "batch+channels_last" in names
        assert sum(r["best"] for r in net["rows"]) == 1 and not net["skipped"]
        assert all(r["value"] > 0 and r["x_reference"] > 0 and r["tflops"] > 0 for r in net["rows"])
        assert "data_pipeline_cost_pct" in next(r for r in net["rows"] if r["name"] == "default")
    assert networks[1]["step_gflop"] > networks[0]["step_gflop"]

    assert len(sections["inference"]["rows"]) == 2 + 2 and sections["inference"]["goals"]
    assert sections["cuda_tests"]["status"] in ("skipped (no CUDA device)", "passed")
    assert sections["cuda_tests"]["counts"].get("deselected", 0) > 0

    accuracy = sections["accuracy"]
    assert accuracy["status"] == "complete" and accuracy["epochs_done"] == 2
    assert 0.0 <= accuracy["test"]["dice_mean"] <= 1.0 and accuracy["test"]["patients"] == 1
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert kept == [
        "accuracy/model.json",
        "accuracy/model.pt",
        "accuracy/per_patient.csv",
        "accuracy/summary.json",
        "results.json",
        "results.md",
    ]
    markdown = (out / "results.md").read_text()
    assert "## 1. Training throughput" in markdown and "## 4. Accuracy recipe" in markdown
