"""Tier A: the POPGym diagnostic card tasks (spec: shared MEMORY_TASKS.md, section A).

- :class:`RepeatFirst`: answer the suit of the first card dealt, at every step.
- :class:`RepeatPrevious`: answer the suit of the card seen ``k - 1`` steps before this one.
- :class:`Autoencode`: watch a deck, then recall its suits in reverse order.
- :class:`CountRecall`: answer how many dealt cards so far share the previous query's class.

Semantics follow POPGym 1.0.7 (``popgym.envs.repeat_first`` etc.) step for step; the tests
play injected decks through POPGym's own classes and compare every observation and reward.
A card index ``i`` of an ``N = 52 * num_decks`` deck has suit ``i % 4``, colour ``i % 2`` and
rank ``(i % 52) // 4`` (``popgym.core.deck``). Episode content is the deal order: ``deck[j]``
is the card index dealt ``j``-th (POPGym deals from the end of its shuffled index array).

The batched envs never shuffle a deck. A task only observes each card's class (suit,
colour or rank), and the class sequence of a uniformly shuffled deck has the law of drawing
each next class with probability ``remaining[k] / remaining.sum()`` (sequential
multivariate hypergeometric), so each env keeps its remaining cards per class (as a
cumulative sum over ``K`` classes) and draws one class per step by inverse CDF; starting an
episode resets ``K + 1`` numbers instead of shuffling ``N`` cards. Injected decks are
replayed from a stored class sequence for the episode they start; later episodes draw
lazily again.

The gym twins shuffle with ``self.np_random`` exactly as POPGym does (``arange(N)`` shuffled
in place, dealt from the end), so a twin reset with seed ``s`` deals the same cards as the
POPGym env reset with seed ``s``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from envs.memory.base import MemoryTask, MemoryTaskGym

DECK_SIZE = 52
NUM_SUITS = 4
DECK_TYPES = ("colors", "suits", "ranks")


def card_classes(deck_type: str, num_cards: int) -> np.ndarray:
    """Class of every card index ``0..num_cards-1``, shape ``(num_cards,)`` int64.

    ``deck_type`` is POPGym's: ``colors`` (``i % 2``), ``suits`` (``i % 4``) or ``ranks``
    (``(i % 52) // 4``).
    """
    idx = np.arange(num_cards, dtype=np.int64)
    if deck_type == "colors":
        return idx % 2
    if deck_type == "suits":
        return idx % NUM_SUITS
    if deck_type == "ranks":
        return (idx % DECK_SIZE) // NUM_SUITS
    raise ValueError(f"deck_type must be one of {DECK_TYPES}, got {deck_type!r}")


def check_num_decks(num_decks: Any) -> int:
    """``num_decks`` as a positive int; ``ValueError`` naming it otherwise."""
    if isinstance(num_decks, bool) or not isinstance(num_decks, (int, np.integer)):
        raise ValueError(f"num_decks must be an int, got {num_decks!r}")
    if num_decks < 1:
        raise ValueError(f"num_decks must be >= 1, got {num_decks}")
    return int(num_decks)


def check_k(k: Any, num_cards: int) -> int:
    """RepeatPrevious's lag ``k`` as an int in ``[1, num_cards - 1]``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int, got {k!r}")
    if not 1 <= k < num_cards:
        raise ValueError(f"k must lie in [1, {num_cards - 1}] for {num_cards} cards, got {k}")
    return int(k)


# -- shared batched machinery ---------------------------------------------------------------


class _Views(SimpleNamespace):
    """Column views of ``CardTask._state``; not a tensor, so ``state_dict`` skips it."""

    cum: Tensor
    cards: Tensor
    t: Tensor
    extra: Tensor


class CardTask(MemoryTask):
    """Batched base of the card tasks: ``D`` lazily dealt decks per env (``D`` = number of
    ``content_keys``) of ``K`` card classes each.

    All per-env scalars live in one int64 row, ``_state (B, S)``, updated in place, so that
    starting episodes is one table lookup and one ``where`` (``_start_episodes``). Its
    columns, as the views in ``self._v``:

    - ``cum (B, D, K + 1)``: per deck, ``cum[j]`` = remaining cards of the ``j`` highest
      classes ``K - j .. K - 1`` (``cum[0] = 0``, ``cum[K]`` = cards left in the deck). This
      order makes the dealt class a plain count (see ``_deal``);
    - ``cards (B, D)``: what the task shows of each deck's current card (its class, unless
      the task stores an observation code there);
    - ``t (B,)``: steps taken in the episode;
    - ``extra (B, extra_columns)`` task columns, then one padding column if needed to make
      ``S`` odd.

    Replay of injected decks: ``_replay (B, D, N)`` class sequences, ``_replay_on (B,)``.
    """

    content_keys: ClassVar[tuple[str, ...]] = ("deck",)
    extra_columns: ClassVar[int] = 0

    num_cards: int
    num_classes: int

    def _setup_deck(self, num_decks: int, deck_type: str) -> None:
        """Allocate the dealing state for ``num_decks`` decks sorted into ``deck_type``."""
        self.num_cards = DECK_SIZE * check_num_decks(num_decks)
        classes = card_classes(deck_type, self.num_cards)
        K, B, D, dev = int(classes.max()) + 1, self.num_envs, len(self.content_keys), self.device
        self.num_classes = K
        width = D * (K + 1) + D + 1 + self.extra_columns
        # indexing a CUDA table whose rows lie 16*n bytes apart takes a vectorised gather
        # kernel that ran ~15x slower than the elementwise one (H100, torch 2.11, 262144
        # rows): keep row widths odd
        width += 1 - width % 2
        # one fresh row per combination of first cards: code = sum_d first[d] * K**(D-1-d).
        # The first card of a shuffled deck is uniform over the classes (each class is
        # equally represented in a deck), so the code is uniform over K**D values.
        self._code_weights = K ** torch.arange(D - 1, -1, -1, device=dev)
        codes = torch.arange(K**D, device=dev)
        first = codes[:, None] // self._code_weights % K  # (K**D, D)
        counts = self.num_cards // K - torch.nn.functional.one_hot(first, K)  # (K**D, D, K)
        cum = torch.nn.functional.pad(counts.flip(2).cumsum(2), (1, 0))  # (K**D, D, K + 1)
        self._fresh = torch.zeros(K**D, width, dtype=torch.long, device=dev)
        self._state = torch.zeros(B, width, dtype=torch.long, device=dev)
        self._make_views()
        fresh = self._views_of(self._fresh)
        fresh.cum.copy_(cum)
        fresh.cards.copy_(first)
        self._first_of_code = first  # tasks fill their extra columns of ``_fresh`` from it
        self._class_ids = torch.arange(K + 1, device=dev)
        self._eye_padded = torch.eye(K, K + 1 + K % 2, device=dev)
        self._class_of = torch.as_tensor(classes, device=dev)
        self._replay = torch.zeros(B, D, 0, dtype=torch.long, device=dev)
        self._replay_on = torch.zeros(B, dtype=torch.bool, device=dev)
        # host-side mirror of ``_replay_on.any()`` (kept without syncs): skips replay work
        self._replaying = False

    def _views_of(self, state: Tensor) -> _Views:
        D, K = len(self.content_keys), self.num_classes
        t_col = D * (K + 1) + D
        return _Views(
            cum=state[:, : D * (K + 1)].view(len(state), D, K + 1),
            cards=state[:, D * (K + 1) : t_col],
            t=state[:, t_col],
            extra=state[:, t_col + 1 : t_col + 1 + self.extra_columns],
        )

    def _make_views(self) -> None:
        # cached: building views costs host time on every step
        self._v = self._views_of(self._state)

    def _one_hot(self, classes: Tensor) -> Tensor:
        """``(B, D)`` classes -> ``(B, D * K)`` float32 one-hots, by one table lookup.

        The table is a ``(K, K)`` view of an eye of odd row width: rows an odd multiple of
        4 bytes apart keep CUDA on the fast indexing kernel (see ``_setup_deck``).
        """
        table = self._eye_padded[:, : self.num_classes]
        return table[classes].view(self.num_envs, -1)

    def _take_decks(self, content: dict[str, Tensor]) -> Tensor:
        """Injected decks ``content[key] (B, N)`` -> their class sequences ``(B, D, N)``.

        Runs only on a reset with content, so the permutation check may sync.
        """
        B, N = self.num_envs, self.num_cards
        missing = [key for key in self.content_keys if key not in content]
        if missing:
            raise ValueError(f"content is missing {missing}; got keys {sorted(content)}")
        decks = []
        for key in self.content_keys:
            deck = content[key]
            if tuple(deck.shape) != (B, N):
                raise ValueError(
                    f"content[{key!r}] must have shape ({B}, {N}), got {tuple(deck.shape)}"
                )
            if deck.dtype.is_floating_point or deck.dtype == torch.bool:
                raise ValueError(f"content[{key!r}] must hold card indices, got {deck.dtype}")
            deck = deck.long()
            bad = (deck.sort(dim=1).values != torch.arange(N, device=self.device)).any(dim=1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"content[{key!r}][{row}] must be a permutation of 0..{N - 1}, "
                    f"got {deck[row].tolist()}"
                )
            decks.append(self._class_of[deck])
        return torch.stack(decks, dim=1)

    def _start_episodes(self, mask: Tensor, content: dict[str, Tensor] | None) -> None:
        """Fresh decks, first cards dealt and ``t = 0`` where ``mask (B,)``."""
        if content is not None:
            self._replay = self._take_decks(content)
            self._replay_on.fill_(True)
            code = (self._replay[:, :, 0] * self._code_weights).sum(1)
        else:
            code = torch.randint(
                0, len(self._fresh), (self.num_envs,), generator=self.generator,
                device=self.device,
            )  # fmt: skip
            if self._replaying:
                self._replay_on &= ~mask
        torch.where(mask[:, None], self._fresh[code], self._state, out=self._state)

    def _deal(self, out: Tensor | None = None) -> Tensor:
        """Deal the next card of every deck; return its class ``(B, D)`` int64 (in ``out``).

        With ``cum`` over the classes from the top, the dealt class ``c`` is the one with
        ``cum[K-1-c] <= u * remaining < cum[K-c]`` (probability ``counts[c] / remaining``),
        so ``dec = cum > u * remaining`` marks exactly the ``cum[j]`` that lose the card
        (``j >= K - c``) and ``c = dec[1:K].sum()``. An empty deck (Autoencode's recall
        phase) deals class 0 and stays empty.
        """
        cum = self._v.cum
        thr = torch.rand(cum[:, :, :1].shape, generator=self.generator, device=self.device)
        dec = cum > thr.mul_(cum[:, :, -1:])  # (B, D, K + 1)
        if self._replaying:
            pos = (self.num_cards - cum[:, :, -1:]).clamp_(0, self.num_cards - 1)
            replayed = self._class_ids + self._replay.gather(2, pos) >= self.num_classes
            dec = torch.where(self._replay_on[:, None, None], replayed, dec)
        cum.add_(dec, alpha=-1)
        return torch.sum(dec[:, :, 1:-1], dim=2, out=out)

    def reset(self, seed: int | None = None, *, content: dict[str, Any] | None = None) -> Tensor:
        obs = super().reset(seed, content=content)
        self._replaying = content is not None
        return obs

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._make_views()
        self._replaying = bool(self._replay_on.any())

    def _set_scale(self, scale: float) -> None:
        # 0-dim device tensors: ``where`` with Python scalars costs more than the kernel
        self._plus = torch.tensor(scale, device=self.device)
        self._minus = torch.tensor(-scale, device=self.device)

    def _reward_sign(self, hit: Tensor) -> Tensor:
        """``+-scale`` by ``hit (B,)``, float32."""
        return torch.where(hit, self._plus, self._minus)


class CardTaskGym(MemoryTaskGym):
    """NumPy twin base: decks are shuffled like POPGym's ``Deck.reset(rng=np_random)``."""

    content_keys: ClassVar[tuple[str, ...]] = ("deck",)

    num_cards: int

    def _new_decks(self, content: dict[str, Any] | None) -> list[np.ndarray]:
        """The deal order of each deck ``(N,)`` (sampled, or taken from ``content``); sets
        ``self.content``."""
        N = self.num_cards
        decks = []
        for key in self.content_keys:
            if content is None:
                # POPGym: idx = arange(N); rng.shuffle(idx); cards are dealt from the end
                idx = np.arange(N)
                self.np_random.shuffle(idx)
                deck = idx[::-1].copy()
            else:
                if key not in content:
                    raise ValueError(f"content is missing {key!r}; got keys {sorted(content)}")
                deck = np.asarray(content[key])
                if deck.dtype.kind not in "iu":
                    raise ValueError(f"content[{key!r}] must hold card indices, got {deck.dtype}")
                if deck.shape != (N,):
                    raise ValueError(f"content[{key!r}] must have shape ({N},), got {deck.shape}")
                if not np.array_equal(np.sort(deck), np.arange(N)):
                    raise ValueError(
                        f"content[{key!r}] must be a permutation of 0..{N - 1}, got {deck}"
                    )
                deck = deck.astype(np.int64)
            decks.append(deck)
        self.content = dict(zip(self.content_keys, decks))
        return decks


def _one_hot(index: int, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    out[index] = 1.0
    return out


# -- RepeatFirst -----------------------------------------------------------------------------


class RepeatFirst(CardTask):
    """Observe the current card's suit ``(4,)``; answer the first card's suit every step.

    Reward ``+-1/(N-1)`` per step; ``N - 1`` steps (``popgym.envs.repeat_first``).
    Extra state column: the first card's suit.
    """

    name = "RepeatFirst"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"num_decks": 1},
        "Medium": {"num_decks": 8},
        "Hard": {"num_decks": 16},
    }
    random_return: ClassVar[dict[str, float]] = {"Easy": -0.5, "Medium": -0.5, "Hard": -0.5}
    oracle_return: ClassVar[dict[str, float]] = {"Easy": 1.0, "Medium": 1.0, "Hard": 1.0}
    extra_columns = 1

    def _setup(self, num_decks: int = 1) -> None:
        self._setup_deck(num_decks, "suits")
        self.task_obs_dim = NUM_SUITS
        self.num_actions = NUM_SUITS
        self.max_episode_steps = self.num_cards - 1
        self._set_scale(1.0 / (self.num_cards - 1))
        self._views_of(self._fresh).extra[:, 0] = self._first_of_code[:, 0]

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        self._start_episodes(mask, content)

    def _observe(self) -> Tensor:
        return self._one_hot(self._v.cards)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        v = self._v
        reward = self._reward_sign(actions == v.extra[:, 0])
        terminated = v.t.add_(1) == self.max_episode_steps
        self._deal(out=v.cards)
        return reward, terminated, torch.zeros_like(terminated)

    def oracle(self) -> Tensor:
        return self._v.extra[:, 0].clone()


