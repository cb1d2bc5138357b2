"""Process-group helpers for `torchrun` (DDP): initialisation, rank queries, reductions.

Without torchrun (no `WORLD_SIZE` in the environment) everything degrades to a single process:
rank 0, world size 1, reductions are identities.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str) -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Args:
        device: "cpu" or "cuda"; CUDA uses nccl and the process's LOCAL_RANK GPU, CPU uses gloo.

    Returns:
        The device this process computes on. A no-op (returning `device`) outside torchrun.
    """
    if not launched_by_torchrun() or is_initialized():
        if device.startswith("cuda") and launched_by_torchrun():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device(device)
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over processes (a new tensor; the input is unchanged)."""
    if not is_initialized():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Average a dict of floats over processes (same keys on every process)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    stacked = all_reduce_sum(stacked) / world_size()
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def all_gather_objects(obj) -> list:
    """List of `obj` from every process (rank order); [obj] outside DDP."""
    if not is_initialized():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if is_initialized():
        dist.barrier()
