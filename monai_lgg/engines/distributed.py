"""torchrun support for ``multi_gpu_train.json`` and ``multi_gpu_evaluate.json``: NCCL on GPUs, gloo on CPU
(so it is testable here).

Validation and evaluation are sharded by patient: every item of those data sets is a whole patient volume,
so :func:`patient_sampler` gives each rank whole patients (none twice), MONAI's metric handlers all-gather
their per-patient scores, and the per-patient report gathers its rows to every rank (:func:`all_gather_objects`)
before rank 0 writes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sized
from typing import Any

import torch
import torch.distributed as dist
from monai.data import DistributedSampler

from monai_lgg.errors import LGGInputError, one_line_errors_in_bundle_runs

__all__ = [
    "init_distributed",
    "destroy_distributed",
    "distributed_device",
    "distributed",
    "rank",
    "world_size",
    "all_gather_objects",
    "patient_sampler",
]

logger = logging.getLogger(__name__)


def init_distributed() -> None:
    """Join the process group torchrun describes in the environment (idempotent)."""
    if "LOCAL_RANK" not in os.environ:
        raise RuntimeError(
            "multi_gpu_train.json and multi_gpu_evaluate.json must be started with torchrun (LOCAL_RANK is not set)"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        # init_process_group wraps sys.excepthook to prefix tracebacks with the rank, capturing what the hook
        # prints until it returns: the one-line error of a user mistake (which exits from the hook) was lost
        one_line_errors_in_bundle_runs()
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


_rank = rank  # patient_sampler's argument hides the function


def world_size() -> int:
    """Number of processes of the run, 1 outside distributed runs."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (a collective: every rank must call it); ``[obj]`` outside
    distributed runs. For small picklable objects (per-patient rows), not tensors of images."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def patient_sampler(
    dataset: Sized, split: str = "validation", num_replicas: int | None = None, rank: int | None = None
) -> DistributedSampler:
    """The ranks' shares of a data set of whole patient volumes: every patient on exactly one rank, in order.

    MONAI's ``DistributedSampler`` with ``shuffle=False`` and ``even_divisible=False``, as the Model Zoo's
    ``multi_gpu_*.json`` shard validation: rank ``r`` scores patients ``r, r + W, r + 2W, ...`` and none is
    repeated to even the shares (a repeated patient would count twice in the gathered means). Each item is a
    whole volume, so a patient's slices are never split across ranks and per-patient 3D scores stay whole.

    Args:
        dataset: the validation or evaluation data set (one item per patient).
        split: its name, for the error message.
        num_replicas: processes sharing it (default: the run's world size).
        rank: this process's rank (default: the run's).

    Raises:
        LGGInputError: fewer patients than processes (a rank would have nothing to score).
    """
    patients, ranks = len(dataset), world_size() if num_replicas is None else int(num_replicas)
    rank = _rank() if rank is None else int(rank)
    if patients < ranks:
        raise LGGInputError(
            None,
            f"the {split} split has {patients} patient(s), fewer than the {ranks} processes: "
            f"start torchrun with --nproc_per_node {max(patients, 1)} or fewer",
        )
    sampler = DistributedSampler(dataset, even_divisible=False, num_replicas=ranks, rank=rank, shuffle=False)
    logger.info(f"rank {rank} of {ranks} scores {len(sampler)} of the {patients} {split} patients")
    return sampler


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
    return torch.nn.parallel.DistributedDataParallel(
        network, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
