"""Evaluation with the recurrent state carried through each episode."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from rlstm.vec import VecEnv


def select_action(logits: Tensor, greedy: bool, generator: torch.Generator) -> Tensor:
    """``(B, A)`` logits -> ``(B,)`` actions: arg-max if ``greedy``, else sampled."""
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def evaluate(
    agent: Any,
    env: VecEnv,
    episodes: int,
    greedy: bool = False,
    seed: int = 0,
    max_steps: int = 10_000_000,
) -> dict[str, Any]:
    """Run ``episodes`` episodes on ``env`` (spread evenly over its ``B`` envs, so short
    episodes are not over-counted) and return mean / std of returns and lengths.

    The state is carried step to step and zeroed only at episode starts, as in training.
    ``greedy`` takes the arg-max action instead of sampling.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    device = next(agent.parameters()).device
    B = env.num_envs
    targets = torch.tensor([episodes // B + (1 if i < episodes % B else 0) for i in range(B)])
    counts = torch.zeros(B, dtype=torch.long)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    obs = env.reset(seed=seed)
    state = agent.initial_state(B, device)
    starts = torch.ones(B, dtype=torch.bool, device=device)
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool] = []
    for _ in range(max_steps):
        if bool((counts >= targets).all()):
            break
        logits, _, state = agent.step(obs, state, starts)
        action = select_action(logits, greedy, gen)
        obs, _, terminated, truncated, info = env.step(action)
        starts = terminated | truncated
        done = info.get("episode_done", starts).cpu()
        if done.any():
            ret, length = info["episode_return"].cpu(), info["episode_length"].cpu()
            # the env's verdict where it gives one (TMaze), else a positive return
            success = info["episode_success"].cpu() if "episode_success" in info else ret > 0
            for i in done.nonzero().flatten().tolist():
                if counts[i] < targets[i]:
                    returns.append(float(ret[i]))
                    lengths.append(int(length[i]))
                    successes.append(bool(success[i]))
                    counts[i] += 1
    n = len(returns)

    def std(xs: list[float], mean: float) -> float:
        return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) if xs else math.nan

    mean_r = sum(returns) / n if n else math.nan
    mean_l = sum(lengths) / n if n else math.nan
    return {
        "episodes": n,
        "mean_return": mean_r,
        "std_return": std(returns, mean_r),
        "mean_length": mean_l,
        "std_length": std([float(x) for x in lengths], mean_l),
        # the env's success where it reports one (TMaze: the cued arm), else a positive
        # return: success on tasks with one +-1 decision (RememberAB, MemoryChain, ...)
        "success_rate": sum(successes) / n if n else math.nan,
        "returns": returns,
        "lengths": lengths,
    }
