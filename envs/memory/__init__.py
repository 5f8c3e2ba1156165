"""The memory task suite: batched torch envs, each with a registered gymnasium twin.

Importing this package registers every task with gymnasium as ``rlstm/<Name>-v0``, where
``<Name>`` is the task name plus its difficulty (``RepeatFirstEasy``) or, for tasks swept by
a length parameter, the bare task name (``TMaze``, with ``length=`` as a kwarg).
Specs: shared MEMORY_TASKS.md; tiers live in ``diagnostics`` (A), ``probes`` (B),
``counting`` (C) and ``games`` (D).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from envs.memory import counting, diagnostics, games, probes
from envs.memory.base import MemoryTask, MemoryTaskGym

PAIRS: list[tuple[type[MemoryTask], type[MemoryTaskGym]]] = [
    *diagnostics.TASKS,
    *probes.TASKS,
    *counting.TASKS,
    *games.TASKS,
]

# registered name (e.g. "RepeatFirstEasy") -> (batched class, gym class, params)
REGISTRY: dict[str, tuple[type[MemoryTask], type[MemoryTaskGym], dict[str, Any]]] = {}
for _batched, _twin in PAIRS:
    for _difficulty, _params in _batched.difficulties.items():
        REGISTRY[_batched.name + _difficulty] = (_batched, _twin, dict(_params))


def gym_id(name: str) -> str:
    """The gymnasium id of a task name: ``RepeatFirstEasy -> rlstm/RepeatFirstEasy-v0``."""
    return f"rlstm/{name}-v0"


for _name, (_batched, _twin, _params) in REGISTRY.items():
    if gym_id(_name) not in gym.registry:
        gym.register(id=gym_id(_name), entry_point=_twin, kwargs=dict(_params))


def task_names() -> list[str]:
    """Every registered task name, in suite order."""
    return list(REGISTRY)


def make(
    name: str,
    num_envs: int = 1,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    **kwargs: Any,
) -> MemoryTask:
    """Build the batched env for task ``name`` (``"RepeatFirstEasy"``, ``"TMaze"``, or the
    gym id); ``kwargs`` override the difficulty's params and set the obs options."""
    key = name.removeprefix("rlstm/").removesuffix("-v0")
    if key not in REGISTRY:
        raise ValueError(f"unknown memory task {name!r}; known tasks: {', '.join(REGISTRY)}")
    batched, _, params = REGISTRY[key]
    return batched(num_envs, device, seed, **{**params, **kwargs})


__all__ = ["MemoryTask", "MemoryTaskGym", "REGISTRY", "gym_id", "make", "task_names"]
