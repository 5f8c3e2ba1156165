"""Observation encoders: ``(N, *obs_shape) -> (N, out_dim)`` features."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain ``std``, constant bias (the PPO implementation details)."""
    nn.init.orthogonal_(layer.weight, std)  # type: ignore[arg-type]
    nn.init.constant_(layer.bias, bias)  # type: ignore[arg-type]
    return layer


class MLPEncoder(nn.Module):
    """Flattened vector / one-hot observation -> ``layers`` ReLU layers of width ``hidden``."""

    def __init__(self, obs_shape: tuple[int, ...], hidden: int = 128, layers: int = 1) -> None:
        super().__init__()
        in_dim = math.prod(obs_shape)
        mods: list[nn.Module] = [nn.Flatten()]
        for _ in range(layers):
            mods += [layer_init(nn.Linear(in_dim, hidden)), nn.ReLU()]
            in_dim = hidden
        self.net = nn.Sequential(*mods)
        self.out_dim = hidden

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.float())


class NatureCNN(nn.Module):
    """The DQN Nature CNN on uint8 frames ``(N, C, 84, 84)`` (or ``(N, 84, 84)``).

    Frames stay uint8 until here; the division by 255 happens inside the encoder so the
    rollout buffer stores a quarter of the bytes.
    """

    def __init__(self, obs_shape: tuple[int, ...], out_dim: int = 512) -> None:
        super().__init__()
        channels = 1 if len(obs_shape) == 2 else obs_shape[0]
        self.net = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.net(torch.zeros(1, channels, *obs_shape[-2:])).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(n_flat, out_dim)), nn.ReLU())
        self.out_dim = out_dim
        self.add_channel = len(obs_shape) == 2

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.unsqueeze(1) if self.add_channel else obs
        return self.fc(self.net(x.float() / 255.0))


def make_encoder(
    kind: str, obs_shape: tuple[int, ...], obs_dtype: torch.dtype, hidden: int, layers: int
) -> nn.Module:
    """``kind`` in auto | mlp | cnn; ``auto`` picks the CNN for uint8 image observations."""
    if kind == "auto":
        kind = "cnn" if obs_dtype == torch.uint8 and len(obs_shape) in (2, 3) else "mlp"
    if kind == "cnn":
        if len(obs_shape) not in (2, 3) or min(obs_shape[-2:]) < 36:
            raise ValueError(f"agent.encoder=cnn needs image observations, got shape {obs_shape}")
        return NatureCNN(obs_shape)
    if kind == "mlp":
        return MLPEncoder(obs_shape, hidden, layers)
    raise ValueError(f"agent.encoder={kind!r} must be auto, mlp or cnn")
