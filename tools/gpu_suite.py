#!/usr/bin/env python
"""One prepared GPU run: every GPU measurement of the project in one command, in order of value.

    python tools/gpu_suite.py OUTPUT [--data DIR] [--work_dir DIR] [--budget_s 450] [--epochs 100] [--fold 0]
        [--train_overrides "{'batch_size': 32}"] [--sections throughput,inference,cuda_tests,accuracy]
    python tools/gpu_suite.py OUTPUT --smoke      # the same code path on CPU with tiny sizes (CI runs it)

Sections, in this order, each written to ``OUTPUT/results.json`` and ``OUTPUT/results.md`` as soon as it has
a number (so a run cut short still leaves what it measured):

1. ``throughput``: training slices/s of the UNet bundle and of UNet(32..512) at 256² (``tools/benchmark.py``
   :func:`measure`: the bundle's own trainer and data pipeline), rows: the authors'-style reference loop, the
   plain MONAI path, the bundle's defaults on this device, candidate option sets; then the best row. Each row
   has the achieved TFLOP/s against the chip's datasheet bf16 peak and against a bf16 matrix product measured
   here, peak memory, the host's share of the step spent fetching data and, for the defaults, the cost of the
   data pipeline (the same step on one fixed batch).
2. ``inference``: per slice and per 40-slice volume, fp32 and bf16 + channels-last, with and without TTA
   (:func:`monai_lgg.inference.benchmark.time_inference`, the timer of ``monai-lgg benchmark``).
3. ``cuda_tests``: ``pytest -m cuda`` (the tests that skip without a GPU).
4. ``accuracy``: the UNet bundle's own training recipe (``python -m monai.bundle run`` with
   ``configs/train.json`` and overrides: data, fold, epochs, folders), for as long as the budget allows, then
   ``configs/evaluate.json`` on the fold's test patients (per-patient 3D Dice). The training resumes from
   ``<work_dir>/accuracy/models/last.ckpt``: the same command again continues it.

``--smoke`` runs all four on CPU on a tiny synthetic set (64², 5 patients) in under 3 minutes; it checks the
path, not the speed. Nothing here imports itk, so the bare GPU machine needs only the wheels that
``tools/gpu_pack.py`` packs (monai, pytorch-ignite, nibabel, fire, termcolor).

Bundle configs run Python expressions: run only configs from a trusted source.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

START = time.monotonic()
PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:  # on the GPU machine the package runs from the source tree
    sys.path.insert(0, str(PROJECT))

import torch  # noqa: E402

from monai_lgg.io import atomic_path, write_json  # noqa: E402

BUNDLE = "unet"
BIG_UNET = {"channels": [32, 64, 128, 256, 512]}
# What each section may use, as fractions of the budget: a section starts no new run after its mark (one run
# may overrun it, e.g. a cold torch.compile); training stops at the accuracy mark minus the evaluation reserve.
MARKS = {"throughput": 0.27, "throughput_best": 0.42, "inference": 0.50, "cuda_tests": 0.58, "accuracy": 1.0}
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {
        # 7.5 minutes: with the pack's install (~40 s) and an evaluation that may overrun its reserve, the
        # device command stays inside its 10-minute limit
        "budget_s": 450,
        "spatial_size": 256,
        "batch_size": 64,
        "warmup": 5,
        "steps": 100,
        "min_steps": 5,
        "max_seconds": 2.0,
        "repeats": 1,
        "reference_workers": 4,  # the authors' train.py default (--workers 4)
        "variants": ["plain", "batch+bf16", "default"],
        "bare": ["default"],
        "best_candidates": ["batch+bf16+channels_last+cudnn_benchmark", "batch+bf16+channels_last+compile"],
        "inference": {"num_slices": 40, "size": 256, "repeats": 20, "batch_sizes": (8, 40), "tta": (False, True)},
        "cuda_tests_timeout_s": 150,
        "eval_reserve_s": 75,
        "epochs": 100,
        "train_overrides": {},
        "synthetic": {"num_patients": 40, "num_slices": 40, "size": 256},
    },
    "smoke": {
        # a generous budget: smoke mode checks that every section runs, also on a busy CI machine
        "budget_s": 900,
        "spatial_size": 64,
        "batch_size": 4,
        "warmup": 1,
        "steps": 3,
        "min_steps": 1,
        "max_seconds": 0.5,
        "repeats": 1,
        "reference_workers": 0,
        "variants": ["plain", "batch+bf16", "default"],
        "bare": ["default"],
        "best_candidates": ["batch+channels_last"],  # no compile on CPU: a cold compile alone takes about a minute
        # the shipped model is a 5-network ensemble: TTA would double the slowest part of the smoke run
        "inference": {"num_slices": 4, "size": 64, "repeats": 1, "batch_sizes": (4,), "tta": (False,)},
        "cuda_tests_timeout_s": 600,
        "eval_reserve_s": 45,
        "epochs": 2,
        "train_overrides": {"spatial_size": [64, 64], "batch_size": 4, "val_interval": 1},
        "synthetic": {"num_patients": 5, "num_slices": 8, "size": 64},
    },
}
GOALS = {"train_slices_per_s": 5000.0, "x_reference": 10.0, "volume_ms": 20.0}
RETURN_FILE_LIMIT = 16 * 2**20  # the device tool brings back files of at most 16 MiB


def elapsed() -> float:
    return time.monotonic() - START


def log(line: str) -> None:
    print(f"[{elapsed():6.1f} s] {line}", flush=True)


# --------------------------------------------------------------------------------------------- results
class Results:
    """The suite's record, rewritten (atomically) as ``results.json`` and ``results.md`` after every step."""

    def __init__(self, output: Path, context: dict) -> None:
        self.output = output
        self.data: dict[str, Any] = {"context": context, "sections": {}}

    def section(self, name: str, **values: Any) -> dict:
        entry = self.data["sections"].setdefault(name, {})
        entry.update(values)
        self.save()
        return entry

    def save(self) -> None:
        self.data["context"]["elapsed_s"] = round(elapsed(), 1)
        write_json(self.output / "results.json", self.data)
        with atomic_path(self.output / "results.md") as tmp:
            tmp.write_text(render_markdown(self.data))


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def render_markdown(data: dict) -> str:
    """The human-readable report of a (possibly partial) results record."""
    c = data["context"]
    lines = [
        f"# GPU suite results ({c['mode']})",
        "",
        f"{c['date']}, {c.get('gpu') or 'no GPU'}, {c['cpu_count']} CPUs, torch {c['torch']} (CUDA {c.get('cuda')}), "
        f"MONAI {c.get('monai')}, Python {c['python']}; commit {c['commit']}; data: {c['data']}; "
        f"budget {c['budget_s']} s, {c['elapsed_s']} s used so far.",
        "",
    ]
    if c.get("matmul_tflops"):
        lines += [
            f"Measured bf16 matrix product (8192³): **{c['matmul_tflops']:.0f} TFLOP/s** "
            f"(datasheet bf16 peak {c.get('peak_bf16_tflops')}).",
            "",
        ]
    sections = data["sections"]
    if "throughput" in sections:
        t = sections["throughput"]
        lines += ["## 1. Training throughput", "", t.get("note") or f"**{t.get('status')}**", ""]
        for net in t.get("networks", []):
            lines += [
                f"### {net['label']} ({_f(net.get('step_gflop'))} GFLOP per step of {net.get('batch_size')}, "
                f"{net.get('spatial_size')}², {net.get('training_slices_per_epoch')} slices per epoch)",
                "",
                "| row | slices/s | × reference | × plain | TFLOP/s | % datasheet peak | % measured peak | "
                "peak GiB | data fetch share | data pipeline cost | first iteration s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in net.get("rows", []):
                cost = r.get("data_pipeline_cost_pct")
                cells = [
                    ("**best**: " if r.get("best") else "") + r["label"],
                    _f(r["value"], 4),
                    _f(r.get("x_reference")),
                    _f(r.get("x_plain")),
                    _f(r.get("tflops")),
                    _f(r.get("pct_datasheet_peak")),
                    _f(r.get("pct_measured_peak")),
                    _f(r.get("peak_mem_gib")),
                    r.get("data_share") or "",
                    "" if cost is None else f"{cost:+.1f}%",
                    _f(r.get("first_iteration_s")),
                ]
                lines.append("| " + " | ".join(cells) + " |")
            if net.get("skipped"):
                lines.append(f"\nSkipped (time budget): {', '.join(net['skipped'])}")
            lines.append("")
        for goal in t.get("goals", []):
            lines.append(f"- {goal}")
        lines.append("")
    if "inference" in sections:
        i = sections["inference"]
        lines += ["## 2. Inference latency", "", i.get("note") or f"**{i.get('status')}**", ""]
        if i.get("table"):
            lines += [i["table"], ""]
        for goal in i.get("goals", []):
            lines.append(f"- {goal}")
        lines.append("")
    if "cuda_tests" in sections:
        t = sections["cuda_tests"]
        status = f"**{t.get('status')}**"
        if t.get("command"):
            status = f"`{t['command']}`: {status} — {t.get('summary', '')}"
        lines += ["## 3. CUDA tests", "", status, ""]
        if t.get("output_tail"):
            lines += ["```", t["output_tail"].rstrip(), "```", ""]
    if "accuracy" in sections:
        a = sections["accuracy"]
        lines += ["## 4. Accuracy recipe", "", f"Status: **{a.get('status')}**. {a.get('note', '')}", ""]
        for key in (
            "command",
            "epochs_done",
            "epochs",
            "train_seconds",
            "seconds_per_epoch",
            "last_metrics",
            "validation_metrics",
            "test",
            "left_in_work_dir",
        ):
            if a.get(key) not in (None, [], {}):
                lines.append(f"- {key}: `{json.dumps(a[key]) if not isinstance(a[key], str) else a[key]}`")
        lines.append("")
    for name, entry in sections.items():
        if entry.get("error"):
            lines += [f"**{name} failed**: `{entry['error']}`", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------- context
def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=PROJECT, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (no git)"
    changed = len([line for line in dirty.stdout.splitlines() if line.strip()])
    return head.stdout.strip() + (f" + {changed} changed files" if changed else "")


def context(mode: str, device: torch.device, budget: float, data: str) -> dict:
    import monai

    info = {
        "mode": mode,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "commit": _commit(),
        "budget_s": budget,
        "data": data,
        "command": " ".join(["python", "tools/gpu_suite.py", *sys.argv[1:]]),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """bf16 ``n x n x n`` matrix products per second on ``device`` (the achievable ceiling, CUDA events)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


# --------------------------------------------------------------------------------------------- data
def prepare_data(requested: str, smoke: bool, work: Path, profile: dict) -> tuple[str, bool]:
    """The data set to use and whether it is the real LGG data (the accuracy run needs it, except in smoke mode).

    ``auto``: the machine's unpacked pack (``~/monai_lgg_gpu/lgg``), else the shared Kaggle copy, else a
    synthetic set generated under ``work`` (the profile's size); smoke mode always uses its tiny synthetic set.
    """
    from monai_lgg.data.kaggle import convert_kaggle
    from monai_lgg.data.synthetic import generate_synthetic_kaggle
    from monai_lgg.studies.gpu_pack import SHARED_KAGGLE, default_store

    if not smoke:
        candidates = [Path(requested)] if requested != "auto" else [default_store() / "lgg", SHARED_KAGGLE]
        for path in candidates:
            if (path / "datalist.json").is_file() or (path / "data.csv").is_file():
                return str(path), True
        if requested != "auto":
            log(f"data {requested} not found (no datalist.json): using synthetic data; accuracy is skipped")
    target = work / "synthetic" / "lgg"
    if not (target / "datalist.json").is_file():
        s = profile["synthetic"]
        log(f"generating synthetic data ({s['num_patients']} patients x ~{s['num_slices']} slices, {s['size']}²) ...")
        kaggle = generate_synthetic_kaggle(
            work / "synthetic" / "kaggle_3m", s["num_patients"], s["num_slices"], s["size"], seed=1
        )
        result = convert_kaggle(kaggle, target, num_folds=5, progress=False, num_workers=min(4, os.cpu_count() or 1))
        if not result.ok:
            raise RuntimeError(f"synthetic conversion failed: {result.report['errors'][:1]}")
    return str(target), smoke


# --------------------------------------------------------------------------------------------- 1. throughput
def _row_entry(row: dict, peak: float | None, measured: float | None) -> dict:
    entry = {
        k: row.get(k)
        for k in (
            "name",
            "value",
            "x_reference",
            "x_plain",
            "tflops",
            "peak_mem_gib",
            "data_share",
            "median",
            "cpu_ms_per_slice",
            "other_load",
            "notes",
        )
    }
    entry["label"] = {
        "reference": "reference loop (authors' style)",
        "plain": "plain MONAI path",
        "default": f"bundle defaults {row.get('options')}",
    }.get(row["name"], row["name"])
    entry["options"] = row.get("options")
    if peak:
        entry["pct_datasheet_peak"] = 100 * row["tflops"] / peak
    if measured:
        entry["pct_measured_peak"] = 100 * row["tflops"] / measured
    if row.get("data_pipeline_cost") is not None:
        entry["data_pipeline_cost_pct"] = 100 * row["data_pipeline_cost"]
        entry["bare_slices_per_s"] = row.get("bare_slices_per_s")
    entry["first_iteration_s"] = max((r.get("first_iteration_s", 0.0) for r in row.get("runs", [])), default=None)
    return entry


def run_throughput(results: Results, profile: dict, device: torch.device, data: str, deadlines: dict) -> None:
    from monai_lgg.studies.benchmark import measure

    p = profile
    common = {
        "bundle": BUNDLE,
        "device": str(device),
        "batch_size": p["batch_size"],
        "spatial_size": p["spatial_size"],
        "warmup": p["warmup"],
        "steps": p["steps"],
        "min_steps": p["min_steps"],
        "max_seconds": p["max_seconds"],
        "repeats": p["repeats"],
        "reference_workers": p["reference_workers"],
        "dataset_dir": data,
        "sections": "train",
        "log": log,
    }
    cache: dict = {}
    networks = [("UNet bundle (model.json)", {}), ("UNet(32..512)", BIG_UNET)]
    entries: list[dict] = []
    peak = results.data["context"].get("peak_bf16_tflops")
    measured = results.data["context"].get("matmul_tflops")
    note = (
        f"Batch {p['batch_size']}, {p['spatial_size']}², fold 0 training split; each run times {p['warmup']} "
        f"warm-up steps then up to {p['steps']} steps (at least {p['min_steps']}, stopping after "
        f"{p['max_seconds']} s), best of {p['repeats']}. Reference: the dataset authors' loop (per-sample "
        f"scikit-image augmentation, fp32, {p['reference_workers']} DataLoader workers"
        f"{' as their train.py' if p['reference_workers'] == 4 else ''}). "
        "Data fetch share: host time waiting for the next batch / step time; data pipeline cost: "
        "full step vs the same step on one fixed batch."
    )
    section = results.section("throughput", note=note, networks=entries, goals=[])

    def record(label: str, args: dict, rec: dict) -> None:
        entry = next((e for e in entries if e["label"] == label), None)
        if entry is None:
            entry = {"label": label, "network_args": args, "rows": [], "skipped": []}
            entries.append(entry)
        entry.update(
            {
                k: rec[k]
                for k in (
                    "batch_size",
                    "spatial_size",
                    "step_gflop",
                    "training_slices_per_epoch",
                    "dataset",
                    "reference_workers",
                )
                if rec.get(k)
            }
        )
        base = {r["name"]: r for r in entry["rows"]}
        for row in rec["rows"]:
            new = _row_entry(row, peak, measured)
            ref, plain = base.get("reference"), base.get("plain")
            if new.get("x_reference") is None and ref:
                new["x_reference"] = new["value"] / ref["value"]
            if new.get("x_plain") is None and plain:
                new["x_plain"] = new["value"] / plain["value"]
            base[new["name"]] = new
        ordered = [base[n] for n in ("reference", "plain") if n in base]
        ordered += [r for n, r in base.items() if n not in ("reference", "plain")]
        fastest = max((r for r in ordered if r["name"] != "reference"), key=lambda r: r["value"], default=None)
        for r in ordered:
            r["best"] = r is fastest
        entry["rows"] = ordered
        entry["skipped"] += rec.get("skipped", [])
        section["goals"] = throughput_goals(entries)
        results.save()

    # Phase 1: reference, plain, defaults and a cheap candidate for both networks; phase 2: the expensive candidates.
    phases = [
        ({"variants": p["variants"], "bare": p["bare"]}, deadlines["throughput"]),
        ({"variants": p["best_candidates"], "bare": [], "reference": False}, deadlines["throughput_best"]),
    ]
    for options, mark in phases:
        for label, args in networks:
            log(f"throughput: {label}, {options['variants']}")
            try:
                rec = measure(**common, **options, network_args=args, cache=cache, deadline=START + mark)
            except Exception as err:  # e.g. a compile failure: keep the other rows and networks
                log(f"throughput: {label} failed: {type(err).__name__}: {err}")
                rec = {"rows": [], "skipped": [f"{options['variants']}: {type(err).__name__}: {str(err)[:200]}"]}
            record(label, args, rec)


def throughput_goals(entries: Sequence[dict]) -> list[str]:
    goals = []
    for entry in entries:
        if entry["network_args"] != BIG_UNET:
            continue
        best = next((r for r in entry["rows"] if r.get("best")), None)
        if best is None:
            continue
        speed_met = best["value"] >= GOALS["train_slices_per_s"]
        goals.append(
            f"UNet(32..512) training, best ({best['label']}): {_f(best['value'], 4)} slices/s — goal ≥ "
            f"{GOALS['train_slices_per_s']:.0f}: {'met' if speed_met else 'NOT met'}"
        )
        if best.get("x_reference"):
            ratio_met = best["x_reference"] >= GOALS["x_reference"]
            goals.append(
                f"UNet(32..512) best / reference loop: {best['x_reference']:.1f}× — goal ≥ "
                f"{GOALS['x_reference']:.0f}×: {'met' if ratio_met else 'NOT met'}"
            )
    return goals


# --------------------------------------------------------------------------------------------- 2. inference
def run_inference(results: Results, profile: dict, device: torch.device) -> None:
    from monai_lgg.engines.bundle import bundle_network
    from monai_lgg.inference.benchmark import format_table, time_inference
    from monai_lgg.inference.loading import bundle_info, load_network, resolve_bundle

    p = profile["inference"]
    size = p["size"]
    root = resolve_bundle(BUNDLE)
    try:
        network, info = load_network(root, device=device)
        weights = f"the shipped weights ({root.name}/models/model.pt, {type(network).__name__})"
    except Exception as err:  # weights missing or not matching a changed model.json: speed does not need them
        info = bundle_info(root)
        network = (
            bundle_network(
                root, in_channels=info.in_channels, out_channels=info.out_channels, spatial_size=list(info.spatial_size)
            )
            .to(device)
            .eval()
        )
        weights = f"random weights ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    params = sum(q.numel() for q in network.parameters())
    # the predict path of a Kaggle patient: 256² slices through the bundle's geometry and post-processing
    rows = time_inference(
        network,
        info.spatial_size,
        device,
        num_slices=p["num_slices"],
        size=size,
        in_channels=info.in_channels,
        out_channels=info.out_channels,
        repeats=p["repeats"],
        batch_sizes=p["batch_sizes"],
        tta=p["tta"],
        geometry=info.geometry,
        min_component_fraction=info.min_component_fraction,
    )
    for row in rows:
        row["network"] = "UNet bundle"
    results.section("inference", rows=rows, table=format_table(rows))
    big = bundle_network(root, network_args=BIG_UNET, in_channels=3, out_channels=1, spatial_size=[size, size])
    big_rows = time_inference(
        big.to(device).eval(),
        [size, size],
        device,
        num_slices=p["num_slices"],
        size=size,
        repeats=p["repeats"],
        batch_sizes=[max(p["batch_sizes"])],
        tta=[False],
    )
    for row in big_rows:
        row["network"] = "UNet(32..512)"
        row["device"] += ", UNet(32..512) random weights"
    rows += big_rows
    note = (
        f"`monai-lgg predict`'s Predictor on a synthetic {p['num_slices']}-slice {size}² volume: the UNet bundle "
        f"with {weights}, {params / 1e6:.1f} M parameters, its geometry `{info.geometry}` (network input "
        f"{info.spatial_size[0]}x{info.spatial_size[1]}) and post-processing; `predict` uses TTA "
        f"{'on' if info.tta else 'off'} by default. UNet(32..512) (random weights) in one {size}² window per "
        f"slice. {p['repeats']} timed runs after one warm-up: median (best). Probabilities and masks come back "
        "to the CPU; reading and writing files are not included."
    )
    ours = [r for r in rows if r["network"] == "UNet bundle"]
    goals = []
    for label, candidates in (
        ("without TTA", [r for r in ours if not r["tta"]]),
        ("as `predict` runs it (its TTA setting)", [r for r in ours if r["tta"] == info.tta]),
    ):
        best = min(candidates, key=lambda r: r["volume_ms"], default=None)
        if best is not None:
            met = "met" if best["volume_ms"] <= GOALS["volume_ms"] else "NOT met"
            goals.append(
                f"Fastest {p['num_slices']}-slice volume {label}: {best['volume_ms']:.1f} ms "
                f"({best['precision']}, channels_last {best['channels_last']}, batch {best['batch_size']}) "
                f"— goal ≤ {GOALS['volume_ms']:.0f} ms: {met}"
            )
    results.section("inference", rows=rows, table=format_table(rows), note=note, goals=goals)


# --------------------------------------------------------------------------------------------- 3. CUDA tests
def run_cuda_tests(results: Results, timeout: float) -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        "tests",
    ]
    shown = "python -m pytest -m cuda -q tests"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=max(10.0, timeout), env=env)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        results.section(
            "cuda_tests", command=shown, status="timed out", summary=f"after {timeout:.0f} s", output_tail=out[-3000:]
        )
        return
    output = done.stdout + done.stderr
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed)", output)}
    # Test modules that need a package the GPU machine lacks (e.g. jsonschema) fail to import; that makes
    # pytest's exit code 1 but says nothing about the CUDA tests, which are counted on their own.
    uncollected = sorted(set(re.findall(r"^ERROR (tests/\S+\.py)\s*$", output, flags=re.MULTILINE)))
    if counts.get("failed"):
        status = "failed"
    elif counts.get("passed"):
        status = "passed"
    elif counts.get("skipped") and not torch.cuda.is_available():
        status = "skipped (no CUDA device)"
    elif done.returncode == 5 or not counts:
        status = f"no CUDA tests ran (exit {done.returncode})"
    else:
        status = f"failed (exit {done.returncode})"
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no summary line"
    if uncollected:
        summary += f"; not importable here, so not searched for CUDA tests: {', '.join(uncollected)}"
    results.section(
        "cuda_tests",
        command=shown,
        status=status,
        summary=summary,
        counts=counts,
        uncollected=uncollected,
        output_tail=output[-3000:],
    )


# --------------------------------------------------------------------------------------------- 4. accuracy
def _bundle_command(configs: Sequence[Path], overrides_file: Path) -> list[str]:
    configs_dir = PROJECT / "bundles" / BUNDLE / "configs"
    files = [str(c) for c in configs] + [str(overrides_file)]
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(files),
        "--meta_file",
        str(configs_dir / "metadata.json"),
        "--logging_file",
        str(configs_dir / "logging.conf"),
    ]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_until(command: list[str], deadline: float, log_file: Path, progress: Callable[[], None]) -> int | None:
    """Run ``command`` (its output to ``log_file``) until it ends or ``deadline`` (monotonic) passes; then stop it
    (SIGTERM, then SIGKILL): checkpoints are written atomically, so a stopped run resumes from its last epoch.
    Returns the exit code, or ``None`` when it was stopped.

    The child stays in this process group on purpose: when the device tool ends the command, it ends the
    training too (a training left running would race a resumed one for the same checkpoint).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    with open(log_file, "ab") as out:
        process = subprocess.Popen(command, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                return None
            time.sleep(2.0)
            progress()
    return process.returncode


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_accuracy(
    results: Results,
    output: Path,
    work: Path,
    data: str,
    epochs: int,
    fold: int,
    overrides: dict,
    deadline: float,
    eval_reserve: float,
) -> None:
    folder = work / "accuracy"
    models, logs, evaluation = folder / "models", folder / "logs", folder / "eval"
    for path in (models, logs, evaluation):
        path.mkdir(parents=True, exist_ok=True)
    keys = {
        "dataset_dir": data,
        "fold": fold,
        "epochs": epochs,
        "ckpt_dir": str(models),
        "log_dir": str(logs),
        "output_dir": str(evaluation),
        **overrides,
    }
    overrides_file = folder / "overrides.json"
    write_json(overrides_file, keys)
    configs = PROJECT / "bundles" / BUNDLE / "configs"
    train = _bundle_command([configs / "train.json"], overrides_file)
    shown = f"python -m monai.bundle run --config_file \"['bundles/{BUNDLE}/configs/train.json', overrides.json]\""
    section = results.section(
        "accuracy",
        status="training",
        command=shown,
        overrides=keys,
        epochs=epochs,
        note=f"fold {fold}: trained on its training patients, selected on its validation "
        "patients, scored on its test patients (per-patient 3D Dice).",
    )
    started = time.monotonic()
    done_before = int(_read_json(models / "last.json").get("epoch", 0))

    def progress() -> None:
        last = _read_json(models / "last.json")
        if last.get("epoch") and last["epoch"] != section.get("epochs_done"):
            seconds = time.monotonic() - started
            section.update(
                epochs_done=last["epoch"],
                train_seconds=round(seconds, 1),
                last_metrics=last.get("metrics"),
                validation_metrics=last.get("validation_metrics"),
            )
            if last["epoch"] > done_before:
                section["seconds_per_epoch"] = round(seconds / (last["epoch"] - done_before), 2)
            results.save()

    if done_before >= epochs:
        log(f"accuracy: training already complete ({done_before} epochs in {models})")
        code = 0
    else:
        log(
            f"accuracy: training {epochs} epochs (resuming from epoch {done_before}) until "
            f"{deadline - eval_reserve - START:.0f} s"
        )
        code = _run_until(train, deadline - eval_reserve, folder / "train.log", progress)
    progress()
    last = _read_json(models / "last.json")
    finished = code == 0  # the run ended by itself: all epochs, or early stopping if the recipe asks for it
    if not finished:
        why = "stopped at the time budget" if code is None else f"training exited with {code}"
        results.section(
            "accuracy",
            status=f"incomplete: {why}, epoch {last.get('epoch', 0)} of {epochs}",
            note=section["note"] + " Run the same command again (same --work_dir) to resume it.",
            log_tail=_tail(folder / "train.log"),
        )
        return
    log("accuracy: evaluating on the test fold")
    results.section("accuracy", status="evaluating")
    evaluate = _bundle_command([configs / "train.json", configs / "evaluate.json"], overrides_file)
    code = _run_until(evaluate, START + 10**9, folder / "evaluate.log", lambda: None)
    summary = _read_json(evaluation / "summary.json")
    if code != 0 or not summary:
        results.section("accuracy", status=f"evaluation failed (exit {code})", log_tail=_tail(folder / "evaluate.log"))
        return
    dice = summary.get("per_patient", {}).get("dice", {})
    test = {
        "patients": summary.get("patients"),
        "dice_mean": dice.get("mean"),
        "dice_median": dice.get("median"),
        "dice_ci": [dice.get("ci_low"), dice.get("ci_high")],
        "false_positive_rate": summary.get("false_positive_rate"),
    }
    kept = output / "accuracy"
    kept.mkdir(exist_ok=True)
    kept_files = {
        "summary.json": evaluation / "summary.json",
        "per_patient.csv": evaluation / "per_patient.csv",
        "model.pt": models / "model.pt",
        "model.json": models / "model.json",
    }
    left = []
    for name, source in kept_files.items():
        if source.is_file() and source.stat().st_size <= RETURN_FILE_LIMIT:
            shutil.copy2(source, kept / name)
        elif source.is_file():
            left.append(f"{source} ({source.stat().st_size / 2**20:.1f} MiB: over the device tool's 16 MiB per file)")
    results.section(
        "accuracy", status="complete", test=test, kept=sorted(p.name for p in kept.iterdir()), left_in_work_dir=left
    )


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "output",
        help="folder for results.md, results.json and accuracy/ (keep it small: the device "
        "tool brings back at most 8 files)",
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: the same code path in < 3 minutes")
    parser.add_argument(
        "--data",
        default="auto",
        help="converted data set (auto: ~/monai_lgg_gpu/lgg, else the shared Kaggle copy, else synthetic)",
    )
    parser.add_argument("--work_dir", default=None, help="checkpoints, logs, synthetic data (default OUTPUT/work)")
    parser.add_argument("--budget_s", type=float, default=None, help="wall-clock budget (default 450; smoke 900)")
    parser.add_argument("--sections", default="throughput,inference,cuda_tests,accuracy")
    parser.add_argument("--epochs", type=int, default=None, help="accuracy training epochs (default 100; smoke 2)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument(
        "--train_overrides",
        default=None,
        help="more train.json keys for the accuracy run, a Python dict: \"{'batch_size': 32}\"",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if args.smoke else "gpu"
    profile = dict(PROFILES[mode])
    budget = float(args.budget_s or profile["budget_s"])
    device = torch.device("cpu" if args.smoke else "cuda")
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_suite: error: no CUDA device (use --smoke on a CPU machine)", file=sys.stderr)
        return 2
    if args.smoke:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else output / "work"
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MONAI_LGG_CACHE", str(work / "cache"))
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - {"throughput", "inference", "cuda_tests", "accuracy"}
    if unknown:
        print(f"gpu_suite: error: unknown sections {sorted(unknown)}", file=sys.stderr)
        return 2
    data, real = prepare_data(args.data, args.smoke, work, profile)
    results = Results(output, context(mode, device, budget, data + ("" if real or args.smoke else " (synthetic)")))
    if device.type == "cuda":
        from monai_lgg.studies.benchmark import GPU_PEAK_BF16

        name = results.data["context"].get("gpu", "")
        results.data["context"]["peak_bf16_tflops"] = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
        results.data["context"]["matmul_tflops"] = round(matmul_tflops(device), 1)
        torch.cuda.empty_cache()
    results.save()
    deadlines = {name: budget * mark for name, mark in MARKS.items()}
    overrides = dict(profile["train_overrides"])
    if args.train_overrides:
        overrides.update(ast.literal_eval(args.train_overrides))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("throughput", lambda: run_throughput(results, profile, device, data, deadlines)),
        ("inference", lambda: run_inference(results, profile, device)),
        (
            "cuda_tests",
            lambda: run_cuda_tests(
                results, min(profile["cuda_tests_timeout_s"], deadlines["cuda_tests"] + 60 - elapsed())
            ),
        ),
        (
            "accuracy",
            lambda: run_accuracy(
                results,
                output,
                work,
                data,
                args.epochs or profile["epochs"],
                args.fold,
                overrides,
                START + deadlines["accuracy"],
                profile["eval_reserve_s"],
            ),
        ),
    ]
    failed = []
    for name, step in steps:
        if name not in sections:
            continue
        if name == "accuracy" and not real:
            results.section("accuracy", status="skipped: no real data (the pack's data was not unpacked)")
            continue
        if elapsed() > budget * MARKS[name] and name != "accuracy":
            results.section(name, status="skipped: time budget", error=None)
            continue
        log(f"section {name}")
        try:
            step()
        except Exception as err:  # one broken section must not cost the others their minutes
            import traceback

            traceback.print_exc()
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            results.section(name, error=f"{type(err).__name__}: {first}")
            failed.append(name)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results.save()
    log(f"done in {elapsed():.0f} s: {output / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
