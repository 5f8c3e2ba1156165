"""Checkpoints: atomic save (temporary file, fsync, rename), safe load (``weights_only``).

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``: a crafted file that would run code on unpickling is
refused. A killed save leaves the previous checkpoint in place, because the new one only
replaces it by an atomic rename after its bytes reached the disk.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

LATEST = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` so that readers see either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; runs are shared
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely; ``path`` may be a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(exc))
        if found is None:
            raise CheckpointError(f"{str(path)!r} is not a readable checkpoint") from None
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it would call {found.group(1)}; a checkpoint "
            "holds only tensors and plain values, and anything else could run code"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file fails in many ways
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(data, dict) or "agent" not in data or "config" not in data:
        raise CheckpointError(f"{str(path)!r} is not an rlstm checkpoint")
    return data
