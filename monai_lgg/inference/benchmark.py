"""Inference latency: one slice and one patient volume, per precision, TTA and batch size, on CPU or CUDA.

The one inference timer of the project: ``monai-lgg benchmark`` (:func:`benchmark`, a bundle's trained
weights), the inference rows of ``tools/benchmark.py`` and ``tools/gpu_suite.py`` (:func:`time_inference`,
any network, e.g. a bundle's network with random weights) all call it.

It times the :class:`~monai_lgg.inference.predictor.Predictor` that ``monai-lgg predict`` uses (the bundle's
geometry: the brain box resized to the network's size and normalised per volume, or sliding windows at the
training patch size; sigmoid or softmax, optional flip TTA, threshold; results copied back to the CPU) on a
synthetic head (random intensities inside an ellipse, zero outside): reading and writing files are not
included. Each measurement is
one warm-up run (allocations, cuDNN algorithm choice) then ``repeats`` timed runs; rows give the median and
the best. On CUDA the device is synchronised around every timed run. The machine's load average is
recorded, since a shared machine slows everything down.
"""

from __future__ import annotations

import copy
import itertools
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from monai_lgg.inference.loading import load_network
from monai_lgg.inference.predictor import Predictor
from monai_lgg.inference.review import review_score
from monai_lgg.io import write_json

__all__ = ["VARIANTS", "benchmark", "device_label", "format_table", "phantom_volume", "time_inference", "time_runs"]

# (precision, channels_last) pairs timed by default: the plain path and the fast one.
VARIANTS: tuple[tuple[str, bool], ...] = (("fp32", False), ("bf16", True))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu") -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call (synchronised on CUDA)."""
    device = torch.device(device)
    fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def device_label(device: torch.device | str, threads: int | None = None) -> str:
    """``"NVIDIA H200"`` for a GPU, ``"cpu (2 threads)"`` for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads or torch.get_num_threads()} threads)"


def phantom_volume(in_channels: int, size: int, num_slices: int, seed: int = 0) -> torch.Tensor:
    """``(C, size, size, D)`` test input: uniform intensities in [0, 255) inside a centred ellipse, 0 outside
    (a brain box for the ``brain`` geometry; the pixel values do not change the time)."""
    rows = torch.linspace(-1, 1, size)[:, None]
    columns = torch.linspace(-1, 1, size)[None, :]
    inside = (rows / 0.8) ** 2 + (columns / 0.65) ** 2 <= 1
    values = 255 * torch.rand(in_channels, size, size, num_slices, generator=torch.Generator().manual_seed(seed))
    return values * inside[None, :, :, None]


def _plain(predictor: Predictor, image: torch.Tensor) -> object:
    return predictor(image)


def _with_review(predictor: Predictor, image: torch.Tensor) -> object:
    """What ``predict`` runs for the shipped ensemble: the mask and the members' review score."""
    mean, members = predictor.member_probabilities(image)
    return predictor.mask(mean), review_score(members, predictor.mask)


def time_inference(
    networks: torch.nn.Module | Sequence[torch.nn.Module],
    roi_size: Sequence[int],
    device: torch.device | str = "cpu",
    num_slices: int = 40,
    size: int = 256,
    in_channels: int = 3,
    out_channels: int = 1,
    repeats: int = 5,
    batch_sizes: Sequence[int] = (8,),
    variants: Sequence[tuple[str, bool]] = VARIANTS,
    tta: Sequence[bool] = (False, True),
    seed: int = 0,
    geometry: str = "patch",
    min_component_fraction: float = 0.0,
    normalization: str | None = None,
    context_slices: int = 0,
    review: Sequence[bool] = (False,),
) -> list[dict]:
    """Latency of ``Predictor`` for one slice and one ``num_slices`` volume of ``size`` x ``size``.

    Args:
        networks: eval-mode network(s) (an ensemble is averaged, as ``predict --ensemble`` does); each
            variant runs on a copy, so the caller's modules keep their memory format.
        roi_size: the network's input size (sliding windows in ``patch`` geometry; the brain box is resized to
            it in ``brain`` geometry).
        device: where the networks run.
        num_slices: slices of the volume.
        size: rows = columns of each slice.
        in_channels: channels of the input image (per slice, before ``context_slices`` stacks neighbours).
        out_channels: network outputs (1: binary, sigmoid; K: classes, softmax).
        repeats: timed runs per number.
        batch_sizes: windows per forward pass to time (the volume's slices form the batch).
        variants: ``(precision, channels_last)`` pairs.
        tta: test-time-augmentation settings to time.
        seed: seed of the random input.
        geometry: the checkpoint's geometry (``brain``: brain box resized to ``roi_size``, as ``predict`` does).
        min_component_fraction: the post-processing ``predict`` applies by default.
        normalization, context_slices: the checkpoint's input preprocessing (see :class:`Predictor`).
        review: time with and/or without the ``needs_review`` score of an ensemble (each member's probability
            kept, scored by :func:`~monai_lgg.inference.review.review_score`; binary networks only).

    Returns:
        one row per (variant, TTA, batch size): ``slice_ms`` / ``volume_ms`` (median of ``repeats``),
        ``slice_ms_best`` / ``volume_ms_best`` (fastest run) and the settings.
    """
    device = torch.device(device)
    members = [networks] if isinstance(networks, torch.nn.Module) else list(networks)
    volume = phantom_volume(in_channels, size, num_slices, seed)
    rows = []
    for (precision, channels_last), flip, batch_size, scored in itertools.product(variants, tta, batch_sizes, review):
        if scored and out_channels != 1:
            continue
        predictor = Predictor(
            [copy.deepcopy(n).eval() for n in members],
            roi_size,
            device,
            batch_size=batch_size,
            tta=flip,
            precision=precision,
            channels_last=channels_last,
            out_channels=out_channels,
            geometry=geometry,
            min_component_fraction=min_component_fraction,
            normalization=normalization,
            context_slices=context_slices,
        )
        run = _with_review if scored else _plain
        per_slice = time_runs(lambda p=predictor, f=run: f(p, volume[..., 0]), repeats, device)
        per_volume = time_runs(lambda p=predictor, f=run: f(p, volume), repeats, device)
        rows.append(
            {
                "device": device_label(device),
                "geometry": geometry,
                "roi_size": list(predictor.roi_size),
                "precision": precision,
                "channels_last": bool(channels_last),
                "tta": bool(flip),
                "batch_size": int(batch_size),
                "review": bool(scored),
                "slice_ms": 1000 * statistics.median(per_slice),
                "slice_ms_best": 1000 * min(per_slice),
                "volume_ms": 1000 * statistics.median(per_volume),
                "volume_ms_best": 1000 * min(per_volume),
                "num_slices": num_slices,
                "size": size,
                "repeats": repeats,
            }
        )
    return rows


