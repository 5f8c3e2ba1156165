"""Atari behind :mod:`rlstm.vec`: ``ale_py.vector_env.AtariVectorEnv`` with same-step autoreset.

The emulators, frameskip with a max-pool over the last two frames, 84x84 grayscale resize,
no-op starts, fire reset and sticky actions all run in ale-py's C++ threads. Every option is
passed explicitly, because ale-py's defaults differ from the v5 protocol (it clips rewards and
turns sticky actions off when built directly; shared ATARI.md). Observations stay uint8 from
the emulator to the encoder: ``(B, 84, 84)`` with ``stack_num=1`` (the default: the LSTM, not a
frame stack, has to infer motion) or ``(B, stack_num, 84, 84)``. On CUDA they go through
pinned, double-buffered host memory with ``non_blocking`` copies.

Ids: ``ALE/Pong-v5`` and ``PongNoFrameskip-v4`` both name the game ``pong``. The id also sets
the default sticky-action probability as gymnasium registers it (0.25 for v5, 0 for
NoFrameskip-v4); every other setting comes from ``EnvConfig``, so a config states its
protocol in full:

- Machado et al. 2018 (v5): ``repeat_action_probability=0.25``, ``life_loss=none``.
- DQN Nature / CleanRL (NoFrameskip-v4): ``repeat_action_probability=0``,
  ``life_loss=terminal``, sign-clipped training rewards.

Rewards are the raw game rewards (ale-py's ``reward_clipping`` is off): the trainer clips them
for training (``rlstm.cli.reward_transform``), so ``info["episode_return"]`` is the game score.

**Life loss.** ``life_loss="terminal"`` follows DQN / CleanRL: a lost life is reported as
``terminated=True`` while the game goes on (ale-py's ``life_loss_info=True``; never
``episodic_life=True``, which restarts the whole game, so the agent would only ever play its
first life). The trainer's ``starts = terminated | truncated`` then resets the LSTM state and
cuts the value bootstrap at every life loss, which is how CleanRL's LSTM Atari results were
obtained. Scores stay game scores: the return and length keep accumulating across lives and
are final only when the game itself ends. One difference from CleanRL remains: ale-py's fire
reset presses FIRE when a game starts, not after a lost life, where CleanRL's
``FireResetEnv`` (reached through ``EpisodicLifeEnv``'s reset) presses it for the agent. In
games that wait for FIRE after a death (Breakout) the agent presses it itself, as under the
v5 protocol; until it learns to, the screen stands still (up to the step cap).

Since the score spans lives, ``info`` carries two extra masks:

- ``info["episode_done"]``: ``(B,)`` bool, the game ended (game over or time limit). This is
  the mask to log ``episode_return`` / ``episode_length`` with; a consumer that logs where
  ``terminated | truncated`` would log per-life partial scores. With ``life_loss="none"`` it
  equals ``terminated | truncated``.
- ``info["game_over"]``: ``(B,)`` bool, the game ended by itself (``episode_done`` and not
  ``truncated``).

Where a life was lost but the game continues, ``obs`` is simply the next frame and
``info["final_obs"]`` is that same frame (ale-py's own ``final_obs`` is only written when the
game restarts, and is stale elsewhere). ``info["episode_return"]`` and
``info["episode_length"]`` always hold the running score and length of the current game;
they are the finished game's only where ``episode_done``.

A game restart is detected without trusting ``lives`` (games can award extra lives, and
Pong has none): within one game ``frame_number - episode_frame_number`` is constant, and
every restart raises it by at least the finished game's frame count.

**Flicker** (Flickering Atari, Hausknecht & Stone 2015): with ``flicker=p`` each frame the
agent sees is blanked (all zeros) with probability ``p``, drawn on the device from a
``torch.Generator`` seeded from the env seed. A frame keeps its fate everywhere it appears:
``final_obs`` and ``obs`` share it where the game continues, and with ``stack_num > 1`` a frame
stays blanked (or not) as it moves through the stack.

ale-py details that show through (0.12.1): at a time-limit cut or a game over it leaves the
frameskip loop before grabbing the step's last frame, so that ``final_obs`` max-pools the
step's third frame with the previous step's last one; a new game's frame stack is padded
with zero frames. Threads: on a small machine keep ``num_threads`` + torch's threads within
the core count; with both at 2 on 2 cores, tiny torch ops after a step slowed ~50x.

Emulator states are not serialised (ale-py's vector env has no clone / restore), so
``state_dict()`` raises and a resumed run starts fresh games.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import time
import warnings
from typing import Any

import numpy as np
import torch
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv
from torch import Tensor

from rlstm.config import sticky_actions_of
from rlstm.vec import EpisodeStats, StepResult, VecEnv

LIFE_LOSS = ("none", "terminal")
FRAME_SIZE = 84


def num_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


INT_MAX = 2**31 - 1

# ROMs without a single-player mode: ale-py registers no gymnasium id for them, and its
# emulator exits the process (no exception) when asked to load one.
MULTIPLAYER_ONLY = frozenset({"combat", "joust", "maze_craze", "warlords"})


def _id_name(rom: str) -> str:
    return rom.title().replace("_", "")


@functools.lru_cache(maxsize=1)
def games() -> dict[str, str]:
    """Every single-player ROM ale-py ships, as PascalCase id name -> ROM id
    (``"MsPacman" -> "ms_pacman"``).

    The names are built exactly as ale-py registers its gymnasium ids.
    """
    roms_ = roms.get_all_rom_ids()
    return {_id_name(rom): rom for rom in roms_ if rom not in MULTIPLAYER_ONLY}


_ID_PATTERNS = (re.compile(r"ALE/([A-Za-z0-9]+)-v5"), re.compile(r"([A-Za-z0-9]+)NoFrameskip-v4"))


def game_of(env_id: str) -> str:
    """The ROM id ale-py's vector env wants: ``ALE/Pong-v5``, ``PongNoFrameskip-v4`` -> ``pong``."""
    for pattern in _ID_PATTERNS:
        match = pattern.fullmatch(env_id)
        if match:
            name = match.group(1)
            break
    else:
        hint = atari_id_hint(env_id) or (
            "expected ALE/<Game>-v5 or <Game>NoFrameskip-v4 (e.g. ALE/Pong-v5, "
            "BreakoutNoFrameskip-v4)"
        )
        raise ValueError(f"env.id={env_id!r} is not an Atari id; {hint}")
    known = games()
    if name in {_id_name(rom) for rom in MULTIPLAYER_ONLY}:
        raise ValueError(
            f"env.id={env_id!r}: {name} has no single-player mode in ale-py (it registers no "
            "gymnasium id for it either)"
        )
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        examples = ", ".join(
            ["Breakout", "BeamRider", "MsPacman", "Pong", "Seaquest", "SpaceInvaders"]
        )
        raise ValueError(
            f"env.id={env_id!r}: unknown Atari game {name!r}; {hint}known games include "
            f"{examples} ({len(known)} in all)"
        )
    return known[name]


