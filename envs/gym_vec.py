"""Any registered gymnasium id behind :mod:`rlstm.vec`, through gymnasium's vector API.

Uses ``gymnasium.make_vec`` with same-step autoreset, so ``info["final_obs"]`` comes from
gymnasium itself; returns and lengths are accumulated here. Discrete action spaces only.
``module:EnvId`` ids import ``module`` first (e.g. ``popgym.envs:...`` or a plugin that
registers ids on import); ``rlstm/<Task>-v0`` ids import ``envs.memory``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlstm.vec import EpisodeStats, StepResult, VecEnv


def _atari_hint(env_id: str) -> str:
    """Where ``env_id`` is an Atari id of another form (``Pong-v4``), the forms rlstm takes."""
    try:
        from envs.atari import atari_id_hint, game_of
    except ImportError:  # no ale-py
        return ""
    try:
        game_of(env_id)
    except ValueError:
        return atari_id_hint(env_id)
    return "Atari ids run on rlstm's Atari backend (env.backend=auto or atari), not gymnasium's"


class GymVecEnv(VecEnv):
    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: str | torch.device = "cpu",
        vectorization: str = "sync",
        **kwargs: Any,
    ) -> None:
        module = env_id.split(":", 1)[0] if ":" in env_id else None
        env_id = env_id.split(":", 1)[-1]
        if module is None and env_id.startswith("rlstm/"):
            module = "envs.memory"  # registers the memory tasks' NumPy twins
        if module is not None:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ValueError(f"env.id: cannot import {module!r} ({exc})") from None
        spec = gym.registry.get(env_id)
        # an Atari id of another form: unregistered, or ale-py's raw 210x160 RGB frames
        # (not Blackjack-v1, gymnasium's own card game, named like the Atari one)
        if spec is None or "ale_py" in str(spec.entry_point):
            hint = _atari_hint(env_id)
            if hint:
                raise ValueError(f"env.id={env_id!r}: {hint}")
        if spec is None:
            import envs.memory  # the memory tasks' own names are ids too (env.id=TMaze)

            known = [*envs.memory.REGISTRY, *gym.registry]
            close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.8)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"env.id={env_id!r} is not a registered gymnasium id{hint}")
        try:
            spec_space = gym.make(env_id, **kwargs)
            wrappers = (
                []
                if isinstance(spec_space.observation_space, gym.spaces.Box)
                else [gym.wrappers.FlattenObservation]  # Discrete / MultiDiscrete -> one-hot
            )
            spec_space.close()
            self.env = gym.make_vec(
                env_id,
                num_envs=num_envs,
                vectorization_mode=vectorization,
                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                wrappers=wrappers,
                **kwargs,
            )
        except (ImportError, gym.error.Error) as exc:  # e.g. Box2D missing, a bad render_mode
            raise ValueError(f"env.id={env_id!r} cannot be built: {exc}") from None
        space = self.env.single_action_space
        if not isinstance(space, gym.spaces.Discrete):
            self.env.close()
            raise ValueError(f"env.id={env_id!r} has action space {space}; rlstm needs Discrete")
        obs_space = self.env.single_observation_space
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.num_actions = int(space.n)
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        self._stats = EpisodeStats(num_envs, self.device)

    def _to_tensor(self, obs: Any) -> Tensor:
        return torch.as_tensor(np.asarray(obs), device=self.device).to(self.obs_dtype)

    def reset(self, seed: int | None = None) -> Tensor:
        # Independent per-env seeds: gymnasium's seed + i would make env 1000 of a rank replay
        # env 0 of the next rank (seeds 1000 apart) and env 1 of seed s env 0 of seed s + 1.
        seeds = None
        if seed is not None:
            state = np.random.SeedSequence(seed).generate_state(self.num_envs, dtype=np.uint32)
            seeds = [int(s) for s in state]
        obs, _ = self.env.reset(seed=seeds)
        self._stats = EpisodeStats(self.num_envs, self.device)
        return self._to_tensor(obs)

    def step(self, actions: Tensor) -> StepResult:
        actions = self.check_actions(actions)
        obs, reward, terminated, truncated, info = self.env.step(actions.cpu().numpy())
        term = torch.as_tensor(terminated, device=self.device)
        trunc = torch.as_tensor(truncated, device=self.device)
        rew = torch.as_tensor(reward, dtype=torch.float32, device=self.device)
        obs_t = self._to_tensor(obs)
        final = obs_t.clone()
        done = np.logical_or(terminated, truncated)
        if done.any():
            rows = np.flatnonzero(done)
            final[torch.as_tensor(rows, device=self.device)] = self._to_tensor(
                np.stack([info["final_obs"][i] for i in rows])
            )
        ep_return, ep_length = self._stats.update(rew, term | trunc)
        return (
            obs_t,
            rew,
            term,
            trunc,
            {
                "final_obs": final,
                "episode_return": ep_return,
                "episode_length": ep_length,
            },
        )

    def close(self) -> None:
        self.env.close()
