"""The batched-env protocol every env backend implements.

A batched env steps ``B = num_envs`` environments at once and speaks torch tensors on one
device, so the trainer never converts or copies per env.

``reset(seed) -> obs``
    ``obs`` is ``(B, *obs_shape)`` of ``obs_dtype`` on ``device``.

``step(actions) -> (obs, reward, terminated, truncated, info)``
    ``actions`` is ``(B,)`` int64 on ``device`` (one Discrete action per env).
    ``reward`` is ``(B,)`` float32; ``terminated`` / ``truncated`` are ``(B,)`` bool, with
    gymnasium's meaning (a terminal state was reached / the episode was cut by a time limit).

    Autoreset is *same-step*: where ``done = terminated | truncated``, the returned ``obs`` is
    already the first observation of the next episode and ``info["final_obs"]`` holds the last
    observation of the finished one. ``info`` always carries, as ``(B,)`` tensors that are
    meaningful only where ``done``:

    - ``info["final_obs"]``: ``(B, *obs_shape)``, the observation that ended the episode;
    - ``info["episode_return"]``: the finished episode's return (float32). For Atari this is
      the game score, not the clipped training reward;
    - ``info["episode_length"]``: the finished episode's length in agent steps (int64).

    Keeping these as full tensors (instead of lists of finished envs) means a backend never
    has to synchronise with the host to step; consumers mask with ``done`` when they log.

A backend may also expose ``state_dict()`` / ``load_state_dict()`` so a run can resume with
the exact env state (the memory suite does; emulators that cannot serialise say so).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

StepResult = tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]


class VecEnv(ABC):
    """Base class for batched envs; see the module docstring for the contract."""

    num_envs: int
    device: torch.device
    obs_shape: tuple[int, ...]
    obs_dtype: torch.dtype
    num_actions: int

    @abstractmethod
    def reset(self, seed: int | None = None) -> Tensor:
        """Reset every env; return ``obs (B, *obs_shape)``."""

    @abstractmethod
    def step(self, actions: Tensor) -> StepResult:
        """Step every env with ``actions (B,)``; same-step autoreset."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for pure-tensor envs
        """Release native resources (threads, emulators)."""

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} cannot save its state")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot load a saved state")

    def check_actions(self, actions: Tensor, check_range: bool = True) -> Tensor:
        """Validate ``actions`` at the boundary: shape ``(B,)``, an integer dtype, in range.

        Raises ``ValueError`` naming the problem. The range check costs a device sync, so
        callers that guarantee valid actions (the trainer samples them) may skip it.
        """
        if not isinstance(actions, Tensor):
            raise ValueError(f"actions must be a torch.Tensor, got {type(actions).__name__}")
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        if (
            actions.dtype.is_floating_point
            or actions.dtype.is_complex
            or actions.dtype == torch.bool
        ):
            raise ValueError(f"actions must have an integer dtype, got {actions.dtype}")
        if actions.device != self.device:
            actions = actions.to(self.device)
        if check_range:
            lo, hi = int(actions.min()), int(actions.max())
            if lo < 0 or hi >= self.num_actions:
                raise ValueError(
                    f"actions must lie in [0, {self.num_actions - 1}], got values in [{lo}, {hi}]"
                )
        return actions.long()


class EpisodeStats:
    """Running per-env return and length, updated on the device without host syncs."""

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.returns = torch.zeros(num_envs, dtype=torch.float32, device=device)
        self.lengths = torch.zeros(num_envs, dtype=torch.int64, device=device)

    def update(self, reward: Tensor, done: Tensor) -> tuple[Tensor, Tensor]:
        """Add this step's ``reward``; return the (return, length) of episodes ending now.

        The returned tensors are valid where ``done``; the running sums restart there.
        """
        self.returns += reward
        self.lengths += 1
        ep_return, ep_length = self.returns.clone(), self.lengths.clone()
        self.returns.masked_fill_(done, 0.0)
        self.lengths.masked_fill_(done, 0)
        return ep_return, ep_length

    def state_dict(self) -> dict[str, Tensor]:
        return {"returns": self.returns.clone(), "lengths": self.lengths.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.returns.copy_(state["returns"])
        self.lengths.copy_(state["lengths"])
