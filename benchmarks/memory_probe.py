"""How fast can the agent learn to carry a cue across k steps? A supervised probe.

Trains the real agent (MLP encoder -> LSTM -> actor head, built from ``AgentConfig``) with
cross-entropy on RememberAB's answer: the cue (``A``/``B``) at t = 0, ``k`` distractors
``x``, the question ``Y`` at t = k + 1, loss on the actor's logits at ``Y`` only. Not PPO:
a supervised stand-in for the part of the policy gradient that runs from the answer back to
the cue (PPO's is weighted by the advantage and averaged over every step of a minibatch, so
smaller still). It isolates what the optimizer and the initialisation do to that gradient.

    python benchmarks/memory_probe.py --k 1000 --seeds 3 --adam-eps 1e-5 1e-8

prints the size of the gradient that reaches the cue's weights at init, then, per setting
and seed, the Adam steps until the agent answers >= 95% of a fresh batch of 256 episodes
correctly (or "not solved" after ``--steps``). With k fixed, the episodes differ only in
their cue, so this means: it names both cues, reliably.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.recurrent import RecurrentAgent  # noqa: E402
from envs.memory import make as make_task  # noqa: E402
from rlstm.config import AgentConfig  # noqa: E402


def episodes(k: int, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """RememberAB with exactly ``k`` distractors: obs ``(k + 2, B, 4)``, starts, cue ``(B,)``.

    Built directly (stepping the env 1000 times per batch would cost ~8x the training);
    :func:`check_against_env` checks the layout against the task itself."""
    cue = torch.randint(0, 2, (batch,), generator=generator)
    return layout(k, cue), first_steps(k + 2, batch), cue


def first_steps(length: int, batch: int) -> torch.Tensor:
    starts = torch.zeros(length, batch, dtype=torch.bool)
    starts[0] = True
    return starts


def layout(k: int, cue: torch.Tensor) -> torch.Tensor:
    length, batch = k + 2, cue.numel()
    obs = torch.zeros(length, batch, 4)
    obs[0, torch.arange(batch), cue] = 1.0  # one-hot [A, B, x, Y]
    obs[1 : length - 1, :, 2] = 1.0
    obs[length - 1, :, 3] = 1.0
    return obs


def check_against_env(k: int = 5, batch: int = 16) -> None:
    """The observations of ``envs.memory``'s RememberAB equal :func:`layout`'s."""
    env = make_task("RememberAB", num_envs=batch, device="cpu", seed=0, k_min=k, k_max=k)
    seen = [env.reset()]
    for _ in range(k + 1):
        seen.append(env.step(torch.zeros(batch, dtype=torch.long))[0])
    if not torch.equal(torch.stack(seen), layout(k, env.oracle())):  # t = 0 .. k + 1
        raise AssertionError("memory_probe's RememberAB episodes differ from envs.memory's")


def make_agent(args: argparse.Namespace, seed: int) -> RecurrentAgent:
    torch.manual_seed(seed)
    cfg = AgentConfig(hidden_size=args.hidden_size, encoder_hidden=64, chrono_init=args.chrono_init)
    return RecurrentAgent((4,), torch.float32, 2, cfg)


def cue_gradient(args: argparse.Namespace, seed: int) -> torch.Tensor:
    """|d loss / d w| at init for the encoder weights that read the cue (the A and B inputs):
    only the answer's gradient through the k steps reaches them."""
    agent = make_agent(args, seed)
    obs, starts, cue = episodes(args.k, 64, torch.Generator().manual_seed(seed))
    logits, _, _ = agent.sequence(obs, agent.initial_state(64), starts, False)
    F.cross_entropy(logits[-1], cue).backward()
    weight = agent.encoder.net[1].weight  # (hidden, 4): columns [A, B, x, Y]
    assert weight.grad is not None
    return weight.grad[:, :2].abs()


def steps_to_solve(args: argparse.Namespace, adam_eps: float, seed: int) -> int | None:
    agent = make_agent(args, seed)
    generator = torch.Generator().manual_seed(seed + 1000)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=adam_eps)
    for step in range(1, args.steps + 1):
        obs, starts, cue = episodes(args.k, args.batch, generator)
        logits, _, _ = agent.sequence(obs, agent.initial_state(args.batch), starts, False)
        loss = F.cross_entropy(logits[-1], cue)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()
        if step % args.check_every == 0:
            with torch.no_grad():
                obs, starts, cue = episodes(args.k, 256, generator)
                logits, _, _ = agent.sequence(obs, agent.initial_state(256), starts, False)
                if (logits[-1].argmax(-1) == cue).float().mean().item() >= 0.95:
                    return step
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=1000, help="distractors between cue and Y")
    parser.add_argument("--adam-eps", type=float, nargs="+", default=[1e-5, 1e-8])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--steps", type=int, default=3000, help="Adam steps before giving up (0: gradient only)"
    )
    parser.add_argument("--batch", type=int, default=4, help="episodes per Adam step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-grad-norm", type=float, default=0.5)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--chrono-init", type=int, default=None, help="default: k + 2")
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.chrono_init is None:
        args.chrono_init = args.k + 2
    torch.set_num_threads(args.threads)
    check_against_env()
    print(
        f"k={args.k} batch={args.batch} lr={args.lr} max_grad_norm={args.max_grad_norm} "
        f"hidden={args.hidden_size} chrono_init={args.chrono_init}"
    )
    grad = torch.cat([cue_gradient(args, seed).flatten() for seed in range(1, args.seeds + 1)])
    live = grad[grad > 0]  # a ReLU unit the cue leaves off gets exactly zero
    print(
        f"|gradient| of the cue's encoder weights at init: {1 - live.numel() / grad.numel():.0%} "
        f"exactly zero (inactive ReLU units); the others: median {live.median().item():.1e}, "
        f"max {live.max().item():.1e}"
    )
    if args.steps == 0:  # the gradient report only
        return
    for adam_eps in args.adam_eps:
        for seed in range(1, args.seeds + 1):
            start = time.perf_counter()
            solved = steps_to_solve(args, adam_eps, seed)
            result = f"{solved} steps" if solved else f"not solved in {args.steps} steps"
            wall = time.perf_counter() - start
            print(f"adam_eps={adam_eps:g} seed={seed}: {result} ({wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
