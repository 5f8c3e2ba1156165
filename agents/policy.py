"""A trained agent used from Python: load a run's checkpoint, then act step by step.

``predict`` follows sb3-contrib's ``RecurrentPPO.predict``: the caller keeps the recurrent
state between calls and says which envs begin an episode, and the state is zeroed there, as
in training and ``rlstm eval``::

    policy = TrainedPolicy.load("runs/NAME")
    obs, _ = env.reset()
    action, state = policy.predict(obs)  # no state yet: a new episode
    while True:
        obs, reward, terminated, truncated, _ = env.step(action)
        start = terminated or truncated
        if start:  # the next observation is the new episode's first
            obs, _ = env.reset()
        action, state = policy.predict(obs, state, episode_start=start)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agents.recurrent import RecurrentAgent
from rlstm import checkpoint
from rlstm.config import config_from_dict
from rlstm.evaluate import select_action
from rlstm.trainer import resolve_device


class TrainedPolicy:
    """A :class:`RecurrentAgent` in eval mode with its observation and state contract."""

    def __init__(self, agent: RecurrentAgent, config: dict[str, Any], seed: int = 0) -> None:
        self.agent = agent.eval()
        self.config = config
        self.device = next(agent.parameters()).device
        self.state_dtype = agent.initial_state(1).dtype  # what predict hands back
        self.obs_shape = agent.obs_shape
        self.num_actions = agent.num_actions
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", seed: int = 0) -> TrainedPolicy:
        """The agent saved in ``path`` (a run directory or a checkpoint file) on ``device``
        (``cpu``, ``cuda``, ``cuda:N`` or ``auto``);
        ``seed`` seeds the sampling of non-deterministic actions. Raises
        :class:`rlstm.checkpoint.CheckpointError` for a missing or unreadable checkpoint."""
        data = checkpoint.load(path)
        cfg = config_from_dict(data["config"])
        weights = data["agent"]
        # The encoder is the one the weights are for: a CNN for frames (uint8), else an MLP.
        # Checkpoints do not record the observation dtype; the weights say it.
        cnn = any(key.startswith("encoder.fc.") for key in weights)
        cfg.agent.encoder = "cnn" if cnn else "mlp"
        agent = RecurrentAgent(
            tuple(data["obs_shape"]),
            torch.uint8 if cnn else torch.float32,
            int(data["num_actions"]),
            cfg.agent,
        )
        try:
            agent.load_state_dict(weights)
        except RuntimeError as exc:
            raise checkpoint.CheckpointError(
                f"{str(path)!r}: the weights do not fit the saved agent config: {exc}"
            ) from None
        return cls(
            agent.to(resolve_device(device, "device", make_current=False)), data["config"], seed
        )

    def initial_state(self, num_envs: int) -> Tensor:
        """The zero state ``(S * num_layers, num_envs, H)`` of ``num_envs`` envs."""
        return self.agent.initial_state(num_envs, self.device)

    @torch.no_grad()
    def predict(
        self,
        obs: Any,
        state: Tensor | None = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[Any, Tensor]:
        """Actions for ``obs`` and the state to pass with the next observations.

        ``obs``: one observation (``obs_shape``) or a batch ``(N, *obs_shape)``, a NumPy
        array (actions come back as NumPy) or a tensor (actions come back as a tensor on
        this policy's device). ``state``: what the previous call returned; ``None`` starts
        every env afresh. ``episode_start``: ``(N,)`` bools (one bool for one observation),
        true where ``obs`` is the first of an episode; ``None`` means true for every env
        when ``state`` is ``None``, false otherwise. ``deterministic``: the arg-max action
        instead of a sample.
        """
        as_numpy = not isinstance(obs, Tensor)
        x = torch.as_tensor(np.asarray(obs) if as_numpy else obs, device=self.device)
        single = tuple(x.shape) == self.obs_shape
        if single:
            x = x[None]
        if tuple(x.shape[1:]) != self.obs_shape:
            raise ValueError(
                f"obs has shape {tuple(x.shape)}; this policy takes {self.obs_shape} "
                f"or (N, *{self.obs_shape})"
            )
        n = x.shape[0]
        if state is None:
            state = self.initial_state(n)
            fresh = True
        else:
            state = torch.as_tensor(state)  # NumPy too, as sb3-contrib's predict returns it
            if not state.is_floating_point():
                raise ValueError(
                    f"state has dtype {state.dtype}; pass the state predict or initial_state "
                    "returned"
                )
            expected = (self.agent.core.state_slots, n, self.agent.core.hidden_size)
            if tuple(state.shape) != expected:
                raise ValueError(
                    f"state has shape {tuple(state.shape)}; for {n} observation(s) it must be "
                    f"{expected}, as returned by predict or initial_state"
                )
            state, fresh = state.to(self.device, self.state_dtype), False
        if episode_start is None:
            starts = torch.full((n,), fresh, dtype=torch.bool, device=self.device)
        else:
            if isinstance(episode_start, Tensor):
                starts = episode_start.to(self.device, torch.bool).reshape(-1)
            else:
                flags = np.asarray(episode_start, dtype=bool).reshape(-1)
                starts = torch.as_tensor(flags, device=self.device)
            if starts.shape != (n,):
                raise ValueError(
                    f"episode_start has {starts.numel()} value(s) for {n} observation(s)"
                )
        logits, _, state = self.agent.step(x, state, starts)
        action = select_action(logits, deterministic, self.generator)
        if single:
            action = action[0]
        return (action.cpu().numpy() if as_numpy else action), state