class RepeatFirstGym(CardTaskGym):
    """NumPy twin of :class:`RepeatFirst`."""

    def _setup(self, num_decks: int = 1) -> None:
        self.num_cards = DECK_SIZE * check_num_decks(num_decks)
        self.task_obs_dim = NUM_SUITS
        self.num_actions = NUM_SUITS
        self.max_episode_steps = self.num_cards - 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        (deck,) = self._new_decks(content)
        self._suits = deck % NUM_SUITS
        self._t = 0

    def _observe(self) -> np.ndarray:
        return _one_hot(self._suits[self._t], NUM_SUITS)

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        scale = 1.0 / (self.num_cards - 1)
        reward = scale if action == self._suits[0] else -scale
        self._t += 1
        return reward, self._t == self.num_cards - 1, False


# -- RepeatPrevious --------------------------------------------------------------------------


class RepeatPrevious(CardTask):
    """Observe the current card's suit ``(4,)``; answer the suit of the card seen ``k - 1``
    steps before the current one.

    Reward 0 until ``k`` cards are seen, then ``+-1/(N-k)``; ``N - 1`` steps
    (``popgym.envs.repeat_previous``). The last ``k`` suits live in a ring buffer
    ``_ring (B, k)``: the card at deal position ``p`` sits in slot ``p % k``.
    """

    name = "RepeatPrevious"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"num_decks": 1, "k": 4},
        "Medium": {"num_decks": 2, "k": 32},
        "Hard": {"num_decks": 3, "k": 64},
    }
    random_return: ClassVar[dict[str, float]] = {"Easy": -0.5, "Medium": -0.5, "Hard": -0.5}
    oracle_return: ClassVar[dict[str, float]] = {"Easy": 1.0, "Medium": 1.0, "Hard": 1.0}

    def _setup(self, num_decks: int = 1, k: int = 4) -> None:
        self._setup_deck(num_decks, "suits")
        N, dev = self.num_cards, self.device
        self.k = check_k(k, N)
        self.task_obs_dim = NUM_SUITS
        self.num_actions = NUM_SUITS
        self.max_episode_steps = N - 1
        self._ring = torch.zeros(self.num_envs, self.k, dtype=torch.long, device=dev)
        # reward by 2 * t + hit, t = cards seen before this step's deal (1-based step index)
        scale = torch.full((N,), 1.0 / (N - self.k), device=dev)
        scale[: self.k] = 0.0
        self._reward_table = torch.stack([-scale, scale], dim=1).flatten()

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        self._start_episodes(mask, content)
        first_slot = self._ring[:, 0]
        torch.where(mask, self._v.cards[:, 0], first_slot, out=first_slot)

    def _observe(self) -> Tensor:
        return self._one_hot(self._v.cards)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # step t (1-based) = cards seen; the target card (deal position t - k) and the card
        # dealt now (position t) share slot t % k: read, then overwrite
        v = self._v
        t = v.t.add_(1)
        slot = (t % self.k)[:, None]
        hit = actions == self._ring.gather(1, slot)[:, 0]
        reward = self._reward_table[torch.add(hit, t, alpha=2)]
        terminated = t == self.max_episode_steps
        self._ring.scatter_(1, slot, self._deal(out=v.cards))
        return reward, terminated, torch.zeros_like(terminated)

    def oracle(self) -> Tensor:
        """The suit dealt k cards before the next one; until then (reward 0 whatever the
        answer) the episode's first suit, which ring slot 0 holds, not an older episode's."""
        t1 = self._v.t + 1
        target = self._ring.gather(1, (t1 % self.k)[:, None])[:, 0]
        return torch.where(t1 < self.k, self._ring[:, 0], target)


