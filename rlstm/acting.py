"""Acting: the policy step for ``B`` envs, eager or replayed from a captured CUDA graph.

Acting is latency-bound: one step of a small network for a few dozen envs is a dozen tiny
kernels, each launched from Python. On CUDA the step is captured once per batch shape as a
CUDA graph and replayed (one launch); inputs are copied into the graph's static tensors and
outputs cloned out, so callers may keep them across steps (the trainer keeps one state per
env group). The graph reads the parameters in place, so optimizer steps and
``load_state_dict`` need no recapture. Where capture fails, the step stays eager with a
warning: same numbers, only slower.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

StepOut = tuple[Tensor, Tensor, Tensor]


class _Graph:
    """One captured ``agent.step`` for fixed input shapes and dtypes."""

    def __init__(self, agent: Any, obs: Tensor, state: Tensor, starts: Tensor) -> None:
        self.obs, self.state, self.starts = obs.clone(), state.clone(), starts.clone()
        side = torch.cuda.Stream(obs.device)
        side.wait_stream(torch.cuda.current_stream(obs.device))
        with torch.cuda.stream(side):  # warm-up allocates workspaces outside the capture
            for _ in range(3):
                agent.step(self.obs, self.state, self.starts)
        torch.cuda.current_stream(obs.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out: StepOut = agent.step(self.obs, self.state, self.starts)

    def __call__(self, obs: Tensor, state: Tensor, starts: Tensor) -> StepOut:
        self.obs.copy_(obs)
        self.state.copy_(state)
        self.starts.copy_(starts)
        self.graph.replay()
        logits, value, new_state = self.out
        return logits.clone(), value.clone(), new_state.clone()


class PolicyStep:
    """``agent.step(obs, state, starts)`` under ``no_grad``; captured on CUDA when ``capture``."""

    def __init__(self, agent: Any, capture: bool = True) -> None:
        self.agent = agent
        self.capture = capture
        self.graphs: dict[tuple[Any, ...], _Graph] = {}
        self.failed = False

    @torch.no_grad()
    def __call__(self, obs: Tensor, state: Tensor, starts: Tensor) -> StepOut:
        if not self.capture or self.failed or obs.device.type != "cuda":
            return self.agent.step(obs, state, starts)
        key = (tuple(obs.shape), obs.dtype, tuple(state.shape), obs.device)
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self.graphs[key] = _Graph(self.agent, obs, state, starts)
            except RuntimeError as exc:  # e.g. an op that cannot be captured
                self.failed = True
                warnings.warn(
                    f"the policy step could not be captured as a CUDA graph ({exc}); "
                    "acting eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                torch.cuda.synchronize(obs.device)
                return self.agent.step(obs, state, starts)
        return graph(obs, state, starts)


def sample_actions(logits: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sample one action per row of ``logits (B, A)``; return ``(actions, log_probs)``."""
    log_probs = logits.log_softmax(-1)
    action = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
    return action, log_probs.gather(1, action[:, None]).squeeze(1)
