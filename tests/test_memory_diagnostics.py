"""Tier A (POPGym diagnostics): parity with POPGym's own envs, and the lazy deal's law.

POPGym shuffles ``arange(N)`` with ``env.np_random`` and deals from the end, so a stand-in
``np_random`` whose ``shuffle`` lays out a chosen deck makes POPGym deal exactly the cards we
inject into the batched env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import envs.memory as memory
from envs.memory import diagnostics
from envs.memory.diagnostics import CountRecall, RepeatFirst

popgym_envs = pytest.importorskip("popgym.envs")
from popgym.envs.autoencode import Autoencode as PopAutoencode  # noqa: E402
from popgym.envs.count_recall import CountRecall as PopCountRecall  # noqa: E402
from popgym.envs.repeat_first import RepeatFirst as PopRepeatFirst  # noqa: E402
from popgym.envs.repeat_previous import RepeatPrevious as PopRepeatPrevious  # noqa: E402

POPGYM = {
    "RepeatFirst": PopRepeatFirst,
    "RepeatPrevious": PopRepeatPrevious,
    "Autoencode": PopAutoencode,
    "CountRecall": PopCountRecall,
}
NAMES = [
    batched.name + difficulty
    for batched, _ in diagnostics.TASKS
    for difficulty in batched.difficulties
]


class _DealFrom:
    """Stand-in for POPGym's ``np_random``: each ``shuffle`` lays out the next deal order."""

    def __init__(self, decks: list[np.ndarray]) -> None:
        self.decks = list(decks)

    def shuffle(self, idx: np.ndarray) -> None:
        idx[:] = self.decks.pop(0)[::-1]  # POPGym deals from the end of ``idx``


