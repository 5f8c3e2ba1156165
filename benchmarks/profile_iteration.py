"""Where one training iteration's time goes: collection vs update, and the update's cost
against its minibatch count and chunk length, on the real Trainer.

    python benchmarks/profile_iteration.py configs/atari/pong.yaml run.device=cuda \
        --variants 16:32 4:32 4:128 --trace out/trace.json

Builds the Trainer as ``rlstm train`` does, runs ``--warmup`` iterations, then times each
phase with the device synchronised at its ends (so the figures are device-inclusive), runs
one iteration under ``torch.profiler`` (top kernels and the GPU's busy time inside the
update, to tell launch-bound from compute-bound), and times ``update`` again for each
``MINIBATCHES:BPTT_LEN`` variant on the same rollout.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlstm.cli import make_agent, make_env, reward_transform, setup_torch  # noqa: E402
from rlstm.config import PPOConfig, build_config  # noqa: E402
from rlstm.ppo import GraphedMinibatchStep, update  # noqa: E402
from rlstm.trainer import Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=[], help="MINIBATCHES:BPTT_LEN")
    parser.add_argument("--trace", help="write a Chrome trace of the profiled iteration")
    args = parser.parse_args()

    cfg = build_config(args.config, args.overrides)
    if cfg.env.num_threads == 0 and "atari" in args.config:
        import os

        cfg.env.num_threads = max(1, min(cfg.env.num_envs, (os.cpu_count() or 2) - 1))
    device = setup_torch(cfg)
    env = make_env(cfg, device)
    agent = make_agent(cfg, env)
    run_dir = Path(tempfile.mkdtemp(prefix="profile_"))
    trainer = Trainer(cfg, env, agent, run_dir, device, reward_transform(cfg))
    p = cfg.ppo
    print(f"graphed update: {trainer.graphed is not None}")
    print(
        f"{cfg.env.id}: {env.num_envs} envs x {p.num_steps} steps = {cfg.batch_size} per "
        f"iteration; {p.num_minibatches} minibatches x {p.update_epochs} epochs, "
        f"bptt {p.bptt_len}; device {device}"
    )

    def run_update(ppo: PPOConfig, graphed: GraphedMinibatchStep | None) -> None:
        update(
            trainer.agent,
            trainer.params,
            trainer.optimizer,
            trainer.buffer,
            ppo,
            trainer.shuffle_gen,
            graphed,
        )

    def iteration() -> dict[str, float]:
        t0 = time.perf_counter()
        *_, act_time, env_time = trainer.collect()
        sync(device)
        t1 = time.perf_counter()
        trainer.advantages()
        sync(device)
        t2 = time.perf_counter()
        run_update(p, trainer.graphed)
        sync(device)
        t3 = time.perf_counter()
        return {
            "collect": t1 - t0,
            "act": act_time,
            "env": env_time,
            "advantages": t2 - t1,
            "update": t3 - t2,
            "total": t3 - t0,
        }

    for _ in range(args.warmup):
        iteration()
    rows = [iteration() for _ in range(args.repeat)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    mb_steps = p.num_minibatches * p.update_epochs
    print(
        f"seconds per iteration (mean of {args.repeat}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in mean.items())
    )
    print(
        f"steps/s {cfg.batch_size / mean['total']:,.0f}; collection alone "
        f"{cfg.batch_size / mean['collect']:,.0f}; update {1e3 * mean['update'] / mb_steps:.2f}"
        f" ms per minibatch step ({mb_steps} steps)"
    )

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        with torch.profiler.record_function("collect"):
            trainer.collect()
            sync(device)
        with torch.profiler.record_function("advantages"):
            trainer.advantages()
            sync(device)
        with torch.profiler.record_function("update"):
            run_update(p, trainer.graphed)
            sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=30))
    if device.type == "cuda":
        # GPU busy time per region: kernel time inside the region's wall-clock span.
        events = prof.events()
        spans = {
            e.name: (e.time_range.start, e.time_range.end)
            for e in events
            if e.name in ("collect", "advantages", "update")
        }
        kernels = [  # GPU-side events, less the regions' own annotations mirrored there
            e
            for e in events
            if e.device_type == torch.autograd.DeviceType.CUDA and e.name not in spans
        ]
        for name, (start, end) in spans.items():
            busy = sum(
                k.time_range.end - k.time_range.start
                for k in kernels
                if start <= k.time_range.start < end
            )
            count = sum(1 for k in kernels if start <= k.time_range.start < end)
            print(
                f"{name}: wall {(end - start) / 1e3:.1f} ms, GPU kernels {busy / 1e3:.1f} ms "
                f"({count} kernels)"
            )
    if args.trace:
        prof.export_chrome_trace(args.trace)

    for variant in args.variants:
        minibatches, bptt = (int(v) for v in variant.split(":"))
        q = dataclasses.replace(p, num_minibatches=minibatches, bptt_len=bptt)
        graphed = None
        if trainer.graphed is not None:
            graphed = GraphedMinibatchStep(trainer.agent, trainer.params, trainer.optimizer, q)
        times = []
        for _ in range(args.repeat + 1):
            sync(device)
            t0 = time.perf_counter()
            run_update(q, graphed)
            sync(device)
            times.append(time.perf_counter() - t0)
        best = sorted(times[1:])[len(times[1:]) // 2]
        steps = minibatches * q.update_epochs
        print(
            f"variant minibatches={minibatches} bptt_len={bptt}: update {best:.3f} s "
            f"({1e3 * best / steps:.2f} ms per minibatch step, {steps} steps); iteration "
            f"would be {mean['total'] - mean['update'] + best:.3f} s -> "
            f"{cfg.batch_size / (mean['total'] - mean['update'] + best):,.0f} steps/s"
        )
    env.close()


if __name__ == "__main__":
    main()
