"""Memory tasks (placeholder until implemented)."""

from envs.memory.base import MemoryTask, MemoryTaskGym

TASKS: list[tuple[type[MemoryTask], type[MemoryTaskGym]]] = []
