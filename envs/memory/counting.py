"""Tier C: counting and long-delay tasks from the LSTM explainers (MEMORY_TASKS.md, section C).

- :class:`CountAB`: watch ``n`` ``a``s, then emit ``b`` exactly ``n`` times and ``stop``
  (the a^n b^n language of Gers & Schmidhuber 2001, as a decision task).
- :class:`SelectiveCount`: the same with distractor ``x``s mixed into the ``a``s.
- :class:`RememberAB`: remember ``A`` or ``B`` across ``k`` distractors (Hochreiter &
  Schmidhuber 1997's long time lag tasks); ``k`` up to 1000 probes the "thousands of steps"
  claim.

CountAB and SelectiveCount have Easy / Medium / Hard difficulties, ``n_max`` = 5 / 20 / 100:
Easy checks the mechanics, Medium needs a count well past what a short window shows, Hard
makes episodes (up to ~200 / ~300 steps) longer than usual truncated-BPTT windows, so the
count has to survive across them. RememberAB is registered under its bare name with
``k_min=1, k_max=10``; ``gym.make("rlstm/RememberAB-v0", k_min=1000, k_max=1000)`` or
``memory.make("RememberAB", k_min=..., k_max=...)`` sweeps the delay.

**Previous action.** In the answer phase of CountAB / SelectiveCount the agent must know how
many ``b``s it has emitted. It does not need its previous action for that: the first wrong
answer ends the episode, so in any live state every earlier answer was correct, and the
number of ``b``s emitted equals the number of answer steps since ``X``, which the observation
stream shows. ``needs_prev_action`` therefore stays False (``prev_action=True`` still works);
for RememberAB it stays off because echoing the previous action would let a memoryless
policy carry the cue through the action channel.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from envs.memory.base import MemoryTask, MemoryTaskGym
from envs.memory.probes import check_int, take_content, take_content_np

B_ACTION, STOP = 0, 1
_COUNT_DIFFICULTIES: dict[str, int] = {"Easy": 5, "Medium": 20, "Hard": 100}


# -- CountAB -------------------------------------------------------------------------------


class CountAB(MemoryTask):
    """Count ``a``s, then emit as many ``b``s and ``stop``.

    Episode content: ``n`` in [1, n_max]. Steps ``t``: watch ``0 <= t < n`` shows ``a``;
    the answer phase starts at ``t = n``, where ``X`` is shown, and later answer steps show a
    blank. Actions: 0 = ``b``, 1 = ``stop``; watch-phase actions are ignored (reward 0). At
    answer step ``j = t - n`` the correct action is ``b`` for ``j < n`` and ``stop`` at
    ``j = n``: a correct action earns ``+1/(n+1)``, the first mistake earns ``-1/(n+1)`` and
    terminates; the correct ``stop`` terminates with return 1. Returns lie in
    ``[-1/(n+1), 1]``; an episode lasts at most ``2n + 1`` steps (``max_episode_steps =
    2 n_max + 1``), so there is no time limit to truncate.

    Observation ``(3,)`` float32 one-hot ``[a, X, blank]``; the terminal observation is the
    blank.
    """

    name = "CountAB"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        d: {"n_max": n} for d, n in _COUNT_DIFFICULTIES.items()
    }
    oracle_return: ClassVar[dict[str, float]] = {d: 1.0 for d in _COUNT_DIFFICULTIES}

    def _setup(self, n_max: int = 5) -> None:
        self.n_max = check_int("n_max", n_max, 1)
        self.task_obs_dim = 3
        self.num_actions = 2
        self.max_episode_steps = 2 * self.n_max + 1
        B, dev = self.num_envs, self.device
        self.t = torch.zeros(B, dtype=torch.long, device=dev)
        self.n = torch.ones(B, dtype=torch.long, device=dev)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        if content is None:
            n = self.randint(1, self.n_max + 1, (self.num_envs,))
        else:
            n = take_content(content, "n", (self.num_envs,), 1, self.n_max)
        self.n = torch.where(mask, n, self.n)
        self.t = self.t.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        t, n = self.t, self.n
        return F.one_hot(torch.where(t < n, 0, torch.where(t == n, 1, 2)), 3).float()

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _answer_step(self, self.t - self.n, actions)

    def oracle(self) -> Tensor:
        return (self.t == 2 * self.n).long()


def _answer_step(
    env: CountAB | SelectiveCount, j: Tensor, actions: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The shared answer rule of CountAB and SelectiveCount at answer index ``j (B,)``.

    ``j < 0`` is the watch phase (reward 0). Advances ``env.t``; returns
    ``(reward, terminated, truncated)``, each ``(B,)``.
    """
    n = env.n
    correct = actions == (j == n).long()
    scale = 1.0 / (n + 1).float()
    answering = j >= 0
    reward = torch.where(answering, torch.where(correct, scale, -scale), 0.0)
    terminated = answering & (~correct | (j == n))
    env.t = env.t + 1
    return reward, terminated, torch.zeros_like(terminated)


