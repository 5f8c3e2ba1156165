"""What data-parallel training adds per minibatch: the collectives of rlstm.distributed.

Run under torchrun (CPU: gloo; GPU: NCCL), e.g.

    torchrun --standalone --nproc_per_node=2 benchmarks/distributed_cost.py [--device cpu]

For the default memory-task agent and the Atari agent (Nature CNN + LSTM 512) it times the
one flattened gradient all-reduce per minibatch (with the loss and statistics riding along),
the global advantage normalisation (one small all-reduce per minibatch) and the per-iteration
episode all-gather. Rank 0 prints a Markdown table; medians over ``--reps``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from agents import RecurrentAgent
from rlstm import distributed
from rlstm.config import AgentConfig

MODELS = {
    # rlstm train's embedded default (RepeatFirstEasy with the first-step flag: 5 inputs)
    "memory default (MLP 64 + LSTM 64)": (
        (5,),
        torch.float32,
        4,
        AgentConfig(encoder_hidden=64, hidden_size=64),
    ),
    # configs/memory/repeat_previous_easy.yaml (the GPU memory-suite settings)
    "memory suite (MLP 128 + LSTM 128)": (
        (4,),
        torch.float32,
        4,
        AgentConfig(encoder_hidden=128, hidden_size=128),
    ),
    # configs/atari/pong.yaml: Nature CNN on 84x84 grey + LSTM 256, 6 actions
    "atari pong (CNN + LSTM 256)": (
        (1, 84, 84),
        torch.uint8,
        6,
        AgentConfig(encoder="cnn", hidden_size=256),
    ),
    # configs/atari/breakout.yaml: Nature CNN + LSTM 512, 4 actions
    "atari breakout (CNN + LSTM 512)": (
        (1, 84, 84),
        torch.uint8,
        4,
        AgentConfig(encoder="cnn", hidden_size=512),
    ),
}


def timed(fn, device: torch.device, reps: int) -> float:  # type: ignore[no-untyped-def]
    """Median milliseconds of ``fn()`` over ``reps`` runs, ranks aligned before each."""
    times = []
    for i in range(reps + 5):
        distributed.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:  # warm-up
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--minibatch", type=int, default=8 * 64, help="advantages per rank")
    args = parser.parse_args()
    torch.set_num_threads(1)
    distributed.init()
    from rlstm.trainer import resolve_device

    device = resolve_device(args.device)
    rows = []
    for name, (obs_shape, dtype, actions, cfg) in MODELS.items():
        agent = RecurrentAgent(obs_shape, dtype, actions, cfg).to(device)
        params = [p for p in agent.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        extra = torch.zeros(7, device=device)
        count = sum(p.numel() for p in params)
        ms = timed(
            lambda params=params, extra=extra: distributed.all_reduce_grads(params, extra),
            device,
            args.reps,
        )
        rows.append(f"| {name} | {count:,} | {count * 4 / 2**20:.2f} | {ms:.3f} |")
    adv = torch.randn(args.minibatch, device=device)
    norm_ms = timed(lambda: distributed.mean_var(adv), device, args.reps)
    episodes = [(i, 0.5, 51) for i in range(32)]
    gather_ms = timed(lambda: distributed.all_gather_object(episodes), device, args.reps)
    if distributed.rank() == 0:
        backend = torch.distributed.get_backend() if distributed.is_distributed() else "none"
        print(f"world size {distributed.world_size()}, device {device}, backend {backend}")
        print("| model | parameters | MiB | gradient all-reduce ms (median) |")
        print("|---|---:|---:|---:|")
        print("\n".join(rows))
        print(f"advantage normalisation all-reduce ({args.minibatch} per rank): {norm_ms:.3f} ms")
        print(f"episode all_gather_object (32 episodes per rank): {gather_ms:.3f} ms")
    distributed.destroy()


if __name__ == "__main__":
    main()
