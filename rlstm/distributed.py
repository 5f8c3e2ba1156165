"""Data-parallel training under ``torchrun``: the process group and the few collectives used.

``torchrun --nproc_per_node=G [--nnodes=N ...] -m rlstm train CONFIG`` starts ``G * N``
processes with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set; :func:`init` joins them into one process group (CUDA tensors go through NCCL, CPU
tensors through gloo). Each rank owns its envs, rollout buffer and seed stream; every
minibatch's gradients are averaged in one flattened all-reduce (:func:`all_reduce_grads`), so
all ranks apply the same step and their weights stay identical without DDP's hooks.

Without those variables (or with ``WORLD_SIZE=1``) no process group exists and every function
here is a no-op: a single-process run takes exactly the code path it took before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")

SEED_STRIDE = 1000
"""Rank ``r`` seeds its envs and action sampling with ``run.seed + SEED_STRIDE * r``."""


def launched_world_size() -> int:
    """The world size torchrun announced (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> None:
    """Join the process group torchrun describes; a no-op for a single process.

    One group with two backends: NCCL for CUDA tensors (where NCCL exists) and gloo for CPU
    tensors, so CPU training, the small control messages and object collectives all work
    whatever device a rank trains on.
    """
    if launched_world_size() <= 1 or is_initialized():
        return
    # torch._dynamo (imported lazily by the first optimizer) keeps references to the process
    # groups that exist when it is imported: destroy_process_group() then cannot free the
    # group, gloo's worker threads outlive the interpreter and the process sometimes aborts
    # at exit ("terminate called without an active exception", torch 2.13). Imported first,
    # it holds none.
    import torch._dynamo  # noqa: F401

    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's index on its node (torchrun's ``LOCAL_RANK``; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def local_cuda_device() -> torch.device:
    """The GPU of this rank: ``cuda:LOCAL_RANK``, one GPU per process."""
    index, count = local_rank(), torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"LOCAL_RANK={index} but this node has {count} GPU(s): start at most {count} "
            "processes per node (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", index)


def rank_seed(seed: int) -> int:
    """This rank's seed for its envs and action sampling (``seed`` itself on rank 0)."""
    return seed + SEED_STRIDE * rank()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def destroy(synchronize: bool = True) -> None:
    """Leave the process group. ``synchronize`` first waits for every rank (the normal end),
    so no rank closes its connections while a peer still uses them. On an error path pass
    ``False``, so a failing rank exits (and torchrun stops the others) instead of waiting."""
    if not is_initialized():
        return
    if synchronize and is_distributed():
        dist.barrier()
    dist.destroy_process_group()


# -- tensors ------------------------------------------------------------------------------
def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over ranks, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def all_reduce_max(tensor: Tensor) -> Tensor:
    """Element-wise maximum of ``tensor`` over ranks, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_grads(params: Iterable[nn.Parameter], extra: Tensor | None = None) -> Tensor | None:
    """Average the gradients of ``params`` over ranks in one flattened all-reduce.

    ``extra`` (a small tensor of the gradients' dtype, e.g. the loss and the minibatch's
    statistics) rides in the same bucket and is returned averaged, so a rank-wide decision
    costs no second collective. Averaging the ranks' gradients of equally sized minibatches
    is the gradient of the mean loss over their union: the step one process would take.
    """
    if not is_distributed():
        return extra
    grads = [p.grad for p in params if p.grad is not None]
    parts = [g.reshape(-1) for g in grads]
    if extra is not None:
        parts.append(extra.reshape(-1))
    if not parts:
        return extra
    dtypes = {p.dtype for p in parts}
    assert len(dtypes) == 1, f"one bucket needs one dtype, got {dtypes}"
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n
    return None if extra is None else flat[offset:].view_as(extra)


@torch.no_grad()
def mean_var(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased variance of ``x`` over the union of every rank's elements.

    Each rank contributes ``(count, mean, sum of squared deviations)``; the pairwise combine
    of Chan, Golub & LeVeque (1979) avoids the cancellation of a plain sum of squares. Ranks
    may hold different counts. In a single process: ``(x.mean(), x.var())``.
    """
    if not is_distributed():
        return x.mean(), x.var()
    x64 = x.detach().reshape(-1).double()
    mean = x64.mean()
    table = torch.zeros(world_size(), 3, dtype=torch.float64, device=x.device)
    table[rank()] = torch.stack([x64.new_full((), x64.numel()), mean, (x64 - mean).square().sum()])
    dist.all_reduce(table)  # rows of other ranks are zero here: the sum is exact
    counts, means, m2 = table.unbind(1)
    total = counts.sum()
    global_mean = (counts * means).sum() / total
    global_m2 = (m2 + counts * (means - global_mean).square()).sum()
    return global_mean.to(x.dtype), (global_m2 / (total - 1)).to(x.dtype)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


# -- Python objects -----------------------------------------------------------------------
def on_rank0(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result (or its exception) handed to every rank.

    For what must happen once: creating the run directory, reading a checkpoint (so the
    other ranks, perhaps on other nodes, need no shared disk).
    """
    if not is_distributed():
        return fn()
    box: list[Any] = [None]
    if rank() == 0:
        try:
            box[0] = (True, fn())
        except Exception as exc:  # re-raised below on every rank, rank 0 included
            box[0] = (False, exc)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable, CPU tensors only), in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_object(obj: T) -> list[T] | None:
    """Every rank's ``obj`` (CPU tensors only) in rank order on rank 0; ``None`` elsewhere."""
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) moved to the CPU."""
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def local_num_envs(
    num_envs: int, num_chunks_per_env: int, num_minibatches: int, num_groups: int = 1
) -> int:
    """This rank's envs: ``env.num_envs`` is the total over all ranks, split evenly.

    Each rank's minibatch holds ``num_envs / world * num_chunks_per_env / num_minibatches``
    chunks, so the global minibatch is the one a single process would use.
    """
    world = world_size()
    if num_envs % world:
        raise ValueError(
            f"env.num_envs={num_envs} is the total over all ranks and must be a multiple of "
            f"the world size {world} (torchrun --nproc_per_node x --nnodes)"
        )
    local = num_envs // world
    chunks = local * num_chunks_per_env
    if chunks % num_minibatches:
        raise ValueError(
            f"ppo.num_minibatches={num_minibatches} does not divide each rank's {chunks} "
            f"chunks (env.num_envs={num_envs} / world size {world} x ppo.num_steps / "
            "ppo.bptt_len)"
        )
    if local % num_groups:
        raise ValueError(
            f"env.num_groups={num_groups} does not divide each rank's {local} envs "
            f"(env.num_envs={num_envs} / world size {world})"
        )
    return local
