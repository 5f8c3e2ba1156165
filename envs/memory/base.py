"""Shared machinery of the memory tasks: the batched torch base and its gymnasium twin base.

Every task exists twice:

- a batched class (subclass of :class:`MemoryTask`): ``B`` envs, all state in tensors on one
  device, randomness from one ``torch.Generator``, no Python loop over envs and no host sync
  per step;
- a single-env ``gymnasium.Env`` (subclass of :class:`MemoryTaskGym`), written independently
  in NumPy, registered as ``rlstm/<Task><Difficulty>-v0``.

Both accept the same *episode content* (a deck order, a cue, a board) so tests can play the
same episode in both and compare every step. Content is a ``dict[str, array]``: for the
batched class each value has a leading ``B`` dim (``reset(content=...)``), for the twin it
is one env's value (``reset(options={"content": ...})``). Injected content applies to the
episode started by that reset; later episodes are sampled as usual.

Observation = the task's own vector (float32, one-hot fields), then optionally the previous
action one-hot (zeros on the first step) and a first-step flag. ``prev_action`` defaults to
the task's ``needs_prev_action``: for tasks whose answer is constant over an episode
(RepeatFirst, TMaze, ...) the previous action would let a memoryless policy carry the answer
through the action channel, so it stays off there.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlstm.vec import EpisodeStats, StepResult, VecEnv


class MemoryTask(VecEnv):
    """Batched memory task. Subclasses implement the four hooks below.

    Hooks (all tensors ``(B, ...)`` on ``self.device``, no host syncs):

    - ``_setup(**params)``: validate params; set ``self.task_obs_dim``, ``self.num_actions``,
      ``self.max_episode_steps``; allocate state tensors.
    - ``_new_episode(mask, content)``: start a new episode where ``mask (B,)`` is true,
      leaving other envs untouched (use ``torch.where`` / masked writes, never a loop).
      ``content``, when given, holds injected episode content for every env.
    - ``_observe() -> (B, task_obs_dim) float32``: the task observation of the current state.
    - ``_transition(actions) -> (reward, terminated, truncated)``: apply ``actions (B,)``.
    - ``oracle() -> (B,) int64``: the optimal action given the hidden state (for tests).
    """

    name: ClassVar[str]
    difficulties: ClassVar[dict[str, dict[str, Any]]]
    needs_prev_action: ClassVar[bool] = False
    needs_first_flag: ClassVar[bool] = False
    # difficulty -> random-policy mean return documented in MEMORY_TASKS.md (tested to 0.03)
    random_return: ClassVar[dict[str, float]] = {}
    # difficulty -> mean return the scripted oracle must reach (1.0 where the spec says so);
    # a difficulty missing here has its own oracle test
    oracle_return: ClassVar[dict[str, float]] = {}

    task_obs_dim: int
    max_episode_steps: int

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        *,
        prev_action: bool | None = None,
        first_flag: bool | None = None,
        check_range: bool = True,
        **params: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()  # from the OS, leaving torch's global generator alone
        else:
            self.generator.manual_seed(seed)
        self.prev_action = self.needs_prev_action if prev_action is None else bool(prev_action)
        self.first_flag = self.needs_first_flag if first_flag is None else bool(first_flag)
        self.check_range = check_range
        self.params = dict(params)
        self._setup(**params)
        self.obs_dtype = torch.float32
        self.obs_shape = (
            self.task_obs_dim
            + (self.num_actions if self.prev_action else 0)
            + (1 if self.first_flag else 0),
        )
        self._last_action = torch.full((num_envs,), -1, dtype=torch.long, device=self.device)
        self._stats = EpisodeStats(num_envs, self.device)
        self._all = torch.ones(num_envs, dtype=torch.bool, device=self.device)

    # -- hooks -------------------------------------------------------------------------
    @abstractmethod
    def _setup(self, **params: Any) -> None: ...

    @abstractmethod
    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None: ...

    @abstractmethod
    def _observe(self) -> Tensor: ...

    @abstractmethod
    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    @abstractmethod
    def oracle(self) -> Tensor: ...

    def _succeeds(self, actions: Tensor) -> Tensor | None:
        """Whether ``actions`` end the episode in success, judged before the transition; for
        tasks where a positive return does not say it (``None``: the return decides)."""
        return None

    # -- helpers for subclasses ----------------------------------------------------------
    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) floats from this env's generator."""
        return torch.rand(shape, generator=self.generator, device=self.device)

    def randint(self, low: int | Tensor, high: int | Tensor, shape: tuple[int, ...]) -> Tensor:
        """Integers in [low, high) (bounds may be per-env tensors), from this env's generator."""
        u = self.rand(*shape)
        return (
            (low + (u * (high - low)).floor()).long()
            if isinstance(low, Tensor) or isinstance(high, Tensor)
            else torch.randint(low, high, shape, generator=self.generator, device=self.device)
        )

    def shuffled(self, rows: int, n: int) -> Tensor:
        """``rows`` independent uniform permutations of ``range(n)``, shape ``(rows, n)``."""
        return self.rand(rows, n).argsort(dim=1)

    # -- protocol ------------------------------------------------------------------------
    def _full_obs(self) -> Tensor:
        parts = [self._observe()]
        if self.prev_action:
            onehot = torch.zeros(self.num_envs, self.num_actions, device=self.device)
            first = self._last_action < 0
            onehot.scatter_(1, self._last_action.clamp(min=0)[:, None], 1.0)
            parts.append(onehot.masked_fill_(first[:, None], 0.0))
        if self.first_flag:
            parts.append((self._last_action < 0).float()[:, None])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def reset(self, seed: int | None = None, *, content: dict[str, Any] | None = None) -> Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        if content is not None:
            content = {k: torch.as_tensor(v, device=self.device) for k, v in content.items()}
            for key, value in content.items():
                if value.shape[:1] != (self.num_envs,):
                    raise ValueError(
                        f"content[{key!r}] must have leading dim num_envs={self.num_envs}, "
                        f"got shape {tuple(value.shape)}"
                    )
        self._new_episode(self._all, content)
        self._last_action.fill_(-1)
        self._stats = EpisodeStats(self.num_envs, self.device)
        return self._full_obs()

    def step(self, actions: Tensor) -> StepResult:
        actions = self.check_actions(actions, self.check_range)
        success = self._succeeds(actions)
        reward, terminated, truncated = self._transition(actions)
        done = terminated | truncated
        self._last_action = actions
        final_obs = self._full_obs()
        ep_return, ep_length = self._stats.update(reward, done)
        self._new_episode(done)
        self._last_action = actions.masked_fill(done, -1)
        obs = torch.where(done[:, None], self._full_obs(), final_obs)
        info = {"final_obs": final_obs, "episode_return": ep_return, "episode_length": ep_length}
        if success is not None:  # where an episode ended: whether it succeeded
            info["episode_success"] = success & done
        return obs, reward.float(), terminated, truncated, info

    # -- resume --------------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, Tensor)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "tensors": {k: v.clone() for k, v in self._state_tensors().items()},
            "stats": self._stats.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state["tensors"].items():
            # a copy: the envs may update state in place, which must not alter ``state``
            setattr(self, key, value.to(self.device, copy=True))
        self._stats.load_state_dict(state["stats"])
        self.generator.set_state(state["generator"])


