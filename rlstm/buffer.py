"""The rollout buffer: one preallocated set of ``(T, B, ...)`` tensors on the training device.

Per step t it holds the observation (in its own dtype: uint8 frames stay uint8), action,
log-prob, value, reward, ``starts`` (t is the first step of an episode), ``terminated``,
``truncated``, the observation that ended an episode (``final_obs``, for truncation
bootstraps) and the recurrent state that *entered* step t, before the reset mask (the core
applies ``starts``). ``next_state`` is the state after the last step, so the state after any
step t is ``states[t + 1]`` (or ``next_state``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Chunks(NamedTuple):
    """The rollout cut into ``K * B`` chunks of ``L`` steps, time-major ``(L, K*B, ...)``.

    Chunk ``j = k * B + b`` covers steps ``[k*L, (k+1)*L)`` of env ``b``; ``states[j]`` is the
    stored state entering its first step, ``(S*l, K*B, H)`` with chunks on dim 1.
    """

    obs: Tensor
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    starts: Tensor
    states: Tensor


class RolloutBuffer:
    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        state_shape: tuple[int, int],
        device: torch.device,
    ) -> None:
        """``state_shape = (S * num_layers, H)``: a core's state per env."""
        T, B = num_steps, num_envs
        self.num_steps, self.num_envs = T, B
        self.obs = torch.zeros((T, B, *obs_shape), dtype=obs_dtype, device=device)
        self.final_obs = torch.zeros((T, B, *obs_shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((T, B), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((T, B), device=device)
        self.values = torch.zeros((T, B), device=device)
        self.rewards = torch.zeros((T, B), device=device)
        self.starts = torch.zeros((T, B), dtype=torch.bool, device=device)
        self.terminated = torch.zeros((T, B), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((T, B), dtype=torch.bool, device=device)
        self.states = torch.zeros((T, state_shape[0], B, state_shape[1]), device=device)
        self.next_state = torch.zeros((state_shape[0], B, state_shape[1]), device=device)
        self.advantages = torch.zeros((T, B), device=device)
        self.returns = torch.zeros((T, B), device=device)

    def state_after(self, t: Tensor, b: Tensor) -> Tensor:
        """States after steps ``t`` of envs ``b`` (index tensors ``(N,)``) -> ``(S*l, N, H)``."""
        stacked = torch.cat([self.states[1:], self.next_state[None]], dim=0)
        return stacked[t, :, b].transpose(0, 1)

    def chunks(self, bptt_len: int) -> Chunks:
        """Cut the rollout into chunks of ``bptt_len`` steps: a copy, never a view, so the
        buffer can take the next rollout while an update reads the chunks."""
        T, B, L = self.num_steps, self.num_envs, bptt_len
        K = T // L
        assert K * L == T, f"num_steps={T} is not a multiple of bptt_len={L}"

        def cut(x: Tensor) -> Tensor:  # (T, B, ...) -> (L, K*B, ...)
            out = x.new_empty((L, K * B, *x.shape[2:]))
            out.view(L, K, B, *x.shape[2:]).copy_(x.view(K, L, B, *x.shape[2:]).transpose(0, 1))
            return out

        entering = self.states[::L]  # (K, S*l, B, H) entering steps 0, L, 2L, ...
        states = entering.new_empty((entering.shape[1], K * B, entering.shape[-1]))
        states.view(entering.shape[1], K, B, entering.shape[-1]).copy_(entering.transpose(0, 1))
        return Chunks(
            obs=cut(self.obs),
            actions=cut(self.actions),
            logprobs=cut(self.logprobs),
            values=cut(self.values),
            advantages=cut(self.advantages),
            returns=cut(self.returns),
            starts=cut(self.starts),
            states=states,
        )


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    final_values: Tensor,
    next_value: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over ``(T, B)`` tensors, on their device.

    After step t the episode either goes on (bootstrap from ``values[t+1]``, or ``next_value``
    at t = T-1), terminated (no bootstrap), or was truncated (bootstrap from
    ``final_values[t]``, the critic's value of the final observation under the carried
    state). The advantage recursion is cut wherever an episode ended.
    Returns ``(advantages, returns)``, both ``(T, B)``.
    """
    T = rewards.shape[0]
    next_values = torch.cat([values[1:], next_value[None]], dim=0)
    next_values = torch.where(truncated, final_values, next_values)
    next_values = next_values.masked_fill(terminated, 0.0)
    deltas = rewards + gamma * next_values - values
    carry = (~(terminated | truncated)).float() * gamma * gae_lambda
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        last = deltas[t] + carry[t] * last
        advantages[t] = last
    return advantages, advantages + values
