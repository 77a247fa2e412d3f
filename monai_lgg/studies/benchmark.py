"""Benchmark a bundle: training, data pipeline, inference, conversion; against a plain PyTorch loop in the same run.

    python tools/benchmark.py [--bundle unet] [--device auto] [--batch_size 8] [--warmup 3] [--steps 8]
        [--repeats 2] [--variants plain,workers1,batch,batch+bf16,batch+channels_last,batch+compile,default]
        [--network_args "{'channels': [32, 64, 128, 256, 512]}"] [--spatial_size 256]
        [--dataset_dir auto] [--convert_repeats 1] [--json_out benchmark.json]

Training ("ours") is the bundle's own ``train.json`` (dataset, DataLoader, network, loss, optimizer,
MONAI ``SupervisedTrainer``) with the validation / checkpoint handlers removed, run for ``warmup + steps``
iterations; throughput is measured over the last ``steps`` (steady state). With ``--max_seconds S`` a run
stops earlier, after at least ``--min_steps`` timed steps, once its timed window has lasted ``S`` seconds
(slow variants then need no more steps than fast ones). Each *variant* overrides the speed options of
``train.json`` (``monai_lgg.engines.performance``) on top of ``plain`` (all off: MONAI per-sample
augmentation in the DataLoader, uniform slice sampling, fp32); ``default`` is what the bundle uses on this
device. The *reference* is a plain PyTorch loop written the way the dataset authors' repository
(mateuszbuda/brain-segmentation-pytorch) trains: a numpy dataset of per-volume normalised slices,
per-sample scikit-image rescale / rotate / flip in a standard DataLoader, fp32, same network, loss,
batch size and learning rate. ``bare`` rows feed the trainer one fixed batch (no data pipeline), so
``bare / full - 1`` is what the data pipeline costs. Repeats are interleaved (so machine load drifts
through all variants alike); each row reports its best run (the one least disturbed by other jobs on a
shared machine) with the median in the notes, the process's CPU milliseconds per slice and
``other_load``, the busy cores other processes used during that run (from /proc/stat). Ratios are
within this run only. Inference rows come from the project's one inference timer
(:func:`monai_lgg.inference.benchmark.time_inference`, also behind ``monai-lgg benchmark``) on the bundle's
network with random weights.

Data: ``--dataset_dir auto`` is the shared Kaggle set (``../shared/data/lgg/kaggle_3m``, converted once
into the cache) when present, else the built-in synthetic set (256 x 256). On CUDA the table adds the
achieved TFLOP/s (FLOPs of one training step counted with ``torch.utils.flop_counter``) against the
GPU's datasheet bf16 peak, and peak memory is ``torch.cuda.max_memory_allocated``; on CPU it is the
peak resident set size of the process during the run.

``tools/gpu_suite.py`` calls :func:`measure` for its throughput table.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from torch.utils.flop_counter import FlopCounterMode

from monai_lgg.engines.performance import device_defaults
from monai_lgg.errors import as_flag, as_list
from monai_lgg.inference.benchmark import time_inference
from monai_lgg.studies import PROJECT_ROOT as PROJECT
from monai_lgg.studies.benchmark_convert import SHARED
from monai_lgg.studies.benchmark_convert import measure as measure_conversion

# The MONAI per-sample chain cannot draw area-weighted batches (that needs the slice bank), so "plain" and the
# variants built on it sample uniformly; "default" is the bundle exactly as configured.
PLAIN = {
    "augmentation": "loader",
    "precision": "fp32",
    "channels_last": False,
    "compile": False,
    "num_workers": 0,
    "sampling": "uniform",
}
BATCH = {"augmentation": "batch"}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "workers1": {"num_workers": 1},
    "batch": BATCH,
    "batch+bf16": {**BATCH, "precision": "bf16"},
    "batch+channels_last": {**BATCH, "channels_last": True},
    "batch+compile": {**BATCH, "compile": True},
    "batch+bf16+channels_last": {**BATCH, "precision": "bf16", "channels_last": True},
    "batch+bf16+compile": {**BATCH, "precision": "bf16", "compile": True},
    "batch+bf16+channels_last+compile": {**BATCH, "precision": "bf16", "channels_last": True, "compile": True},
    "batch+bf16+channels_last+cudnn_benchmark": {
        **BATCH,
        "precision": "bf16",
        "channels_last": True,
        "cudnn_benchmark": True,
    },
}
# Settings the benchmark applies itself (not train.json keys), to measure what such an option would give: the
# bundles call MONAI's set_determinism(seed), which pins cuDNN to deterministic algorithms without autotuning.
BENCH_ONLY = ("cudnn_benchmark",)
# Dense bf16 tensor-core peaks from NVIDIA datasheets (TFLOP/s, no sparsity), by the first substring of the
# device name that matches ("NVIDIA H100 80GB HBM3" is the SXM part).
GPU_PEAK_BF16 = {"H200": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1}
# Keys of train.json that decide which training DataLoader a variant gets (loaders are built once per key).
LOADER_KEYS = ("augmentation", "num_workers", "sampling")


# ----------------------------------------------------------------------------------------------- helpers
def machine(device: torch.device) -> dict[str, Any]:
    """Date, CPU, GPU, library versions and load average, for the record."""
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import monai

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes; ``steal`` counts as busy), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Window:
    """Wall seconds, this process's CPU seconds and the other processes' load (in busy cores) over a time window.

    ``other_load`` is the machine's busy CPU time not spent by this process, per second: on a 2-core machine
    1.0 means another job kept one core busy all along (DataLoader workers of this run count as "other").
    """

    def start(self) -> Window:
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), _busy_seconds()
        return self

    def stop(self) -> dict[str, float]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        other = max(0.0, _busy_seconds() - self.busy - cpu) / wall
        return {"seconds": wall, "cpu_seconds": cpu, "other_load": other}


def _rate(window: dict[str, float], slices: int, **extra: Any) -> dict[str, Any]:
    return {
        "slices_per_s": slices / window["seconds"],
        "cpu_ms_per_slice": 1000 * window["cpu_seconds"] / slices,
        "other_load": window["other_load"],
        **extra,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device, result: dict) -> Iterable[None]:
    """Peak memory during the block in GiB: CUDA allocated, or the process's resident set (sampled every 10 ms)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        return
    peak, stop = [_rss_bytes()], threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        result["peak_mem_gib"] = round(max(peak[0], _rss_bytes()) / 2**30, 3)