class MemoryTaskGym(gym.Env):
    """Single-env NumPy twin of a :class:`MemoryTask`. Subclasses implement the hooks.

    Hooks: ``_setup(**params)`` sets ``task_obs_dim``, ``num_actions``, ``max_episode_steps``;
    ``_new_episode(content)`` samples (or takes) the episode content with ``self.np_random``
    and stores it as ``self.content`` (a dict of arrays that fixes *everything* random in the
    episode, so that injecting it into the batched class replays the same episode);
    ``_observe() -> np.ndarray (task_obs_dim,) float32``;
    ``_transition(action) -> (reward, terminated, truncated)``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    needs_prev_action: ClassVar[bool] = False
    needs_first_flag: ClassVar[bool] = False

    task_obs_dim: int
    num_actions: int
    max_episode_steps: int

    def __init__(
        self, *, prev_action: bool | None = None, first_flag: bool | None = None, **params: Any
    ) -> None:
        self.prev_action = self.needs_prev_action if prev_action is None else bool(prev_action)
        self.first_flag = self.needs_first_flag if first_flag is None else bool(first_flag)
        self._setup(**params)
        dim = (
            self.task_obs_dim
            + (self.num_actions if self.prev_action else 0)
            + (1 if self.first_flag else 0)
        )
        self.observation_space = gym.spaces.Box(0.0, 1.0, (dim,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.num_actions)
        self._last_action = -1

    @abstractmethod
    def _setup(self, **params: Any) -> None: ...

    @abstractmethod
    def _new_episode(self, content: dict[str, Any] | None) -> None: ...

    @abstractmethod
    def _observe(self) -> np.ndarray: ...

    @abstractmethod
    def _transition(self, action: int) -> tuple[float, bool, bool]: ...

    def _full_obs(self) -> np.ndarray:
        parts = [np.asarray(self._observe(), dtype=np.float32)]
        if self.prev_action:
            onehot = np.zeros(self.num_actions, dtype=np.float32)
            if self._last_action >= 0:
                onehot[self._last_action] = 1.0
            parts.append(onehot)
        if self.first_flag:
            parts.append(np.array([float(self._last_action < 0)], dtype=np.float32))
        return np.concatenate(parts).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._new_episode((options or {}).get("content"))
        self._last_action = -1
        return self._full_obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if isinstance(action, (bool, float)) or not isinstance(action, (int, np.integer)):
            raise ValueError(f"action must be an int, got {action!r} ({type(action).__name__})")
        if not 0 <= int(action) < self.num_actions:
            raise ValueError(f"action must lie in [0, {self.num_actions - 1}], got {action}")
        reward, terminated, truncated = self._transition(int(action))
        self._last_action = int(action)
        return self._full_obs(), float(reward), bool(terminated), bool(truncated), {}
