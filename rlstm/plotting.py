"""Figures: unit heatmaps and probe plots for ``rlstm inspect``, learning curves for ``rlstm plot``.

Figures are built on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so
no GUI backend is touched and nothing is set at import.

Learning curves read TensorBoard event files with tensorboard's ``EventAccumulator``. Runs
are grouped by name with the seed part stripped (``group_name``): ``Pong__s3``,
``ALE_Pong-v5__3__20250101-120000`` and the clash suffix ``name-2`` of ``make_run_dir`` all
drop to their base name, so seeds of one experiment share a curve, drawn as the mean over
runs with the min-max range shaded. ``group=False`` draws every run separately.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REWARD_COLOURS = {1: "#1a9850", -1: "#d73027"}  # positive / negative reward marks


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render(fig: Any) -> np.ndarray:
    """The figure drawn once, as ``(H, W, 3)`` uint8 (for a PNG and ``add_image`` alike)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def write_png(image: np.ndarray, path: str | Path) -> Path:
    from matplotlib.image import imsave

    path = Path(path)
    imsave(path, image)
    return path


def _mark_events(ax: Any, starts: np.ndarray, rewards: np.ndarray | None) -> None:
    """Dashed lines at episode starts (after the first step), reward ticks at the top."""
    for t in np.flatnonzero(starts):
        if t > 0:
            ax.axvline(t - 0.5, color="black", lw=1.0, ls="--")
    if rewards is None:
        return
    top = ax.get_ylim()[1]
    for t in np.flatnonzero(rewards):
        ax.plot(
            [t],
            [top],
            marker="v",
            ms=5,
            clip_on=False,
            color=REWARD_COLOURS[1 if rewards[t] > 0 else -1],
        )


def unit_heatmap(
    values: np.ndarray,
    starts: np.ndarray,
    rewards: np.ndarray,
    title: str = "",
    gate: bool = False,
    actions: np.ndarray | None = None,
    obs: np.ndarray | None = None,
) -> Any:
    """Units x time heatmap of ``values (T, H)`` in a diverging map: gates (``gate``, in
    (0, 1)) centred on 0.5, states on 0 (symmetric to the 99th percentile of ``|values|``).

    Episode starts are dashed lines, rewards ticks (green positive, red negative) above the
    map; optional panels show vector observations ``obs (T, D)`` and ``actions (T,)``.
    """
    T, H = values.shape
    panels = [("obs", obs)] if obs is not None else []
    panels += [("units", values)]
    if actions is not None:
        panels += [("action", actions)]
    sizes = {"obs": max(1.0, 0.06 * (obs.shape[1] if obs is not None else 0)), "action": 0.6}
    heights = [sizes.get(key, min(max(2.0, 0.05 * H), 12.0)) for key, _ in panels]
    fig = _figure(min(4 + 0.05 * T, 40), sum(heights) + 1.0)
    axes = fig.subplots(
        len(panels), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights}
    )[:, 0]
    for ax, (key, data) in zip(axes, panels):
        if key == "units":
            if gate:
                vmin, vmax = 0.0, 1.0
            else:
                bound = float(np.percentile(np.abs(data), 99)) if data.size else 1.0
                vmin, vmax = -max(bound, 1e-6), max(bound, 1e-6)
            image = ax.imshow(
                data.T,
                aspect="auto",
                cmap="RdBu_r",
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
                origin="lower",
            )
            fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
            ax.set_ylabel("unit")
            _mark_events(ax, starts, rewards)
            ax.set_title(title, pad=12)
        elif key == "obs":
            ax.imshow(data.T, aspect="auto", cmap="Greys", interpolation="nearest", origin="lower")
            ax.set_ylabel("obs")
            _mark_events(ax, starts, None)
        else:
            ax.step(np.arange(T), data, where="mid", color="black", lw=1)
            ax.set_ylabel("action")
            _mark_events(ax, starts, None)
    axes[-1].set_xlabel("step")
    axes[-1].set_xlim(-0.5, T - 0.5)
    return fig


def probe_plot(
    unit: np.ndarray,
    variable: np.ndarray,
    starts: np.ndarray,
    title: str = "",
    unit_label: str = "unit",
    variable_label: str = "variable",
) -> Any:
    """One unit's state ``(T,)`` over time beside the hidden variable ``(T,)`` (right axis)."""
    T = len(unit)
    fig = _figure(min(5 + 0.05 * T, 30), 3.2)
    ax = fig.subplots()
    x = np.arange(T)
    ax.plot(x, unit, color="#2166ac", lw=1.5, marker="." if T < 200 else None)
    ax.set_ylabel(unit_label, color="#2166ac")
    right = ax.twinx()
    right.step(x, variable, where="mid", color="#b2182b", lw=1.2, alpha=0.8)
    right.set_ylabel(variable_label, color="#b2182b")
    _mark_events(ax, starts, None)
    ax.set_xlabel("step")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_title(title)
    return fig


# -- learning curves ----------------------------------------------------------------------
_SEED_SUFFIXES = (
    re.compile(r"__\d+__\d{8}-\d{6}$"),  # the default run name <env>__<seed>__<time>
    re.compile(r"__s\d+$"),  # name__s<seed>
    re.compile(r"[_-]seed[_-]?\d+$"),  # name_seed3, name-seed-3
)
_CLASH_SUFFIX = re.compile(r"-\d+$")  # make_run_dir: name-2, name-3, ...