def _answer_step_np(n: int, j: int, action: int) -> tuple[float, bool, bool]:
    """NumPy-twin version of the answer rule: ``(reward, terminated, truncated)``."""
    if j < 0:
        return 0.0, False, False
    target = STOP if j == n else B_ACTION
    if action != target:
        return -1.0 / (n + 1), True, False
    return 1.0 / (n + 1), j == n, False


class CountABGym(MemoryTaskGym):
    """Gymnasium twin of :class:`CountAB`: one env, written independently in NumPy."""

    def _setup(self, n_max: int = 5) -> None:
        self.n_max = check_int("n_max", n_max, 1)
        self.task_obs_dim = 3
        self.num_actions = 2
        self.max_episode_steps = 2 * self.n_max + 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        if content is None:
            n = np.asarray(self.np_random.integers(1, self.n_max + 1))
        else:
            n = take_content_np(content, "n", (), 1, self.n_max)
        self.content = {"n": np.asarray(n, dtype=np.int64)}
        self.t = 0

    def _observe(self) -> np.ndarray:
        n = int(self.content["n"])
        obs = np.zeros(3, dtype=np.float32)
        obs[0 if self.t < n else 1 if self.t == n else 2] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        n = int(self.content["n"])
        j = self.t - n
        self.t += 1
        return _answer_step_np(n, j, action)


# -- SelectiveCount ------------------------------------------------------------------------


