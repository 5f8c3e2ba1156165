"""One logger: records scalars during an iteration, dumps them once to TensorBoard and the console.

On a terminal the console shows a progress bar (steps, SPS, recent return, ETA) rewritten in
place; elsewhere (CI, files) it prints one plain line per iteration. Under torchrun only
rank 0's logger is ``active``; the others write nothing.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from torch.utils.tensorboard import SummaryWriter


class Logger:
    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        progress: bool = True,
        stream: TextIO | None = None,
        purge_step: int | None = None,
        active: bool = True,
    ) -> None:
        self.active = active
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step) if active else None
        self.total_steps = total_steps
        self.stream = stream if stream is not None else sys.stderr
        self.tty = progress and self.stream.isatty()
        self.pending: dict[str, float] = {}
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.start_time = time.perf_counter()
        self.start_step = 0

    def record(self, key: str, value: float) -> None:
        """Remember a scalar for this iteration's dump (the last value of a key wins)."""
        if not self.active:
            return
        self.pending[key] = float(value)

    def write(self, scalars: dict[str, float], step: int) -> None:
        """Write ``scalars`` at once at ``step`` (an earlier step than this iteration's)."""
        if self.writer is None:
            return
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def episode(self, step: int, episodic_return: float, length: int) -> None:
        """A finished episode, logged at once under charts/ (CleanRL's tags)."""
        if self.writer is None:
            return
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", length, step)

    @property
    def mean_return(self) -> float:
        return (
            sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else math.nan
        )

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def dump(self, step: int, iteration: int, num_iterations: int) -> None:
        """Write every recorded scalar at ``step`` and show progress."""
        if self.writer is None:
            return
        for key, value in self.pending.items():
            self.writer.add_scalar(key, value, step)
        self.pending.clear()
        elapsed = time.perf_counter() - self.start_time
        done = step - self.start_step
        sps = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) / sps if sps > 0 else math.inf
        ret = f"{self.mean_return:8.3f}" if self.recent_returns else "     n/a"
        eta_text = (
            f"{int(eta // 3600):02d}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}"
            if math.isfinite(eta)
            else "--:--:--"
        )
        line = (
            f"iter {iteration}/{num_iterations}  steps {step}/{self.total_steps}  "
            f"SPS {sps:,.0f}  return {ret}  ETA {eta_text}"
        )
        if self.tty:
            frac = min(step / self.total_steps, 1.0)
            bar = "#" * int(frac * 24)
            self.stream.write(f"\r[{bar:<24}] {line}\x1b[K")
            if iteration == num_iterations:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.writer is None:
            return
        if self.tty:
            self.stream.write("\n")
        self.writer.close()