def group_name(run_name: str, names: Collection[str] = ()) -> str:
    """The experiment a run belongs to: its name without the seed part. ``names``: the runs
    plotted with it. A ``-N`` suffix (how ``make_run_dir`` settles a name clash) is dropped
    only where the name without it is among them or is a default timestamped name, so that
    ``tmaze-100`` and ``tmaze-1000`` stay apart."""
    base = _CLASH_SUFFIX.sub("", run_name)
    if base != run_name and (base in names or _SEED_SUFFIXES[0].search(base)):
        run_name = base
    for pattern in _SEED_SUFFIXES:
        stripped = pattern.sub("", run_name)
        if stripped != run_name:
            return stripped
    return run_name


def _has_events(path: Path) -> bool:
    return any(path.glob("events.out.tfevents.*"))


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories: each path that holds event files, else its subdirectories that do."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ValueError(f"{str(p)!r} is not a directory")
        if _has_events(p):
            runs.append(p)
            continue
        children = sorted(c for c in p.iterdir() if c.is_dir() and _has_events(c))
        if not children:
            raise ValueError(
                f"{str(p)!r} holds no TensorBoard event files (nor do its subdirectories)"
            )
        runs.extend(children)
    return runs


def load_scalars(run_dir: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, seconds since the run's first event, values)`` of ``tag``, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        known = ", ".join(acc.Tags()["scalars"])
        raise ValueError(f"run {str(run_dir)!r} has no scalar {tag!r}; it has: {known}")
    events = acc.Scalars(tag)
    order = np.argsort([e.step for e in events], kind="stable")
    steps = np.array([events[i].step for i in order], dtype=np.float64)
    wall = np.array([events[i].wall_time for i in order], dtype=np.float64)
    values = np.array([events[i].value for i in order], dtype=np.float64)
    return steps, wall - wall.min(), values


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_curves(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    tag: str = "charts/episodic_return",
    x: str = "steps",
    group: bool = True,
    smooth: int = 0,
    points: int = 200,
) -> dict[str, Any]:
    """Learning curves of ``tag`` for ``run_dirs`` (run directories, or directories of
    them) against env steps (``x="steps"``) or wall time (``x="time"``), written to ``out``.

    Each run's points are smoothed by a trailing mean over ``smooth`` points (default: 1/20
    of them) and interpolated onto a common grid; with ``group`` the runs of one experiment
    (``group_name``) are drawn as their mean with the min-max range shaded. Returns, per
    curve, its runs and the final smoothed mean, over the span every run of the group covers
    (``final_x``: where the shortest run ends).
    """
    if x not in ("steps", "time"):
        raise ValueError(f"x={x!r} must be steps or time")
    runs = find_runs(run_dirs)
    names = {run.name for run in runs}
    groups: dict[str, list[tuple[Path, np.ndarray, np.ndarray]]] = {}
    for run in runs:
        steps, seconds, values = load_scalars(run, tag)
        xs = steps if x == "steps" else seconds
        window = smooth or max(1, len(values) // 20)
        key = group_name(run.name, names) if group else run.name
        groups.setdefault(key, []).append((run, xs, _smooth(values, window)))
    span = max(float(xs.max()) for g in groups.values() for _, xs, _ in g)
    scale, unit = (1.0, "s")
    if x == "time" and span > 2 * 3600:
        scale, unit = 3600.0, "h"
    elif x == "time" and span > 600:
        scale, unit = 60.0, "min"
    fig = _figure(8, 5)
    ax = fig.subplots()
    summary: dict[str, Any] = {}
    for name, members in sorted(groups.items()):
        lo = min(float(xs.min()) for _, xs, _ in members)
        hi = max(float(xs.max()) for _, xs, _ in members)
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
        curves = np.full((len(members), len(grid)), np.nan)
        for i, (_, xs, ys) in enumerate(members):
            inside = (grid >= xs.min()) & (grid <= xs.max())
            curves[i, inside] = np.interp(grid[inside], xs, ys)
        # The mean and range only where every run has data: past the shortest run (a crashed
        # or time-limited seed) the longer ones are drawn alone, thin, and not averaged.
        every = ~np.isnan(curves).any(axis=0)
        mean = np.full(len(grid), np.nan)
        mean[every] = curves[:, every].mean(axis=0)
        label = f"{name} ({len(members)} runs)" if len(members) > 1 else name
        (line,) = ax.plot(grid / scale, mean, label=label, lw=1.8)
        if len(members) > 1:
            ax.fill_between(
                grid / scale,
                np.where(every, np.nanmin(curves, axis=0), np.nan),
                np.where(every, np.nanmax(curves, axis=0), np.nan),
                color=line.get_color(),
                alpha=0.2,
                lw=0,
            )
            beyond = ~every
            beyond[:-1] |= beyond[1:] & every[:-1]  # join the thin lines to the mean
            for curve in curves:
                ax.plot(
                    grid / scale, np.where(beyond, curve, np.nan), color=line.get_color(), lw=0.6
                )
        common = np.flatnonzero(every)  # empty only if the runs do not overlap at all
        last = int(common[-1]) if len(common) else -1
        summary[name] = {
            "runs": [str(run) for run, _, _ in members],
            "final": float(mean[last]),
            "final_x": float(grid[last]),
            "best": float(np.nanmax(mean)) if len(common) else float("nan"),
        }
    ax.set_xlabel("env steps" if x == "steps" else f"wall time ({unit})")
    ax.set_ylabel(tag)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(tag + (" (mean and min-max over runs)" if group else ""))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return summary
