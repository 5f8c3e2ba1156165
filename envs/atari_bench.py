"""``rlstm bench atari``: raw env steps/s, rlstm training steps/s, and sb3-contrib's, one run.

Three numbers on the same machine and the same game settings (shared DESIGN.md, "Where the
speed comes from"):

1. **raw env**: :func:`envs.atari.env_steps_per_second`, i.e. :class:`envs.atari.AtariEnv`
   stepped with uniformly random actions, built from the same ``EnvConfig`` (and the same
   emulator threads) as the training run.
2. **rlstm training**: the real :class:`rlstm.trainer.Trainer` built from the config as
   ``rlstm train`` builds it, with ``env.num_envs=N`` and ``run.time_limit=S``. Its summary's
   ``steps / wall_time`` counts from the start of the training loop (env reset, model and
   optimizer construction excluded) to the end of the iteration that passed ``S`` seconds.
3. **sb3-contrib** (``--compare sb3``): ``RecurrentPPO("CnnLstmPolicy")`` on gymnasium's
   ``gym.make(id, frameskip=1, ...)`` + ``AtariPreprocessing`` (+ sb3's fire reset, reward
   clipping), the same protocol and hyperparameters, in a ``SubprocVecEnv`` (their fastest
   setting on a many-core host, shared ATARI.md). Timed the same way: from
   ``on_training_start`` (after the envs are built and reset) to the start of the first
   rollout past ``S`` seconds, so only whole rollout + update iterations count.

The figure of merit is training / raw env (target >= 0.8) and rlstm / sb3.

Threads: on a small CPU machine the emulator threads and torch's threads must not exceed the
core count (ale-py's workers spin; shared ATARI.md). ``torch_threads`` defaults to 1 and the
emulator threads, where the config leaves them at 0, to ``cores - torch_threads``.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from envs.atari import game_of, num_cores
from rlstm.config import Config, build_config
from rlstm.logger import Logger

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "atari" / "pong.yaml"
SB3_MISSING = (
    '--compare sb3 needs sb3-contrib, stable-baselines3 and opencv: pip install -e ".[bench]"'
)


class BenchError(Exception):
    """A benchmark request that cannot run as asked (reported as one line)."""


class MissingDependency(BenchError):
    """An optional package the requested benchmark needs is not installed."""


def require_sb3() -> None:
    """Raise :class:`MissingDependency` (with the install hint) unless sb3 can be used."""
    try:
        import cv2  # noqa: F401  (gymnasium's AtariPreprocessing resizes with OpenCV)
        import sb3_contrib  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise MissingDependency(SB3_MISSING) from None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    import ale_py

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "cpu_count": num_cores(),
        "cpu_model": cpu_model(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "ale_py": ale_py.__version__,
        "python": platform.python_version(),
    }


class CpuMeter:
    """How much of the machine other processes used while a measurement ran (Linux only).

    ``others``: CPU seconds of processes outside this one and its descendants (sb3's worker
    processes count as ours) over wall seconds x cores. On a shared box a large value means
    the number measured beside it is low."""

    def __init__(self) -> None:
        self.start = self._read()
        self.t0 = time.perf_counter()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            busy = user + nice + system + irq + softirq + steal
            parents: dict[int, int] = {}
            times: dict[int, int] = {}
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    stat = (entry / "stat").read_text()
                except OSError:  # exited meanwhile
                    continue
                rest = stat.rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(rest[1])
                # utime, stime, and the reaped children's cutime, cstime
                times[int(entry.name)] = sum(int(x) for x in rest[11:15])
        except (OSError, ValueError, IndexError):
            return None
        ours, frontier = 0, [os.getpid()]
        while frontier:
            pid = frontier.pop()
            ours += times.get(pid, 0)
            frontier.extend(child for child, parent in parents.items() if parent == pid)
        return busy, ours

    def stop(self) -> float | None:
        """Others' share of all cores since construction, in [0, 1]."""
        end, wall = self._read(), time.perf_counter() - self.t0
        if self.start is None or end is None or wall <= 0:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return round(min(1.0, max(0.0, others / (ticks * wall * (os.cpu_count() or 1)))), 3)