def _popgym_obs(name: str, obs: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """Our one-hot observation ``(task_obs_dim,)`` -> POPGym's integer observation."""
    fields = {
        "Autoencode": [obs[:1], obs[1:]],
        "CountRecall": [obs[:num_classes], obs[num_classes:]],
    }.get(name, [obs])
    decoded = []
    for field in fields:
        if len(field) == 1:  # Autoencode's watch flag
            assert field[0] in (0.0, 1.0)
            decoded.append(int(field[0]))
        else:
            assert np.array_equal(np.sort(field), [0.0] * (len(field) - 1) + [1.0]), field
            decoded.append(int(field.argmax()))
    return tuple(decoded)


def _as_tuple(obs: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.atleast_1d(np.asarray(obs, dtype=object)))


@pytest.mark.parametrize("name", NAMES)
def test_matches_popgym_on_injected_decks(name: str) -> None:
    """Same decks in POPGym and in the batched env -> same obs, reward, terminated."""
    B = 3
    batched, _, params = memory.REGISTRY[name]
    env = memory.make(name, num_envs=B, seed=0)
    rng = np.random.default_rng(7)
    content = {key: np.stack([rng.permutation(env.num_cards) for _ in range(B)])
               for key in batched.content_keys}  # fmt: skip
    pops = [POPGYM[batched.name](**params) for _ in range(B)]
    first = []
    for i, pop in enumerate(pops):
        pop.np_random = _DealFrom([content[key][i] for key in batched.content_keys])
        first.append(_as_tuple(pop.reset()[0]))
    obs = env.reset(content=content)
    K = getattr(env, "num_classes", 0)
    assert [_popgym_obs(batched.name, o, K) for o in obs.numpy()] == first
    signs = set()
    for t in range(env.max_episode_steps):
        # half oracle, half random actions, so both reward signs show up
        actions = torch.where(
            torch.rand(B) < 0.5, env.oracle(), torch.randint(0, env.num_actions, (B,))
        )
        obs, reward, terminated, truncated, info = env.step(actions)
        last = t == env.max_episode_steps - 1
        shown = info["final_obs"] if last else obs
        for i, pop in enumerate(pops):
            p_obs, p_rew, p_term, p_trunc, _ = pop.step(int(actions[i]))
            where = f"{name} env {i} step {t + 1}"
            assert _popgym_obs(batched.name, shown[i].numpy(), K) == _as_tuple(p_obs), where
            assert reward[i].item() == pytest.approx(p_rew, rel=1e-6, abs=1e-9), where
            assert bool(terminated[i]) == p_term and bool(truncated[i]) == p_trunc, where
            signs.add(np.sign(p_rew))
    assert bool(terminated.all()), f"{name}: POPGym's episode has {env.max_episode_steps} steps"
    assert {-1.0, 1.0} <= signs


@pytest.mark.parametrize("name", NAMES)
def test_twin_seeded_like_popgym(name: str) -> None:
    """The gym twin shuffles like POPGym: the same seed deals the same episode."""
    batched, twin_cls, params = memory.REGISTRY[name]
    twin, pop = twin_cls(**params), POPGYM[batched.name](**params)
    K = getattr(twin, "num_classes", 0)
    t_obs, _ = twin.reset(seed=11)
    assert _popgym_obs(batched.name, t_obs, K) == _as_tuple(pop.reset(seed=11)[0])
    rng = np.random.default_rng(3)
    for _ in range(twin.max_episode_steps):
        action = int(rng.integers(twin.num_actions))
        t_obs, t_rew, t_term, _, _ = twin.step(action)
        p_obs, p_rew, p_term, _, _ = pop.step(action)
        assert _popgym_obs(batched.name, t_obs, K) == _as_tuple(p_obs)
        assert t_rew == pytest.approx(p_rew) and t_term == p_term
    assert t_term


def _dealt_suits(env: RepeatFirst) -> np.ndarray:
    """Play one RepeatFirst episode in every env; the suits dealt, ``(B, N)``."""
    suits = [env.reset(seed=0).argmax(1)]
    actions = torch.zeros(env.num_envs, dtype=torch.long)
    for _ in range(env.max_episode_steps):
        obs, _, _, _, info = env.step(actions)
        suits.append(info["final_obs"].argmax(1))
    return torch.stack(suits, dim=1).numpy()


def test_lazy_deal_is_a_shuffled_deck() -> None:
    """Class sequences from the lazy deal have the law of a shuffled deck, not iid draws."""
    B = 4096
    suits = _dealt_suits(RepeatFirst(B, seed=1, num_decks=1))  # (B, 52)
    assert all((np.sort(row) == np.repeat(np.arange(4), 13)).all() for row in suits)
    # every position's suit is uniform: within 5 sigma of B/4
    freq = np.stack([(suits == s).sum(0) for s in range(4)])  # (4, 52)
    assert np.abs(freq - B / 4).max() < 5 * np.sqrt(B * 0.25 * 0.75)
    # adjacent equal suits: 51 * 12/51 = 12 per shuffled deck (iid draws: 51/4 = 12.75);
    # the per-deck std is ~3.0, so the mean over B decks has std ~0.05
    adjacent = (suits[:, 1:] == suits[:, :-1]).sum(1)
    assert adjacent.mean() == pytest.approx(12.0, abs=0.25)
    # first and last card share a suit with probability 12/51
    assert (suits[:, 0] == suits[:, -1]).mean() == pytest.approx(12 / 51, abs=0.035)


def test_count_recall_decks_are_full_and_independent() -> None:
    """Both CountRecall decks deal each rank exactly 16 times (Hard: 4 decks, 13 ranks)."""
    B, K = 512, 13
    env = CountRecall(B, seed=2, num_decks=4, deck_type="ranks")
    seen = [env.reset().view(B, 2, K)]
    actions = torch.zeros(B, dtype=torch.long)
    for _ in range(env.max_episode_steps):
        _, _, _, _, info = env.step(actions)
        seen.append(info["final_obs"].view(B, 2, K))
    counts = torch.stack(seen).sum(0)  # (B, 2, K)
    assert torch.equal(counts, torch.full((B, 2, K), 16.0))
    value, query = (torch.stack(seen).argmax(3).float() - 6).unbind(2)  # (N, B) centred ranks
    corr = (value * query).mean() / (value.std() * query.std())
    assert abs(corr.item()) < 0.02, "the value and query decks must be independent"


def test_injected_deck_applies_to_one_episode() -> None:
    B, N = 4, 52
    env = RepeatFirst(B, seed=3)
    deck = np.stack([np.arange(N)] * B)  # suits 0, 1, 2, 3, 0, ...
    obs = env.reset(content={"deck": deck})
    shown = [obs.argmax(1)]
    saved = None
    actions = torch.zeros(B, dtype=torch.long)
    for t in range(N - 1):
        if t == 20:
            saved = env.state_dict()
        obs, _, term, _, info = env.step(actions)
        shown.append(info["final_obs"].argmax(1) if t == N - 2 else obs.argmax(1))
    assert torch.equal(torch.stack(shown, 1), torch.as_tensor(deck % 4))
    assert bool(term.all()) and not bool(env._replay_on.any())
    # the next episode is sampled again: 51 more cards that are not the sorted deck
    after = torch.stack([env.step(actions)[0].argmax(1) for _ in range(N - 2)], 1)
    assert not torch.equal(after, torch.as_tensor(deck[:, 1 : N - 1] % 4))
    # a state saved mid-replay resumes the replay
    env.load_state_dict(saved)
    assert env._replaying
    rest = torch.stack([env.step(actions)[0].argmax(1) for _ in range(N - 22)], 1)
    assert torch.equal(rest, torch.as_tensor(deck[:, 21 : N - 1] % 4))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"deck": np.zeros((2, 52), dtype=np.int64)}, "permutation"),
        ({"deck": np.zeros((2, 51), dtype=np.int64)}, "shape"),
        ({"cards": np.zeros((2, 52), dtype=np.int64)}, "missing"),
        ({"deck": np.zeros((2, 52))}, "card indices"),
    ],
)
def test_bad_content_raises(content: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RepeatFirst(2, seed=0).reset(content=content)
    with pytest.raises(ValueError, match=match):
        diagnostics.RepeatFirstGym().reset(
            options={"content": {k: v[0] for k, v in content.items()}}
        )


@pytest.mark.parametrize(
    ("cls", "params", "match"),
    [
        (diagnostics.RepeatFirst, {"num_decks": 0}, "num_decks"),
        (diagnostics.RepeatFirst, {"num_decks": 1.5}, "num_decks"),
        (diagnostics.RepeatPrevious, {"num_decks": 1, "k": 0}, "k must"),
        (diagnostics.RepeatPrevious, {"num_decks": 1, "k": 52}, "k must"),
        (diagnostics.CountRecall, {"num_decks": 1, "deck_type": "jokers"}, "deck_type"),
    ],
)
def test_bad_params_raise(cls: type, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(2, **params)
    twin_cls = dict(diagnostics.TASKS)[cls]
    with pytest.raises(ValueError, match=match):
        twin_cls(**params)


@pytest.mark.parametrize("name", ["RepeatPreviousEasy", "AutoencodeEasy", "CountRecallEasy"])
def test_saved_state_replays_twice(name: str) -> None:
    """State updated in place must not leak into a saved state dict."""
    env = memory.make(name, num_envs=8, seed=0)
    env.reset()
    g = torch.Generator().manual_seed(1)
    acts = [torch.randint(0, env.num_actions, (8,), generator=g) for _ in range(130)]
    for a in acts[:30]:
        env.step(a)
    saved = env.state_dict()
    runs = []
    for _ in range(2):
        env.load_state_dict(saved)
        runs.append([torch.cat([o, r[:, None]], 1) for o, r, *_ in map(env.step, acts[30:])])
    assert all(torch.equal(x, y) for x, y in zip(*runs))


def test_repeat_previous_target_before_k_cards_is_this_episodes_first_suit() -> None:
    """``rlstm inspect`` probes ``oracle()``: before k cards (reward 0 whatever the answer)
    it is the episode's first suit, never a suit left over from the previous episode."""
    env = memory.make("RepeatPreviousMedium", num_envs=4, seed=0)  # k = 32
    obs = env.reset(seed=0)
    for episode in range(2):
        first = obs[:, :4].argmax(1)
        for t in range(env.k - 1):
            assert torch.equal(env.oracle(), first), (episode, t)
            obs, *_ = env.step(env.oracle())
        while True:  # play the episode out with the oracle: every answer right
            obs, reward, terminated, truncated, _ = env.step(env.oracle())
            assert bool((reward >= 0).all())
            if bool((terminated | truncated).all()):
                break