def benchmark(
    bundle: str | Path = "unet",
    checkpoint: str | Path | None = None,
    num_slices: int = 40,
    size: int = 256,
    threads: int = 2,
    repeats: int = 5,
    batch_size: int = 8,
    devices: Sequence[str] | None = None,
    variants: Sequence[tuple[str, bool]] = VARIANTS,
    spatial_size: Sequence[int] | None = None,
    roi_size: Sequence[int] | None = None,
    tta: Sequence[bool] = (False, True),
    json_path: str | Path | None = None,
    batch_sizes: Sequence[int] | None = None,
    review: Sequence[bool] = (False,),
) -> list[dict]:
    """Per-slice and per-volume latency of a bundle's trained network (``monai-lgg benchmark``).

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
        roi_size: the network's input size (default: ``spatial_size``); in ``patch`` geometry a convolutional
            network trained on small patches can segment a whole slice in one window.
        tta: the test-time-augmentation settings to time.
        json_path: also write the results here as JSON.
        batch_sizes: several batch sizes to time (overrides ``batch_size``).
        review: time with and/or without the ``needs_review`` score (see :func:`time_inference`).

    Returns:
        one row per (device, variant, tta, batch size, review) as :func:`time_inference` gives, plus the bundle,
        the network's ``params`` and the load average.
    """
    torch.set_num_threads(threads)
    devices = list(devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))
    rows = []
    for device in devices:
        network, info = load_network(bundle, checkpoint, spatial_size, device=device)
        params = sum(p.numel() for p in network.parameters())
        timed = time_inference(
            network,
            roi_size or info.spatial_size,
            device,
            num_slices=num_slices,
            size=size,
            in_channels=info.image_channels,
            out_channels=info.out_channels,
            geometry=info.geometry,
            normalization=info.normalization if info.geometry == "brain" else None,
            context_slices=info.context_slices,
            min_component_fraction=info.min_component_fraction,
            repeats=repeats,
            batch_sizes=list(batch_sizes or [batch_size]),
            variants=variants,
            tta=tta,
            review=review,
        )
        for row in timed:
            if row["device"].startswith("cpu"):
                row["device"] = device_label("cpu", threads)
            rows.append({"bundle": info.name, "params": params, **row})
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
    """Markdown table of :func:`benchmark` / :func:`time_inference` rows (medians; best run in brackets)."""
    lines = [
        "| device | geometry (network input) | precision | channels_last | TTA | review | batch | 1 slice (ms) "
        "| volume (ms) | slices | size | load avg |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r.get('geometry', 'patch')} ({'x'.join(map(str, r.get('roi_size', [])))}) | "
            f"{r['precision']} | {'yes' if r['channels_last'] else 'no'} | "
            f"{'yes' if r['tta'] else 'no'} | {'yes' if r.get('review') else 'no'} | "
            f"{r['batch_size']} | {r['slice_ms']:.2f} ({r['slice_ms_best']:.2f}) | "
            f"{r['volume_ms']:.1f} ({r['volume_ms_best']:.1f}) | {r['num_slices']} | {r['size']}² | "
            f"{r.get('load_average_1min', round(os.getloadavg()[0], 2))} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_table(benchmark()))