def bench_config(
    config: str | Path | None,
    env_id: str | None,
    num_envs: int,
    seconds: float,
    device: str,
    torch_threads: int,
    env_threads: int | None,
    overrides: Sequence[str] = (),
) -> Config:
    """The training config the benchmark runs: ``config`` with the benchmark's settings."""
    sets = [
        f"env.num_envs={num_envs}",
        f"run.time_limit={seconds}",
        "run.progress=false",
        f"run.device={device}",
        f"run.torch_threads={torch_threads}",
    ]
    if env_id is not None:  # the id's sticky actions, not the config's game's
        sets[:0] = [f"env.id={env_id}", "env.repeat_action_probability=null"]
    cfg = build_config(config if config is not None else DEFAULT_CONFIG, [*sets, *overrides])
    try:
        game_of(cfg.env.id)
    except ValueError as exc:
        raise BenchError(f"rlstm bench atari: {exc}") from None
    if env_threads is not None:
        cfg.env.num_threads = env_threads
    elif cfg.env.num_threads == 0:  # emulator threads + torch threads <= cores
        cfg.env.num_threads = max(1, min(num_envs, num_cores() - torch_threads))
    return cfg


# -- 1. raw env -----------------------------------------------------------------------------
def raw_env_sps(cfg: Config, device: torch.device, seconds: float) -> float:
    """Agent steps/s of :class:`AtariEnv` with random actions, built as training builds it but
    as one synchronous batch (``env.num_groups`` only shapes how training overlaps)."""
    from envs.atari import measure_steps_per_second
    from rlstm.cli import make_env

    env = make_env(cfg, device, groups=False)
    return measure_steps_per_second(env, seconds, seed=cfg.run.seed)


# -- 2. rlstm training ----------------------------------------------------------------------
class _TimingLogger(Logger):
    """The trainer's logger, silent on the console, summing the ``perf/*`` seconds."""

    def __init__(self, run_dir: Path, total_steps: int) -> None:
        super().__init__(run_dir, total_steps, progress=False, stream=io.StringIO())
        self.perf: dict[str, float] = {}

    def record(self, key: str, value: float) -> None:
        if key.startswith("perf/"):
            self.perf[key[5:]] = self.perf.get(key[5:], 0.0) + float(value)
        super().record(key, value)

    def dump(self, step: int, iteration: int, num_iterations: int) -> None:
        super().dump(step, iteration, num_iterations)
        self.stream.seek(0)
        self.stream.truncate()


