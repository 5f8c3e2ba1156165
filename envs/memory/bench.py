"""Env-only throughput of the batched memory tasks (steps/s summed over envs).

Random actions are generated on the device before timing; envs skip the action range check
(it costs a host sync per step); CUDA is synchronised before every clock read.

    python -m envs.memory.bench --tasks RepeatFirstEasy CountRecallEasy \\
        --sizes 1024 16384 65536 --device cpu
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import envs.memory as memory

NUM_ACTION_BATCHES = 64  # distinct pre-generated action batches, cycled


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(
    task: str, num_envs: int, device: str | torch.device, seconds: float, warmup: int = 20
) -> dict[str, Any]:
    """Time ``env.step`` of one task at ``num_envs`` envs for about ``seconds``."""
    dev = torch.device(device)
    env = memory.make(task, num_envs=num_envs, device=dev, seed=0, check_range=False)
    env.reset()
    gen = torch.Generator(device=dev).manual_seed(0)
    actions = torch.randint(
        0, env.num_actions, (NUM_ACTION_BATCHES, num_envs), generator=gen, device=dev
    )
    for i in range(warmup):
        env.step(actions[i % NUM_ACTION_BATCHES])
    _sync(dev)
    steps, chunk = 0, 1
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for _ in range(chunk):
            env.step(actions[steps % NUM_ACTION_BATCHES])
            steps += 1
        _sync(dev)
        elapsed = time.perf_counter() - start
        # read the clock about 20 times per run; calls in between stay asynchronous
        chunk = max(1, int(steps / max(elapsed, 1e-9) * seconds / 20))
    return {
        "task": task,
        "device": str(dev),
        "num_envs": num_envs,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "ms_per_step": 1e3 * elapsed / steps,
        "steps_per_s": steps * num_envs / elapsed,
    }


def bench(
    tasks: list[str], sizes: list[int], devices: list[str], seconds: float
) -> list[dict[str, Any]]:
    """Env-only steps/s for every (task, device, size); one dict per combination."""
    return [
        bench_one(task, size, device, seconds)
        for task in tasks
        for device in devices
        for size in sizes
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`bench` rows."""
    lines = [
        "| task | device | threads | envs | ms/step | steps/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['device']} | {r['threads']} | {r['num_envs']} "
            f"| {r['ms_per_step']:.3f} | {r['steps_per_s']:.3g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tasks", nargs="+", default=["RepeatFirstEasy"], help="registered task names"
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[1024, 16384, 65536], help="num_envs values"
    )
    parser.add_argument("--device", nargs="+", default=["cpu"], help="torch devices")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(format_table(bench(args.tasks, args.sizes, args.device, args.seconds)))


if __name__ == "__main__":
    main()
