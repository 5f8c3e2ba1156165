"""Tier D: POPGym games and control (MEMORY_TASKS.md, section D).

MultiarmedBandit, Battleship, MineSweeper, Concentration, PositionOnlyCartPole and
NoisyPositionOnlyCartPole, each Easy / Medium / Hard, with POPGym's semantics (``popgym``
1.0.x, ``popgym/envs/*.py``): same dynamics, rewards, episode lengths and termination /
truncation flags. Differences in form only:

- MultiDiscrete actions ``(row, col)`` flatten row-major to one Discrete ``row * N + col``;
- POPGym's discrete observations become float32 one-hots (Concentration: one one-hot per
  card, card-major); CartPole keeps its continuous ``[x, theta]`` (POPGym's Box bounds);
- the previous action (one-hot, zeros on the first step) is appended where POPGym sets
  ``obs_requires_prev_action`` (every game here; not CartPole).

Episode content (everything random in an episode) per task, one env's shapes:

==========================  ==========================================================
MultiarmedBandit            ``probs (K,) float32``, ``uniforms (L,) float32``: the payout
                            draw of step ``t`` is ``uniforms[t] < probs[action]``
Battleship                  ``board (N, N) int8``: 1 where a ship lies
MineSweeper                 ``mines (N, N) int8``: 1 where a mine lies
Concentration               ``deck (n,) int64``: the card index lying at each position
PositionOnlyCartPole        ``state (4,) float64``: initial ``[x, x_dot, theta, theta_dot]``
NoisyPositionOnlyCartPole   ``state`` as above and ``noise (L + 1, 2) float32``: the noise
                            added to the observation after ``t`` steps
==========================  ==========================================================

Per-step randomness that the batched classes keep in tables (bandit payout uniforms,
CartPole observation noise) is drawn once per slot and redrawn right after the slot is
consumed, so every step costs ``B`` fresh draws, each episode sees independent values, and
injected content replays exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from envs.memory.base import MemoryTask, MemoryTaskGym

DIFFICULTIES = ("Easy", "Medium", "Hard")


# -- helpers -------------------------------------------------------------------------------
def _one_hot(index: Tensor, n: int) -> Tensor:
    """``index (...,) int64 -> (..., n) float32``; no device sync (unlike a checked one_hot)."""
    return (index[..., None] == torch.arange(n, device=index.device)).float()


def _content(content: dict[str, Tensor], key: str, shape: tuple[int, ...]) -> Tensor:
    """``content[key]`` checked to be ``(B, *shape)``."""
    if key not in content:
        raise ValueError(f"content is missing key {key!r}; got keys {sorted(content)}")
    value = content[key]
    if tuple(value.shape[1:]) != shape:
        raise ValueError(
            f"content[{key!r}] must have shape (B, {', '.join(map(str, shape))}), "
            f"got {tuple(value.shape)}"
        )
    return value


def _twin_content(
    content: dict[str, Any], key: str, shape: tuple[int, ...], dtype: type
) -> np.ndarray:
    """``content[key]`` as a fresh ``shape`` array of ``dtype``."""
    if key not in content:
        raise ValueError(f"content is missing key {key!r}; got keys {sorted(content)}")
    value: np.ndarray = np.array(content[key], dtype=dtype)
    if value.shape != shape:
        raise ValueError(f"content[{key!r}] must have shape {shape}, got {value.shape}")
    return value


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class _RedrawOnReset(MemoryTask):
    """Batched base for tasks holding per-step random tables: ``reset(seed)`` redraws them.

    Subclasses implement ``_draw_tables()``; it runs after the generator is (re)seeded so
    that ``reset(seed=s)`` replays the same episodes.
    """

    def _draw_tables(self) -> None:
        """Fill the per-step random tables for all ``B`` envs."""

    def reset(self, seed: int | None = None, *, content: dict[str, Any] | None = None) -> Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        self._draw_tables()
        return super().reset(None, content=content)


# -- MultiarmedBandit ----------------------------------------------------------------------
def _check_bandit(num_arms: int, episode_length: int) -> tuple[int, int]:
    return _check_int("num_arms", num_arms, 1), _check_int("episode_length", episode_length, 1)


class MultiarmedBandit(_RedrawOnReset):
    """POPGym MultiarmedBandit: ``K`` arms with payout probabilities ``~ U(0, 1)`` per episode.

    Obs: one-hot of the last payout (2,) (no payout on the first step) + previous action.
    Action: the arm, ``D(K)``. Reward ``+1/L`` on a payout, ``-1/L`` otherwise; truncated
    after ``L`` steps. State: ``probs (B, K)``, ``uniforms (B, L)`` (the payout draws),
    ``t (B,)``, ``payout (B,)``.
    """

    name = "MultiarmedBandit"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"num_arms": 10, "episode_length": 200},
        "Medium": {"num_arms": 20, "episode_length": 400},
        "Hard": {"num_arms": 30, "episode_length": 600},
    }
    needs_prev_action = True

    def _setup(self, num_arms: int = 10, episode_length: int = 200) -> None:
        self.num_arms, self.episode_length = _check_bandit(num_arms, episode_length)
        self.task_obs_dim = 2
        self.num_actions = self.num_arms
        self.max_episode_steps = self.episode_length
        B = self.num_envs
        self.probs = torch.zeros(B, self.num_arms, device=self.device)
        self._draw_tables()
        self.t = torch.zeros(B, dtype=torch.long, device=self.device)
        self.payout = torch.zeros(B, dtype=torch.long, device=self.device)

    def _draw_tables(self) -> None:
        self.uniforms = self.rand(self.num_envs, self.episode_length)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        K, L = self.num_arms, self.episode_length
        if content is None:
            probs = self.rand(self.num_envs, K)
        else:
            probs = _content(content, "probs", (K,)).float()
            uniforms = _content(content, "uniforms", (L,)).float()
            self.uniforms = torch.where(mask[:, None], uniforms, self.uniforms)
        self.probs = torch.where(mask[:, None], probs, self.probs)
        self.t = self.t.masked_fill(mask, 0)
        self.payout = self.payout.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        return _one_hot(self.payout, 2)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        L = self.episode_length
        col = self.t[:, None]
        u = self.uniforms.gather(1, col).squeeze(1)
        # the slot is used once per episode: redraw it for the next episode at this step
        self.uniforms.scatter_(1, col, self.rand(self.num_envs, 1))
        win = u < self.probs.gather(1, actions[:, None]).squeeze(1)
        self.payout = win.long()
        reward = torch.where(win, 1.0 / L, -1.0 / L)
        truncated = self.t >= L - 1
        self.t = self.t + 1
        return reward, torch.zeros_like(win), truncated

    def oracle(self) -> Tensor:
        """The arm with the highest payout probability, ``(B,)``."""
        return self.probs.argmax(1)


class MultiarmedBanditGym(MemoryTaskGym):
    """NumPy twin of :class:`MultiarmedBandit`."""

    needs_prev_action = True

    def _setup(self, num_arms: int = 10, episode_length: int = 200) -> None:
        self.num_arms, self.episode_length = _check_bandit(num_arms, episode_length)
        self.task_obs_dim = 2
        self.num_actions = self.num_arms
        self.max_episode_steps = self.episode_length

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        K, L = self.num_arms, self.episode_length
        if content is None:
            probs = self.np_random.random(K, dtype=np.float32)
            uniforms = self.np_random.random(L, dtype=np.float32)
        else:
            probs = _twin_content(content, "probs", (K,), np.float32)
            uniforms = _twin_content(content, "uniforms", (L,), np.float32)
        self.content = {"probs": probs, "uniforms": uniforms}
        self.t = 0
        self.payout = 0

    def _observe(self) -> np.ndarray:
        obs = np.zeros(2, dtype=np.float32)
        obs[self.payout] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        self.payout = int(self.content["uniforms"][self.t] < self.content["probs"][action])
        self.t += 1
        reward = (1.0 if self.payout else -1.0) / self.episode_length
        return reward, False, self.t >= self.episode_length


# -- Battleship ----------------------------------------------------------------------------
def _check_battleship(board_size: int, ship_sizes: Any) -> tuple[int, tuple[int, ...]]:
    N = _check_int("board_size", board_size, 1)
    try:
        ships = tuple(_check_int("ship size", s, 1) for s in ship_sizes)
    except TypeError:
        raise ValueError(f"ship_sizes must be a sequence of ints, got {ship_sizes!r}") from None
    if not ships or max(ships) > N:
        raise ValueError(f"ship_sizes={ships} must be non-empty with sizes <= board_size={N}")
    # Sequential placement must never get stuck: a ship of size s touches s rows and one
    # column or the reverse, so s + 1 lines. If the earlier ships touch fewer than 2N lines
    # a whole row or column is still free, and it fits any ship of size <= N.
    if sum(ships[:-1]) + len(ships) - 1 >= 2 * N:
        raise ValueError(
            f"ship_sizes={ships} may not fit on a {N}x{N} board: need "
            f"sum(ship_sizes[:-1]) + len(ship_sizes) - 1 < 2 * board_size"
        )
    return N, ships


def _battleship_rewards(N: int, ships: tuple[int, ...]) -> tuple[int, float, float]:
    needed = sum(ships)
    # POPGym: an all-hit episode returns 1; guessing every square once returns 0
    return needed, 1.0 / needed, -1.0 / (N * N - needed)


class Battleship(MemoryTask):
    """POPGym Battleship on an ``N x N`` board with ships ``(2, 3, 3, 4)``, board hidden.

    Obs: one-hot of hit / miss of the last shot (2,) (miss on the first step) + previous
    action. Action: the square ``row * N + col``, ``D(N^2)``. Reward ``1/12`` for a hit on
    a ship square not shot before, else ``-1/(N^2 - 12)``; terminated when all 12 ship
    squares are hit, truncated after ``N^2`` shots. State: ``board, shot (B, N^2) bool``,
    ``hits, t (B,)``, ``hit (B,) bool``.

    Ship placement, like POPGym's rejection sampler, picks each ship in turn uniformly among
    the in-bounds placements that overlap no earlier ship (POPGym draws a start square, an
    axis and a sign and retries until the segment is legal, so each legal segment has the
    same weight). Here all in-bounds placements of each size are tabulated once; per ship,
    every env counts its ``c`` legal placements, draws ``k`` uniform in ``{0..c-1}`` (from a
    float64 uniform) and takes its ``k``-th legal placement: exact, a fixed amount of work
    (``O(B * P * size)`` per ship, ``P <= 2 N^2`` placements), no retry loop.
    """

    name = "Battleship"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"board_size": 8},
        "Medium": {"board_size": 10},
        "Hard": {"board_size": 12},
    }
    needs_prev_action = True
    # hitting a ship square on every shot returns exactly 1 (POPGym's maximum)
    oracle_return: ClassVar[dict[str, float]] = dict.fromkeys(DIFFICULTIES, 1.0)

    def _setup(self, board_size: int = 10, ship_sizes: Any = (2, 3, 3, 4)) -> None:
        self.board_size, self.ship_sizes = _check_battleship(board_size, ship_sizes)
        N = self.board_size
        self.needed, self.hit_reward, self.miss_reward = _battleship_rewards(N, self.ship_sizes)
        self.task_obs_dim = 2
        self.num_actions = N * N
        self.max_episode_steps = N * N
        # size -> (P, size) flat squares of every in-bounds placement (horizontal, vertical)
        self._placements: dict[int, Tensor] = {}  # constants: kept out of state_dict
        for s in set(self.ship_sizes):
            r, c = torch.meshgrid(torch.arange(N), torch.arange(N - s + 1), indexing="ij")
            along = torch.arange(s)
            horizontal = (r.reshape(-1, 1) * N + c.reshape(-1, 1) + along).reshape(-1, s)
            vertical = ((c.reshape(-1, 1) + along) * N + r.reshape(-1, 1)).reshape(-1, s)
            self._placements[s] = torch.cat([horizontal, vertical]).to(self.device)
        B = self.num_envs
        self.board = torch.zeros(B, N * N, dtype=torch.bool, device=self.device)
        self.shot = torch.zeros_like(self.board)
        self.hits = torch.zeros(B, dtype=torch.long, device=self.device)
        self.t = torch.zeros_like(self.hits)
        self.hit = torch.zeros(B, dtype=torch.bool, device=self.device)

    def _sample_boards(self) -> Tensor:
        """Fresh boards for all envs, ``(B, N^2) bool``."""
        board = torch.zeros_like(self.board)
        for s in self.ship_sizes:  # a fixed loop over ships, vectorised over envs
            squares = self._placements[s]  # (P, s)
            # one (B, P) gather per square of the ship: much faster than board[:, squares]
            hit = [board.gather(1, squares[:, j].expand(self.num_envs, -1)) for j in range(s)]
            legal = ~functools.reduce(torch.logical_or, hit)  # (B, P)
            seen = legal.cumsum(1)  # legal placements up to each one
            count = seen[:, -1:]  # >= 1: _check_battleship guarantees room
            u = torch.rand(
                self.num_envs, 1, generator=self.generator, dtype=torch.float64, device=self.device
            )
            k = torch.minimum((u * count).long(), count - 1)  # uniform in {0..count-1}
            choice = (seen <= k).sum(1)  # the (k+1)-th legal placement
            board = board.scatter(1, squares[choice], True)
        return board

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        N = self.board_size
        if content is None:
            board = self._sample_boards()
        else:
            board = _content(content, "board", (N, N)).reshape(self.num_envs, N * N) != 0
        self.board = torch.where(mask[:, None], board, self.board)
        self.shot = self.shot & ~mask[:, None]
        self.hits = self.hits.masked_fill(mask, 0)
        self.t = self.t.masked_fill(mask, 0)
        self.hit = self.hit & ~mask

    def _observe(self) -> Tensor:
        return _one_hot(self.hit.long(), 2)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = actions[:, None]
        self.hit = (self.board.gather(1, a) & ~self.shot.gather(1, a)).squeeze(1)
        self.shot = self.shot.scatter(1, a, True)
        self.hits = self.hits + self.hit.long()
        self.t = self.t + 1
        reward = torch.where(self.hit, self.hit_reward, self.miss_reward)
        return reward, self.hits == self.needed, self.t >= self.max_episode_steps

    def oracle(self) -> Tensor:
        """The first ship square not shot yet, ``(B,)``."""
        return (self.board & ~self.shot).long().argmax(1)


class BattleshipGym(MemoryTaskGym):
    """NumPy twin of :class:`Battleship` (placement: enumerate legal placements, pick one)."""

    needs_prev_action = True

    def _setup(self, board_size: int = 10, ship_sizes: Any = (2, 3, 3, 4)) -> None:
        self.board_size, self.ship_sizes = _check_battleship(board_size, ship_sizes)
        N = self.board_size
        self.needed, self.hit_reward, self.miss_reward = _battleship_rewards(N, self.ship_sizes)
        self.task_obs_dim = 2
        self.num_actions = N * N
        self.max_episode_steps = N * N

    def _place(self, board: np.ndarray, size: int) -> None:
        N = self.board_size
        legal = []
        for vertical in (False, True):
            view = board.T if vertical else board
            for line in range(N):
                for start in range(N - size + 1):
                    if not view[line, start : start + size].any():
                        legal.append((vertical, line, start))
        vertical, line, start = legal[int(self.np_random.integers(len(legal)))]
        (board.T if vertical else board)[line, start : start + size] = 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        N = self.board_size
        if content is None:
            board = np.zeros((N, N), dtype=np.int8)
            for size in self.ship_sizes:
                self._place(board, size)
        else:
            board = _twin_content(content, "board", (N, N), np.int8)
        self.content = {"board": board}
        self.shot = np.zeros((N, N), dtype=bool)
        self.hits = 0
        self.t = 0
        self.hit = False

    def _observe(self) -> np.ndarray:
        return np.array([not self.hit, self.hit], dtype=np.float32)

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        square = divmod(action, self.board_size)
        self.hit = bool(self.content["board"][square]) and not self.shot[square]
        self.shot[square] = True
        self.hits += int(self.hit)
        self.t += 1
        reward = self.hit_reward if self.hit else self.miss_reward
        return reward, self.hits == self.needed, self.t >= self.max_episode_steps


# -- MineSweeper ---------------------------------------------------------------------------
def _check_minesweeper(board_size: int, num_mines: int) -> tuple[int, int]:
    N = _check_int("board_size", board_size, 2)
    mines = _check_int("num_mines", num_mines, 1)
    if mines > N * N - 3:
        # POPGym's repeat penalty divides by (free squares - 2)
        raise ValueError(f"num_mines={mines} must leave at least 3 free squares on {N}x{N}")
    return N, mines


def _minesweeper_rewards(free: int) -> tuple[float, float, float]:
    """POPGym's (reveal, mine, repeat) rewards for ``free`` mine-free squares."""
    success = 1.0 / free
    return success, -0.5 - success, -0.5 / (free - 2)