class RepeatPreviousGym(CardTaskGym):
    """NumPy twin of :class:`RepeatPrevious`."""

    def _setup(self, num_decks: int = 1, k: int = 4) -> None:
        self.num_cards = DECK_SIZE * check_num_decks(num_decks)
        self.k = check_k(k, self.num_cards)
        self.task_obs_dim = NUM_SUITS
        self.num_actions = NUM_SUITS
        self.max_episode_steps = self.num_cards - 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        (deck,) = self._new_decks(content)
        self._suits = deck % NUM_SUITS
        self._seen = 1  # cards dealt so far; the current card is _suits[_seen - 1]

    def _observe(self) -> np.ndarray:
        return _one_hot(self._suits[self._seen - 1], NUM_SUITS)

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        reward = 0.0
        if self._seen >= self.k:
            scale = 1.0 / (self.num_cards - self.k)
            reward = scale if action == self._suits[self._seen - self.k] else -scale
        self._seen += 1
        return reward, self._seen == self.num_cards, False


# -- Autoencode ------------------------------------------------------------------------------


class Autoencode(CardTask):
    """Watch ``N`` cards, then recall their suits in reverse order.

    Observation ``(5,)``: watch flag, then a suit one-hot. As in ``popgym.envs.autoencode``
    the flag drops to 0 already on the last watched card, and every recall step shows suit 0
    (POPGym observes ``(0, 0)`` there). Reward 0 for the ``N - 1`` watch steps, then
    ``+-1/N`` for each of ``N`` recall steps; ``2N - 1`` steps.

    Suits dealt so far are kept in ``_hist (B, N + 1)`` by deal position (column ``N`` is a
    sink for the recall phase's empty draws); ``cards`` holds the observation code, a row
    of ``_obs_table``: suit (watching), 4 + suit (last card), 8 (recall). Per-step
    positions and offsets come from ``_by_t``, indexed by the steps taken ``t``.
    """

    name = "Autoencode"
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"num_decks": 1},
        "Medium": {"num_decks": 2},
        "Hard": {"num_decks": 3},
    }
    random_return: ClassVar[dict[str, float]] = {"Easy": -0.5, "Medium": -0.5, "Hard": -0.5}
    oracle_return: ClassVar[dict[str, float]] = {"Easy": 1.0, "Medium": 1.0, "Hard": 1.0}

    def _setup(self, num_decks: int = 1) -> None:
        self._setup_deck(num_decks, "suits")
        N, B, dev = self.num_cards, self.num_envs, self.device
        self.task_obs_dim = 1 + NUM_SUITS
        self.num_actions = NUM_SUITS
        self.max_episode_steps = 2 * N - 1
        self._hist = torch.zeros(B, N + 1, dtype=torch.long, device=dev)
        t = torch.arange(2 * N, device=dev)
        after = t + 1
        # by t: the deal position this step recalls (2N - 2 - t; the sink N while watching),
        # the column the dealt suit goes to, and the observation code offset afterwards
        # (watching 0, last card 4, recall 8); three columns keep the row width odd
        self._by_t = torch.stack(
            [
                (2 * N - 2 - t).clamp(0, N),
                after.clamp(max=N),
                torch.where(after < N - 1, 0, torch.where(after == N - 1, 4, 8)),
            ],
            dim=1,
        )
        scale = torch.where(t >= N - 1, 1.0 / N, 0.0)
        self._reward_table = torch.stack([-scale, scale], dim=1).flatten()  # by 2 t + hit
        table = torch.zeros(3 * NUM_SUITS, 1 + NUM_SUITS, device=dev)
        table[:NUM_SUITS, 0] = 1.0
        table[: 2 * NUM_SUITS, 1:] = torch.eye(NUM_SUITS, device=dev).repeat(2, 1)
        table[2 * NUM_SUITS :, 1] = 1.0
        self._obs_table = table

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        self._start_episodes(mask, content)  # code = first suit: watching
        first_slot = self._hist[:, 0]
        torch.where(mask, self._v.cards[:, 0], first_slot, out=first_slot)

    def _observe(self) -> Tensor:
        return self._obs_table[self._v.cards[:, 0]]

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        v = self._v
        read, write, offset = self._by_t[v.t].unbind(1)
        hit = actions == self._hist.gather(1, read[:, None])[:, 0]
        reward = self._reward_table[torch.add(hit, v.t, alpha=2)]
        terminated = v.t.add_(1) == self.max_episode_steps
        suit = self._deal()
        self._hist.scatter_(1, write[:, None], suit)
        torch.add(suit[:, 0], offset, out=v.cards[:, 0])
        return reward, terminated, torch.zeros_like(terminated)

    def oracle(self) -> Tensor:
        return self._hist.gather(1, self._by_t[self._v.t, :1])[:, 0]


