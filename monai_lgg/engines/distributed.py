"""torchrun support for ``multi_gpu_train.json``: NCCL on GPUs, gloo on CPU (so it is testable here)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "destroy_distributed", "distributed_device", "distributed", "rank"]


def init_distributed() -> None:
    """Join the process group torchrun describes in the environment (idempotent)."""
    if "LOCAL_RANK" not in os.environ:
        raise RuntimeError("multi_gpu_train.json must be started with torchrun (LOCAL_RANK is not set)")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(distributed_device())


def destroy_distributed() -> None:
    """Leave the process group once every rank got here (a rank leaving early aborts its peers under gloo)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    """Global rank, 0 outside distributed runs."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def distributed_device() -> torch.device:
    """This process's GPU (``cuda:LOCAL_RANK``), or the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def distributed(
    network: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False
) -> torch.nn.parallel.DistributedDataParallel:
    """Move ``network`` to ``device`` and wrap it in DistributedDataParallel.

    Args:
        find_unused_parameters: needed by networks with parameters that never get a gradient (MONAI's
            UNETR builds a cross-attention norm in every transformer block); costs an extra graph walk.
    """
    network = network.to(device)
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