class MineSweeper(MemoryTask):
    """POPGym MineSweeper with the board hidden: ``N x N`` squares, ``M`` mines.

    Obs: one-hot of the number of mines in the 3x3 block around (and including) the last
    clicked square, ``(min(M + 1, 10),)`` (0 on the first step) + previous action. Action:
    the square ``row * N + col``, ``D(N^2)``. With ``F = N^2 - M`` free squares, reward
    ``1/F`` for a new free square, ``-0.5/(F - 2)`` for a square clicked before,
    ``-0.5 - 1/F`` for a mine (terminated); terminated when every free square is revealed,
    truncated after ``F`` steps otherwise. State: ``mines, seen (B, N^2) bool``,
    ``t, count (B,)``. Mines: a uniform ``M``-subset of the squares (as POPGym).
    """

    name = "MineSweeper"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"board_size": 4, "num_mines": 2},
        "Medium": {"board_size": 6, "num_mines": 6},
        "Hard": {"board_size": 8, "num_mines": 10},
    }
    needs_prev_action = True
    # revealing a new free square on every step returns exactly 1 (POPGym's maximum)
    oracle_return: ClassVar[dict[str, float]] = dict.fromkeys(DIFFICULTIES, 1.0)

    def _setup(self, board_size: int = 4, num_mines: int = 2) -> None:
        self.board_size, self.num_mines = _check_minesweeper(board_size, num_mines)
        N, M = self.board_size, self.num_mines
        self.free = N * N - M
        self.reveal_reward, self.mine_reward, self.repeat_reward = _minesweeper_rewards(self.free)
        self.task_obs_dim = min(M + 1, 10)
        self.num_actions = N * N
        self.max_episode_steps = self.free
        # (N^2, 9) flat squares of each 3x3 block; off-board -> N^2, a padding column of 0s
        r, c = torch.arange(N * N) // N, torch.arange(N * N) % N
        d = torch.tensor([-1, 0, 1])
        rr = r[:, None, None] + d[None, :, None]
        cc = c[:, None, None] + d[None, None, :]
        inside = (rr >= 0) & (rr < N) & (cc >= 0) & (cc < N)
        block = torch.where(inside, rr * N + cc, N * N).reshape(N * N, 9)
        self._const = {"block": block.to(self.device)}  # constants: kept out of state_dict
        B = self.num_envs
        self.mines = torch.zeros(B, N * N, dtype=torch.bool, device=self.device)
        self.seen = torch.zeros_like(self.mines)
        self.t = torch.zeros(B, dtype=torch.long, device=self.device)
        self.count = torch.zeros_like(self.t)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        N, B = self.board_size, self.num_envs
        if content is None:
            picked = self.rand(B, N * N).topk(self.num_mines, dim=1).indices
            mines = torch.zeros_like(self.mines).scatter(1, picked, True)
        else:
            mines = _content(content, "mines", (N, N)).reshape(B, N * N) != 0
        self.mines = torch.where(mask[:, None], mines, self.mines)
        self.seen = self.seen & ~mask[:, None]
        self.t = self.t.masked_fill(mask, 0)
        self.count = self.count.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        return _one_hot(self.count, self.task_obs_dim)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = actions[:, None]
        mine = self.mines.gather(1, a).squeeze(1)
        repeat = self.seen.gather(1, a).squeeze(1)
        padded = torch.cat([self.mines, torch.zeros_like(self.mines[:, :1])], dim=1)
        self.count = padded.gather(1, self._const["block"][actions]).sum(1)
        self.seen = self.seen.scatter(1, a, ~mine[:, None] | self.seen.gather(1, a))
        self.t = self.t + 1
        reward = torch.where(
            mine,
            self.mine_reward,
            torch.where(repeat, self.repeat_reward, self.reveal_reward),
        )
        terminated = mine | (self.seen | self.mines).all(1)
        truncated = (self.t == self.max_episode_steps) & ~terminated
        return reward, terminated, truncated

    def oracle(self) -> Tensor:
        """The first free square not revealed yet, ``(B,)``."""
        return (~self.mines & ~self.seen).long().argmax(1)


