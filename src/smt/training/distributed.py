"""Distributed training: the same script under `torchrun --nproc_per_node=K` runs DDP (gloo on CPU,
nccl on GPU) or FSDP; a plain `python` launch is a world of one.

Every collective has a timeout (run.dist_timeout_s), so a worker that dies or hangs ends the
launch with an error naming the rank instead of leaving the others waiting forever. A stop asked
by a signal is checked with a roll call of every rank (`stop_roll_call`, run.stop_handshake_s),
so a rank whose peer failed exits at once instead of waiting out the stop's grace period.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_training_device(name: str, local_rank: int = 0) -> torch.device:
    """cpu / cuda / cuda:N / mps / auto -> a device; a distributed GPU run uses cuda:local_rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"training.device={name!r} but CUDA is not available; use cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("training.device='mps' but MPS is not available; use cpu or auto")
    return torch.device(name)


def setup_distributed(device_name: str, timeout_s: int = 600) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_training_device(device_name, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        initialized_here = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, initialized_here)


def teardown_distributed(context: DistContext) -> None:
    if context.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistContext, mode: str) -> nn.Module:
    """DDP or FSDP around `model` in a distributed run; the model itself otherwise."""
    if not context.enabled:
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def no_sync(model: nn.Module, skip_sync: bool):
    """Skip DDP's gradient all-reduce on accumulation micro-steps (not the last one)."""
    if skip_sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return nullcontext()


def all_reduce_sum(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """The sum over ranks (a copy; the input is untouched). Identity in a world of one."""
    if not context.enabled:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def broadcast_object(value, context: DistContext):
    """Rank 0's value on every rank."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@contextmanager
def stop_roll_call(context: DistContext, timeout_s: float) -> Iterator[Callable[[], str | None] | None]:
    """The roll call smt.training.stop_signals.StopOnSignal runs at a stop (None in a world of one):
    a monitored barrier of every rank on a gloo group of its own (any backend's run has gloo for
    CPU work), whose timeout is `timeout_s`, so it answers within that time even while the main
    thread is blocked in a collective of the training's group. It returns None when every rank
    took part, else why not: a peer process that is gone is seen at once (its connections
    closed), a silent one after `timeout_s` (rank 0 names it). Created by every rank together."""
    if not context.enabled:
        yield None
        return
    timeout = datetime.timedelta(seconds=float(timeout_s))
    group = dist.new_group(backend="gloo", timeout=timeout)

    def roll_call() -> str | None:
        try:
            dist.monitored_barrier(group=group, timeout=timeout, wait_all_ranks=True)
        except Exception as error:  # gloo's RuntimeError: a closed connection or a timeout
            return (f"rank {context.rank} of {context.world_size}: the stop's roll call failed "
                    f"(run.stop_handshake_s={float(timeout_s):g}): {_gloo_line(error)}")
        return None

    try:
        yield roll_call
    finally:
        dist.destroy_process_group(group)


def _gloo_line(error: BaseException) -> str:
    """The first sentence of a gloo error, without its source location."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    line = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", line)
    line = line.split(". This is typically")[0]
    return line[:300]
