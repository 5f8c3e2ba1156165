"""The recurrent actor-critic: encoder -> shared rlstm core -> policy and value heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agents.encoders import layer_init, make_encoder
from rlstm.config import AgentConfig
from rlstm.core import RecurrentCore


class RecurrentAgent(nn.Module):
    """Discrete-action recurrent actor-critic implementing :class:`rlstm.ppo.Policy`.

    ``step`` acts for ``B`` envs; ``sequence`` evaluates ``(L, M, ...)`` chunks with episode
    starts. Both return logits ``(..., A)``, values ``(...)`` and the new core state.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        num_actions: int,
        cfg: AgentConfig,
    ) -> None:
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        self.encoder = make_encoder(
            cfg.encoder, self.obs_shape, obs_dtype, cfg.encoder_hidden, cfg.encoder_layers
        )
        self.core = RecurrentCore(
            cfg.core,
            self.encoder.out_dim,
            cfg.hidden_size,
            cfg.num_layers,
            forget_bias=cfg.forget_bias,
            chrono_init=cfg.chrono_init,
        )
        self.bf16 = cfg.bf16  # the CNN under bfloat16 autocast on CUDA; core and heads in fp32
        self.actor = layer_init(nn.Linear(cfg.hidden_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(cfg.hidden_size, 1), std=1.0)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        return self.core.initial_state(batch, device)

    def encode(self, obs: Tensor) -> Tensor:
        """``obs (N, *obs_shape)`` -> float32 features ``(N, F)``."""
        if not (self.bf16 and obs.is_cuda):
            return self.encoder(obs)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            features = self.encoder(obs)
        return features.float()

    def heads(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.actor(features), self.critic(features).squeeze(-1)

    def step(self, obs: Tensor, state: Tensor, starts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``obs (B, *obs_shape)`` -> ``(logits (B, A), value (B,), new_state)``."""
        out, state = self.core.step(self.encode(obs), state, starts)
        logits, value = self.heads(out)
        return logits, value, state

    def sequence(
        self,
        obs: Tensor,
        state: Tensor,
        starts: Tensor,
        need_state: bool = True,
        sizes: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``obs (L, M, *obs_shape)`` -> ``(logits (L, M, A), values (L, M), final_state)``;
        ``need_state=False`` skips the final state (``None``) for the faster path; ``sizes``
        (:func:`rlstm.core.segment_sizes`) spares the core its host sync."""
        L, M = starts.shape
        features = self.encode(obs.reshape(L * M, *self.obs_shape)).view(L, M, -1)
        out, state = self.core.sequence(features, state, starts, need_state, sizes=sizes)
        logits, value = self.heads(out)
        return logits, value, state