class SelectiveCount(MemoryTask):
    """CountAB with ``m`` distractor ``x``s mixed in random order among the ``n`` ``a``s.

    Episode content: ``n`` in [1, n_max], ``m`` in [0, m_max] and ``order``
    ``(n_max + m_max,)``: the watch sequence, 0 = ``a``, 1 = ``x``, a uniformly random
    arrangement of ``n`` zeros and ``m`` ones, padded with -1. The watch phase is
    ``0 <= t < n + m``; from ``t = n + m`` (``X`` shown, blanks after) the answer rule of
    :class:`CountAB` applies with the count ``n`` of ``a``s only. At most
    ``max_episode_steps = 2 n_max + m_max + 1`` steps.

    The batched class draws the order lazily, one symbol per step: the next symbol is ``a``
    with probability (``a``s left) / (symbols left), which yields a uniformly random
    arrangement without generating whole sequences when an episode starts. An injected
    ``order`` is replayed instead.

    Observation ``(4,)`` float32 one-hot ``[a, x, X, blank]``.
    """

    name = "SelectiveCount"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        d: {"n_max": n, "m_max": n} for d, n in _COUNT_DIFFICULTIES.items()
    }
    oracle_return: ClassVar[dict[str, float]] = {d: 1.0 for d in _COUNT_DIFFICULTIES}

    def _setup(self, n_max: int = 5, m_max: int = 5) -> None:
        self.n_max = check_int("n_max", n_max, 1)
        self.m_max = check_int("m_max", m_max, 0)
        self.task_obs_dim = 4
        self.num_actions = 2
        self.max_episode_steps = 2 * self.n_max + self.m_max + 1
        B, dev = self.num_envs, self.device
        zeros = lambda: torch.zeros(B, dtype=torch.long, device=dev)
        self.t, self.n, self.m = zeros(), zeros() + 1, zeros()
        self.a_left, self.x_left = zeros(), zeros()  # not yet shown, after the current symbol
        self.symbol = zeros()  # the watch symbol shown at step t: 0 = a, 1 = x
        self.injected = torch.zeros(B, dtype=torch.bool, device=dev)
        self.order = torch.full((B, self.n_max + self.m_max), -1, dtype=torch.long, device=dev)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        B = self.num_envs
        if content is None:
            n = self.randint(1, self.n_max + 1, (B,))
            m = self.randint(0, self.m_max + 1, (B,))
            self.injected = self.injected & ~mask
        else:
            n = take_content(content, "n", (B,), 1, self.n_max)
            m = take_content(content, "m", (B,), 0, self.m_max)
            width = self.n_max + self.m_max
            order = take_content(content, "order", (B, width), -1, 1)
            # a host sync, but only on a reset with injected content
            idx = torch.arange(width, device=self.device)
            expected = torch.where(idx < (n + m)[:, None], order.clamp(min=0), -1)
            if not (torch.equal(order, expected) and torch.equal((order == 0).sum(1), n)):
                raise ValueError(
                    "content['order'] must hold n zeros and m ones, then -1 padding, per env"
                )
            self.order = torch.where(mask[:, None], order, self.order)
            self.injected = self.injected | mask
        self.n = torch.where(mask, n, self.n)
        self.m = torch.where(mask, m, self.m)
        self.a_left = torch.where(mask, n, self.a_left)
        self.x_left = torch.where(mask, m, self.x_left)
        self.t = self.t.masked_fill(mask, 0)
        self._draw(mask)

    def _draw(self, mask: Tensor) -> None:
        """Pick the watch symbol at the current ``t`` where ``mask`` (and symbols are left)."""
        left = self.a_left + self.x_left
        lazy_a = self.rand(self.num_envs) * left.float() < self.a_left.float()
        at = self.t.clamp(max=self.order.shape[1] - 1)[:, None]
        given_a = self.order.gather(1, at)[:, 0] == 0
        is_a = torch.where(self.injected, given_a, lazy_a)
        live = mask & (left > 0)
        self.symbol = torch.where(live, (~is_a).long(), self.symbol)
        self.a_left = self.a_left - (live & is_a).long()
        self.x_left = self.x_left - (live & ~is_a).long()

    def _observe(self) -> Tensor:
        t, w = self.t, self.n + self.m
        return F.one_hot(torch.where(t < w, self.symbol, torch.where(t == w, 2, 3)), 4).float()

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = _answer_step(self, self.t - self.n - self.m, actions)
        self._draw(self.t < self.n + self.m)
        return out

    def oracle(self) -> Tensor:
        return (self.t == 2 * self.n + self.m).long()


class SelectiveCountGym(MemoryTaskGym):
    """Gymnasium twin of :class:`SelectiveCount`: one env, written independently in NumPy.

    It samples the whole watch order at reset (a random permutation of ``n`` ``a``s and
    ``m`` ``x``s), which is the distribution the batched class draws lazily.
    """

    def _setup(self, n_max: int = 5, m_max: int = 5) -> None:
        self.n_max = check_int("n_max", n_max, 1)
        self.m_max = check_int("m_max", m_max, 0)
        self.task_obs_dim = 4
        self.num_actions = 2
        self.max_episode_steps = 2 * self.n_max + self.m_max + 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        width = self.n_max + self.m_max
        if content is None:
            n = int(self.np_random.integers(1, self.n_max + 1))
            m = int(self.np_random.integers(0, self.m_max + 1))
            order = np.full(width, -1, dtype=np.int64)
            order[: n + m] = self.np_random.permutation(np.repeat([0, 1], [n, m]))
        else:
            n = int(take_content_np(content, "n", (), 1, self.n_max))
            m = int(take_content_np(content, "m", (), 0, self.m_max))
            order = take_content_np(content, "order", (width,), -1, 1)
            head, tail = order[: n + m], order[n + m :]
            if (head == 0).sum() != n or (head == 1).sum() != m or (tail != -1).any():
                raise ValueError(
                    f"content['order'] must hold n={n} zeros and m={m} ones, then -1 padding, "
                    f"got {order.tolist()}"
                )
        self.content = {
            "n": np.asarray(n, dtype=np.int64),
            "m": np.asarray(m, dtype=np.int64),
            "order": order,
        }
        self.t = 0

    def _observe(self) -> np.ndarray:
        n, m = int(self.content["n"]), int(self.content["m"])
        obs = np.zeros(4, dtype=np.float32)
        if self.t < n + m:
            obs[int(self.content["order"][self.t])] = 1.0
        else:
            obs[2 if self.t == n + m else 3] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        n, m = int(self.content["n"]), int(self.content["m"])
        j = self.t - n - m
        self.t += 1
        return _answer_step_np(n, j, action)