class AutoencodeGym(CardTaskGym):
    """NumPy twin of :class:`Autoencode`."""

    def _setup(self, num_decks: int = 1) -> None:
        self.num_cards = DECK_SIZE * check_num_decks(num_decks)
        self.task_obs_dim = 1 + NUM_SUITS
        self.num_actions = NUM_SUITS
        self.max_episode_steps = 2 * self.num_cards - 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        (deck,) = self._new_decks(content)
        self._suits = deck % NUM_SUITS
        self._t = 0  # steps taken

    def _observe(self) -> np.ndarray:
        N = self.num_cards
        watching = float(self._t < N - 1)
        suit = self._suits[self._t] if self._t < N else 0
        return np.concatenate([[watching], _one_hot(suit, NUM_SUITS)]).astype(np.float32)

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        N = self.num_cards
        reward = 0.0
        if self._t >= N - 1:
            # the j-th recall step (j = t - N + 2) asks for deal position N - j
            reward = 1.0 / N if action == self._suits[2 * N - 2 - self._t] else -1.0 / N
        self._t += 1
        return reward, self._t == 2 * N - 1, False


# -- CountRecall -----------------------------------------------------------------------------


class CountRecall(CardTask):
    """Observe (class of the dealt card, class of the query card) as two one-hots ``(2K,)``;
    answer how many dealt cards so far have the previous query's class.

    Two independent decks (dealt, query); classes are colours / suits / ranks. Actions
    ``0..N/K``; reward ``+-1/(N-1)``; ``N - 1`` steps (``popgym.envs.count_recall``).
    Dealt cards of class ``q`` so far: ``N/K`` minus the dealt deck's remaining ones.
    """

    name = "CountRecall"
    content_keys = ("value_deck", "query_deck")
    difficulties: ClassVar[dict[str, dict[str, Any]]] = {
        "Easy": {"num_decks": 1, "deck_type": "colors"},
        "Medium": {"num_decks": 2, "deck_type": "suits"},
        "Hard": {"num_decks": 4, "deck_type": "ranks"},
    }
    # uniform random answers are right w.p. 1/(N/K + 1): -25/27, -25/27, -15/17; POPGym
    # agrees (-0.928, -0.925, -0.882 over 300 episodes); MEMORY_TASKS.md says -0.92/-0.93/-0.89
    random_return: ClassVar[dict[str, float]] = {
        "Easy": -25 / 27,
        "Medium": -25 / 27,
        "Hard": -15 / 17,
    }
    oracle_return: ClassVar[dict[str, float]] = {"Easy": 1.0, "Medium": 1.0, "Hard": 1.0}

    def _setup(self, num_decks: int = 1, deck_type: str = "colors") -> None:
        self._setup_deck(num_decks, deck_type)
        K = self.num_classes
        self.deck_type = deck_type
        self.task_obs_dim = 2 * K
        self.num_actions = self.num_cards // K + 1
        self.max_episode_steps = self.num_cards - 1
        self._set_scale(1.0 / (self.num_cards - 1))
        self._bound_cols = torch.tensor([K - 1, K], device=self.device)

    def _new_episode(self, mask: Tensor, content: dict[str, Tensor] | None = None) -> None:
        self._start_episodes(mask, content)

    def _observe(self) -> Tensor:
        return self._one_hot(self._v.cards)

    def oracle(self) -> Tensor:
        # remaining cards of class q = cum[K - q] - cum[K - 1 - q] (dealt deck)
        bounds = self._v.cum[:, 0].gather(1, self._bound_cols - self._v.cards[:, 1:])
        return (bounds[:, 0] - bounds[:, 1]).add_(self.num_cards // self.num_classes)

    def _transition(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        reward = self._reward_sign(actions == self.oracle())
        terminated = self._v.t.add_(1) == self.max_episode_steps
        self._deal(out=self._v.cards)
        return reward, terminated, torch.zeros_like(terminated)


class CountRecallGym(CardTaskGym):
    """NumPy twin of :class:`CountRecall`."""

    content_keys = ("value_deck", "query_deck")

    def _setup(self, num_decks: int = 1, deck_type: str = "colors") -> None:
        self.num_cards = DECK_SIZE * check_num_decks(num_decks)
        self._class_of = card_classes(deck_type, self.num_cards)
        self.num_classes = int(self._class_of.max()) + 1
        self.task_obs_dim = 2 * self.num_classes
        self.num_actions = self.num_cards // self.num_classes + 1
        self.max_episode_steps = self.num_cards - 1

    def _new_episode(self, content: dict[str, Any] | None) -> None:
        values, queries = self._new_decks(content)
        self._values = self._class_of[values]
        self._queries = self._class_of[queries]
        self._t = 0  # steps taken; the current cards are at deal position t

    def _observe(self) -> np.ndarray:
        K = self.num_classes
        value, query = self._values[self._t], self._queries[self._t]
        return np.concatenate([_one_hot(value, K), _one_hot(query, K)])

    def _transition(self, action: int) -> tuple[float, bool, bool]:
        seen = self._values[: self._t + 1]
        count = int(np.count_nonzero(seen == self._queries[self._t]))
        scale = 1.0 / (self.num_cards - 1)
        reward = scale if action == count else -scale
        self._t += 1
        return reward, self._t == self.num_cards - 1, False


TASKS: list[tuple[type[MemoryTask], type[MemoryTaskGym]]] = [
    (RepeatFirst, RepeatFirstGym),
    (RepeatPrevious, RepeatPreviousGym),
    (Autoencode, AutoencodeGym),
    (CountRecall, CountRecallGym),
]