class MineSweeperGym(MemoryTaskGym):
    """NumPy twin of :class:`MineSweeper`."""

    needs_prev_action = True

    def _setup(self, board_size: int = 4, num_mines: int = 2) -> None:
        self.board_size, self.num_mines = _check_minesweeper(board_size, num_mines)
        N, M = self.board_size, self.num_mines
        self.free = N * N - M
        self.reveal_reward, self.mine_reward, self.repeat_reward = _minesweeper_rewards(self.free)
        self.task_obs_dim = min(M + 1, 10)
        self.num_actions = N * N
        self.max_episode_steps = self.free

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        N = self.board_size
        if content is None:
            mines = np.zeros((N, N), dtype=np.int8)
            mines.reshape(-1)[self.np_random.choice(N * N, size=self.num_mines, replace=False)] = 1
        else:
            mines = _twin_content(content, "mines", (N, N), np.int8)
        self.content = {"mines": mines}
        self.seen = np.zeros((N, N), dtype=bool)
        self.t = 0
        self.count = 0

    def _observe(self) -> np.ndarray:
        obs = np.zeros(self.task_obs_dim, dtype=np.float32)
        obs[self.count] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        r, c = divmod(action, self.board_size)
        mines = self.content["mines"]
        self.count = int(mines[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].sum())
        self.t += 1
        if mines[r, c]:
            return self.mine_reward, True, False
        reward = self.repeat_reward if self.seen[r, c] else self.reveal_reward
        self.seen[r, c] = True
        terminated = bool((self.seen | (mines != 0)).all())
        return reward, terminated, self.t == self.max_episode_steps and not terminated