# -- RememberAB ----------------------------------------------------------------------------


class RememberAB(MemoryTask):
    """Remember ``A`` or ``B`` across ``k`` distractors, answer once at ``Y``.

    Episode content: ``cue`` in {0 = ``A``, 1 = ``B``} and ``k`` in [k_min, k_max]. Steps:
    ``t = 0`` shows the cue, ``1 <= t <= k`` show ``x``, ``t = k + 1`` shows ``Y``. Actions:
    0 = ``a``, 1 = ``b``; only the action at ``Y`` counts: +1 if it names the cue, else -1,
    then terminated. ``k + 2`` steps (``max_episode_steps = k_max + 2``); random return 0.

    Observation ``(4,)`` float32 one-hot ``[A, B, x, Y]``; the terminal observation is all
    zeros.
    """

    name = "RememberAB"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {"": {"k_min": 1, "k_max": 10}}
    oracle_return: ClassVar[dict[str, float]] = {"": 1.0}

    def _setup(self, k_min: int = 1, k_max: int = 10) -> None:
        self.k_min = check_int("k_min", k_min, 0)
        self.k_max = check_int("k_max", k_max, self.k_min)
        self.task_obs_dim = 4
        self.num_actions = 2
        self.max_episode_steps = self.k_max + 2
        B, dev = self.num_envs, self.device
        self.t = torch.zeros(B, dtype=torch.long, device=dev)
        self.k = torch.zeros(B, dtype=torch.long, device=dev)
        self.cue = torch.zeros(B, dtype=torch.long, device=dev)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        B = self.num_envs
        if content is None:
            cue = self.randint(0, 2, (B,))
            k = self.randint(self.k_min, self.k_max + 1, (B,))
        else:
            cue = take_content(content, "cue", (B,), 0, 1)
            k = take_content(content, "k", (B,), self.k_min, self.k_max)
        self.cue = torch.where(mask, cue, self.cue)
        self.k = torch.where(mask, k, self.k)
        self.t = self.t.masked_fill(mask, 0)

    def _observe(self) -> Tensor:
        t, k = self.t, self.k
        field = torch.where(t == 0, self.cue, torch.where(t <= k, 2, 3))
        return F.one_hot(field, 4).float() * (t <= k + 1).float()[:, None]

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        decide = self.t == self.k + 1
        reward = torch.where(decide, torch.where(actions == self.cue, 1.0, -1.0), 0.0)
        self.t = self.t + 1
        return reward, decide, torch.zeros_like(decide)

    def oracle(self) -> Tensor:
        return self.cue


class RememberABGym(MemoryTaskGym):
    """Gymnasium twin of :class:`RememberAB`: one env, written independently in NumPy."""

    def _setup(self, k_min: int = 1, k_max: int = 10) -> None:
        self.k_min = check_int("k_min", k_min, 0)
        self.k_max = check_int("k_max", k_max, self.k_min)
        self.task_obs_dim = 4
        self.num_actions = 2
        self.max_episode_steps = self.k_max + 2

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        if content is None:
            cue = np.asarray(self.np_random.integers(0, 2))
            k = np.asarray(self.np_random.integers(self.k_min, self.k_max + 1))
        else:
            cue = take_content_np(content, "cue", (), 0, 1)
            k = take_content_np(content, "k", (), self.k_min, self.k_max)
        self.content = {"cue": np.asarray(cue, dtype=np.int64), "k": np.asarray(k, np.int64)}
        self.t = 0

    def _observe(self) -> np.ndarray:
        k = int(self.content["k"])
        obs = np.zeros(4, dtype=np.float32)
        if self.t == 0:
            obs[int(self.content["cue"])] = 1.0
        elif self.t <= k:
            obs[2] = 1.0
        elif self.t == k + 1:
            obs[3] = 1.0
        return obs

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        decide = self.t == int(self.content["k"]) + 1
        self.t += 1
        if not decide:
            return 0.0, False, False
        return (1.0 if action == int(self.content["cue"]) else -1.0), True, False


TASKS: list[tuple[type[MemoryTask], type[MemoryTaskGym]]] = [
    (CountAB, CountABGym),
    (SelectiveCount, SelectiveCountGym),
    (RememberAB, RememberABGym),
]