def flops_per_step(network: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], loss: Callable) -> int:
    """FLOPs of one training step (forward + backward; the optimizer step is not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = network(batch[0])
        loss(out, batch[1]).backward()
    network.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------- bundle side
def bundle_parser(config: str, bundle: str, common: dict, overrides: dict, objects: dict | None = None) -> ConfigParser:
    """A ConfigParser of ``bundles/<bundle>/configs/<config>`` with overrides and already-built objects injected."""
    root = PROJECT / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / config))
    parser.update({"bundle_root": str(root), **common, **overrides})
    for key, value in (objects or {}).items():
        parser[key] = value
    return parser


class StepBudget:
    """When a timed run stops: after ``warmup + steps`` iterations, or earlier once at least ``min_steps``
    timed steps ran and the timed window has lasted ``max_seconds`` (host clock; no device synchronisation).

    Args:
        warmup: untimed iterations (compilation, allocations, cuDNN autotuning happen there); at least 1.
        steps: most timed iterations.
        min_steps: fewest timed iterations (default ``steps``: a fixed count).
        max_seconds: timed-window length after which a run may stop early (default: never).
    """

    def __init__(self, warmup: int, steps: int, min_steps: int | None = None, max_seconds: float | None = None) -> None:
        if warmup < 1 or steps < 1:
            raise ValueError(f"warmup and steps must be at least 1, got {warmup} and {steps}")
        self.warmup, self.steps = int(warmup), int(steps)
        self.min_steps = self.steps if min_steps is None else max(1, min(int(min_steps), self.steps))
        self.max_seconds = math.inf if max_seconds is None else float(max_seconds)

    @property
    def total(self) -> int:
        return self.warmup + self.steps

    def done(self, iteration: int, window_start: float) -> bool:
        """Whether the run can stop after ``iteration`` (1-based) iterations."""
        timed = iteration - self.warmup
        if timed >= self.steps:
            return True
        return timed >= self.min_steps and time.perf_counter() - window_start >= self.max_seconds


class IterationClock:
    """Times an ignite run: first iteration, the steady-state window after ``warmup`` iterations, data waits.

    It also ends the run (``engine.terminate()``) when the :class:`StepBudget` says so. On CUDA the device
    is synchronised only at the window's edges, so the steps themselves run as in training.
    """

    def __init__(self, device: torch.device, budget: StepBudget) -> None:
        self.device, self.budget, self.warmup = device, budget, budget.warmup
        self.fetch: list[float] = []
        self.window = Window()
        self.begin = self.first = self._fetch_start = 0.0
        self.result: dict[str, float] = {}

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._fetch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._fetch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine) -> None:
        synchronize(self.device)
        self.begin = time.perf_counter()

    def _fetch_started(self, engine) -> None:
        self._fetch_start = time.perf_counter()

    def _fetch_completed(self, engine) -> None:
        self.fetch.append(time.perf_counter() - self._fetch_start)

    def _iteration_completed(self, engine) -> None:
        iteration = engine.state.iteration
        if iteration == 1:
            synchronize(self.device)
            self.first = time.perf_counter() - self.begin
        if iteration == self.warmup:
            synchronize(self.device)
            self.window.start()
        if iteration > self.warmup and self.budget.done(iteration, self.window.wall):
            engine.terminate()

    def _completed(self, engine) -> None:
        synchronize(self.device)
        self.result = self.window.stop()

    def summary(self, batch_size: int) -> dict[str, float]:
        steps = len(self.fetch) - self.warmup
        data_share = sum(self.fetch[self.warmup :]) / self.result["seconds"]
        return _rate(self.result, batch_size * steps, data_share=data_share, first_iteration_s=self.first, steps=steps)


@contextmanager
def cudnn_flags(deterministic: bool, benchmark: bool) -> Iterable[None]:
    """cuDNN's ``deterministic`` / ``benchmark`` flags for the block, restored afterwards."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def run_trainer(
    parser: ConfigParser,
    device: torch.device,
    budget: StepBudget,
    batch_size: int,
    seed: int,
    cudnn_benchmark: bool = False,
) -> dict:
    """Build ``train#trainer`` from the parser and time it for the iterations ``budget`` allows.

    Epochs are the loader's own (a run of more iterations than one epoch holds crosses epoch boundaries, as
    training does); the clock ends the run. cuDNN runs as in the bundles (deterministic algorithms, set by
    ``set_determinism``) unless ``cudnn_benchmark`` (autotuned, non-deterministic algorithms).
    """
    set_determinism(seed)
    parser["train#trainer#max_epochs"] = budget.total  # an upper bound: every epoch has at least one iteration
    trainer = parser.get_parsed_content("train#trainer")
    clock = IterationClock(device, budget)
    clock.attach(trainer)
    result: dict = {}
    flags = (False, True) if cudnn_benchmark else (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with peak_memory(device, result), cudnn_flags(*flags):
        trainer.run()
    result.update(clock.summary(batch_size))
    output = trainer.state.output
    result["loss"] = float((output[0] if isinstance(output, list) else output)["loss"])
    return result


def time_loader(loader: Iterable, device: torch.device, warmup: int, batches: int) -> dict[str, float]:
    """Slices per second a loader delivers (augmentation included), after ``warmup`` batches."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    synchronize(device)
    window, count = Window().start(), 0
    for _ in range(batches):
        batch = next(it)
        count += int((batch["image"] if isinstance(batch, dict) else batch[0]).shape[0])
    synchronize(device)
    return _rate(window.stop(), count)


# ----------------------------------------------------------------------------------------------- reference loop
def _normalize_volume(volume: np.ndarray) -> np.ndarray:
    """The authors' per-volume normalisation: clip each channel to its 10th..99th percentile, then z-score."""
    out = np.empty_like(volume, dtype=np.float32)
    for c in range(volume.shape[-1]):
        channel = volume[..., c].astype(np.float32)
        low, high = np.percentile(channel, 10), np.percentile(channel, 99)
        channel = np.clip(channel, low, high)
        out[..., c] = (channel - channel.mean()) / max(float(channel.std()), 1e-6)
    return out


class ReferenceDataset(torch.utils.data.Dataset):
    """Slices as numpy arrays ``(H, W, C)``, augmented per sample with scikit-image, as the dataset authors do.

    Args:
        dataset: a VolumeSliceDataset whose cached volumes are copied (per-volume normalised float32).
        scale: random rescale range ``1 +- scale`` (then centre pad / crop back).
        angle: random rotation range, +- degrees.
        flip_prob: left-right flip probability.
    """

    def __init__(self, dataset, scale: float = 0.05, angle: float = 15.0, flip_prob: float = 0.5) -> None:
        self.volumes, self.index = [], []
        for v in range(len(dataset.volumes)):
            item = dataset.volumes[v]
            image = np.asarray(item["image"]).transpose(3, 1, 2, 0)  # (C, H, W, D) -> (D, H, W, C)
            label = (np.asarray(item["label"]).transpose(3, 1, 2, 0) > 0).astype(np.float32)
            self.volumes.append((_normalize_volume(image), label))
            self.index += [(v, z) for z in range(image.shape[0])]
        self.scale, self.angle, self.flip_prob = scale, angle, flip_prob

    def __len__(self) -> int:
        return len(self.index)

    def _augment(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from skimage.transform import rescale, rotate

        size = image.shape[0]
        s = np.random.uniform(1.0 - self.scale, 1.0 + self.scale)
        image = rescale(image, (s, s), channel_axis=-1, preserve_range=True, mode="constant", anti_aliasing=False)
        mask = rescale(
            mask, (s, s), order=0, channel_axis=-1, preserve_range=True, mode="constant", anti_aliasing=False
        )
        if s < 1.0:
            diff = (size - image.shape[0]) / 2.0
            pad = ((int(np.floor(diff)), int(np.ceil(diff))),) * 2 + ((0, 0),)
            image, mask = np.pad(image, pad), np.pad(mask, pad)
        else:
            lo = (image.shape[0] - size) // 2
            image, mask = image[lo : lo + size, lo : lo + size], mask[lo : lo + size, lo : lo + size]
        a = np.random.uniform(-self.angle, self.angle)
        image = rotate(image, a, resize=False, preserve_range=True, mode="constant")
        mask = rotate(mask, a, resize=False, order=0, preserve_range=True, mode="constant")
        if np.random.rand() < self.flip_prob:
            image, mask = np.fliplr(image).copy(), np.fliplr(mask).copy()
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        v, z = self.index[i]
        image, mask = self._augment(self.volumes[v][0][z], self.volumes[v][1][z])
        return (
            torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),
            torch.from_numpy(mask.transpose(2, 0, 1).astype(np.float32)),
        )


def _worker_init(worker_id: int) -> None:
    np.random.seed(42 + worker_id)


def reference_loader(dataset: ReferenceDataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
    )


def run_reference(
    network: torch.nn.Module,
    loss: Callable,
    lr: float,
    weight_decay: float,
    loader: Iterable,
    device: torch.device,
    budget: StepBudget,
    batch_size: int,
) -> dict:
    """The plain training loop (fp32, ``loss.item()`` every step as in the authors' code), timed like ours.

    The loader is iterated epoch after epoch (its workers start again each epoch, as in the authors' loop)
    until ``budget`` says stop. cuDNN keeps torch's defaults (no deterministic pinning, no autotuning), as the
    authors' script does.
    """
    network.to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    fetch, losses, result, window = [], [], {}, Window()
    begin = time.perf_counter()
    with peak_memory(device, result), cudnn_flags(False, False):
        it = iter(loader)
        step = 0
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            fetch.append(time.perf_counter() - t0)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            out = loss(network(x), y)
            out.backward()
            optimizer.step()
            losses.append(out.item())
            step += 1
            if step == 1:
                result["first_iteration_s"] = time.perf_counter() - begin
            if step == budget.warmup:
                window.start()
            if step > budget.warmup and budget.done(step, window.wall):
                break
        measured = window.stop()
    steps = step - budget.warmup
    result.update(
        _rate(
            measured,
            batch_size * steps,
            data_share=sum(fetch[budget.warmup :]) / measured["seconds"],
            steps=steps,
            loss=losses[-1],
        )
    )
    return result


# ----------------------------------------------------------------------------------------------- inference
def run_inference(
    network: torch.nn.Module,
    spatial_size: int,
    device: torch.device,
    repeats: int,
    in_channels: int = 3,
    out_channels: int = 1,
    num_slices: int = 40,
    batch_sizes: Iterable[int] = (8,),
    tta: Iterable[bool] = (False,),
) -> list[dict]:
    """Latency of the bundle's network (random weights) through the ``monai-lgg predict`` path, as table rows.

    The timer is :func:`monai_lgg.inference.benchmark.time_inference` (the one behind ``monai-lgg
    benchmark``): per slice (batch of 1) and per ``num_slices`` volume, fp32 and bf16 + channels-last.
    """
    timed = time_inference(
        network.eval(),
        [spatial_size] * 2,
        device,
        num_slices=num_slices,
        size=spatial_size,
        in_channels=in_channels,
        out_channels=out_channels,
        repeats=repeats,
        batch_sizes=list(batch_sizes),
        tta=list(tta),
    )
    rows = []
    for t in timed:
        label = f"{t['precision']}{' + channels_last' if t['channels_last'] else ''}{' + TTA' if t['tta'] else ''}"
        common = {"measure": "inference", "timing": t}
        rows.append(
            {
                **common,
                "variant": f"per slice (batch 1), {label}",
                "value": t["slice_ms"],
                "unit": "ms/slice",
                "notes": f"median of {repeats}, best {t['slice_ms_best']:.3g} ms; {1000 / t['slice_ms']:.1f} slices/s",
            }
        )
        rows.append(
            {
                **common,
                "variant": f"per volume ({num_slices} slices, batch {t['batch_size']}), {label}",
                "value": t["volume_ms"],
                "unit": "ms/volume",
                "notes": f"median of {repeats}, best {t['volume_ms_best']:.3g} ms; "
                f"{1000 * num_slices / t['volume_ms']:.1f} slices/s",
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def print_table(rows: list[dict]) -> None:
    columns = [
        "measure",
        "variant",
        "value",
        "unit",
        "x_reference",
        "x_plain",
        "data_share",
        "cpu_ms_per_slice",
        "other_load",
        "peak_mem_gib",
        "notes",
    ]
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def summary_row(measure: str, name: str, runs: list[dict], unit: str = "slices/s") -> dict:
    """One table row from repeated runs: the best run (least disturbed by other jobs), with the median in the notes."""
    best = max(runs, key=lambda r: r["slices_per_s"])
    values = [r["slices_per_s"] for r in runs]
    row = {
        "measure": measure,
        "variant": name,
        "value": best["slices_per_s"],
        "unit": unit,
        "runs": runs,
        "median": statistics.median(values),
        "cpu_ms_per_slice": best["cpu_ms_per_slice"],
        "other_load": best["other_load"],
    }
    if "data_share" in best:
        row["data_share"] = f"{100 * best['data_share']:.1f}%"
    if "peak_mem_gib" in best:
        row["peak_mem_gib"] = max(r["peak_mem_gib"] for r in runs)
    row["notes"] = f"best of {len(runs)}, median {row['median']:.3g}"
    first = max(r.get("first_iteration_s", 0.0) for r in runs)
    if first > 0:
        row["notes"] += f"; first iteration {first:.1f} s"
    return row


def measure(
    bundle: str = "unet",
    device: str = "auto",
    batch_size: int | None = None,
    spatial_size: int = 256,
    warmup: int = 3,
    steps: int = 8,
    min_steps: int | None = None,
    max_seconds: float | None = None,
    repeats: int = 3,
    variants: str | Iterable[str] = "plain,workers1,batch,batch+bf16,batch+channels_last,batch+compile,default",
    bare: str | Iterable[str] = "plain,batch,default",
    reference: bool = True,
    reference_workers: int | None = None,
    pipeline_batches: int = 20,
    inference_repeats: int = 3,
    inference_batch_sizes: Iterable[int] = (8,),
    convert_repeats: int = 1,
    network_args: dict | None = None,
    dataset_dir: str = "auto",
    fold: int = 0,
    seed: int = 0,
    sections: str | Iterable[str] = "train,pipeline,inference,convert",
    deadline: float | None = None,
    cache: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark (see the module docstring) and return its record: ``machine``, settings and ``rows``.

    Args:
        bundle: bundle folder name under ``bundles/``.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        batch_size: slices per batch (default: the bundle's).
        spatial_size: square training size.
        warmup: iterations excluded from timing (compilation happens there).
        steps: most timed iterations per run.
        min_steps: fewest timed iterations per run when ``max_seconds`` ends it early (default ``steps``).
        max_seconds: a run's timed window may end after this many seconds (once ``min_steps`` ran).
        repeats: interleaved repeats of every training variant (the best run is reported, the median noted).
        variants: comma-separated names of :data:`VARIANTS` or ``default`` (the bundle's per-device defaults),
            run in this order.
        bare: variants also timed on one fixed batch (no data pipeline).
        reference: run the plain PyTorch reference loop.
        reference_workers: reference DataLoader workers (default: the bundle's ``num_workers``, 0).
        pipeline_batches: batches timed for the data-pipeline-only rows.
        inference_repeats: repeats of the inference timings.
        inference_batch_sizes: batch sizes (slices per forward pass) of the per-volume inference rows.
        convert_repeats: Kaggle -> NIfTI conversion runs (0: skip); shared data only.
        network_args: overrides of the bundle's network (``--network_args "{'channels': [32, 64, 128, 256, 512]}"``).
        dataset_dir: ``auto``, ``synthetic``, a converted folder or a ``kaggle_3m`` folder.
        fold: fold whose training split is used.
        seed: seed of every run.
        sections: which parts to run, of ``train``, ``pipeline``, ``inference``, ``convert``.
        deadline: ``time.monotonic()`` after which no further run starts (each skipped run is listed in the
            record's ``skipped``); ``None``: no limit.
        cache: a dict kept between calls with the same data, batch size and spatial size (e.g. for two
            networks): the training dataset, the reference dataset and the loaders are built once.
        log: progress printer.
    """
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    parts = set(as_list(sections))
    names = as_list(variants) if "train" in parts else []
    bare_names = [n for n in as_list(bare) if n in names]
    unknown = [n for n in names if n != "default" and n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from default, {', '.join(VARIANTS)}")
    budget = StepBudget(warmup, steps, min_steps, max_seconds)
    cache = {} if cache is None else cache
    skipped: list[str] = []

    def time_left(what: str) -> bool:
        if deadline is not None and time.monotonic() > deadline:
            skipped.append(what)
            log(f"  skipped (time budget): {what}")
            return False
        return True

    data = dataset_dir
    if dataset_dir == "auto":
        data = str(SHARED) if (SHARED / "data.csv").is_file() else "synthetic"
    info = machine(dev)
    log(
        f"{info['date']}  {info['cpu']} x{info['cpu_count']}  {info.get('gpu', '')}  torch {info['torch']}  "
        f"monai {info['monai']}  load {info['load_average']}"
    )
    common = {
        "dataset_dir": data,
        "device": str(dev),
        "spatial_size": [spatial_size] * 2,
        "fold": fold,
        "seed": seed,
        "train#handlers": [],
        "network_args": dict(network_args or {}),
    }
    if batch_size is not None:
        common["batch_size"] = batch_size
    base = bundle_parser("train.json", bundle, common, PLAIN)
    batch_size = int(base.get_parsed_content("batch_size"))
    log(f"bundle {bundle}, data {data}, batch {batch_size}, {spatial_size}^2, device {dev}; building the dataset...")
    if "dataset" not in cache:
        cache["dataset"] = base.get_parsed_content("train#dataset")
    dataset = cache["dataset"]
    log(f"  {len(dataset.volumes)} training volumes, {len(dataset)} slices per epoch")
    defaults = device_defaults(dev)
    loaders: dict[tuple, Iterable] = cache.setdefault("loaders", {})  # built once per data path, shared by runs

    def parser_for(name: str, **objects: Any) -> ConfigParser:
        over = {} if name == "default" else {**PLAIN, **VARIANTS[name]}
        over = {k: v for k, v in over.items() if k not in BENCH_ONLY}
        probe = bundle_parser("train.json", bundle, common, over, {"train#dataset": dataset})
        key = (*(str(probe.get_parsed_content(k)) for k in LOADER_KEYS if k in probe), batch_size)
        if key not in loaders:
            loaders[key] = probe.get_parsed_content("train#dataloader")
        injected = {"train#dataset": dataset, "train#dataloader": loaders[key], **objects}
        return bundle_parser("train.json", bundle, common, over, injected)

    rows: list[dict] = []
    # ---- training: bundle variants, bare steps, reference loop; repeats interleaved
    runs: dict[str, list[dict]] = {n: [] for n in names}
    bare_runs: dict[str, list[dict]] = {n: [] for n in bare_names}
    ref_runs: list[dict] = []
    ref_dataset = None
    if reference and parts & {"train", "pipeline"}:
        if "reference_dataset" not in cache:
            cache["reference_dataset"] = ReferenceDataset(dataset)
        ref_dataset = cache["reference_dataset"]
    ref_workers = int(base.get_parsed_content("num_workers")) if reference_workers is None else reference_workers
    for r in range(repeats):
        for name in names:
            if not time_left(f"training {name} (repeat {r + 1})"):
                continue
            log(f"  [{r + 1}/{repeats}] training {name} (load {os.getloadavg()[0]:.2f})")
            cudnn_benchmark = bool(VARIANTS.get(name, {}).get("cudnn_benchmark"))
            runs[name].append(run_trainer(parser_for(name), dev, budget, batch_size, seed, cudnn_benchmark))
            if name in bare_names and time_left(f"bare step {name} (repeat {r + 1})"):
                fixed = next(iter(parser_for(name).get_parsed_content("train#dataloader")))
                parser = parser_for(name, **{"train#dataloader": [fixed] * budget.total})
                bare_runs[name].append(run_trainer(parser, dev, budget, batch_size, seed, cudnn_benchmark))
        if reference and "train" in parts and time_left(f"training reference (repeat {r + 1})"):
            log(f"  [{r + 1}/{repeats}] training reference, workers {ref_workers} (load {os.getloadavg()[0]:.2f})")
            set_determinism(seed)
            network = base.get_parsed_content("network_def", instantiate=True, lazy=False)
            loss = base.get_parsed_content("loss", lazy=False)
            lr, wd = float(base.get_parsed_content("learning_rate")), float(base.get_parsed_content("weight_decay"))
            loader = reference_loader(ref_dataset, batch_size, ref_workers)
            ref_runs.append(run_reference(network, loss, lr, wd, loader, dev, budget, batch_size))
    train_rows = []
    for name in names:
        if not runs[name]:
            continue
        label = f"default {defaults}" if name == "default" else f"{name} {VARIANTS[name] or '(all fast options off)'}"
        row = summary_row("train (bundle)", label, runs[name])
        row["name"] = name
        row["options"] = defaults if name == "default" else {**PLAIN, **VARIANTS[name]}
        if bare_runs.get(name):
            bare_speed = max(r["slices_per_s"] for r in bare_runs[name])
            row["bare_slices_per_s"] = bare_speed
            row["data_pipeline_cost"] = bare_speed / row["value"] - 1
            cost = 100 * row["data_pipeline_cost"]
            row["notes"] += f"; bare step {bare_speed:.3g} slices/s -> data pipeline {cost:+.1f}%"
        train_rows.append(row)
    if ref_runs:
        label = f"plain PyTorch loop, skimage aug, fp32, workers {ref_workers}"
        train_rows.append({**summary_row("train (reference)", label, ref_runs), "name": "reference"})
    ref_speed = train_rows[-1]["value"] if ref_runs else None
    plain_speed = next((row["value"] for row in train_rows if row["name"] == "plain"), None)
    for row in train_rows:
        row["x_reference"] = row["value"] / ref_speed if ref_speed else None
        row["x_plain"] = row["value"] / plain_speed if plain_speed else None
    rows += train_rows

    # ---- FLOPs of one step (same network for every row), achieved rate
    step_flops = 0
    if train_rows:
        network = base.get_parsed_content("network_def", instantiate=True, lazy=False).to(dev).train()
        sample = next(iter(parser_for("batch").get_parsed_content("train#dataloader")))
        batch = (sample["image"].to(dev), sample["label"].to(dev))
        step_flops = flops_per_step(network, batch, base.get_parsed_content("loss", lazy=False))
    peak = next((v for k, v in GPU_PEAK_BF16.items() if k in info.get("gpu", "")), None)
    for row in train_rows:
        row["tflops"] = step_flops / batch_size * row["value"] / 1e12
        row["notes"] += f"; {row['tflops']:.3g} TFLOP/s"
        if peak:
            row["peak_fraction"] = row["tflops"] / peak
            row["notes"] += f" = {100 * row['tflops'] / peak:.1f}% of the {peak} TFLOP/s bf16 peak"

    # ---- data pipeline alone (best of 2)
    pipeline = {"loader, workers 0": "plain", "loader, workers 1": "workers1", "batch (bank on device)": "batch"}
    if "pipeline" not in parts:
        pipeline, ref_dataset = {}, None
    else:
        log("  data pipeline alone ...")
    pipeline_rows = []
    for label, name in pipeline.items():
        if not time_left(f"data pipeline {label}"):
            continue
        loader = parser_for(name).get_parsed_content("train#dataloader")
        results = [time_loader(loader, dev, 2, pipeline_batches) for _ in range(2)]
        row = summary_row("data pipeline", label, results)
        row["notes"] += "; augmentation included" + ("; CPU time excludes the worker" if "workers 1" in label else "")
        pipeline_rows.append(row)
    if ref_dataset is not None and time_left("data pipeline reference"):
        results = [
            time_loader(reference_loader(ref_dataset, batch_size, ref_workers), dev, 2, pipeline_batches)
            for _ in range(2)
        ]
        row = summary_row("data pipeline", f"reference (skimage), workers {ref_workers}", results)
        row["notes"] += "; augmentation included"
        pipeline_rows.append(row)
        for row in pipeline_rows:
            row["x_reference"] = row["value"] / pipeline_rows[-1]["value"]
    rows += pipeline_rows

    # ---- inference
    if "inference" in parts and time_left("inference"):
        log("  inference ...")
        network = base.get_parsed_content("network_def", instantiate=True, lazy=False)
        rows += run_inference(
            network,
            spatial_size,
            dev,
            inference_repeats,
            in_channels=int(base.get_parsed_content("in_channels")),
            out_channels=int(base.get_parsed_content("out_channels")),
            batch_sizes=inference_batch_sizes,
        )

    # ---- conversion
    if "convert" in parts and convert_repeats and data == str(SHARED) and time_left("conversion"):
        log("  conversion ...")
        _, conv = measure_conversion(str(SHARED), None, convert_repeats)
        for c in conv:
            notes = f"{c['pairs_per_s']} pairs/s; est. 3929 pairs {c['est_3929_pairs_s']} s"
            rows.append(
                {
                    "measure": "convert Kaggle->NIfTI",
                    "variant": f"{c['patients']} patients, {c['pairs']} pairs",
                    "value": c["seconds"],
                    "unit": "s",
                    "notes": notes,
                }
            )

    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if dev.type != "cuda":
        info["cuda"] = "not measured: no GPU in this run (TFLOP/s vs GPU peak, CUDA memory and bf16 on GPU need one)"
    return {
        "machine": info,
        "bundle": bundle,
        "batch_size": batch_size,
        "spatial_size": spatial_size,
        "network_args": dict(network_args or {}),
        "dataset": data,
        "training_slices_per_epoch": len(dataset),
        "step_gflop": step_flops / 1e9,
        "peak_bf16_tflops": peak,
        "reference_workers": ref_workers,
        "rows": rows,
        "skipped": skipped,
    }


def main(
    bundle: str = "unet",
    device: str = "auto",
    batch_size: int | None = None,
    spatial_size: int = 256,
    warmup: int = 3,
    steps: int = 8,
    min_steps: int | None = None,
    max_seconds: float | None = None,
    repeats: int = 3,
    variants: str | tuple = "plain,workers1,batch,batch+bf16,batch+channels_last,batch+compile,default",
    bare: str | tuple = "plain,batch,default",
    reference: bool = True,
    reference_workers: int | None = None,
    pipeline_batches: int = 20,
    inference_repeats: int = 3,
    convert_repeats: int = 1,
    network_args: dict | None = None,
    dataset_dir: str = "auto",
    fold: int = 0,
    seed: int = 0,
    json_out: str | None = "benchmark.json",
    sections: str | tuple = "train,pipeline,inference,convert",
) -> None:
    """Run the benchmark, print one table and write the record to ``json_out`` (arguments: :func:`measure`)."""
    record = measure(
        bundle,
        device,
        batch_size,
        spatial_size,
        warmup,
        steps,
        min_steps,
        max_seconds,
        repeats,
        variants,
        bare,
        as_flag(reference, "reference"),
        reference_workers,
        pipeline_batches,
        inference_repeats,
        (8,),
        convert_repeats,
        network_args,
        dataset_dir,
        fold,
        seed,
        sections,
        log=lambda line: print(line, flush=True),
    )
    record["machine"]["command"] = " ".join(["python", "tools/benchmark.py", *sys.argv[1:]])
    print()
    print_table(record["rows"])
    flops = (
        f"one training step = {record['step_gflop']:.1f} GFLOP (fwd+bwd, batch {record['batch_size']}); "
        if record["step_gflop"]
        else ""
    )
    print(
        f"\nload average start {record['machine']['load_average']} end {record['machine']['load_average_end']}; "
        f"{flops}other_load = busy cores used by other processes during the best run"
    )
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(record, indent=2, default=str))
        print(f"wrote {json_out}")
