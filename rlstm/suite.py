"""``rlstm suite``: train and evaluate every (task, core, seed) cell of the memory suite.

Each cell is one ``rlstm train`` in its own run directory followed by one ``rlstm eval`` of
the final policy. The suite then reports, per task and core, the mean and spread over seeds
of the final policy's mean episodic return (``--eval-episodes``, default 1000) and of the
best running mean return during training (POPGym's MMER). MemoryChain, TMaze and RememberAB
are swept by length instead and report the longest length learned (MEMORY_TASKS.md).

Layout of ``DIR`` (``--out``)::

    configs/<cell>.yaml   the resolved config each cell trains with
    runs/<cell>/          the run directory: TensorBoard log, checkpoint, summary.json, eval.json
    logs/<cell>.log       the cell's console output (train and eval)
    cells/<cell>.json     the cell's result; its presence marks the cell finished
    cells/<cell>.failed.json  the last failure of a cell (retried on the next run)
    suite.md, suite.csv, suite.png   the report, rewritten after every run

``<cell>`` is ``<task>__<core>__s<seed>``, or ``<task>-L<length>__<core>__s<seed>`` for swept
tasks. A rerun skips finished cells, resumes a cell whose training was interrupted from its
checkpoint, and retries failed ones. This module knows no env or network: it drives the CLI's
own ``train`` / ``eval`` commands, in process (``--jobs 1``) or as ``--jobs N`` concurrent
subprocesses sharing one device.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlstm.config import (
    CHOICES,
    Config,
    ConfigError,
    EnvConfig,
    PPOConfig,
    build_config,
    load_yaml,
    to_yaml,
)

# Runs `rlstm` commands (argv lists) in order, their console output going to a log file, until
# one fails; returns the last exit status.
Runner = Callable[[list[list[str]], Path], int]
Log = Callable[[str], None]

CORES = CHOICES["agent.core"]
EVAL_SEED = 12345  # eval episodes differ from training ones; cell seed s evaluates with 12345 + s
# Exit statuses of a stopped cell: the trainer's after SIGINT / SIGTERM (checkpoint saved), or a
# child process killed by either signal.
INTERRUPTED = (130, 143, -2, -15)
# 2: TMaze's success is the cued arm (the env's verdict), not a positive return
EVAL_VERSION = 2
DEFAULT_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "memory"

# Hyperparameters for a task without its own configs/memory/*.yaml: the GPU settings the
# tier-A configs share (batched envs on the device, one BPTT chunk per rollout).
GENERIC_CONFIG: dict[str, Any] = {
    "env": {"num_envs": 512},
    "agent": {"hidden_size": 128, "encoder_hidden": 128},
    "ppo": {
        "total_timesteps": 10_000_000,
        "num_steps": 64,
        "bptt_len": 64,
        "num_minibatches": 8,
        "update_epochs": 4,
        "learning_rate": 1.0e-3,
        "ent_coef": 0.003,
        "gamma": 0.99,
        "gae_lambda": 0.95,
    },
}


@dataclass(frozen=True)
class Sweep:
    """A task swept by one length parameter (MEMORY_TASKS.md, sections B and C)."""

    kwargs: Callable[[int], dict[str, Any]]  # length -> env kwargs
    episode_steps: Callable[[int], int]  # steps of an optimal episode at that length
    threshold: float  # success_rate needed to count the length as learned
    strict: bool  # success_rate > threshold (else >=)
    lengths: tuple[int, ...]  # default grid
    fixed_steps: bool = False  # every episode takes exactly episode_steps (any policy)

    def learned(self, success_rate: float) -> bool:
        if math.isnan(success_rate):
            return False
        return success_rate > self.threshold if self.strict else success_rate >= self.threshold

    @property
    def criterion(self) -> str:
        return f"success {'>' if self.strict else '>='} {self.threshold:.1%}"


SWEEPS: dict[str, Sweep] = {
    # bsuite memory_chain: learned if > 62.5% of episodes are correct (reward +1 at the end).
    "MemoryChain": Sweep(
        lambda L: {"memory_length": L},
        lambda L: L + 1,
        0.625,
        True,
        (*range(1, 11), 12, 14, 17, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100),
        fixed_steps=True,
    ),
    # Passive T-maze with corridor length L: solved if >= 95% take the cued arm. Detours
    # lengthen an episode (up to 2 (L + 1) steps, then truncated).
    # (L + 2: one step above the oracle's L + 1; the recorded TMaze results used it)
    "TMaze": Sweep(lambda L: {"length": L}, lambda L: L + 2, 0.95, False, (10, 100, 1000)),
    # Exactly L distractors between the cue and the question, so the length is the delay.
    "RememberAB": Sweep(
        lambda L: {"k_min": L, "k_max": L},
        lambda L: L + 2,
        0.95,
        False,
        (10, 100, 1000),
        fixed_steps=True,
    ),
}


def sweep_chunks(
    sweep: Sweep, length: int, num_envs: int, num_steps: int, bptt_len: int, num_minibatches: int
) -> tuple[int, int, int]:
    """``(num_envs, num_steps, bptt_len)`` for a swept cell, from its config's values.

    The gradient reaches from the answer back to the cue only in an episode that lies inside
    one BPTT chunk; chunks sit at fixed steps of the rollout and episodes run back to back
    across them, so an episode of ``s`` steps fits in chunks of ``L >= s`` with probability
    about ``1 - s / L``: 22% for MemoryChain-100 in chunks of 128, 2% for TMaze-1000 in
    chunks of 1024. A task whose episodes all take exactly ``s`` steps gets chunks of ``s``:
    every env starts at step 0, so every chunk then holds one whole episode. Any other task
    gets, once ``2 s > L``, a power of two >= ``2 s`` (over half of the episodes fit).
    ``num_steps`` becomes the largest multiple of the chunk <= the config's (at least one
    chunk); where it grows, ``num_envs`` shrinks to keep the batch near the config's
    ``num_envs * num_steps``, so the cell still gets as many PPO iterations.
    """
    s = sweep.episode_steps(length)
    if sweep.fixed_steps:
        chunk = s
    elif 2 * s > bptt_len:
        chunk = 1 << (2 * s - 1).bit_length()
    else:
        return num_envs, num_steps, bptt_len
    new_steps = chunk * max(1, num_steps // chunk)
    if new_steps > num_steps:
        num_envs = num_envs * num_steps // new_steps
    # whole minibatches of chunks: num_envs * (new_steps / chunk) % num_minibatches == 0
    if num_envs * (new_steps // chunk) % num_minibatches:
        num_envs = num_envs // num_minibatches * num_minibatches
    return max(num_envs, num_minibatches), new_steps, chunk


@dataclass(frozen=True)
class Cell:
    task: str
    core: str
    seed: int
    length: int | None = None  # swept tasks only

    @property
    def name(self) -> str:
        task = self.task if self.length is None else f"{self.task}-L{self.length}"
        return f"{task}__{self.core}__s{self.seed}"


@dataclass
class SuiteOptions:
    tasks: list[str]
    cores: list[str]
    seeds: int
    out: Path
    steps: int | None = None
    overrides: list[str] = field(default_factory=list)  # every cell
    task_overrides: dict[str, list[str]] = field(default_factory=dict)  # task -> overrides
    lengths: dict[str, list[int]] = field(default_factory=dict)  # swept task -> grid
    jobs: int = 1
    device: str = "auto"
    eval_episodes: int = 1000
    greedy: bool = False
    configs_dir: Path | None = DEFAULT_CONFIGS

    def cells(self) -> list[Cell]:
        cells = []
        for task in self.tasks:
            lengths: Sequence[int | None] = [None]
            if task in SWEEPS:
                lengths = self.lengths.get(task) or list(SWEEPS[task].lengths)
            for length in lengths:
                for core in self.cores:
                    for seed in range(1, self.seeds + 1):
                        cells.append(Cell(task, core, seed, length))
        return cells


@dataclass
class SuiteResult:
    report: str  # the markdown table
    done: int  # cells finished (now or earlier)
    failed: list[str]  # failed cell names
    ran: int  # cells run now
    skipped: int  # cells finished earlier, skipped
    interrupted: bool


# -- arguments ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rlstm suite`` flags (cli.py owns the subparser)."""
    parser.description = (
        "Train and evaluate every (task, core, seed) cell; write DIR/suite.md (task x core, "
        "mean +- std over seeds), DIR/suite.csv and DIR/suite.png. Rerunning skips finished "
        "cells and retries failed ones; the exit status is 1 if any cell failed."
    )
    parser.add_argument(
        "--tasks",
        default="easy",
        help="comma-separated tiers (A, B, C, D; easy = the Easy diagnostics of tier A) "
        "and/or task names, e.g. 'easy,TMaze' (default: easy)",
    )
    parser.add_argument(
        "--cores", default="lstm,gru,none", help="comma-separated cores (default: lstm,gru,none)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per cell (default: 3)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="ppo.total_timesteps for every cell (default: each task's config)",
    )
    parser.add_argument(
        "--out", default="runs/suite", help="output directory (default: runs/suite)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="[TASK:]KEY=VALUE",
        help="config overrides for every cell (env.num_envs=64) or one task's cells "
        "(TMaze:ppo.gamma=0.999); applied after --steps",
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        action="extend",
        default=[],
        metavar="[TASK=]L1,L2",
        help="length grids of the swept tasks (MemoryChain, TMaze, RememberAB), e.g. "
        "TMaze=10,100; without TASK= for all of them (default: MemoryChain 1-10, 12, 14, "
        "17, 20, 25, 30-100 by 10; TMaze and RememberAB 10,100,1000)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="cells run at once: 1 runs in this process, more "
        "run as subprocesses sharing the device (default: 1 on CPU, 4 on CUDA)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=1000,
        help="episodes to evaluate each final policy over (default: 1000)",
    )
    parser.add_argument("--greedy", action="store_true", help="evaluate arg-max actions")
    parser.add_argument(
        "--configs",
        default=str(DEFAULT_CONFIGS),
        help="directory of per-task YAML configs, matched by env.id (default: configs/memory)",
    )


def tier_tasks(tiers: Mapping[str, Iterable[Any]]) -> dict[str, list[str]]:
    """Tier -> task names, from each tier's batched task classes (or (batched, gym) pairs):
    a class with ``name`` and ``difficulties`` gives ``name + difficulty`` per difficulty."""
    out: dict[str, list[str]] = {}
    for tier, entries in tiers.items():
        names: list[str] = []
        for entry in entries:
            cls = entry[0] if isinstance(entry, tuple) else entry
            names.extend(cls.name + difficulty for difficulty in cls.difficulties)
        out[tier.upper()] = names
    out["EASY"] = [name for name in out.get("A", []) if name.endswith("Easy")]
    return out


def resolve_tasks(spec: str, tiers: Mapping[str, list[str]]) -> list[str]:
    """``"A,TMaze"`` -> task names in order, without repeats; unknown names are an error."""
    known = [name for names in tiers.values() for name in names]
    tasks: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item.upper() in tiers:
            names = tiers[item.upper()]
        elif item in known:
            names = [item]
        else:
            raise ConfigError(
                f"--tasks: unknown tier or task {item!r}; tiers: A, B, C, D, easy; "
                f"tasks: {', '.join(dict.fromkeys(known))}"
            )
        tasks.extend(name for name in names if name not in tasks)
    if not tasks:
        raise ConfigError(f"--tasks={spec!r} names no task")
    return tasks


def parse_overrides(
    items: Sequence[str], tasks: Sequence[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``--set`` items into overrides for every cell and per-task ones (``TASK:k=v``)."""
    common: list[str] = []
    per_task: dict[str, list[str]] = {}
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key:
            task, rest = item.split(":", 1)
            if task not in tasks:
                raise ConfigError(
                    f"--set {item!r}: task {task!r} is not among --tasks ({', '.join(tasks)})"
                )
            per_task.setdefault(task, []).append(rest)
        else:
            common.append(item)
    return common, per_task


def parse_lengths(items: Sequence[str], tasks: Sequence[str]) -> dict[str, list[int]]:
    """``["TMaze=10,100", "5,6"]`` -> grids per swept task (a bare grid sets all of them)."""
    grids: dict[str, list[int]] = {}
    for item in items:
        task, _, text = item.rpartition("=")
        targets = [task] if task else list(SWEEPS)
        if task and task not in SWEEPS:
            raise ConfigError(
                f"--lengths {item!r}: {task!r} is not swept; swept tasks: {', '.join(SWEEPS)}"
            )
        try:
            grid = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--lengths {item!r}: expected integers like 10,100") from None
        if not grid or min(grid) < 1:
            raise ConfigError(f"--lengths {item!r}: lengths must be integers >= 1")
        for target in targets:
            grids[target] = sorted(set(grid))
    return {task: grid for task, grid in grids.items() if task in tasks}


def options_from_args(args: argparse.Namespace, tiers: Mapping[str, list[str]]) -> SuiteOptions:
    tasks = resolve_tasks(args.tasks, tiers)
    cores = [c.strip() for c in args.cores.split(",") if c.strip()]
    bad = [c for c in cores if c not in CORES]
    if bad or not cores:
        raise ConfigError(f"--cores={args.cores!r}: each must be one of {', '.join(CORES)}")
    for flag, value in (("--seeds", args.seeds), ("--eval-episodes", args.eval_episodes)):
        if value < 1:
            raise ConfigError(f"{flag}={value} must be >= 1")
    if args.jobs < 0:
        raise ConfigError(f"--jobs={args.jobs} must be >= 0 (0 = auto)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device={args.device!r} but CUDA is not available here")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps={args.steps} must be >= 1")
    if args.configs and not Path(args.configs).is_dir():
        raise ConfigError(f"--configs={args.configs!r} is not a directory")
    common, per_task = parse_overrides(args.overrides, tasks)
    return SuiteOptions(
        tasks=tasks,
        cores=list(dict.fromkeys(cores)),
        seeds=args.seeds,
        out=Path(args.out),
        steps=args.steps,
        overrides=common,
        task_overrides=per_task,
        lengths=parse_lengths(args.lengths, tasks),
        jobs=args.jobs or default_jobs(args.device),
        device=args.device,
        eval_episodes=args.eval_episodes,
        greedy=args.greedy,
        configs_dir=Path(args.configs) if args.configs else None,
    )


def default_jobs(device: str) -> int:
    """One cell at a time on CPU; on CUDA several small runs share the GPU."""
    if device == "cpu":
        return 1
    import torch

    return 4 if torch.cuda.is_available() else 1


# -- configs ------------------------------------------------------------------------------
def task_configs(configs_dir: Path | None) -> dict[str, Path]:
    """env.id -> the first YAML (by file name) in ``configs_dir`` that trains on it."""
    found: dict[str, Path] = {}
    if configs_dir is None or not configs_dir.is_dir():
        return found
    for path in sorted(configs_dir.glob("*.yaml")):
        env = load_yaml(path).get("env") or {}
        if isinstance(env, dict) and isinstance(env.get("id"), str):
            found.setdefault(env["id"], path)
    return found


def cell_config(cell: Cell, opts: SuiteOptions, yaml_by_task: Mapping[str, Path]) -> Config:
    """Task config (its YAML, else :data:`GENERIC_CONFIG`) < sweep length < core, seed,
    ``--steps`` < ``--set`` < ``TASK:--set``; the run's place in ``DIR`` is fixed last.

    A swept cell gets BPTT chunks that hold its episodes (:func:`sweep_chunks`) and, where
    its config sets ``agent.chrono_init``, a chrono horizon of at least the episode's steps."""
    path = yaml_by_task.get(cell.task)
    base: dict[str, Any] = (
        load_yaml(path) if path is not None else json.loads(json.dumps(GENERIC_CONFIG))
    )
    for section in ("env", "agent", "ppo", "run"):
        base[section] = dict(base.get(section) or {})
    env, agent, ppo, run = base["env"], base["agent"], base["ppo"], base["run"]
    env["id"] = cell.task
    if cell.length is not None:
        sweep = SWEEPS[cell.task]
        env["kwargs"] = {**(env.get("kwargs") or {}), **sweep.kwargs(cell.length)}
        # Episodes inside BPTT chunks, so the gradient reaches from the answer back to the cue.
        env["num_envs"], ppo["num_steps"], ppo["bptt_len"] = sweep_chunks(
            sweep,
            cell.length,
            int(env.get("num_envs", EnvConfig().num_envs)),
            int(ppo.get("num_steps", PPOConfig().num_steps)),
            int(ppo.get("bptt_len", PPOConfig().bptt_len)),
            int(ppo.get("num_minibatches", PPOConfig().num_minibatches)),
        )
        # A config that asks for chrono init asks for memories as long as the episode: the
        # time constants it draws must reach the cue at every length of the sweep.
        if int(agent.get("chrono_init") or 0) > 0:
            agent["chrono_init"] = max(int(agent["chrono_init"]), sweep.episode_steps(cell.length))
    base["agent"]["core"] = cell.core
    if cell.core == "none":  # no state to refresh
        ppo["burn_in"], ppo["state_refresh"] = 0, "none"
    run["seed"] = cell.seed
    run["device"] = opts.device
    if opts.steps is not None:
        ppo["total_timesteps"] = opts.steps
    if opts.jobs > 1 and not run.get("torch_threads"):
        run["torch_threads"] = max(1, (os.cpu_count() or 1) // opts.jobs)
    overrides = [*opts.overrides, *opts.task_overrides.get(cell.task, [])]
    try:
        cfg = build_config(base=base, overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"cell {cell.name}: {exc}") from None
    if cell.length is not None:  # the cell's length wins over any env.kwargs override
        cfg.env.kwargs = {**cfg.env.kwargs, **SWEEPS[cell.task].kwargs(cell.length)}
    cfg.run.out_dir = str(opts.out / "runs")
    cfg.run.run_name = cell.name
    cfg.run.progress = False
    return cfg


# -- running cells ------------------------------------------------------------------------
def in_process_runner(cli_main: Callable[[list[str]], int]) -> Runner:
    """Run ``rlstm`` commands in this process, their stdout and stderr going to the log."""

    def run(commands: list[list[str]], log_path: Path) -> int:
        code = 0
        with open(log_path, "a") as log:
            for argv in commands:
                log.write(f"$ rlstm {' '.join(argv)}\n")
                log.flush()
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    try:
                        code = int(cli_main(argv))
                    except KeyboardInterrupt:
                        raise
                    except BaseException:  # a crash in a cell is that cell's failure
                        traceback.print_exc(file=log)
                        code = 1
                if code:
                    break
        return code

    return run


# One interpreter per cell runs its train and eval commands: torch is imported once, not twice.
_CHILD = """\
import json, sys
from rlstm.cli import main
for argv in json.loads(sys.argv[1]):
    print("$ rlstm " + " ".join(argv), flush=True)
    code = main(argv)
    sys.stdout.flush()
    if code:
        sys.exit(code)
"""


def subprocess_runner(commands: list[list[str]], log_path: Path) -> int:
    """Run ``rlstm`` commands in a child Python process, output to the log."""
    with open(log_path, "a") as log:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(commands)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return proc.returncode


class CellInterrupted(Exception):
    """A cell's training stopped on SIGINT / SIGTERM; its checkpoint was saved."""


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def last_line(path: Path) -> str:
    """The last non-empty line of a log: the error a failed command printed last."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def run_cell(
    cell: Cell, cfg: Config, opts: SuiteOptions, runner: Runner, eval_only: bool = False
) -> dict[str, Any]:
    """Train (or resume) and evaluate one cell; return its result. Raises ``RuntimeError``
    with the one-line error on failure (a run stopped by ``run.time_limit`` included: the next
    suite run resumes it) and :class:`CellInterrupted` on SIGINT / SIGTERM. ``eval_only``
    evaluates a finished cell again (other evaluation settings) without training it on."""
    out = opts.out
    config_path = out / "configs" / f"{cell.name}.yaml"
    run_dir = out / "runs" / cell.name
    log_path = out / "logs" / f"{cell.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    commands = []
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # finished, and (but for a re-evaluation) as long as this suite asks: --steps may have grown
    planned = cfg.num_iterations * cfg.batch_size
    finished = (
        bool(summary)
        and bool(summary.get("finished", 1))
        and (eval_only or summary.get("steps", 0) >= planned)
    )
    if not eval_only:
        config_path.write_text(to_yaml(cfg))
    if not finished:
        if (run_dir / "checkpoint.pt").is_file():  # interrupted or out of time: continue it
            # with this run's config (e.g. --steps raised), over the checkpoint's
            commands.append(["train", "--resume", str(run_dir), str(config_path)])
        else:
            if run_dir.exists():  # died before its first checkpoint: nothing to keep
                shutil.rmtree(run_dir)
            commands.append(["train", str(config_path)])
    evaluation_command = [
        "eval",
        str(run_dir),
        "--episodes",
        str(opts.eval_episodes),
        "--device",
        opts.device,
        "--seed",
        str(EVAL_SEED + cell.seed),
        *(["--greedy"] if opts.greedy else []),
    ]
    (run_dir / "eval.json").unlink(missing_ok=True)

    code = runner([*commands, evaluation_command], log_path)  # one interpreter for both
    if code in INTERRUPTED:
        raise CellInterrupted(f"{cell.name}: stopped (exit status {code})")
    if code != 0 or not (run_dir / "eval.json").is_file():
        raise RuntimeError(last_line(log_path) or f"rlstm exited with status {code}")
    summary = json.loads(summary_path.read_text())
    if not summary.get("finished", 1):  # run.time_limit: a partial model, not a result
        raise RuntimeError(
            f"stopped at run.time_limit after {summary.get('steps')} of {planned} steps; "
            "rerun the suite to resume it"
        )
    evaluation = json.loads((run_dir / "eval.json").read_text())
    log_eval_scalars(run_dir, summary.get("steps", 0), evaluation)
    result = {
        **identity(cell),
        "status": "done",
        "final_return": evaluation["mean_return"],
        "final_return_std": evaluation["std_return"],
        "success_rate": evaluation["success_rate"],
        "eval_episodes": evaluation["episodes"],
        "greedy": opts.greedy,
        "eval_version": EVAL_VERSION,
        "mmer": summary.get("best_running_mean_return"),
        "mean_return_last_100": summary.get("mean_return_last_100"),
        "steps": summary.get("steps"),
        "train_time": summary.get("wall_time"),
        "sps": summary.get("sps"),
        "cell_time": time.perf_counter() - start,
        "run_dir": str(run_dir),
        # what the model was trained with (a re-evaluation does not retrain it)
        "config": _trained_config(run_dir, cfg),
    }
    if cell.length is not None:
        result["learned"] = SWEEPS[cell.task].learned(_num(result["success_rate"]))
    return result


def _trained_config(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """The resolved config the run in ``run_dir`` trained with (``cfg`` if it wrote none)."""
    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else cfg.to_dict()


def log_eval_scalars(run_dir: Path, step: int, evaluation: dict[str, Any]) -> None:
    """Put the final evaluation beside the training curves in the run's TensorBoard log."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    try:
        for key in ("mean_return", "std_return", "success_rate", "mean_length"):
            if key in evaluation and evaluation[key] is not None:
                writer.add_scalar(f"eval/{key}", float(evaluation[key]), step)
    finally:
        writer.close()


def identity(cell: Cell) -> dict[str, Any]:
    return {
        "cell": cell.name,
        "task": cell.task,
        "length": cell.length,
        "core": cell.core,
        "seed": cell.seed,
    }


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys (outside ``run``) whose values differ between two resolved configs."""
    keys = []
    for section in ("env", "agent", "ppo"):
        a, b = old.get(section, {}), new.get(section, {})
        keys += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return keys


def run_suite(
    opts: SuiteOptions, runner: Runner | None = None, log: Log = lambda _: None
) -> SuiteResult:
    """Run every unfinished cell of ``opts`` and write the report.

    ``runner`` runs a cell's ``rlstm`` commands (default: in a subprocess); with
    ``opts.jobs > 1`` that many cells run at once (the runner must then be thread-safe, as
    :func:`subprocess_runner` is). A cell that raises is recorded as failed and the rest go on.
    """
    runner = runner or subprocess_runner
    cells = opts.cells()
    yaml_by_task = task_configs(opts.configs_dir)
    configs = {cell: cell_config(cell, opts, yaml_by_task) for cell in cells}  # all, up front
    cells_dir = opts.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    todo, skipped = [], 0
    evaluate_again: set[Cell] = set()
    for cell in cells:
        done_path = cells_dir / f"{cell.name}.json"
        if done_path.is_file():
            done = json.loads(done_path.read_text())
            changed = _config_diff(done.get("config", {}), configs[cell].to_dict())
            stale = (done.get("eval_episodes"), done.get("greedy")) != (
                opts.eval_episodes,
                opts.greedy,
            ) or (cell.task == "TMaze" and done.get("eval_version", 1) < EVAL_VERSION)
            if stale:  # the table's header states this run's evaluation: its numbers follow
                log(f"evaluate {cell.name} again (other --eval-episodes, --greedy or success)")
                evaluate_again.add(cell)
                todo.append(cell)
            else:
                skipped += 1
                log(f"skip {cell.name} (finished earlier)")
            if changed:
                log(
                    f"note: {cell.name} finished with different {', '.join(changed)}; delete "
                    f"{done_path} and {opts.out / 'runs' / cell.name} to run it again"
                )
        else:
            todo.append(cell)
    log(
        f"{len(cells)} cells in {opts.out}: {skipped} finished, {len(todo)} to run, "
        f"{opts.jobs} at a time"
    )
    stop = threading.Event()
    lock = threading.Lock()
    counter = {"started": 0, "ran": 0}

    def work(cell: Cell) -> None:
        if stop.is_set():
            return
        with lock:
            counter["started"] += 1
            log(f"[{counter['started']}/{len(todo)}] {cell.name}: started")
        failed_path = cells_dir / f"{cell.name}.failed.json"
        try:
            if cell in evaluate_again:  # a failed evaluation must not leave the old numbers
                (cells_dir / f"{cell.name}.json").unlink(missing_ok=True)
            result = run_cell(cell, configs[cell], opts, runner, cell in evaluate_again)
        except CellInterrupted as exc:
            stop.set()
            log(f"{exc}; rerun the same command to resume")
            return
        except Exception as exc:  # reported in the table, not fatal
            error = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            write_json_atomic(
                failed_path,
                {
                    **identity(cell),
                    "status": "failed",
                    "error": error,
                    "log": str(opts.out / "logs" / f"{cell.name}.log"),
                },
            )
            log(f"{cell.name}: FAILED: {error}")
            return
        write_json_atomic(cells_dir / f"{cell.name}.json", result)
        failed_path.unlink(missing_ok=True)
        with lock:
            counter["ran"] += 1
        log(
            f"{cell.name}: return {result['final_return']:.3f} over {result['eval_episodes']} "
            f"episodes, MMER {_fmt_num(result['mmer'])}"
        )

    interrupted = False
    try:
        if opts.jobs <= 1:
            for cell in todo:
                work(cell)
                if stop.is_set():
                    break
        else:
            with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
                futures = [pool.submit(work, cell) for cell in todo]
                try:
                    for future in futures:
                        future.result()
                except KeyboardInterrupt:
                    stop.set()  # queued cells return at once; running ones save and stop
                    raise
    except KeyboardInterrupt:
        stop.set()
        interrupted = True
    interrupted = interrupted or stop.is_set()
    results = load_results(opts.out, cells)
    report = write_report(opts, results)
    failed = [r["cell"] for r in results if r["status"] == "failed"]
    done = sum(r["status"] == "done" for r in results)
    return SuiteResult(report, done, failed, counter["ran"], skipped, interrupted)


def load_results(out: Path, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Each cell's result: finished, failed (its last failure) or pending (not run yet)."""
    results = []
    for cell in cells:
        done = out / "cells" / f"{cell.name}.json"
        failed = out / "cells" / f"{cell.name}.failed.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
        elif failed.is_file():
            results.append(json.loads(failed.read_text()))
        else:
            results.append({**identity(cell), "status": "pending"})
    return results


# -- report -------------------------------------------------------------------------------
CSV_FIELDS = [
    "cell", "task", "length", "core", "seed", "status", "final_return", "final_return_std",
    "success_rate", "learned", "eval_episodes", "greedy", "mmer", "mean_return_last_100", "steps",
    "train_time", "run_dir", "error",
]  # fmt: skip


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _fmt_num(value: Any, digits: int = 3) -> str:
    x = _num(value)
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt_seeds(rows: Sequence[dict[str, Any]], key: str, seeds: int, pct: bool = False) -> str:
    """``mean ± std`` over the finished seeds; ``(k/n seeds)`` when some did not finish."""
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return "FAILED" if any(r["status"] == "failed" for r in rows) else "pending"
    values = [_num(r.get(key)) for r in done]
    mean, std = _mean_std(values)
    if math.isnan(mean):
        text = "n/a"
    elif pct:
        text = f"{mean:.1%}" + (f" ± {std:.1%}" if len(done) > 1 else "")
    else:
        text = f"{mean:.3f}" + (f" ± {std:.3f}" if len(done) > 1 else "")
    if len(done) < seeds:
        text += f" ({len(done)}/{seeds} seeds)"
    return text


def longest_learned(rows: Sequence[dict[str, Any]]) -> dict[int, int | None]:
    """Seed -> the longest length whose criterion its run met (None: no length)."""
    out: dict[int, int | None] = {}
    for r in rows:
        if r["status"] != "done":
            continue
        best = out.get(r["seed"])
        if r.get("learned") and (best is None or r["length"] > best):
            out[r["seed"]] = r["length"]
        else:
            out.setdefault(r["seed"], None)
    return out


def _fmt_longest(per_seed: dict[int, int | None], lengths: Sequence[int], failed: bool) -> str:
    if not per_seed:
        return "FAILED" if failed else "pending"
    shortest = f"< {min(lengths)}" if lengths else "none"
    values = [v or 0 for v in per_seed.values()]
    median = statistics.median_low(values)
    text = str(median) if median else shortest
    if len(values) > 1 and min(values) != max(values):
        text += f" [{min(values) or shortest}, {max(values) or shortest}]"
    return text


def write_report(opts: SuiteOptions, results: Sequence[dict[str, Any]]) -> str:
    """Write DIR/suite.md, DIR/suite.csv and DIR/suite.png; return the markdown."""
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["task"], r["core"]), []).append(r)
    plain = [t for t in opts.tasks if t not in SWEEPS]
    swept = [t for t in opts.tasks if t in SWEEPS]
    n_done = sum(r["status"] == "done" for r in results)
    failed = [r for r in results if r["status"] == "failed"]
    pending = sum(r["status"] == "pending" for r in results)
    lines = [
        "# rlstm suite",
        "",
        f"{len(results)} cells ({len(opts.tasks)} tasks x {len(opts.cores)} cores x "
        f"{opts.seeds} seed{'s' if opts.seeds > 1 else ''}"
        f"{', swept tasks x lengths' if swept else ''}): {n_done} done, "
        f"{len(failed)} failed, {pending} pending.",
        "",
    ]
    if plain:
        lines += [
            f"Return: mean episodic return of the final policy over {opts.eval_episodes} "
            f"episodes ({'greedy' if opts.greedy else 'sampled'} actions); MMER: best running "
            f"mean return (100 episodes) during training. Mean ± std over seeds.",
            "",
            "| task | " + " | ".join(f"{c} return | {c} MMER" for c in opts.cores) + " |",
            "|---|" + "---|---|" * len(opts.cores),
        ]
        for task in plain:
            cols = []
            for core in opts.cores:
                rows = by.get((task, core), [])
                cols += [
                    _fmt_seeds(rows, "final_return", opts.seeds),
                    _fmt_seeds(rows, "mmer", opts.seeds),
                ]
            lines.append(f"| {task} | " + " | ".join(cols) + " |")
        lines.append("")
    if swept:
        lines += [
            "## Length sweeps",
            "",
            "Longest length learned (median over seeds [min, max]); success = share of "
            "episodes with a positive return (TMaze: that took the cued arm).",
            "",
            "| task | criterion | " + " | ".join(opts.cores) + " |",
            "|---|---|" + "---|" * len(opts.cores),
        ]
        for task in swept:
            grid = sorted({r["length"] for r in results if r["task"] == task})
            cols = []
            for core in opts.cores:
                rows = by.get((task, core), [])
                cols.append(
                    _fmt_longest(
                        longest_learned(rows), grid, any(r["status"] == "failed" for r in rows)
                    )
                )
            lines.append(f"| {task} | {SWEEPS[task].criterion} | " + " | ".join(cols) + " |")
        lines += [
            "",
            "| task | length | "
            + " | ".join(f"{c} success | {c} return" for c in opts.cores)
            + " |",
            "|---|---|" + "---|---|" * len(opts.cores),
        ]
        for task in swept:
            for length in sorted({r["length"] for r in results if r["task"] == task}):
                cols = []
                for core in opts.cores:
                    rows = [r for r in by.get((task, core), []) if r["length"] == length]
                    cols += [
                        _fmt_seeds(rows, "success_rate", opts.seeds, pct=True),
                        _fmt_seeds(rows, "final_return", opts.seeds),
                    ]
                lines.append(f"| {task} | {length} | " + " | ".join(cols) + " |")
        lines.append("")
    if failed:
        lines += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        for r in failed:
            error = str(r.get("error", "")).replace("|", "\\|")
            lines.append(f"| {r['cell']} | {error} |")
        lines += ["", f"Logs: {out / 'logs'}. Rerun the same command to retry them.", ""]
    report = "\n".join(lines)
    _write_text_atomic(out / "suite.md", report)
    write_csv(out / "suite.csv", results)
    write_chart(out / "suite.png", opts, results)
    return report


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, results: Sequence[dict[str, Any]]) -> None:
    """One row per cell (tidy: aggregate over seeds with any tool)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    os.replace(tmp, path)


def write_chart(path: Path, opts: SuiteOptions, results: Sequence[dict[str, Any]]) -> None:
    """Grouped bars of the final return per task and core (error bars: std over seeds), and
    success rate against length for each swept task."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plain = [t for t in opts.tasks if t not in SWEEPS]
    swept = [t for t in opts.tasks if t in SWEEPS]
    widths = ([max(4.0, 0.5 * len(plain) * len(opts.cores) + 1.5)] if plain else []) + [4.0] * len(
        swept
    )
    fig = Figure(figsize=(sum(widths) + 0.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(widths), squeeze=False, width_ratios=widths)[0]
    done = [r for r in results if r["status"] == "done"]
    if plain:
        ax = axes[0]
        width = 0.8 / len(opts.cores)
        for i, core in enumerate(opts.cores):
            stats = [
                _mean_std(
                    [_num(r["final_return"]) for r in done if r["task"] == t and r["core"] == core]
                )
                for t in plain
            ]
            xs = [j + (i - (len(opts.cores) - 1) / 2) * width for j in range(len(plain))]
            ax.bar(
                xs,
                [m for m, _ in stats],  # NaN (no finished seed) draws no bar
                width,
                yerr=[0.0 if math.isnan(s) else s for _, s in stats],
                capsize=3,
                label=core,
            )
        ax.set_xticks(range(len(plain)), plain, rotation=30, ha="right")
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_ylabel(f"final return ({opts.eval_episodes} episodes)")
        ax.set_title("final policy, mean ± std over seeds")
        ax.legend()
    for ax, task in zip(axes[1 if plain else 0 :], swept):
        for core in opts.cores:
            rows = [r for r in done if r["task"] == task and r["core"] == core]
            lengths = sorted({r["length"] for r in rows})
            means = [
                _mean_std([_num(r["success_rate"]) for r in rows if r["length"] == L])[0]
                for L in lengths
            ]
            ax.plot(lengths, means, marker="o", label=core)
        ax.axhline(SWEEPS[task].threshold, color="gray", linestyle="--", linewidth=1)
        grid = sorted({r["length"] for r in results if r["task"] == task})
        ax.set_xscale("log")
        ax.set_xlim(min(grid) / 1.5, max(grid) * 1.5)
        ax.set_xticks(grid, [str(L) for L in grid], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("length")
        ax.set_ylabel("success rate")
        ax.set_title(f"{task} ({SWEEPS[task].criterion})")
        ax.legend()
    if not done:
        fig.suptitle("no finished cells yet")
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# -- entry point --------------------------------------------------------------------------
def main(
    args: argparse.Namespace,
    tiers: Mapping[str, Iterable[Any]],
    cli_main: Callable[[list[str]], int],
    log: Log = lambda _: None,
    echo: Log = lambda _: None,
) -> int:
    """``rlstm suite``: ``tiers`` maps A..D to their task classes; ``cli_main`` runs an
    ``rlstm`` command in process (used with ``--jobs 1``); ``log`` gets progress lines and
    ``echo`` the final table. Exit status: 0 when every cell finished, 1 when any failed,
    130 when interrupted."""
    opts = options_from_args(args, tier_tasks(tiers))
    runner = in_process_runner(cli_main) if opts.jobs <= 1 else subprocess_runner
    result = run_suite(opts, runner, log)
    echo(result.report)
    log(
        f"{result.ran} cells run, {result.skipped} skipped (finished earlier), "
        f"{len(result.failed)} failed; report: {opts.out / 'suite.md'}"
    )
    if result.interrupted:
        log("interrupted; rerun the same command to continue")
        return 130
    if result.failed:
        log(f"{len(result.failed)} cells failed: {', '.join(result.failed)}; exit status 1")
        return 1
    return 0
