"""The training loop: collect -> advantages -> update -> log -> checkpoint.

The trainer sees a :class:`rlstm.vec.VecEnv` and a :class:`rlstm.ppo.Policy`; it knows no
game and no network. Everything it needs to continue a run bit for bit (weights, optimizer,
RNG streams, env state, recurrent state, counters) goes into the checkpoint. With
``ppo.overlap_update`` a save first finishes the pending update, which an uninterrupted run
would have interleaved with the next rollout: bit for bit there only across saves at
``run.checkpoint_every`` iterations, which the uninterrupted run makes too.

Under torchrun (:mod:`rlstm.distributed`) every rank runs this loop on its own envs (its
share of ``env.num_envs``) with its own seed stream; the update keeps the weights identical.
Rank 0 alone writes TensorBoard, ``config.yaml``, ``summary.json`` and the checkpoint, which
holds the global weights, optimizer and counters plus every rank's env, recurrent state and
RNG streams under ``"ranks"``. Episode statistics are gathered from all ranks.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType
from typing import Any, cast

import torch
from torch import Tensor, nn

from rlstm import checkpoint, distributed
from rlstm.acting import PolicyStep, sample_actions
from rlstm.buffer import RolloutBuffer, compute_gae
from rlstm.config import DEVICE_PATTERN, Config, ConfigError, to_yaml
from rlstm.inspection import log_rollout_diagnostics
from rlstm.logger import Logger
from rlstm.ppo import (
    LOSS_KEYS,
    GraphedMinibatchStep,
    finish,
    set_learning_rate,
    update_steps,
)
from rlstm.vec import StepResult, VecEnv

# env settings that change how many envs run and how, not what they are
SPEED_ONLY_ENV = ("num_envs", "num_threads", "num_groups")


class TrainingStopped(RuntimeError):
    """Training stopped early; ``exit_code`` and the message say why and how to resume."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_device(
    name: str, setting: str = "run.device", make_current: bool = True
) -> torch.device:
    """``auto`` is CUDA when present; under torchrun ``auto`` and ``cuda`` mean the rank's
    local GPU (``cuda:LOCAL_RANK``), while an explicit ``cuda:N`` is taken as given.
    ``setting`` names where the user gave ``name``, for the error. ``make_current`` makes
    an explicit ``cuda:N`` the current device (graphs, streams and events act on it); a
    library caller (``TrainedPolicy.load``) keeps its own."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device {name!r}: must be auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name!r} but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None and distributed.is_distributed():
        device = distributed.local_cuda_device()
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(f"{setting}={name!r} but this machine has {count} GPU(s)")
        if make_current:  # CUDA graphs, streams and events act on the current device
            torch.cuda.set_device(device)
    return device


def make_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create a fresh run directory; never reuse one (``name-2``, ``name-3``, ... on clashes)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"run.out_dir={str(out)!r} cannot be created: {exc.strerror}") from None
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()  # atomic: two runs never get the same directory
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise ValueError(
                f"run directory {str(path)!r} cannot be created: {exc.strerror}"
            ) from None
    raise ValueError(f"too many runs named {name!r} in {str(out)!r}")


class Trainer:
    def __init__(
        self,
        cfg: Config,
        env: VecEnv,
        agent: nn.Module,
        run_dir: Path,
        device: torch.device,
        reward_transform: Callable[[Tensor], Tensor] | None = None,
        resume_from: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.env = env
        self.agent: Any = cast(Any, agent.to(device))  # a Policy with an rlstm core
        self.run_dir = Path(run_dir)
        self.device = device
        self.reward_transform = reward_transform
        p = cfg.ppo
        self.world = distributed.world_size()
        self.is_main = distributed.rank() == 0
        self.seed = distributed.rank_seed(cfg.run.seed)  # envs and actions: a stream per rank
        self.params = [param for param in self.agent.parameters() if param.requires_grad]
        # fused: one kernel for the whole step on CUDA instead of several per parameter.
        # Small minibatches are bound by kernel launches: their steps are replayed from CUDA
        # graphs, which read the learning rate from device memory (capturable Adam).
        minibatch_steps = cfg.batch_size // p.num_minibatches
        graph_update = (
            device.type == "cuda"
            and cfg.run.cuda_graph
            and 0 < minibatch_steps <= cfg.run.cuda_graph_update
            and self.world == 1
        )
        self.optimizer = torch.optim.Adam(
            self.params,
            lr=torch.tensor(p.learning_rate, device=device) if graph_update else p.learning_rate,
            eps=p.adam_eps,
            fused=device.type == "cuda",
            capturable=graph_update,
        )
        self.graphed = (
            GraphedMinibatchStep(self.agent, self.params, self.optimizer, p)
            if graph_update
            else None
        )
        state_shape = (self.agent.core.state_slots, self.agent.core.hidden_size)
        self.buffer = RolloutBuffer(
            p.num_steps, env.num_envs, env.obs_shape, env.obs_dtype, state_shape, device
        )
        self.policy_step = PolicyStep(
            self.agent, capture=cfg.run.cuda_graph and device.type == "cuda"
        )
        self.action_gen = torch.Generator(device=device)
        self.action_gen.manual_seed(self.seed + 1)
        self.shuffle_gen = torch.Generator()
        self.shuffle_gen.manual_seed(cfg.run.seed + 2)  # the same chunk order on every rank
        # ppo.overlap_update: the update still running and the results of finished ones
        self.pending_update: Generator[None, None, dict[str, float]] | None = None
        self.pending_step = 0  # the global step of the rollout the pending update learns from
        self.finished_updates: list[tuple[int, dict[str, float]]] = []  # (that step, result)
        self.interleaved = (0, 0.0)
        self.iteration = 0
        self.global_step = 0
        self.best_mean_return = -math.inf
        self.nonfinite_streak = 0
        self.elapsed = 0.0
        self._stop_signal: str | None = None
        self._signal_time = 0.0  # when the first stop signal came (time.monotonic)
        # why a resumed run's episodes start afresh (its envs could not be restored), if so
        self.fresh_episodes: str | None = None
        # seconds by phase over the whole run (other: advantages, episode bookkeeping)
        self.time_split = dict.fromkeys(("act", "env", "update", "other"), 0.0)
        if resume_from is None:
            self.next_obs = env.reset(seed=self.seed)
            self.next_state = self.agent.initial_state(env.num_envs, device)
            self.next_starts = torch.ones(env.num_envs, dtype=torch.bool, device=device)
            self.recent_returns: list[float] = []
        else:
            self._load(resume_from)
        distributed.broadcast_module(self.agent)  # every rank starts from rank 0's weights

    # -- checkpoints ---------------------------------------------------------------------
    def _local_state(self) -> dict[str, Any]:
        """What differs between ranks: env, recurrent state, RNG streams."""
        data: dict[str, Any] = {
            "device": self.device.type,
            "next_obs": self.next_obs,
            "next_state": self.next_state,
            "next_starts": self.next_starts,
            "rng": {
                "torch": torch.get_rng_state(),
                "action": self.action_gen.get_state(),
                "shuffle": self.shuffle_gen.get_state(),
            },
        }
        try:
            data["env"] = self.env.state_dict()
        except NotImplementedError:
            data["env"] = None
        return data

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint; under torchrun a collective (every rank must call it), and only
        rank 0's result holds ``"ranks"``, every rank's local state in rank order."""
        local = self._local_state()
        data: dict[str, Any] = {
            "format": 1,
            "config": self.cfg.to_dict(),
            "agent": self.agent.state_dict(),
            "optimizer": self._optimizer_state(),
            "iteration": self.iteration,
            "global_step": self.global_step,
            "elapsed": self.elapsed,
            "time_split": dict(self.time_split),
            "best_mean_return": self.best_mean_return,
            "recent_returns": list(self.recent_returns),
            **local,  # a single process's own; rank 0's under torchrun (as `rlstm eval` reads)
            "obs_shape": list(self.env.obs_shape),
            "num_actions": self.env.num_actions,
        }
        if self.world > 1:
            data["world_size"] = self.world
            data["ranks"] = distributed.gather_object(distributed.to_cpu(local))
        return data

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state with plain-number learning rates, so that a checkpoint of a
        CUDA-graph run loads anywhere."""
        state = self.optimizer.state_dict()  # param_groups are fresh dicts
        for group in state["param_groups"]:
            group["lr"] = float(group["lr"])
        return state

    def _load(self, data: dict[str, Any]) -> None:
        self.agent.load_state_dict(data["agent"])
        # The saved groups carry the saving run's kernel choice; this run's applies (a
        # CUDA-graph step needs capturable Adam, found_inf needs the fused one). Set before
        # loading: torch places each parameter's step count by the loaded groups' flags.
        saved = data["optimizer"]
        groups = [
            {
                **group,
                "fused": self.optimizer.defaults["fused"],
                "capturable": self.optimizer.defaults["capturable"],
            }
            for group in saved["param_groups"]
        ]
        self.optimizer.load_state_dict({**saved, "param_groups": groups})
        for group in self.optimizer.param_groups:  # a resume may change ppo.adam_eps
            group["eps"] = self.cfg.ppo.adam_eps
        if self.graphed is not None:  # the captured step reads the rate from device memory
            for group in self.optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.iteration = int(data["iteration"])
        self.global_step = int(data["global_step"])
        self.elapsed = float(data["elapsed"])
        self.best_mean_return = float(data["best_mean_return"])
        self.recent_returns = [float(x) for x in data["recent_returns"]]
        self.time_split.update(data.get("time_split", {}))
        self.shuffle_gen.set_state(data["rng"]["shuffle"])
        # This rank's env, state and RNG streams; none when they cannot continue here (the
        # weights still apply; episodes start afresh): another number of ranks, another
        # device, another env count.
        local: dict[str, Any] | None = None
        saved_world = int(data.get("world_size", 1))
        if saved_world == self.world:
            local = data["ranks"][distributed.rank()] if self.world > 1 else data
        else:
            self.fresh_episodes = (
                f"checkpoint was written by {saved_world} rank(s), this run has {self.world}"
            )
        changed = self._changed_env_settings(data["config"].get("env", {}))
        if local is not None and changed:
            local = None  # the saved games belong to another task
            self.fresh_episodes = f"{', '.join(changed)} changed since the checkpoint"
        elif local is not None and not self._same_device(local):
            local = None  # env and action streams live on the device: they cannot move
            self.fresh_episodes = "the checkpoint's envs were saved on another device"
        elif local is not None and local["next_obs"].shape[0] != self.env.num_envs:
            saved_envs = local["next_obs"].shape[0]
            local = None
            self.fresh_episodes = (
                f"the checkpoint has {saved_envs} envs, this run {self.env.num_envs}"
            )
        if local is not None:
            torch.set_rng_state(local["rng"]["torch"])
            self.action_gen.set_state(local["rng"]["action"])
        if local is not None and local["env"] is not None:
            self.env.load_state_dict(local["env"])
            self.next_obs = local["next_obs"].to(self.device)
            self.next_starts = local["next_starts"].to(self.device)
            self.next_state = local["next_state"].to(self.device)
        else:  # emulators that cannot save their state start fresh episodes
            if local is not None:  # said only here: the other reasons were named above
                self.fresh_episodes = f"{type(self.env).__name__} cannot save its envs' state"
            self.next_obs = self.env.reset(seed=self.seed + self.iteration)
            self.next_starts = torch.ones(self.env.num_envs, dtype=torch.bool, device=self.device)
            self.next_state = self.agent.initial_state(self.env.num_envs, self.device)

    def _changed_env_settings(self, saved: dict[str, Any]) -> list[str]:
        """The env settings (those in both configs) that differ from the checkpoint's, but for
        how many envs there are and how they are run."""
        ours = self.cfg.env.__dict__
        return [
            f"env.{key}"
            for key, value in saved.items()
            if key in ours and key not in SPEED_ONLY_ENV and ours[key] != value
        ]

    def _same_device(self, local: dict[str, Any]) -> bool:
        """Whether ``local`` was saved on this run's kind of device (cpu / cuda)."""
        saved = local.get("device")
        if saved is None:  # written before the device was recorded: a generator's state
            # differs in size between devices (CPU Mersenne Twister vs CUDA Philox)
            return local["rng"]["action"].numel() == self.action_gen.get_state().numel()
        return bool(saved == self.device.type)

    def save(self) -> Path:
        """Write the checkpoint (rank 0); under torchrun every rank must call it."""
        data = self.state_dict()
        path = self.run_dir / checkpoint.LATEST
        if self.is_main:
            checkpoint.save_atomic(data, path)
        return path

    # -- signals -------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        first = self._stop_signal
        if first is not None and signum == signal.SIGINT:
            # Under torchrun a SIGINT sent to every process arrives twice (torchrun passes it
            # on): only a second one a moment later is a second Ctrl-C.
            if self.world == 1 or now - self._signal_time > 1.0:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            return
        if first == "SIGINT" and signum == signal.SIGTERM and self.world > 1:
            raise KeyboardInterrupt  # torchrun passes a second Ctrl-C on as SIGTERM
        if first is not None:
            return  # the stop is under way
        self._stop_signal = signal.Signals(signum).name
        self._signal_time = now
        if self.is_main:  # an Atari iteration on a CPU can take minutes: say it was heard
            tty = sys.stderr.isatty()
            print(
                f"{chr(10) if tty else ''}rlstm: {self._stop_signal}: stopping after this "
                "iteration with a checkpoint (Ctrl-C again stops at once, without one)",
                file=sys.stderr,
            )

    # -- the loop ------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> tuple[Tensor, Tensor, Tensor, float, float]:
        """Fill the buffer with ``num_steps`` steps; return the finished episodes' returns,
        lengths and done mask, each ``(T, B)``, and the seconds spent acting and in envs.

        An env with ``groups`` (``env.num_groups > 1`` on Atari) is stepped group by group
        with ``send`` / ``recv``: while the policy acts for group g, the emulators of the
        other groups run. Per group and step the policy sees exactly what it would see
        stepping the groups one after another, so the overlap changes timing only.

        With ``ppo.overlap_update`` the previous rollout's update (``self.pending_update``)
        advances one minibatch step at a time at evenly spaced env steps, right after a
        group's actions are sent, so its GPU work runs while the emulators do; a finished
        update's step and result go to ``self.finished_updates``, and ``self.interleaved`` holds
        the steps run here and their seconds."""
        T, B = self.cfg.ppo.num_steps, self.env.num_envs
        groups = list(getattr(self.env, "groups", None) or [self.env])
        G = len(groups)
        overlap = G > 1
        p = self.cfg.ppo
        stride = max(1, (T * G) // (p.update_epochs * p.num_minibatches))
        done_steps, update_time = 0, 0.0

        def advance(group_step: int) -> None:
            nonlocal done_steps, update_time
            if self.pending_update is None or group_step % stride:
                return
            t0 = time.perf_counter()
            try:
                with torch.enable_grad():  # collect runs under no_grad
                    next(self.pending_update)
                done_steps += 1
            except StopIteration as stop:
                self.finished_updates.append((self.pending_step, stop.value))
                self.pending_update = None
            update_time += time.perf_counter() - t0

        size = B // G
        cols = [slice(g * size, (g + 1) * size) for g in range(G)]
        obs = [self.next_obs[c] for c in cols]
        state = [self.next_state[:, c] for c in cols]
        starts = [self.next_starts[c] for c in cols]
        episodes = (
            torch.zeros(T, B, device=self.device),
            torch.zeros(T, B, dtype=torch.long, device=self.device),
            torch.zeros(T, B, dtype=torch.bool, device=self.device),
        )
        act_time = env_time = 0.0
        for t in range(T):
            for g in range(G):
                if overlap and t > 0:
                    t0 = time.perf_counter()
                    result = groups[g].recv()  # the step sent for group g at t - 1
                    env_time += time.perf_counter() - t0
                    obs[g], starts[g] = self._record(t - 1, cols[g], result, episodes)
                t0 = time.perf_counter()
                action, state[g] = self._act(t, cols[g], obs[g], state[g], starts[g])
                if overlap:
                    groups[g].send(action)
                    act_time += time.perf_counter() - t0
                    advance(t * G + g)
                    continue
                t1 = time.perf_counter()
                result = self.env.step(action)
                env_time += time.perf_counter() - t1
                act_time += t1 - t0
                obs[g], starts[g] = self._record(t, cols[g], result, episodes)
                advance(t)
        if overlap:
            for g in range(G):
                t0 = time.perf_counter()
                result = groups[g].recv()
                env_time += time.perf_counter() - t0
                obs[g], starts[g] = self._record(T - 1, cols[g], result, episodes)
        self.next_obs = obs[0] if G == 1 else torch.cat(obs)
        self.next_state = state[0] if G == 1 else torch.cat(state, dim=1)
        self.next_starts = starts[0] if G == 1 else torch.cat(starts)
        self.buffer.next_state.copy_(self.next_state)
        self.interleaved = (done_steps, update_time)
        return (*episodes, act_time, env_time)

    def _act(
        self, t: int, cols: slice, obs: Tensor, state: Tensor, starts: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Act for the envs ``cols`` at step ``t``, recording what enters and leaves the policy."""
        buf = self.buffer
        buf.obs[t, cols] = obs
        buf.starts[t, cols] = starts
        buf.states[t, :, cols] = state
        logits, value, state = self.policy_step(obs, state, starts)
        action, log_prob = sample_actions(logits, self.action_gen)
        buf.actions[t, cols] = action
        buf.logprobs[t, cols] = log_prob
        buf.values[t, cols] = value
        return action, state

    def _record(
        self, t: int, cols: slice, result: StepResult, episodes: tuple[Tensor, Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Store the env's answer to step ``t`` for envs ``cols``; return (next obs, starts)."""
        buf = self.buffer
        obs, reward, terminated, truncated, info = result
        if self.reward_transform is not None:
            reward = self.reward_transform(reward)
        buf.rewards[t, cols] = reward
        buf.terminated[t, cols] = terminated
        buf.truncated[t, cols] = truncated
        buf.final_obs[t, cols] = info["final_obs"]
        starts = terminated | truncated
        ep_returns, ep_lengths, ep_done = episodes
        ep_returns[t, cols] = info["episode_return"]
        ep_lengths[t, cols] = info["episode_length"]
        # Atari with life_loss=terminal ends a memory episode per life but reports the
        # game score only at the real game over.
        ep_done[t, cols] = info.get("episode_done", starts)
        return obs, starts

    @torch.no_grad()
    def advantages(self) -> None:
        buf, p = self.buffer, self.cfg.ppo
        _, next_value, _ = self.agent.step(self.next_obs, self.next_state, self.next_starts)
        final_values = torch.zeros_like(buf.values)
        t_idx, b_idx = buf.truncated.nonzero(as_tuple=True)
        if t_idx.numel():  # value of the final obs under the carried state (no reset)
            no_start = torch.zeros_like(t_idx, dtype=torch.bool)
            _, v, _ = self.agent.step(
                buf.final_obs[t_idx, b_idx], buf.state_after(t_idx, b_idx), no_start
            )
            final_values[t_idx, b_idx] = v
        buf.advantages, buf.returns = compute_gae(
            buf.rewards,
            buf.values,
            buf.terminated,
            buf.truncated,
            final_values,
            next_value,
            p.gamma,
            p.gae_lambda,
        )

    def train(self, logger: Logger | None = None) -> dict[str, Any]:
        cfg, p = self.cfg, self.cfg.ppo
        num_iterations = self.num_iterations
        if self.iteration >= num_iterations:  # a resumed run that has nothing left to do
            summary_path = self.run_dir / "summary.json"
            if self.is_main and not summary_path.is_file():  # it stopped before writing one
                summary_path.write_text(json.dumps(self._summary(None), indent=2))
            raise TrainingStopped(
                f"the run in {self.run_dir} already ran its {self.iteration} iterations "
                f"({self.global_step} steps); to train on, resume with a larger "
                "ppo.total_timesteps",
                exit_code=0,
            )
        if logger is None:
            logger = Logger(
                self.run_dir,
                self.global_step + (num_iterations - self.iteration) * cfg.batch_size,
                cfg.run.progress,
                purge_step=self.global_step + 1 if self.iteration else None,
                active=self.is_main,
            )
        logger.start_step = self.global_step
        logger.recent_returns.extend(self.recent_returns)
        if self.is_main:  # a resume's overrides (a longer run, ...) are part of it
            (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        if self.iteration == 0 and self.is_main:
            logger.text("config", "```\n" + to_yaml(cfg) + "\n```")
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: no signal handling
                pass
        launch_start = time.perf_counter()  # run.time_limit counts from here
        wall_start = launch_start - self.elapsed
        # (steps, clock) once this process's first iteration is over: it also pays for CUDA
        # graph capture, cuDNN autotuning and allocator warm-up
        iterations_here, after_first = 0, (0, 0.0)
        try:
            while self.iteration < num_iterations:
                it_start = time.perf_counter()
                if iterations_here == 1:
                    after_first = (self.global_step, it_start)
                ep_returns, ep_lengths, ep_done, act_time, env_time = self.collect()
                update_time = self.interleaved[1]
                step_before = self.global_step
                self.global_step += cfg.batch_size
                update_time += self._finish_update()  # the previous rollout's (overlap)
                # the rate of this rollout's update, wherever its steps run (and a resume's
                # ppo.learning_rate, which the loaded optimizer state would otherwise override)
                frac = 1.0 - self.iteration / num_iterations if p.anneal_lr else 1.0
                set_learning_rate(self.optimizer, frac * p.learning_rate)
                self.advantages()
                self.pending_step = self.global_step
                self.pending_update = update_steps(
                    self.agent,
                    self.params,
                    self.optimizer,
                    self.buffer,
                    p,
                    self.shuffle_gen,
                    self.graphed,
                )
                if not p.overlap_update:
                    update_time += self._finish_update()
                self.iteration += 1
                every = cfg.run.checkpoint_every
                out_of_time = 0 < cfg.run.time_limit <= time.perf_counter() - launch_start
                stop_signal = self._stop_signal
                if self.world > 1:
                    out_of_time, stop_signal = self._agree(out_of_time, stop_signal)
                save = (
                    bool(every and self.iteration % every == 0)
                    or self.iteration == num_iterations
                    or out_of_time
                    or stop_signal is not None
                )
                if save:  # a checkpoint never holds a half-done update
                    update_time += self._finish_update()
                self._log_episodes(logger, ep_returns, ep_lengths, ep_done, step_before)
                finished, self.finished_updates = self.finished_updates, []
                for _, stats in finished:
                    self._check_finite(stats)
                now = time.perf_counter()
                self.elapsed = now - wall_start
                split = self.time_split
                split["act"] += act_time
                split["env"] += env_time
                split["update"] += update_time
                split["other"] += now - it_start - act_time - env_time - update_time
                iterations_here += 1
                # Each update's losses at the step of the rollout it learnt from: with
                # the overlap none in an overlapped run's first iteration, and two in an
                # iteration that saves (the previous rollout's and its own).
                for step, stats in finished:
                    losses = {
                        f"losses/{key}": stats[key]
                        for key in (*LOSS_KEYS, "explained_variance", "skipped_updates")
                    }
                    if step == self.global_step:
                        for key, value in losses.items():
                            logger.record(key, value)
                    else:
                        logger.write(losses, step)
                logger.record("charts/learning_rate", float(self.optimizer.param_groups[0]["lr"]))
                logger.record("charts/SPS", cfg.batch_size / max(now - it_start, 1e-9))
                logger.record("perf/act_time", act_time)
                logger.record("perf/env_time", env_time)
                logger.record("perf/update_time", update_time)
                logger.record("perf/iteration_time", now - it_start)
                logger.dump(self.global_step, self.iteration, num_iterations)
                if (
                    logger.writer is not None  # rank 0 only
                    and cfg.run.lstm_log_every
                    and self.iteration % cfg.run.lstm_log_every == 0
                ):
                    log_rollout_diagnostics(
                        self.agent, self.buffer, logger.writer, self.global_step
                    )
                if save:
                    path = self.save()
                if out_of_time:
                    break
                if stop_signal is not None and self.iteration < num_iterations:
                    raise TrainingStopped(
                        f"stopped by {stop_signal} after iteration {self.iteration}; "
                        f"checkpoint saved to {path}; resume with: {self.resume_command}",
                        exit_code=130 if stop_signal == "SIGINT" else 143,
                    )
        finally:
            loop_end = time.perf_counter()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            logger.close()
        after_first_sps = (
            (self.global_step - after_first[0]) / (loop_end - after_first[1])
            if iterations_here > 1
            else None
        )
        summary = self._summary(after_first_sps)
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    @property
    def resume_command(self) -> str:
        """The command line that continues this run."""
        launch = "torchrun [same options] -m rlstm" if self.world > 1 else "rlstm"
        return f"{launch} train --resume {self.run_dir}"

    @property
    def num_iterations(self) -> int:
        """The iteration the run ends after: as many more as ``ppo.total_timesteps`` has
        room for (``cfg.num_iterations`` unless a resume changed the steps per iteration)."""
        left = max(0, self.cfg.ppo.total_timesteps - self.global_step)
        return self.iteration + left // self.cfg.batch_size

    def _summary(self, sps_after_first_iteration: float | None) -> dict[str, Any]:
        """``summary.json``: the whole run's numbers (over every launch but the last one's
        steps/s after its first iteration); ``finished`` is false after a time-limit stop."""
        return {
            "steps": self.global_step,
            "iterations": self.iteration,
            "finished": self.iteration >= self.num_iterations,
            "wall_time": self.elapsed,
            "sps": self.global_step / self.elapsed if self.elapsed > 0 else 0.0,
            "sps_after_first_iteration": sps_after_first_iteration,
            "mean_return_last_100": _mean(self.recent_returns),
            "best_running_mean_return": self.best_mean_return
            if math.isfinite(self.best_mean_return)
            else None,
            "episodes_in_mean": len(self.recent_returns),
            "time_split_seconds": {key: round(v, 3) for key, v in self.time_split.items()},
        }

    def _agree(self, out_of_time: bool, stop_signal: str | None) -> tuple[bool, str | None]:
        """Ranks see the clock and signals at slightly different moments: take the rank-wide
        decision (any rank out of time or signalled), so all checkpoint and stop together."""
        signum = signal.Signals[stop_signal].value if stop_signal is not None else 0
        flags = distributed.all_reduce_max(torch.tensor([float(out_of_time), float(signum)]))
        signum = int(flags[1])
        return bool(flags[0]), signal.Signals(signum).name if signum else None

    def _log_episodes(
        self, logger: Logger, returns: Tensor, lengths: Tensor, done: Tensor, step0: int
    ) -> None:
        """Log finished episodes (a few host transfers per iteration) and the running mean.

        Thousands of envs finish tens of thousands of episodes per iteration, and one
        TensorBoard scalar costs ~50-100 us: above ``run.log_episodes`` an even subsample of
        them goes to ``charts/episodic_*``. The running mean of the last 100 returns (and its
        best, the MMER) always counts every episode.

        Under torchrun every rank receives every rank's charted and last 100 episodes (one
        object all-gather; the ranks split ``run.log_episodes`` between them), so the charts,
        the running mean and the checkpoint's returns are global and alike."""
        t_idx, b_idx = done.nonzero(as_tuple=True)  # sorted by step
        count = t_idx.numel()
        cap = self.cfg.run.log_episodes
        charted = torch.arange(count, device=t_idx.device)
        if cap:
            share = cap // self.world + int(distributed.rank() < cap % self.world)
            if count > share:  # even spacing from the first to the last episode
                spread = torch.arange(share, device=t_idx.device) * (count - 1)
                charted = spread // max(share - 1, 1)
        recent = torch.arange(max(0, count - 100), count, device=t_idx.device)

        def rows(i: Tensor) -> list[tuple[int, float, int]]:
            t, b = t_idx[i], b_idx[i]
            steps = (step0 + (t + 1) * self.env.num_envs * self.world).tolist()
            return list(zip(steps, returns[t, b].tolist(), lengths[t, b].tolist()))

        chart, last = rows(charted), rows(recent)
        if self.world > 1:  # rank order within a step: the order of one process's env indices
            gathered = distributed.all_gather_object((chart, last))
            chart = sorted((e for part in gathered for e in part[0]), key=lambda e: e[0])
            last = sorted((e for part in gathered for e in part[1]), key=lambda e: e[0])
        for step, ret, length in chart:
            logger.episode(step, ret, length)
        if not last:
            return
        self.recent_returns = (self.recent_returns + [ret for _, ret, _ in last])[-100:]
        logger.recent_returns.extend(ret for _, ret, _ in last)
        if len(self.recent_returns) >= 10:  # a running mean over too few episodes is noise
            self.best_mean_return = max(
                self.best_mean_return, sum(self.recent_returns) / len(self.recent_returns)
            )

    def _finish_update(self) -> float:
        """Run the pending update's remaining minibatch steps; return the seconds spent."""
        if self.pending_update is None:
            return 0.0
        t0 = time.perf_counter()
        self.finished_updates.append((self.pending_step, finish(self.pending_update)))
        self.pending_update = None
        return time.perf_counter() - t0

    def _check_finite(self, stats: dict[str, float]) -> None:
        """Count minibatch steps skipped in a row, across updates: a run that began in an
        earlier update goes on through this one's leading skips, and one inside this
        update is its longest."""
        if not stats["applied_updates"]:
            self.nonfinite_streak += int(stats["skipped_updates"])
            longest = self.nonfinite_streak
        else:
            longest = max(
                self.nonfinite_streak + int(stats["skipped_leading"]),
                int(stats["skipped_longest"]),
            )
            self.nonfinite_streak = int(stats["skipped_trailing"])
        if longest >= self.cfg.ppo.max_nonfinite_updates:
            raise TrainingStopped(
                f"{longest} consecutive updates had a NaN/Inf loss or gradient and "
                f"were skipped (ppo.max_nonfinite_updates={self.cfg.ppo.max_nonfinite_updates}); "
                + (
                    f"the last good checkpoint in {self.run_dir} is intact"
                    if (self.run_dir / checkpoint.LATEST).is_file()
                    else "no checkpoint had been written yet"
                ),
                exit_code=3,
            )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