_OTHER_ATARI_ID = re.compile(r"(?:ALE/)?([A-Za-z0-9]+?)(-ram)?(?:Deterministic|NoFrameskip)?-v\d+")


def atari_id_hint(env_id: str) -> str:
    """For an Atari id of a form rlstm does not take (``Pong-v4``, ``ALE/Pong-ram-v5``, ...):
    the forms it takes for that game; ``""`` for anything else."""
    match = _OTHER_ATARI_ID.fullmatch(env_id)
    if match is None or match.group(1) not in games():
        return ""
    name = match.group(1)
    ram = "RAM observations are not supported (the agent sees frames); " if match.group(2) else ""
    return (
        f"{ram}rlstm's Atari backend takes ALE/{name}-v5 (v5 protocol, sticky actions) or "
        f"{name}NoFrameskip-v4 (DQN / CleanRL protocol)"
    )


def rom_path(env_id: str, game: str) -> str:
    """Path of ``game``'s ROM, with a clear error when it is missing or corrupt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ale-py warns and returns None for unknown ROMs
            path = roms.get_rom_path(game)
    except OSError as exc:  # ROM directory or file missing, or a hash mismatch
        raise ValueError(f"env.id={env_id!r}: cannot load the ROM {game!r}: {exc}") from None
    if path is None:
        raise ValueError(f"env.id={env_id!r}: ale-py has no ROM {game!r}")
    return str(path)


def _emulator_seeds(seed: int, num_envs: int) -> tuple[np.ndarray, int]:
    """Independent per-env emulator seeds in [1, 2**31 - 1] and a flicker-generator seed.

    Consecutive seeds (ale-py's scheme for an int seed) would make env 1 of seed s replay
    env 0 of seed s + 1; a SeedSequence keeps runs with nearby seeds independent. ale-py
    ignores seeds <= 0, hence the offset.
    """
    state = np.random.SeedSequence(seed).generate_state(num_envs + 2, dtype=np.uint64)
    emulator = (state[:num_envs] % np.uint64(2**31 - 1)).astype(np.int64) + 1
    generator = int(state[num_envs] >> np.uint64(1))
    return emulator, generator


class _PinnedStaging:
    """Double-buffered pinned host memory for non-blocking host -> CUDA copies.

    A buffer is refilled only after the copy that last read it has finished (its event), so
    the CPU never overwrites memory a DMA is still reading; with two buffers that wait is
    almost always already over. The host-side copy is numpy's single-threaded ``copyto``: a
    torch ``copy_`` of this size runs an OpenMP region whose threads fight ale-py's workers
    for the cores.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.device = device
        self.buffers = [torch.empty(shape, dtype=dtype, pin_memory=True) for _ in range(2)]
        self.arrays = [buf.numpy() for buf in self.buffers]
        self.events = [torch.cuda.Event(), torch.cuda.Event()]
        self.used = [False, False]
        self.index = 0

    def to_device(self, array: np.ndarray) -> Tensor:
        i = self.index
        self.index ^= 1
        if self.used[i]:
            self.events[i].synchronize()
        np.copyto(self.arrays[i], array.reshape(self.arrays[i].shape), casting="no")
        out = self.buffers[i].to(self.device, non_blocking=True)
        self.events[i].record()
        self.used[i] = True
        return out


class AtariEnv(VecEnv):
    """``B`` Atari games stepped by ale-py's C++ vector env; see the module docstring.

    ``obs``: uint8 ``(B, 84, 84)`` (``stack_num=1``) or ``(B, stack_num, 84, 84)`` on ``device``;
    ``reward``: float32 raw game reward; ``info``: ``final_obs``, ``episode_return`` (game
    score), ``episode_length`` (agent steps), ``episode_done``, ``game_over``, ``lives``.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        *,
        repeat_action_probability: float | None = None,
        full_action_space: bool = False,
        frameskip: int = 4,
        noop_max: int = 30,
        fire_reset: bool = True,
        life_loss: str = "none",
        flicker: float = 0.0,
        stack_num: int = 1,
        max_episode_steps: int = 27_000,
        num_threads: int = 0,
    ) -> None:
        for name, value, low in (
            ("num_envs", num_envs, 1),
            ("frameskip", frameskip, 1),
            ("stack_num", stack_num, 1),
            ("max_episode_steps", max_episode_steps, 1),
            ("noop_max", noop_max, 0),
            ("num_threads", num_threads, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        if not isinstance(fire_reset, bool):
            raise ValueError(f"fire_reset={fire_reset!r} must be true or false")
        if max_episode_steps * frameskip > INT_MAX:  # ale-py counts frames in a C int
            raise ValueError(
                f"max_episode_steps={max_episode_steps} x frameskip {frameskip} passes "
                f"ale-py's frame limit {INT_MAX}"
            )
        if noop_max > INT_MAX:
            raise ValueError(f"noop_max={noop_max} passes ale-py's limit {INT_MAX}")
        if repeat_action_probability is None:
            repeat_action_probability = sticky_actions_of(env_id)
        for name, prob in (
            ("repeat_action_probability", repeat_action_probability),
            ("flicker", flicker),
        ):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name}={prob} must lie in [0, 1]")
        if life_loss not in LIFE_LOSS:
            raise ValueError(f"life_loss={life_loss!r} must be one of {', '.join(LIFE_LOSS)}")
        game = game_of(env_id)
        rom_path(env_id, game)
        if num_threads == 0:
            num_threads = min(num_envs, num_cores())

        self.env_id = env_id
        self.game = game
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.seed = seed
        self.life_loss = life_loss
        self.repeat_action_probability = float(repeat_action_probability)
        self.flicker = float(flicker)
        self.stack_num = stack_num
        self.frameskip = frameskip
        self.max_episode_steps = max_episode_steps
        self.num_threads = num_threads
        self._ale: AtariVectorEnv | None = AtariVectorEnv(
            game,
            num_envs,
            batch_size=0,  # synchronous: every step returns all B envs in order
            num_threads=num_threads,
            thread_affinity_offset=-1,
            # counts emulator frames: truncation after exactly max_episode_steps agent steps
            max_num_frames_per_episode=max_episode_steps * frameskip,
            repeat_action_probability=float(repeat_action_probability),
            full_action_space=full_action_space,
            continuous=False,
            autoreset_mode="SameStep",
            img_height=FRAME_SIZE,
            img_width=FRAME_SIZE,
            grayscale=True,
            stack_num=stack_num,
            frameskip=frameskip,
            maxpool=True,
            noop_max=noop_max,
            episodic_life=False,  # would restart the game at a life loss (ATARI.md)
            life_loss_info=life_loss == "terminal",
            reward_clipping=False,  # raw scores; the trainer clips for training
            use_fire_reset=fire_reset,
        )
        self.num_actions = int(self._ale.single_action_space.n)
        self.obs_shape = (
            (FRAME_SIZE, FRAME_SIZE) if stack_num == 1 else (stack_num, FRAME_SIZE, FRAME_SIZE)
        )
        self.obs_dtype = torch.uint8

        B, S = num_envs, stack_num
        self._stats = EpisodeStats(B, self.device)
        self._offset = np.zeros(B, dtype=np.int64)  # frame_number - episode_frame_number
        self._seeded = False
        self._pending = False  # a send() awaits its recv()
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(_emulator_seeds(seed, B)[1])
        self._blanked = torch.zeros(B, S, dtype=torch.bool, device=self.device)
        self._staging: dict[str, _PinnedStaging] = {}
        if self.device.type == "cuda":
            frames = (B, S, FRAME_SIZE, FRAME_SIZE)
            self._staging = {
                "obs": _PinnedStaging(frames, torch.uint8, self.device),
                "final_obs": _PinnedStaging(frames, torch.uint8, self.device),
                "scalars": _PinnedStaging((5, B), torch.int32, self.device),
            }

    @staticmethod
    def shadowed_settings(env_cfg: Any) -> list[str]:
        """The ``env.kwargs`` keys that override a setting of their own (``life_loss``, ...):
        ``config.yaml`` would then describe another env than the one that runs. New runs
        refuse them (``rlstm train``); runs saved with them still load."""
        return sorted(key for key in env_cfg.kwargs if key in env_cfg.__dict__ and key != "kwargs")

    @classmethod
    def from_config(
        cls, env_cfg: Any, num_envs: int, device: str | torch.device, seed: int
    ) -> AtariEnv | AtariGroups:
        """Build from an ``rlstm.config.EnvConfig``; ``env.kwargs`` (e.g. ``{fire_reset: false}``)
        pass through as extra constructor arguments. ``env.num_groups > 1`` gives
        :class:`AtariGroups` of that many equal groups."""
        options: dict[str, Any] = {
            "repeat_action_probability": env_cfg.repeat_action_probability,
            "full_action_space": env_cfg.full_action_space,
            "frameskip": env_cfg.frameskip,
            "noop_max": env_cfg.noop_max,
            "life_loss": env_cfg.life_loss,
            "flicker": env_cfg.flicker,
            "stack_num": env_cfg.stack_num,
            "max_episode_steps": env_cfg.max_episode_steps,
            "num_threads": env_cfg.num_threads,
        }
        options.update(env_cfg.kwargs)  # see shadowed_settings
        groups = int(getattr(env_cfg, "num_groups", 1))
        if groups > 1:
            return AtariGroups(env_cfg.id, num_envs, groups, device, seed, **options)
        return cls(env_cfg.id, num_envs, device, seed, **options)

    # -- host -> device -------------------------------------------------------------------
    def _to_device(self, key: str, array: np.ndarray) -> Tensor:
        if key in self._staging:
            return self._staging[key].to_device(array)
        return torch.from_numpy(array).to(self.device)  # zero-copy on CPU

    def _frames(self, key: str, array: np.ndarray) -> Tensor:
        """ale-py frames ``(B, S, 84, 84)`` uint8 -> device tensor of the same shape."""
        return self._to_device(key, np.ascontiguousarray(array, dtype=np.uint8))

    def _obs_view(self, frames: Tensor) -> Tensor:
        return frames.view(self.num_envs, *self.obs_shape)

    def _env(self) -> AtariVectorEnv:
        if self._ale is None:
            raise RuntimeError(f"AtariEnv({self.env_id!r}) is closed")
        return self._ale

    # -- protocol -------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Tensor:
        """Restart every game; ``seed`` (or, on the first reset, the constructor's seed) reseeds
        the emulators and the flicker generator."""
        ale = self._env()
        if self._pending:  # finish the step in flight; its results are dropped
            ale.recv()
            self._pending = False
        if seed is None and not self._seeded:
            seed = self.seed
        emulator_seeds = None
        if seed is not None:
            emulator_seeds, generator_seed = _emulator_seeds(seed, self.num_envs)
            self._generator.manual_seed(generator_seed)
            self._seeded = True
        obs, info = ale.reset(seed=emulator_seeds)
        self._offset = info["frame_number"].astype(np.int64) - info["episode_frame_number"]
        self._stats = EpisodeStats(self.num_envs, self.device)
        frames = self._frames("obs", obs)
        if self.flicker > 0.0:
            blank = self._draw()[1]
            self._blanked = blank[:, None].expand(-1, self.stack_num).clone()
            frames = frames.masked_fill(self._blanked[:, :, None, None], 0)
        return self._obs_view(frames)

    def send(self, actions: Tensor) -> None:
        """Start stepping every game with ``actions (B,)`` and return at once: the emulators
        run in ale-py's threads until :meth:`recv`. This is what lets the trainer act for one
        env group while another group's emulators run."""
        ale = self._env()
        if self._pending:
            raise RuntimeError(f"AtariEnv({self.env_id!r}).send called twice without recv")
        actions = self.check_actions(actions, check_range=False)
        host_actions = actions.cpu().numpy()  # the emulators need them on the host anyway
        lo, hi = int(host_actions.min()), int(host_actions.max())
        if lo < 0 or hi >= self.num_actions:  # checked here so the error names the values
            raise ValueError(
                f"actions must lie in [0, {self.num_actions - 1}], got values in [{lo}, {hi}]"
            )
        ale.send(host_actions)
        self._pending = True

    def recv(self) -> StepResult:
        """Wait for the step started by :meth:`send`; returns what :meth:`step` returns."""
        ale = self._env()
        if not self._pending:
            raise RuntimeError(f"AtariEnv({self.env_id!r}).recv called without send")
        obs, reward, terminated, truncated, info = ale.recv()
        self._pending = False

        offset = info["frame_number"].astype(np.int64) - info["episode_frame_number"]
        restarted = offset != self._offset  # the game ended: game over or time limit
        self._offset = offset
        assert not (restarted & ~(terminated | truncated)).any(), (
            f"a game restarted without terminated/truncated: envs {np.flatnonzero(restarted)}"
        )
        scalars = np.stack([reward, terminated, truncated, restarted, info["lives"]]).astype(
            np.int32
        )
        scalars_t = self._to_device("scalars", scalars)
        reward_t = scalars_t[0].float()
        terminated_t, truncated_t, done_t = (
            scalars_t[1].bool(),
            scalars_t[2].bool(),
            scalars_t[3].bool(),
        )

        frames = self._frames("obs", obs)
        if restarted.any():  # ale-py's final_obs is stale where the game did not restart
            final_np = np.where(restarted[:, None, None, None], info["final_obs"], obs)
            final = self._frames("final_obs", final_np)
        else:
            final = frames
        if self.flicker > 0.0:
            frames, final = self._apply_flicker(frames, final, done_t)

        ep_return, ep_length = self._stats.update(reward_t, done_t)
        return (
            self._obs_view(frames),
            reward_t,
            terminated_t,
            truncated_t,
            {
                "final_obs": self._obs_view(final),
                "episode_return": ep_return,
                "episode_length": ep_length,
                "episode_done": done_t,
                "game_over": done_t & ~truncated_t,
                "lives": scalars_t[4].long(),
            },
        )

    def step(self, actions: Tensor) -> StepResult:
        self.send(actions)
        return self.recv()

    def _draw(self) -> Tensor:
        """``(2, B)`` bool: [0] blanks each game's newest frame, [1] a new game's first frame."""
        u = torch.rand(2, self.num_envs, generator=self._generator, device=self.device)
        return u < self.flicker

    def _apply_flicker(
        self, frames: Tensor, final: Tensor, restarted: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Blank frames ``(B, S, 84, 84)``; ``self._blanked (B, S)`` follows each frame through
        the stack. A restarted game's frames all get the fresh draw (ale-py 0.12 pads a new
        game's stack with zero frames, so only its newest frame shows it)."""
        draw = self._draw()
        continued = torch.cat([self._blanked[:, 1:], draw[0, :, None]], dim=1)
        fresh = draw[1, :, None].expand(-1, self.stack_num)
        self._blanked = torch.where(restarted[:, None], fresh, continued)
        frames = frames.masked_fill(self._blanked[:, :, None, None], 0)
        final = final.masked_fill(continued[:, :, None, None], 0)
        return frames, final

    def close(self) -> None:
        if self._ale is not None:
            self._ale.close()
            self._ale = None  # drops the C++ vectorizer, which joins its threads

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError(
            "AtariEnv cannot save its state: ale-py's vector env has no clone/restore; "
            "a resumed run starts fresh games"
        )


class AtariGroups(VecEnv):
    """``B`` games as ``G`` equal :class:`AtariEnv` groups, for overlapping emulation with acting.

    ``groups[g]`` owns envs ``g*B/G .. (g+1)*B/G - 1`` and has its own emulator threads (each
    group gets all the cores: mostly one group emulates while the policy acts for another).
    The trainer steps the groups in turn with ``send`` / ``recv`` (``Trainer.collect``);
    :meth:`step` steps all of them at once and concatenates, for any other consumer. Group
    ``g`` of a run with seed ``s`` is seeded ``s * G + g``, so groups never share games (and a
    run with G groups plays other games than the same seed with one group).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        num_groups: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(num_groups, int) or num_groups < 1 or num_envs % num_groups:
            raise ValueError(f"num_groups={num_groups!r} must be >= 1 and divide {num_envs=}")
        self.num_groups = num_groups
        size = num_envs // num_groups
        self.groups: list[AtariEnv] = []
        try:
            for g in range(num_groups):
                self.groups.append(AtariEnv(env_id, size, device, seed * num_groups + g, **kwargs))
        except BaseException:  # do not leak the emulator threads of the groups already built
            self.close()
            raise
        first = self.groups[0]
        self.env_id, self.num_envs, self.device = env_id, num_envs, first.device
        self.obs_shape, self.obs_dtype = first.obs_shape, first.obs_dtype
        self.num_actions = first.num_actions
        self.life_loss = first.life_loss

    def reset(self, seed: int | None = None) -> Tensor:
        G = self.num_groups
        return torch.cat(
            [env.reset(None if seed is None else seed * G + g) for g, env in enumerate(self.groups)]
        )

    def step(self, actions: Tensor) -> StepResult:
        actions = self.check_actions(actions, check_range=False)
        for env, part in zip(self.groups, actions.chunk(self.num_groups), strict=True):
            env.send(part)
        results = [env.recv() for env in self.groups]
        obs, reward, terminated, truncated = (torch.cat([r[i] for r in results]) for i in range(4))
        info = {key: torch.cat([r[4][key] for r in results]) for key in results[0][4]}
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        for env in self.groups:
            env.close()

    def state_dict(self) -> dict[str, Any]:
        return self.groups[0].state_dict()  # raises: emulators cannot be saved


def env_steps_per_second(
    env_id: str,
    num_envs: int,
    seconds: float = 5.0,
    num_threads: int = 0,
    device: str | torch.device = "cpu",
    warmup_steps: int = 50,
    seed: int = 0,
    **kwargs: Any,
) -> float:
    """Raw agent steps/s (summed over envs) of :class:`AtariEnv` with uniformly random actions.

    Same settings and code path as training (``kwargs`` are ``AtariEnv`` options), so
    training steps/s over this number is the fraction of the env's speed the trainer keeps.
    """
    env = AtariEnv(env_id, num_envs, device, seed, num_threads=num_threads, **kwargs)
    return measure_steps_per_second(env, seconds, warmup_steps, seed)


def measure_steps_per_second(
    env: AtariEnv | AtariGroups, seconds: float = 5.0, warmup_steps: int = 50, seed: int = 0
) -> float:
    """Raw agent steps/s of ``env`` with uniformly random actions; closes ``env``."""
    num_envs = env.num_envs
    try:
        gen = torch.Generator().manual_seed(seed)
        actions = torch.randint(env.num_actions, (256, num_envs), generator=gen).to(env.device)
        env.reset()
        for i in range(warmup_steps):
            env.step(actions[i % len(actions)])
        steps = 0
        start = time.perf_counter()
        while True:
            for _ in range(16):
                env.step(actions[steps % len(actions)])
                steps += 1
            if env.device.type == "cuda":
                torch.cuda.synchronize(env.device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps * num_envs / elapsed
    finally:
        env.close()
