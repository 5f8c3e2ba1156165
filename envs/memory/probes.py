"""Tier B: classic memory probes swept by length (spec: shared MEMORY_TASKS.md, section B).

- :class:`MemoryChain` (bsuite ``memory_chain``): remember context bits over ``L`` steps.
- :class:`TMaze` (passive T-maze): remember a cue while walking a corridor of length ``L``.
- :class:`Copy`: watch ``m`` symbols, wait ``G`` blank steps, then reproduce them in order.

MemoryChain and TMaze are registered under their bare names with a default length that
``gym.make("rlstm/TMaze-v0", length=1000)`` / ``memory.make("TMaze", length=1000)``
override; Copy has Easy / Medium / Hard gaps 10 / 100 / 500 and takes ``gap=`` as well.

Observations are float32 one-hot fields in [0, 1]. The spec's signed values (bsuite shows
context bits as +-1, the T-maze cue as ``[0, +-1]``) become pairs of one-hot fields, so
"shown 0", "shown 1" and "not shown" stay three distinct inputs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from envs.memory.base import MemoryTask, MemoryTaskGym

# -- shared validation -------------------------------------------------------------------


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int; ``ValueError`` naming it unless it is an int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def take_content(
    content: dict[str, Tensor], key: str, shape: tuple[int, ...], low: int, high: int
) -> Tensor:
    """Injected ``content[key]`` of a batched env as int64 ``shape``, values in [low, high].

    Only a reset with injected content calls this, so the range check's host sync stays off
    the step path.
    """
    if key not in content:
        raise ValueError(f"content is missing {key!r}; got keys {sorted(content)}")
    value = content[key]
    if tuple(value.shape) != shape:
        raise ValueError(f"content[{key!r}] must have shape {shape}, got {tuple(value.shape)}")
    value = value.long()
    if value.numel() and (int(value.min()) < low or int(value.max()) > high):
        raise ValueError(
            f"content[{key!r}] must lie in [{low}, {high}], "
            f"got values in [{int(value.min())}, {int(value.max())}]"
        )
    return value


def take_content_np(
    content: dict[str, Any], key: str, shape: tuple[int, ...], low: int, high: int
) -> np.ndarray:
    """Injected ``content[key]`` of a gym twin as int64 ``shape``, values in [low, high]."""
    if key not in content:
        raise ValueError(f"content is missing {key!r}; got keys {sorted(content)}")
    value = np.asarray(content[key])
    if value.shape != shape:
        raise ValueError(f"content[{key!r}] must have shape {shape}, got {value.shape}")
    if value.size and (value.min() < low or value.max() > high):
        raise ValueError(
            f"content[{key!r}] must lie in [{low}, {high}], "
            f"got values in [{value.min()}, {value.max()}]"
        )
    return value.astype(np.int64)


# -- MemoryChain ---------------------------------------------------------------------------


class MemoryChain(MemoryTask):
    """The bsuite MemoryChain (Osband et al. 2020, ``bsuite/environments/memory_chain.py``).

    Episode content: ``context`` (num_bits,) bits and ``query`` in [0, num_bits). An episode
    is ``L + 1`` steps, ``L = memory_length``; ``t`` counts actions taken so far. Actions:
    2 (the guessed bit). Reward: 0, except at the last step (``t == L``): +1 if
    ``action == context[query]`` else -1; then terminated. Return in {-1, +1}.

    Observation ``(1 + 3 * num_bits,)`` float32:

    - ``[0]``: time left ``1 - t / L`` (0 at the decision step and on the terminal obs);
    - ``[1 : 1 + num_bits]``: query one-hot, shown only at the decision step ``t == L``;
    - ``[1 + num_bits :]``: per bit ``i`` the pair ``(bit == 0, bit == 1)`` at
      ``1 + num_bits + 2 i``, shown only at ``t == 0`` (bsuite shows +-1 there; the pair keeps
      the obs in [0, 1] and "not shown" distinct from both values).

    bsuite computes each step's observation before advancing its clock, so there the context
    appears on the first two observations and the clock lags by one; here observation ``t``
    is the state after ``t`` actions, shown once. bsuite shows the query as its raw index (0
    for ``num_bits=1``); here it is one-hot, i.e. a 1 at the decision step when
    ``num_bits=1``, which the time field already tells.
    """

    name = "MemoryChain"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {"": {"memory_length": 10, "num_bits": 1}}
    oracle_return: ClassVar[dict[str, float]] = {"": 1.0}

    def _setup(self, memory_length: int = 10, num_bits: int = 1) -> None:
        self.memory_length = check_int("memory_length", memory_length, 1)
        self.num_bits = check_int("num_bits", num_bits, 1)
        self.task_obs_dim = 1 + 3 * self.num_bits
        self.num_actions = 2
        self.max_episode_steps = self.memory_length + 1
        B, dev = self.num_envs, self.device
        self.t = torch.zeros(B, dtype=torch.long, device=dev)
        self.context = torch.zeros(B, self.num_bits, dtype=torch.long, device=dev)
        self.query = torch.zeros(B, dtype=torch.long, device=dev)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        B, nb = self.num_envs, self.num_bits
        if content is None:
            context = self.randint(0, 2, (B, nb))
            query = self.randint(0, nb, (B,))
        else:
            context = take_content(content, "context", (B, nb), 0, 1)
            query = take_content(content, "query", (B,), 0, nb - 1)
        self.context = torch.where(mask[:, None], context, self.context)
        self.query = torch.where(mask, query, self.query)
        self.t = self.t.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        L = self.memory_length
        time = (1.0 - self.t.float() / L).clamp(min=0.0)
        query = F.one_hot(self.query, self.num_bits).float() * (self.t == L).float()[:, None]
        context = F.one_hot(self.context, 2).float().flatten(1) * (self.t == 0).float()[:, None]
        return torch.cat([time[:, None], query, context], dim=1)

    def _answer(self) -> Tensor:
        return self.context.gather(1, self.query[:, None])[:, 0]

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        final = self.t == self.memory_length
        sign = torch.where(actions == self._answer(), 1.0, -1.0)
        reward = torch.where(final, sign, 0.0)
        self.t = self.t + 1
        return reward, final, torch.zeros_like(final)

    def oracle(self) -> Tensor:
        return self._answer()


class MemoryChainGym(MemoryTaskGym):
    """Gymnasium twin of :class:`MemoryChain`: one env, written independently in NumPy."""

    def _setup(self, memory_length: int = 10, num_bits: int = 1) -> None:
        self.memory_length = check_int("memory_length", memory_length, 1)
        self.num_bits = check_int("num_bits", num_bits, 1)
        self.task_obs_dim = 1 + 3 * self.num_bits
        self.num_actions = 2
        self.max_episode_steps = self.memory_length + 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        nb = self.num_bits
        if content is None:
            context = self.np_random.integers(0, 2, size=nb)
            query = np.asarray(self.np_random.integers(0, nb))
        else:
            context = take_content_np(content, "context", (nb,), 0, 1)
            query = take_content_np(content, "query", (), 0, nb - 1)
        self.content = {
            "context": np.asarray(context, dtype=np.int64),
            "query": np.asarray(query, dtype=np.int64),
        }
        self.t = 0

    def _observe(self) -> np.ndarray:
        nb, L = self.num_bits, self.memory_length
        obs = np.zeros(self.task_obs_dim, dtype=np.float32)
        obs[0] = max(0.0, 1.0 - self.t / L)
        if self.t == L:
            obs[1 + int(self.content["query"])] = 1.0
        if self.t == 0:
            for i, bit in enumerate(self.content["context"]):
                obs[1 + nb + 2 * i + int(bit)] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        reward, terminated = 0.0, False
        if self.t == self.memory_length:
            answer = int(self.content["context"][int(self.content["query"])])
            reward, terminated = (1.0 if action == answer else -1.0), True
        self.t += 1
        return reward, terminated, False


# -- TMaze ---------------------------------------------------------------------------------


FORWARD, BACK, UP, DOWN = 0, 1, 2, 3


class TMaze(MemoryTask):
    """The passive T-maze (Bakker 2001; passive variant of Ni et al. 2023, "When do transformers
    shine in RL?").

    Cells: corridor positions ``0 .. L - 1``, the junction at ``L`` (``L = length``), and the
    two arms. The agent starts at 0; the cue (up or down, episode content ``cue`` in {0, 1})
    is shown only on the first observation, so going back to the start does not help.
    Actions: 0 forward, 1 back, 2 up, 3 down. Forward moves one cell towards the junction;
    back moves one cell away (a wall at 0); up/down in the corridor and forward at the
    junction leave the agent in place. At the junction up/down enters that arm and ends the
    episode (terminated): +1 for the cued arm (0 = up, 1 = down), -1 for the other.
    Every other step that does not move forward (back, a bump, standing) costs -1/L, which
    removes the exploration confound of a sparse reward. The oracle walks forward ``L``
    steps then takes the cued arm: return 1.0 in ``L + 1`` steps.

    Time limit: truncated after ``max_episode_steps = 2 (L + 1)`` steps, twice the oracle's
    length, so a policy can recover from a few detours. Returns lie in
    ``[-2 - 2/L, 1]`` (all steps penalised, then truncated).

    Observation ``(4,)`` float32 one-hot ``[cue up, cue down, corridor, junction]``: the cue
    pair at ``t == 0`` (the spec's ``[0, +-1]``), corridor on later steps at positions
    ``< L`` (the spec's ``[0, 0]``), junction at ``L`` (the spec's ``[1, 0]``); all zeros
    once an arm is entered (the terminal observation).
    """

    name = "TMaze"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {"": {"length": 10}}
    oracle_return: ClassVar[dict[str, float]] = {"": 1.0}

    def _setup(self, length: int = 10) -> None:
        self.length = check_int("length", length, 1)
        self.task_obs_dim = 4
        self.num_actions = 4
        self.max_episode_steps = 2 * (self.length + 1)
        B, dev = self.num_envs, self.device
        self.t = torch.zeros(B, dtype=torch.long, device=dev)
        self.pos = torch.zeros(B, dtype=torch.long, device=dev)  # L + 1 = in an arm
        self.cue = torch.zeros(B, dtype=torch.long, device=dev)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        if content is None:
            cue = self.randint(0, 2, (self.num_envs,))
        else:
            cue = take_content(content, "cue", (self.num_envs,), 0, 1)
        self.cue = torch.where(mask, cue, self.cue)
        self.t = self.t.masked_fill(mask, 0)
        self.pos = self.pos.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        L = self.length
        field = torch.where(self.t == 0, self.cue, torch.where(self.pos < L, 2, 3))
        return F.one_hot(field, 4).float() * (self.pos <= L).float()[:, None]

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        L = self.length
        at_junction = self.pos == L
        turn = (actions == UP) | (actions == DOWN)
        chose = at_junction & turn
        advance = ~at_junction & (actions == FORWARD)
        arm_reward = torch.where(actions - UP == self.cue, 1.0, -1.0)
        reward = torch.where(chose, arm_reward, torch.where(advance, 0.0, -1.0 / L))
        back = torch.where(actions == BACK, (self.pos - 1).clamp(min=0), self.pos)
        self.pos = torch.where(chose, L + 1, torch.where(advance, self.pos + 1, back))
        self.t = self.t + 1
        truncated = ~chose & (self.t >= self.max_episode_steps)
        return reward, chose, truncated

    def oracle(self) -> Tensor:
        return torch.where(self.pos < self.length, FORWARD, UP + self.cue)

    def _succeeds(self, actions: Tensor) -> Tensor:
        """Success is taking the cued arm, whatever the detours cost: with ``L`` of them the
        return is <= 0 though the memory worked."""
        return (self.pos == self.length) & (actions == UP + self.cue)


class TMazeGym(MemoryTaskGym):
    """Gymnasium twin of :class:`TMaze`: one env, written independently in NumPy."""

    def _setup(self, length: int = 10) -> None:
        self.length = check_int("length", length, 1)
        self.task_obs_dim = 4
        self.num_actions = 4
        self.max_episode_steps = 2 * (self.length + 1)

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        if content is None:
            cue = np.asarray(self.np_random.integers(0, 2))
        else:
            cue = take_content_np(content, "cue", (), 0, 1)
        self.content = {"cue": np.asarray(cue, dtype=np.int64)}
        self.t, self.pos, self.in_arm = 0, 0, False

    def _observe(self) -> np.ndarray:
        obs = np.zeros(4, dtype=np.float32)
        if self.in_arm:
            return obs
        if self.t == 0:
            obs[int(self.content["cue"])] = 1.0
        elif self.pos < self.length:
            obs[2] = 1.0
        else:
            obs[3] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        self.t += 1
        penalty = -1.0 / self.length
        if self.pos == self.length and action in (UP, DOWN):
            self.in_arm = True
            return (1.0 if action - UP == int(self.content["cue"]) else -1.0), True, False
        if action == FORWARD and self.pos < self.length:
            self.pos += 1
            reward = 0.0
        else:
            if action == BACK:
                self.pos = max(0, self.pos - 1)
            reward = penalty
        return reward, False, self.t >= self.max_episode_steps


# -- Copy ----------------------------------------------------------------------------------


class Copy(MemoryTask):
    """The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016), one action per step.

    Episode content: ``symbols`` (m,) in [0, alphabet), ``m = num_symbols``. Phases by step
    ``t``: watch ``0 <= t < m`` (symbol ``t`` shown), gap ``m <= t < m + G`` (blank,
    ``G = gap``), output ``m + G <= t < 2m + G`` (delimiter shown). Actions: ``alphabet``
    symbols. The action at output step ``j = t - m - G`` earns +1/m if it equals
    ``symbols[j]``, else -1/m; actions in the watch and gap phases are ignored (reward 0).
    The episode terminates after the last output step: ``2m + G`` steps, return in
    [-1, 1]; a random policy scores ``(2 / alphabet - 1)`` = -0.75 for 8 symbols.

    Observation ``(alphabet + 2,)`` float32 one-hot ``[symbol 0 .. symbol A-1, blank,
    delimiter]``. The delimiter stays on through the whole output phase (as POPGym's
    Autoencode keeps its phase flag), so the task probes holding the symbols over the gap,
    not noticing the delimiter; the agent still counts its position in the output. The
    terminal observation is all zeros.
    """

    name = "Copy"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"gap": 10},
        "Medium": {"gap": 100},
        "Hard": {"gap": 500},
    }
    oracle_return: ClassVar[dict[str, float]] = {"Easy": 1.0, "Medium": 1.0, "Hard": 1.0}

    def _setup(self, gap: int = 10, num_symbols: int = 10, alphabet: int = 8) -> None:
        self.gap = check_int("gap", gap, 0)
        self.num_symbols = check_int("num_symbols", num_symbols, 1)
        self.alphabet = check_int("alphabet", alphabet, 2)
        self.task_obs_dim = self.alphabet + 2
        self.num_actions = self.alphabet
        self.max_episode_steps = 2 * self.num_symbols + self.gap
        B, dev = self.num_envs, self.device
        self.t = torch.zeros(B, dtype=torch.long, device=dev)
        self.symbols = torch.zeros(B, self.num_symbols, dtype=torch.long, device=dev)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        shape = (self.num_envs, self.num_symbols)
        if content is None:
            symbols = self.randint(0, self.alphabet, shape)
        else:
            symbols = take_content(content, "symbols", shape, 0, self.alphabet - 1)
        self.symbols = torch.where(mask[:, None], symbols, self.symbols)
        self.t = self.t.masked_fill(mask, 0)

    def _symbol_at(self, index: Tensor) -> Tensor:
        """``symbols[b, index[b]]`` with ``index`` clamped into range, shape ``(B,)``."""
        return self.symbols.gather(1, index.clamp(0, self.num_symbols - 1)[:, None])[:, 0]

    def _observe(self) -> Tensor:
        m, G, A = self.num_symbols, self.gap, self.alphabet
        t = self.t
        field = torch.where(t < m, self._symbol_at(t), torch.where(t < m + G, A, A + 1))
        return F.one_hot(field, A + 2).float() * (t < 2 * m + G).float()[:, None]

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.num_symbols
        j = self.t - m - self.gap
        sign = torch.where(actions == self._symbol_at(j), 1.0, -1.0)
        reward = torch.where(j >= 0, sign / m, 0.0)
        self.t = self.t + 1
        terminated = j == m - 1
        return reward, terminated, torch.zeros_like(terminated)

    def oracle(self) -> Tensor:
        return self._symbol_at(self.t - self.num_symbols - self.gap)


class CopyGym(MemoryTaskGym):
    """Gymnasium twin of :class:`Copy`: one env, written independently in NumPy."""

    def _setup(self, gap: int = 10, num_symbols: int = 10, alphabet: int = 8) -> None:
        self.gap = check_int("gap", gap, 0)
        self.num_symbols = check_int("num_symbols", num_symbols, 1)
        self.alphabet = check_int("alphabet", alphabet, 2)
        self.task_obs_dim = self.alphabet + 2
        self.num_actions = self.alphabet
        self.max_episode_steps = 2 * self.num_symbols + self.gap

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        m = self.num_symbols
        if content is None:
            symbols = self.np_random.integers(0, self.alphabet, size=m)
        else:
            symbols = take_content_np(content, "symbols", (m,), 0, self.alphabet - 1)
        self.content = {"symbols": np.asarray(symbols, dtype=np.int64)}
        self.t = 0

    def _observe(self) -> np.ndarray:
        m, G, A = self.num_symbols, self.gap, self.alphabet
        obs = np.zeros(A + 2, dtype=np.float32)
        if self.t < m:
            obs[int(self.content["symbols"][self.t])] = 1.0
        elif self.t < m + G:
            obs[A] = 1.0
        elif self.t < 2 * m + G:
            obs[A + 1] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        m = self.num_symbols
        j = self.t - m - self.gap
        self.t += 1
        if j < 0:
            return 0.0, False, False
        reward = (1.0 if action == int(self.content["symbols"][j]) else -1.0) / m
        return reward, j == m - 1, False


TASKS: list[tuple[type[MemoryTask], type[MemoryTaskGym]]] = [
    (MemoryChain, MemoryChainGym),
    (TMaze, TMazeGym),
    (Copy, CopyGym),
]
