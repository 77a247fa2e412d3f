"""Inference latency of a bundle: one slice and one patient volume, on CPU and CUDA, with and without TTA.

Times the :class:`~monai_lgg.inference.predictor.Predictor` (sliding window, sigmoid, threshold) on
preprocessed random inputs: file reading and writing are not included. Each number is the median of
``repeats`` runs after one warm-up run. The machine's load average is recorded beside the numbers,
since a shared machine slows everything down.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_lgg.inference.loading import load_network
from monai_lgg.inference.predictor import Predictor
from monai_lgg.io import write_json

__all__ = ["benchmark", "format_table"]


def _median_seconds(predictor: Predictor, image: torch.Tensor, repeats: int) -> float:
    predictor(image)  # warm-up (allocations, cuDNN autotuning)
    times = []
    for _ in range(repeats):
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor(image)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark(
    bundle: str | Path = "unet",
    checkpoint: str | Path | None = None,
    num_slices: int = 40,
    size: int = 256,
    threads: int = 2,
    repeats: int = 5,
    batch_size: int = 8,
    devices: Sequence[str] | None = None,
    variants: Sequence[tuple[str, bool]] = (("fp32", False), ("bf16", True)),
    spatial_size: Sequence[int] | None = None,
    roi_size: Sequence[int] | None = None,
    tta: Sequence[bool] = (False, True),
    json_path: str | Path | None = None,
) -> list[dict]:
    """Measure per-slice and per-volume latency.

    Args:
        bundle: bundle folder, zip or name.
        checkpoint: weights (default: the bundle's ``models/model.pt``).
        num_slices: slices of the benchmark volume.
        size: rows = columns of each slice.
        threads: CPU threads (``torch.set_num_threads``).
        repeats: timed runs per measurement (the median is reported).
        batch_size: 2D windows per forward pass.
        devices: devices to time (default ``cpu`` and, when present, ``cuda``).
        variants: ``(precision, channels_last)`` pairs to time (the :class:`Predictor` options).
        spatial_size: the training patch size, if not the bundle's (UNETR and TransUNet are built for it).
        roi_size: sliding-window size (default: ``spatial_size``); a convolutional network trained on
            small patches can segment a whole slice in one window.
        tta: the test-time-augmentation settings to time.
        json_path: also write the results here as JSON.

    Returns:
        one row per (device, variant, tta): ``slice_ms``, ``volume_ms``, the network's ``params`` and the context.
    """
    torch.set_num_threads(threads)
    devices = list(devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))
    volume = torch.randn(3, size, size, num_slices, generator=torch.Generator().manual_seed(0))
    rows = []
    for device in devices:
        network, info = load_network(bundle, checkpoint, spatial_size, device=device)
        params = sum(p.numel() for p in network.parameters())
        for (precision, channels_last), flip in itertools.product(variants, tta):
            predictor = Predictor(
                [network],
                roi_size or info.spatial_size,
                device,
                batch_size=batch_size,
                tta=flip,
                precision=precision,
                channels_last=channels_last,
            )
            rows.append(
                {
                    "bundle": info.name,
                    "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({threads} threads)",
                    "precision": precision,
                    "channels_last": channels_last,
                    "params": params,
                    "tta": flip,
                    "slice_ms": 1000 * _median_seconds(predictor, volume[..., 0], repeats),
                    "volume_ms": 1000 * _median_seconds(predictor, volume, repeats),
                    "num_slices": num_slices,
                    "size": size,
                    "batch_size": batch_size,
                }
            )
    context = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }
    if json_path:
        write_json(json_path, {"context": context, "results": rows})
    return [{**row, "load_average_1min": round(context["load_average"][0], 2)} for row in rows]


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of :func:`benchmark` rows."""
    lines = [
        "| device | precision | channels_last | TTA | 1 slice (ms) | volume (ms) | slices | size | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['precision']} | {'yes' if r['channels_last'] else 'no'} | {'yes' if r['tta'] else 'no'} | {r['slice_ms']:.1f} | {r['volume_ms']:.0f} | "
            f"{r['num_slices']} | {r['size']}² | {r['load_average_1min']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_table(benchmark()))
    print(json.dumps({"torch": torch.__version__}))