def rlstm_train(cfg: Config) -> dict[str, Any]:
    """Train with the real :class:`Trainer` until ``cfg.run.time_limit``; its summary plus the
    seconds spent acting, in the env and in updates."""
    from rlstm.cli import make_agent, make_env, reward_transform, setup_torch
    from rlstm.trainer import Trainer

    device = setup_torch(cfg)
    with tempfile.TemporaryDirectory(prefix="rlstm-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        env = make_env(cfg, device)
        try:
            agent = make_agent(cfg, env)
            trainer = Trainer(cfg, env, agent, run_dir, device, reward_transform(cfg))
            logger = _TimingLogger(run_dir, cfg.num_iterations * cfg.batch_size)
            summary = trainer.train(logger)
        finally:
            env.close()
    return {**summary, "perf": logger.perf}


# -- 3. sb3-contrib RecurrentPPO ------------------------------------------------------------
def make_sb3_env(env_cfg: dict[str, Any], rank: int, seed: int) -> Any:
    """One gymnasium Atari env preprocessed as :class:`AtariEnv` does it (module level, so
    ``SubprocVecEnv`` can pickle it): frameskip with a max-pool of the last two frames, 84x84
    grey, no-op starts, fire reset, sticky actions in the emulator, the same episode cap, and
    sign-clipped rewards when the config clips them."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing
    from stable_baselines3.common.atari_wrappers import (
        ClipRewardEnv,
        EpisodicLifeEnv,
        FireResetEnv,
    )
    from stable_baselines3.common.monitor import Monitor

    gym.register_envs(ale_py)
    env = gym.make(
        env_cfg["id"],
        frameskip=1,
        repeat_action_probability=env_cfg["repeat_action_probability"],
        full_action_space=env_cfg["full_action_space"],
        max_num_frames_per_episode=env_cfg["max_episode_steps"] * env_cfg["frameskip"],
    )
    env = Monitor(env)
    env = AtariPreprocessing(
        env,
        noop_max=env_cfg["noop_max"],
        frame_skip=env_cfg["frameskip"],
        screen_size=84,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        grayscale_newaxis=True,
    )
    if env_cfg["life_loss"] == "terminal":  # DQN's: a life loss is terminal, the game goes on
        env = EpisodicLifeEnv(env)
    meanings = env.unwrapped.get_action_meanings()  # type: ignore[union-attr]
    if env_cfg["kwargs"].get("fire_reset", True) and "FIRE" in meanings:
        env = FireResetEnv(env)
    if env_cfg["clip_rewards"]:
        env = ClipRewardEnv(env)
    env.action_space.seed(seed + rank)
    return env


def sb3_train(
    cfg: Config, device: torch.device, seconds: float, num_envs: int, vec: str = "subproc"
) -> dict[str, Any]:
    """Train sb3-contrib's ``RecurrentPPO`` for ``seconds``; steps/s over whole iterations."""
    require_sb3()
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack

    e, p = cfg.env, cfg.ppo
    if e.flicker > 0.0:
        raise BenchError("--compare sb3 does not support env.flicker > 0")
    env_cfg = {
        key: getattr(e, key)
        for key in (
            "id",
            "repeat_action_probability",
            "full_action_space",
            "frameskip",
            "noop_max",
            "life_loss",
            "clip_rewards",
            "max_episode_steps",
            "kwargs",
        )
    }
    fns: list[Callable[[], Any]] = [
        functools.partial(make_sb3_env, env_cfg, rank, cfg.run.seed) for rank in range(num_envs)
    ]
    venv: Any = SubprocVecEnv(fns) if vec == "subproc" else DummyVecEnv(fns)
    if e.stack_num > 1:
        venv = VecFrameStack(venv, e.stack_num, channels_order="last")

    class Stopwatch(BaseCallback):
        """Stops at the first rollout that starts ``seconds`` after training started."""

        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()
            self.steps0 = self.model.num_timesteps
            self.mark = (self.t0, self.steps0)
            self.iterations = -1
            self.meter = CpuMeter()
            self.others: float | None = None

        def _on_rollout_start(self) -> None:
            self.mark = (time.perf_counter(), self.model.num_timesteps)
            self.iterations += 1

        def _on_step(self) -> bool:
            if self.mark[0] - self.t0 < seconds:
                return True
            self.others = self.meter.stop()  # before the worker processes exit
            return False

    lr = p.learning_rate
    try:
        model = RecurrentPPO(
            "CnnLstmPolicy",
            venv,
            learning_rate=(lambda remaining: remaining * lr) if p.anneal_lr else lr,
            n_steps=p.num_steps,
            batch_size=num_envs * p.num_steps // p.num_minibatches,
            n_epochs=p.update_epochs,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            clip_range=p.clip_coef,
            clip_range_vf=p.clip_coef if p.clip_vloss else None,
            normalize_advantage=p.norm_adv,
            ent_coef=p.ent_coef,
            vf_coef=p.vf_coef,
            max_grad_norm=p.max_grad_norm,
            target_kl=p.target_kl,
            # one LSTM shared by actor and critic, as rlstm's agent (and sb3's faster setting)
            policy_kwargs={
                "lstm_hidden_size": cfg.agent.hidden_size,
                "n_lstm_layers": cfg.agent.num_layers,
                "shared_lstm": True,
                "enable_critic_lstm": False,
                "optimizer_kwargs": {"eps": p.adam_eps},
            },
            seed=cfg.run.seed,
            device=device,
            verbose=0,
        )
        watch = Stopwatch()
        model.learn(p.total_timesteps, callback=watch)
    finally:
        venv.close()
    t1, steps1 = watch.mark
    wall = t1 - watch.t0
    steps = steps1 - watch.steps0
    return {
        "steps": steps,
        "wall_time": wall,
        "sps": steps / wall if wall > 0 else 0.0,
        "iterations": watch.iterations,
        "vec_env": "SubprocVecEnv" if vec == "subproc" else "DummyVecEnv",
        "num_envs": num_envs,
        "others_cpu": watch.others,
    }


# -- the benchmark ----------------------------------------------------------------------------
def bench(
    env_id: str | None = None,
    num_envs: int = 16,
    seconds: float = 60.0,
    device: str = "auto",
    config: str | Path | None = None,
    compare: str | None = None,
    torch_threads: int = 1,
    env_threads: int | None = None,
    sb3_envs: int | None = None,
    sb3_vec: str = "subproc",
    overrides: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the three measurements; a dict for :func:`format_table` and ``--json``."""
    from rlstm.trainer import resolve_device

    if compare not in (None, "sb3"):
        raise BenchError(f"--compare {compare!r}: only sb3 is supported")
    if compare == "sb3":
        require_sb3()  # before anything runs
    log = log or (lambda line: print(f"rlstm bench: {line}", file=sys.stderr, flush=True))
    cfg = bench_config(
        config, env_id, num_envs, seconds, device, torch_threads, env_threads, overrides
    )
    dev = resolve_device(cfg.run.device)
    torch.set_num_threads(torch_threads)
    result: dict[str, Any] = {
        "env": cfg.env.id,
        "num_envs": num_envs,
        "seconds": seconds,
        "torch_threads": torch_threads,
        "env_threads": cfg.env.num_threads,
        "training": (
            f"env groups {cfg.env.num_groups}, CUDA graph {cfg.run.cuda_graph}, "
            f"bf16 CNN {cfg.agent.bf16}, {cfg.env.num_envs} envs x {cfg.ppo.num_steps} steps"
        ),
        "machine": machine_info(dev),
        "load_avg_start": _load_avg(),
    }

    log(f"raw env: {cfg.env.id} x {num_envs}, {cfg.env.num_threads} emulator thread(s)")
    meter = CpuMeter()
    raw = raw_env_sps(cfg, dev, seconds)
    result["raw_env"] = {"sps": raw, "wall_time": seconds, "others_cpu": meter.stop()}

    log(f"rlstm training for {seconds:g} s on {dev}")
    meter = CpuMeter()
    summary = rlstm_train(cfg)
    result["rlstm"] = {
        key: summary[key] for key in ("steps", "iterations", "wall_time", "sps", "perf")
    }
    result["rlstm"]["others_cpu"] = meter.stop()
    result["train_over_raw"] = summary["sps"] / raw if raw > 0 else math.nan

    if compare == "sb3":
        n = sb3_envs or num_envs
        log(f"sb3-contrib RecurrentPPO for {seconds:g} s, {n} envs ({sb3_vec})")
        torch.set_num_threads(torch_threads)
        sb3 = sb3_train(cfg, dev, seconds, n, sb3_vec)
        result["sb3"] = sb3
        result["sb3_over_raw"] = sb3["sps"] / raw if raw > 0 else math.nan
        result["speedup_vs_sb3"] = summary["sps"] / sb3["sps"] if sb3["sps"] > 0 else math.inf
    result["load_avg_end"] = _load_avg()
    return result


def _load_avg() -> float | None:
    """The 1-minute load average: other processes on the cores skew every number here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    raw = result["raw_env"]["sps"]
    lines = [
        f"machine: {m['cpu_count']} CPU cores ({m['cpu_model']}); torch device: {m['device']} "
        f"({m['device_name']}); torch {m['torch']}, ale-py {m['ale_py']}; "
        f"torch threads {result['torch_threads']}, emulator threads {result['env_threads']}; "
        f"1-min load average at start / end: {result.get('load_avg_start')} / "
        f"{result.get('load_avg_end')}",
        f"training settings: {result.get('training', '-')}",
        "",
        "| measured | env | envs | steps | seconds | steps/s | / raw env | others' CPU |",
        "|---|---|---|---|---|---|---|---|",
        f"| raw env (AtariEnv, random actions) | {result['env']} | {result['num_envs']} | "
        f"- | {result['raw_env']['wall_time']:.1f} | {raw:,.0f} | 1.00 | "
        f"{_share(result['raw_env'].get('others_cpu'))} |",
    ]
    r = result["rlstm"]
    lines.append(
        f"| rlstm training ({r['iterations']} iterations) | {result['env']} | "
        f"{result['num_envs']} | {r['steps']:,} | {r['wall_time']:.1f} | {r['sps']:,.0f} | "
        f"{result['train_over_raw']:.2f} | {_share(r.get('others_cpu'))} |"
    )
    if "sb3" in result:
        s = result["sb3"]
        lines.append(
            f"| sb3-contrib RecurrentPPO ({s['vec_env']}, {s['iterations']} iterations) | "
            f"{result['env']} | {s['num_envs']} | {s['steps']:,} | {s['wall_time']:.1f} | "
            f"{s['sps']:,.0f} | {result['sb3_over_raw']:.2f} | {_share(s.get('others_cpu'))} |"
        )
    lines.append("")
    lines.append(f"training / raw env: {result['train_over_raw']:.2f}")
    if "sb3" in result:
        lines.append(f"rlstm / sb3-contrib: {result['speedup_vs_sb3']:.2f}x")
    perf = r.get("perf") or {}
    if perf.get("iteration_time"):
        total = perf["iteration_time"]
        parts = ", ".join(
            f"{key.removesuffix('_time')} {perf[key] / total:.0%}"
            for key in ("env_time", "act_time", "update_time")
            if key in perf
        )
        lines.append(f"rlstm iteration time: {parts}")
    lines.append("others' CPU: share of all cores used by other processes during the measurement")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2))