# -- Concentration -------------------------------------------------------------------------
def _check_concentration(num_decks: int, deck_type: str) -> tuple[int, str, np.ndarray, int]:
    """Validated params, the value of each card index ``(n,)`` and the episode length."""
    decks = _check_int("num_decks", num_decks, 1)
    n = 52 * decks
    card = np.arange(n)
    if deck_type == "colors":
        value = card % 2
    elif deck_type == "ranks":  # suits cannot be used: 13 cards per suit do not pair up
        value = (card % 52) // 4
    else:
        raise ValueError(f"deck_type must be 'colors' or 'ranks', got {deck_type!r}")
    # POPGym: the expected number of turns of a perfect player, rounded up (math.SE 1876467)
    length = math.ceil(2 * n - n / (2 * n - 1))
    return decks, deck_type, value, length


class Concentration(MemoryTask):
    """POPGym Concentration: ``n = 52 * decks`` cards face down, flip two per turn.

    Card values are colours (2) or ranks (13). Obs: per position, a one-hot of the visible
    value or "face down" (``V + 1`` classes), flattened card-major to ``(n * (V + 1),)``;
    visible are the matched cards and the cards flipped this step (a flipped pair stays
    visible for that one step), + previous action. Action: the position, ``D(n)``.
    Reward: ``1/(n/2)`` for a matching pair; ``-2/L`` for a non-matching pair (or the same
    card twice); ``-k/L`` when a card already matched is flipped, with ``k`` the cards in
    play (1 or 2), which also ends the turn; 0 for a first card. Terminated when every card
    is matched, truncated after ``L`` steps. State: ``values, up (B, n)``, ``first (B,)``
    (position of the card in play or -1), ``peek (B, 2)`` (cards shown this step or -1),
    ``t (B,)``.
    """

    name = "Concentration"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"num_decks": 1, "deck_type": "colors"},
        "Medium": {"num_decks": 2, "deck_type": "colors"},
        "Hard": {"num_decks": 1, "deck_type": "ranks"},
    }
    needs_prev_action = True
    # matching a pair every two flips returns exactly 1 (POPGym's maximum)
    oracle_return: ClassVar[dict[str, float]] = dict.fromkeys(DIFFICULTIES, 1.0)

    def _setup(self, num_decks: int = 1, deck_type: str = "colors") -> None:
        self.num_decks, self.deck_type, value, self.episode_length = _check_concentration(
            num_decks, deck_type
        )
        self.num_cards = n = value.size
        self.num_values = int(value.max()) + 1
        self.match_reward = 1.0 / (n // 2)
        self.fail_reward = -1.0 / self.episode_length
        self.task_obs_dim = n * (self.num_values + 1)
        self.num_actions = n
        self.max_episode_steps = self.episode_length
        self._const = {"card_value": torch.as_tensor(value, device=self.device)}
        B = self.num_envs
        self.values = torch.zeros(B, n, dtype=torch.long, device=self.device)
        self.up = torch.zeros(B, n, dtype=torch.bool, device=self.device)
        self.first = torch.full((B,), -1, dtype=torch.long, device=self.device)
        self.peek = torch.full((B, 2), -1, dtype=torch.long, device=self.device)
        self.t = torch.zeros(B, dtype=torch.long, device=self.device)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        n = self.num_cards
        if content is None:
            deck = self.shuffled(self.num_envs, n)
        else:
            deck = _content(content, "deck", (n,)).long()
        self.values = torch.where(mask[:, None], self._const["card_value"][deck], self.values)
        self.up = self.up & ~mask[:, None]
        self.first = self.first.masked_fill(mask, -1)
        self.peek = self.peek.masked_fill(mask[:, None], -1)
        self.t = self.t.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        pos = torch.arange(self.num_cards, device=self.device)
        visible = self.up | (pos == self.peek[:, :1]) | (pos == self.peek[:, 1:])
        shown = torch.where(visible, self.values, self.num_values)
        return _one_hot(shown, self.num_values + 1).flatten(1)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, first = actions, self.first
        has_first = first >= 0
        first_c = first.clamp(min=0)[:, None]
        # flipping a matched card ends the turn; a first card in play is never matched
        already_up = self.up.gather(1, a[:, None]).squeeze(1) | (
            has_first & self.up.gather(1, first_c).squeeze(1)
        )
        same_value = self.values.gather(1, a[:, None]) == self.values.gather(1, first_c)
        matched = ~already_up & has_first & same_value.squeeze(1) & (a != first)
        reward = torch.where(
            already_up,
            self.fail_reward * (1 + has_first.float()),
            torch.where(
                has_first,
                torch.where(matched, self.match_reward, 2 * self.fail_reward),
                0.0,
            ),
        )
        self.peek = torch.stack(
            [torch.where(has_first, first, a), torch.where(has_first, a, -1)], dim=1
        )
        pair = torch.stack([first.clamp(min=0), a], dim=1)
        self.up = self.up.scatter(1, pair, self.up.gather(1, pair) | matched[:, None])
        self.first = torch.where(~has_first & ~already_up, a, -1)
        truncated = self.t >= self.episode_length - 1
        self.t = self.t + 1
        return reward, matched & self.up.all(1), truncated

    def oracle(self) -> Tensor:
        """Flip the first unmatched card, then its first unmatched partner, ``(B,)``."""
        down = ~self.up
        has_first = self.first >= 0
        first_c = self.first.clamp(min=0)
        pos = torch.arange(self.num_cards, device=self.device)
        partner = (
            down
            & (self.values == self.values.gather(1, first_c[:, None]))
            & (pos != first_c[:, None])
        )
        return torch.where(has_first, partner.long().argmax(1), down.long().argmax(1))


class ConcentrationGym(MemoryTaskGym):
    """NumPy twin of :class:`Concentration`."""

    needs_prev_action = True

    def _setup(self, num_decks: int = 1, deck_type: str = "colors") -> None:
        self.num_decks, self.deck_type, self.card_value, self.episode_length = _check_concentration(
            num_decks, deck_type
        )
        self.num_cards = n = self.card_value.size
        self.num_values = int(self.card_value.max()) + 1
        self.match_reward = 1.0 / (n // 2)
        self.fail_reward = -1.0 / self.episode_length
        self.task_obs_dim = n * (self.num_values + 1)
        self.num_actions = n
        self.max_episode_steps = self.episode_length

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        n = self.num_cards
        if content is None:
            deck = self.np_random.permutation(n).astype(np.int64)
        else:
            deck = _twin_content(content, "deck", (n,), np.int64)
            if not np.array_equal(np.sort(deck), np.arange(n)):
                raise ValueError(f"content['deck'] must be a permutation of range({n})")
        self.content = {"deck": deck}
        self.values = self.card_value[deck]
        self.matched = np.zeros(n, dtype=bool)
        self.in_play: list[int] = []
        self.shown: list[int] = []
        self.t = 0

    def _observe(self) -> np.ndarray:
        n, V = self.num_cards, self.num_values
        shown = np.where(self.matched, self.values, V)
        shown[self.shown] = self.values[self.shown]
        obs = np.zeros((n, V + 1), dtype=np.float32)
        obs[np.arange(n), shown] = 1.0
        return obs.reshape(-1)

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        truncated = self.t >= self.episode_length - 1
        self.t += 1
        self.in_play.append(action)
        self.shown = list(self.in_play)
        terminated = False
        if any(self.matched[p] for p in self.in_play):
            reward = self.fail_reward * len(self.in_play)
            self.in_play = []
        elif len(self.in_play) == 2:
            p, q = self.in_play
            if p != q and self.values[p] == self.values[q]:
                reward = self.match_reward
                self.matched[[p, q]] = True
                terminated = bool(self.matched.all())
            else:
                reward = 2 * self.fail_reward
            self.in_play = []
        else:
            reward = 0.0
        return reward, terminated, truncated


# -- PositionOnlyCartPole ------------------------------------------------------------------
# gymnasium CartPole-v1 constants (gymnasium/envs/classic_control/cartpole.py)
GRAVITY, MASS_CART, MASS_POLE, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASS_CART + MASS_POLE
POLE_MOMENT = MASS_POLE * HALF_LENGTH
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * math.pi / 360
# POPGym's observation bounds: twice the termination limits
OBS_HIGH = np.array([2 * X_LIMIT, 2 * THETA_LIMIT], dtype=np.float32)


def _check_cartpole(episode_length: int, noise_sigma: float, noisy: bool) -> tuple[int, float]:
    L = _check_int("episode_length", episode_length, 1)
    if noisy and (
        isinstance(noise_sigma, bool)
        or not isinstance(noise_sigma, (int, float))
        or not noise_sigma > 0
        or not math.isfinite(noise_sigma)
    ):
        raise ValueError(f"noise_sigma must be a positive float, got {noise_sigma!r}")
    return L, float(noise_sigma)


# the oracle pushes right where ORACLE_GAIN . [x, x_dot, theta, theta_dot] > 0: hand-tuned
# linear state feedback, all gains positive as in cart-pole's LQR law (to bring the cart back
# left, push right first so that the pole leans left)
ORACLE_GAIN = (1.0, 1.5, 20.0, 3.0)


class _CartPole(_RedrawOnReset):
    """Batched POPGym (Noisy)PositionOnlyCartPole; see the public subclasses."""

    noisy: ClassVar[bool] = False
    # the oracle's controller never drops the pole from gymnasium's initial states (tested
    # from all 16 corners of the initial box: |x| < 0.23, |theta| < 0.06 over 600 steps), so
    # every episode lasts L steps and returns exactly 1 (POPGym's maximum)
    oracle_return: ClassVar[dict[str, float]] = dict.fromkeys(DIFFICULTIES, 1.0)

    def _setup(self, episode_length: int = 200, noise_sigma: float = 0.0) -> None:
        self.episode_length, self.noise_sigma = _check_cartpole(
            episode_length, noise_sigma, self.noisy
        )
        self.task_obs_dim = 2
        self.num_actions = 2
        self.max_episode_steps = self.episode_length
        B = self.num_envs
        # float64 like gymnasium: with the same actions, the open-loop error of a float32
        # integration grows ~e^(3.8/s) and leaves POPGym's trajectory within a few seconds
        self.state = torch.zeros(B, 4, dtype=torch.float64, device=self.device)
        self.t = torch.zeros(B, dtype=torch.long, device=self.device)
        # envs playing injected noise (replays), and whether any did since the last reset: a
        # tensor, so that state_dict keeps it, and its host mirror (no sync per step)
        self._noise_injected = torch.zeros(B, dtype=torch.bool, device=self.device)
        self._noise_was_injected = torch.zeros((), dtype=torch.bool, device=self.device)
        self._any_injected = False
        self._const = {  # constants: kept out of state_dict
            "obs_high": torch.as_tensor(OBS_HIGH, device=self.device),
            "gain": torch.tensor(ORACLE_GAIN, dtype=torch.float64, device=self.device),
        }
        self._draw_tables()

    def _draw_noise(self, *shape: int) -> Tensor:
        normal = torch.randn(shape, generator=self.generator, device=self.device)
        return normal * self.noise_sigma

    def _draw_tables(self) -> None:
        if self.noisy:
            self.noise = self._draw_noise(self.num_envs, self.episode_length + 1, 2)
            # the reset's _new_episode redraws the slot at t: make that slot 0 every time
            self.t = torch.zeros_like(self.t)
            self._noise_injected = torch.zeros_like(self._noise_injected)
            self._noise_was_injected = torch.zeros_like(self._noise_was_injected)
            self._any_injected = False

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._any_injected = bool(self._noise_was_injected)  # one sync, at load

    def _refresh_noise(self, mask: Tensor | None) -> None:
        """Redraw the noise slot of the current step (where ``mask``): it has been shown."""
        index = self.t[:, None, None].expand(-1, 1, 2)
        fresh = self._draw_noise(self.num_envs, 1, 2)
        if mask is not None:
            fresh = torch.where(mask[:, None, None], fresh, self.noise.gather(1, index))
        self.noise.scatter_(1, index, fresh)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        if self.noisy:
            self._refresh_noise(mask)  # the final observation's slot
        if content is None:
            state = torch.rand(
                self.num_envs, 4, generator=self.generator, dtype=torch.float64, device=self.device
            )
            state = (state - 0.5) * 0.1  # U(-0.05, 0.05), as gymnasium
            if self.noisy and self._any_injected:
                # an injected episode that ended early left slots it never showed: they
                # belong to it, not to the next episode
                stale = (mask & self._noise_injected)[:, None, None]
                fresh = self._draw_noise(self.num_envs, self.episode_length + 1, 2)
                self.noise = torch.where(stale, fresh, self.noise)
                self._noise_injected = self._noise_injected & ~mask
        else:
            state = _content(content, "state", (4,)).double()
            if self.noisy:
                noise = _content(content, "noise", (self.episode_length + 1, 2)).float()
                self.noise = torch.where(mask[:, None, None], noise, self.noise)
                self._noise_injected = self._noise_injected | mask
                self._noise_was_injected = torch.ones_like(self._noise_was_injected)
                self._any_injected = True
        self.state = torch.where(mask[:, None], state, self.state)
        self.t = self.t.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        obs = self.state[:, ::2].float()  # [x, theta]; a slice, no index tensor to upload
        if self.noisy:
            index = self.t[:, None, None].expand(-1, 1, 2)
            obs = obs + self.noise.gather(1, index).squeeze(1)
            high = self._const["obs_high"]
            obs = torch.minimum(torch.maximum(obs, -high), high)
        return obs

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.noisy:
            self._refresh_noise(None)
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        force = torch.where(actions == 1, FORCE, -FORCE).double()
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + POLE_MOMENT * theta_dot.square() * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (
            HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos.square() / TOTAL_MASS)
        )
        x_acc = temp - POLE_MOMENT * theta_acc * cos / TOTAL_MASS
        # explicit Euler, gymnasium's default integrator
        x, x_dot = x + TAU * x_dot, x_dot + TAU * x_acc
        theta, theta_dot = theta + TAU * theta_dot, theta_dot + TAU * theta_acc
        self.state = torch.stack([x, x_dot, theta, theta_dot], dim=1)
        self.t = self.t + 1
        # gymnasium rewards every step, the last included; POPGym maps reward 1 to 1/L
        reward = torch.full_like(x, 1.0 / self.episode_length, dtype=torch.float32)
        terminated = (x.abs() > X_LIMIT) | (theta.abs() > THETA_LIMIT)
        return reward, terminated, self.t >= self.episode_length

    def oracle(self) -> Tensor:
        """A linear controller on the full (hidden) state: push toward the lean, ``(B,)``."""
        return (self.state @ self._const["gain"] > 0).long()


class PositionOnlyCartPole(_CartPole):
    """POPGym PositionOnlyCartPole: CartPole-v1 dynamics, obs ``[x, theta]`` (2,) float32.

    Action: push left / right, ``D(2)``. Reward ``1/L`` per step, the falling step
    included; terminated when ``|x| > 2.4`` or ``|theta| > 12 deg``, truncated after ``L``
    steps (both flags set if the pole falls on step ``L``). State: ``state (B, 4)`` float64
    ``[x, x_dot, theta, theta_dot]`` (as gymnasium, so trajectories agree with POPGym's
    over whole episodes), ``t (B,)``.
    """

    name = "PositionOnlyCartPole"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"episode_length": 200},
        "Medium": {"episode_length": 400},
        "Hard": {"episode_length": 600},
    }

    def _setup(self, episode_length: int = 200) -> None:
        super()._setup(episode_length=episode_length)


