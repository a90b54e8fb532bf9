"""Multi-process training with ``torchrun``: process group set-up, rank facts and collectives.

Launch with ``torchrun --nproc_per_node N -m voxssl.cli pretrain RECIPE``; a plain ``voxssl
pretrain`` is a world of one and touches no ``torch.distributed`` call. The backend is NCCL on
GPU and gloo on CPU. Every ``torch.distributed`` call goes through this module, which checks that
a process group exists and turns failures into errors that say which rank and which call.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from voxssl.device import resolve_device
from voxssl.errors import VoxsslError

log = logging.getLogger(__name__)


class DistributedError(VoxsslError):
    """A torch.distributed set-up or collective failed."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(
        k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    )


def init_distributed(
    requested_device: str = "auto", timeout_s: float = 1800.0, device_key: str = "device"
) -> DistributedContext:
    """Join the torchrun process group when launched by torchrun; a world of one otherwise.

    The device follows :func:`voxssl.device.resolve_device` (``device_key`` names the setting in
    its errors); under torchrun ``auto`` and ``cuda`` mean the process's ``cuda:LOCAL_RANK``."""
    if not launched_by_torchrun():
        return DistributedContext(device=resolve_device(requested_device, device_key))
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = resolve_device(requested_device, device_key, local_rank=local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed support")
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        except Exception as err:
            raise DistributedError(
                f"rank {rank}/{world}: init_process_group({backend}) failed: {err}"
            ) from err
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise DistributedError(
            f"process group reports rank {dist.get_rank()}/{dist.get_world_size()}, torchrun said {rank}/{world}"
        )
    log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, device)
    return DistributedContext(rank=rank, world_size=world, local_rank=local, device=device)


def _require_group(what: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(f"{what} needs an initialised process group (launch with torchrun)")


def all_reduce_mean(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is untouched)."""
    if not ctx.is_distributed:
        return tensor
    _require_group("all_reduce")
    out = tensor.detach().clone()
    try:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    except Exception as err:
        raise DistributedError(f"rank {ctx.rank}: all_reduce failed: {err}") from err
    return out / ctx.world_size


def all_reduce(tensor: torch.Tensor, ctx: DistributedContext, op: str = "sum") -> torch.Tensor:
    """Sum (``op="sum"``) or maximum (``op="max"``) of ``tensor`` over ranks, as a new tensor (the
    input is untouched). A world of one returns a copy."""
    out = tensor.detach().clone()
    if not ctx.is_distributed:
        return out
    _require_group("all_reduce")
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    try:
        dist.all_reduce(out, op=reduce_op)
    except Exception as err:
        raise DistributedError(f"rank {ctx.rank}: all_reduce({op}) failed: {err}") from err
    return out


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed gradients, so that
    negatives from other ranks contribute to the loss and gradients flow back to their owners."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        sizes = torch.tensor([tensor.shape[0]], device=tensor.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
        dist.all_gather(all_sizes, sizes)
        counts = [int(s.item()) for s in all_sizes]
        biggest = max(counts)
        padded = torch.zeros((biggest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        gathered = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded.contiguous())
        ctx.counts, ctx.rank = counts, dist.get_rank()
        return torch.cat([g[:n] for g, n in zip(gathered, counts, strict=True)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]]


def gather_with_gradient(tensor: torch.Tensor, ctx: DistributedContext) -> tuple[torch.Tensor, int]:
    """Rows of ``tensor`` from every rank, concatenated in rank order (differentiable), and the
    offset of this rank's rows in the result. A world of one returns ``(tensor, 0)``."""
    if not ctx.is_distributed:
        return tensor, 0
    _require_group("all_gather")
    sizes = torch.tensor([tensor.shape[0]], device=tensor.device)
    try:
        all_sizes = [torch.zeros_like(sizes) for _ in range(ctx.world_size)]
        dist.all_gather(all_sizes, sizes)
        offset = int(sum(int(s.item()) for s in all_sizes[: ctx.rank]))
        return _GatherWithGradient.apply(tensor), offset
    except DistributedError:
        raise
    except Exception as err:
        raise DistributedError(f"rank {ctx.rank}: all_gather failed: {err}") from err


def wrap_ddp(
    model: torch.nn.Module, ctx: DistributedContext, find_unused_parameters: bool = False
) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (BatchNorm statistics stay per rank, as in DDP).

    ``find_unused_parameters``: needed when a sub-module takes no part in the loss (a
    reconstruction head with reconstruction weight 0)."""
    if not ctx.is_distributed:
        return model
    _require_group("DistributedDataParallel")
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def cleanup(ctx: DistributedContext) -> None:
    if ctx.is_distributed and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistributedContext",
    "DistributedError",
    "all_reduce",
    "all_reduce_mean",
    "cleanup",
    "gather_with_gradient",
    "init_distributed",
    "launched_by_torchrun",
    "wrap_ddp",
]