class NoisyPositionOnlyCartPole(_CartPole):
    """POPGym NoisyPositionOnlyCartPole: as :class:`PositionOnlyCartPole` (``L = 200``), the
    obs plus ``N(0, sigma^2)`` noise per component, clipped to ``[-4.8, 4.8] x [-0.419,
    0.419]``. State adds ``noise (B, L + 1, 2)``: the noise of the obs after ``t`` steps.
    """

    name = "NoisyPositionOnlyCartPole"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"noise_sigma": 0.1},
        "Medium": {"noise_sigma": 0.2},
        "Hard": {"noise_sigma": 0.3},
    }
    noisy = True

    def _setup(self, noise_sigma: float = 0.1, episode_length: int = 200) -> None:
        super()._setup(episode_length=episode_length, noise_sigma=noise_sigma)


class _CartPoleGym(MemoryTaskGym):
    """NumPy twin of the CartPoles, float64 state like gymnasium."""

    noisy: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the prev-action one-hot and first-step flag follow the task obs, in [0, 1]
        extra = (self.num_actions if self.prev_action else 0) + int(self.first_flag)
        low = np.concatenate([-OBS_HIGH, np.zeros(extra, dtype=np.float32)])
        high = np.concatenate([OBS_HIGH, np.ones(extra, dtype=np.float32)])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def _setup(self, episode_length: int = 200, noise_sigma: float = 0.0) -> None:
        self.episode_length, self.noise_sigma = _check_cartpole(
            episode_length, noise_sigma, self.noisy
        )
        self.task_obs_dim = 2
        self.num_actions = 2
        self.max_episode_steps = self.episode_length

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        L = self.episode_length
        if content is None:
            self.content = {"state": self.np_random.uniform(-0.05, 0.05, size=4)}
            if self.noisy:
                noise = self.np_random.normal(0.0, self.noise_sigma, size=(L + 1, 2))
                self.content["noise"] = noise.astype(np.float32)
        else:
            self.content = {"state": _twin_content(content, "state", (4,), np.float64)}
            if self.noisy:
                self.content["noise"] = _twin_content(content, "noise", (L + 1, 2), np.float32)
        self.x, self.x_dot, self.theta, self.theta_dot = (float(v) for v in self.content["state"])
        self.t = 0

    def _observe(self) -> np.ndarray:
        obs = np.array([self.x, self.theta], dtype=np.float32)
        if self.noisy:
            obs = np.clip(obs + self.content["noise"][self.t], -OBS_HIGH, OBS_HIGH)
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        force = FORCE if action == 1 else -FORCE
        cos, sin = math.cos(self.theta), math.sin(self.theta)
        temp = (force + POLE_MOMENT * self.theta_dot**2 * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (
            HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS)
        )
        x_acc = temp - POLE_MOMENT * theta_acc * cos / TOTAL_MASS
        self.x, self.x_dot = self.x + TAU * self.x_dot, self.x_dot + TAU * x_acc
        self.theta, self.theta_dot = (
            self.theta + TAU * self.theta_dot,
            self.theta_dot + TAU * theta_acc,
        )
        self.t += 1
        terminated = abs(self.x) > X_LIMIT or abs(self.theta) > THETA_LIMIT
        return 1.0 / self.episode_length, terminated, self.t >= self.episode_length


class PositionOnlyCartPoleGym(_CartPoleGym):
    """NumPy twin of :class:`PositionOnlyCartPole`."""

    def _setup(self, episode_length: int = 200) -> None:
        super()._setup(episode_length=episode_length)


class NoisyPositionOnlyCartPoleGym(_CartPoleGym):
    """NumPy twin of :class:`NoisyPositionOnlyCartPole`."""

    noisy = True

    def _setup(self, noise_sigma: float = 0.1, episode_length: int = 200) -> None:
        super()._setup(episode_length=episode_length, noise_sigma=noise_sigma)


TASKS: list[tuple[type[MemoryTask], type[MemoryTaskGym]]] = [
    (MultiarmedBandit, MultiarmedBanditGym),
    (Battleship, BattleshipGym),
    (MineSweeper, MineSweeperGym),
    (Concentration, ConcentrationGym),
    (PositionOnlyCartPole, PositionOnlyCartPoleGym),
    (NoisyPositionOnlyCartPole, NoisyPositionOnlyCartPoleGym),
]
