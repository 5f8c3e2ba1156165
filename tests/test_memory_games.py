"""Tier D (POPGym games and control) against POPGym itself.

- step parity: the same episode content injected into our batched env, our gym twin and
  POPGym's env (through a scripted stand-in for POPGym's ``np_random``; Battleship's board
  is overwritten after reset) gives the same obs, reward and flags at every step, under
  policies from purely random to purely oracle, and on scripted edge cases;
- random-policy mean returns of our batched env match POPGym's own env (its own sampler);
- samplers: Battleship placement matches the exact sequential-uniform law that POPGym's
  rejection sampler implements (chi-square on a small board, POPGym included); mines and
  decks are uniform; CartPole initial state and noise have the right law;
- oracles, injected content only affecting one episode, validation errors.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs.memory as memory
from envs.memory import games

pytest.importorskip("popgym")
from popgym.envs import (  # noqa: E402
    battleship,
    concentration,
    minesweeper,
    multiarmed_bandit,
    noisy_position_only_cartpole,
    position_only_cartpole,
)

POPGYM_MODULES = {
    "MultiarmedBandit": multiarmed_bandit,
    "Battleship": battleship,
    "MineSweeper": minesweeper,
    "Concentration": concentration,
    "PositionOnlyCartPole": position_only_cartpole,
    "NoisyPositionOnlyCartPole": noisy_position_only_cartpole,
}
NAMES = [batched.name + d for batched, _ in games.TASKS for d in games.DIFFICULTIES]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """These tests step small tensors: intra-op threads only add hand-off latency, which
    on a busy 2-core machine made them ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _popgym_env(name: str) -> Any:
    batched = memory.REGISTRY[name][0]
    return getattr(POPGYM_MODULES[batched.name], name)()


class ScriptedRng:
    """Stands in for a POPGym env's ``np_random``: hands out our episode content."""

    def __init__(self, content: dict[str, np.ndarray]) -> None:
        self.content = content
        self._uniforms: Iterator[float] = iter(content.get("uniforms", ()))
        self._noise: Iterator[np.ndarray] = iter(content.get("noise", ()))

    def random(self, size: Any = None, dtype: Any = np.float64) -> Any:  # bandit
        return float(next(self._uniforms)) if size is None else self.content["probs"].copy()

    def choice(self, a: Any, size: int, replace: bool) -> np.ndarray:  # minesweeper
        return np.flatnonzero(self.content["mines"])

    def shuffle(self, x: np.ndarray) -> None:  # concentration's deck
        x[:] = self.content["deck"]

    def uniform(self, low: float, high: float, size: Any) -> np.ndarray:  # cartpole reset
        return self.content["state"].copy()

    def normal(self, loc: float, scale: Any) -> np.ndarray:  # noisy cartpole
        return next(self._noise).astype(np.float64)


def _popgym_reset(name: str, content: dict[str, np.ndarray]) -> tuple[Any, Any]:
    env = _popgym_env(name)
    if "board" in content:  # Battleship: let it place ships, then overwrite the board
        obs, _ = env.reset(seed=0)
        env.board = content["board"].astype(np.int8).copy()
    else:
        env._np_random = ScriptedRng(content)
        obs, _ = env.reset()
    return env, obs


def _encode(env: memory.MemoryTask, obs: Any) -> np.ndarray:
    """POPGym's observation as our task observation (one-hots; cartpole as is)."""
    if isinstance(env, games._CartPole):
        return np.asarray(obs, dtype=np.float32)
    if isinstance(env, games.Concentration):
        return np.eye(env.num_values + 1, dtype=np.float32)[np.asarray(obs)].reshape(-1)
    return np.eye(env.task_obs_dim, dtype=np.float32)[int(obs)]


def _popgym_action(env: memory.MemoryTask, action: int) -> Any:
    if isinstance(env, (games.Battleship, games.MineSweeper)):
        return np.array(divmod(action, env.board_size))
    return action


@pytest.mark.parametrize("name", NAMES)
def test_step_parity_with_popgym(name: str) -> None:
    """Env ``i`` plays the oracle with probability ``i / (B - 1)``, else a random action."""
    B = 6
    _, twin_cls, params = memory.REGISTRY[name]
    twins = [twin_cls(**params) for _ in range(B)]
    for i, twin in enumerate(twins):
        twin.reset(seed=300 + i)
    contents = [twin.content for twin in twins]
    env = memory.make(name, num_envs=B, seed=0)
    obs = env.reset(content={k: np.stack([c[k] for c in contents]) for k in contents[0]})
    D, cartpole = env.task_obs_dim, isinstance(env, games._CartPole)
    atol = 1e-6 if cartpole else 0.0  # float64 state in both; torch vs libm sin/cos
    pops = []
    for i in range(B):
        pop, pop_obs = _popgym_reset(name, contents[i])
        np.testing.assert_allclose(obs[i, :D].numpy(), _encode(env, pop_obs), atol=atol)
        assert not obs[i, D:].any()
        pops.append(pop)
    rng = np.random.default_rng(1)
    p_oracle = np.linspace(0.0, 1.0, B)
    alive = np.ones(B, dtype=bool)
    for _ in range(env.max_episode_steps):
        random_actions = torch.as_tensor(rng.integers(0, env.num_actions, B))
        use_oracle = torch.as_tensor(rng.random(B) < p_oracle)
        actions = torch.where(use_oracle, env.oracle(), random_actions)
        obs, reward, terminated, truncated, info = env.step(actions)
        for i in np.flatnonzero(alive):
            a = int(actions[i])
            p_obs, p_rew, p_term, p_trunc, _ = pops[i].step(_popgym_action(env, a))
            t_obs, t_rew, t_term, t_trunc, _ = twins[i].step(a)
            got = info["final_obs"][i] if p_term or p_trunc else obs[i]
            want = _encode(env, p_obs)
            np.testing.assert_allclose(got[:D].numpy(), want, atol=atol, err_msg=f"env {i}")
            np.testing.assert_allclose(t_obs[:D], want, atol=1e-6, err_msg=f"twin {i}")
            if env.prev_action:
                assert got[D:].argmax() == a and got[D:].sum() == 1
            assert float(reward[i]) == pytest.approx(p_rew, abs=1e-6)
            assert t_rew == pytest.approx(p_rew, abs=1e-12)
            assert (bool(terminated[i]), bool(truncated[i])) == (p_term, p_trunc), f"env {i}"
            assert (t_term, t_trunc) == (p_term, p_trunc), f"twin {i}"
            alive[i] = not (p_term or p_trunc)
        if not alive.any():
            break
    assert not alive.any(), "a POPGym episode outlived max_episode_steps"


def _scripted_parity(
    env: memory.MemoryTask, pop: Any, content: dict[str, np.ndarray], actions: list[int]
) -> list[tuple[bool, bool]]:
    """Play ``actions`` in our one-env batch and in POPGym's ``pop`` from the same content;
    compare every step until the episode ends; return the (terminated, truncated) flags."""
    D = env.task_obs_dim
    obs = env.reset(content={k: v[None] for k, v in content.items()})
    if "board" in content:
        pop_obs, _ = pop.reset(seed=0)
        pop.board = content["board"].astype(np.int8).copy()
    else:
        pop._np_random = ScriptedRng(content)
        pop_obs, _ = pop.reset()
    np.testing.assert_allclose(obs[0, :D].numpy(), _encode(env, pop_obs), atol=1e-6)
    flags = []
    for step, a in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(torch.tensor([a]))
        p_obs, p_rew, p_term, p_trunc, _ = pop.step(_popgym_action(env, a))
        got = info["final_obs"] if p_term or p_trunc else obs
        np.testing.assert_allclose(got[0, :D].numpy(), _encode(env, p_obs), atol=1e-6)
        assert float(reward[0]) == pytest.approx(p_rew, abs=1e-6), f"step {step}"
        assert (bool(terminated[0]), bool(truncated[0])) == (p_term, p_trunc), f"step {step}"
        flags.append((p_term, p_trunc))
        if p_term or p_trunc:
            break
    return flags


def test_edge_cases_match_popgym() -> None:
    """Paths a random or oracle policy rarely takes, scripted from the hidden content."""
    # Battleship: every miss, then every ship square: the last shot sinks the last ship on
    # the last step, so both flags are set
    twin = games.BattleshipGym(board_size=8)
    twin.reset(seed=0)
    board = twin.content["board"].reshape(-1)
    script = [*np.flatnonzero(board == 0), *np.flatnonzero(board)]
    env = memory.make("BattleshipEasy")
    flags = _scripted_parity(env, battleship.BattleshipEasy(), twin.content, script)
    assert len(flags) == 64 and flags[-1] == (True, True)

    # MineSweeper: clicking one free square F times truncates (repeat penalties)
    twin = games.MineSweeperGym(board_size=4, num_mines=2)
    twin.reset(seed=0)
    free = int(np.flatnonzero(twin.content["mines"].reshape(-1) == 0)[0])
    env = memory.make("MineSweeperEasy")
    flags = _scripted_parity(env, minesweeper.MineSweeperEasy(), twin.content, [free] * 14)
    assert flags[-1] == (False, True) and len(flags) == 14

    # Concentration: a match; 52 single flips of a matched card (-1/L each); the other 25
    # pairs: the last match lands on step L = 104, both flags set
    twin = games.ConcentrationGym(num_decks=1, deck_type="colors")
    twin.reset(seed=0)
    values = twin.card_value[twin.content["deck"]]
    pairs = [
        pos
        for v in (0, 1)
        for pos in np.flatnonzero(values == v)[: 2 * (np.sum(values == v) // 2)].tolist()
    ]
    script = pairs[:2] + [pairs[0]] * 52 + pairs[2:]
    env = memory.make("ConcentrationEasy")
    flags = _scripted_parity(env, concentration.ConcentrationEasy(), twin.content, script)
    assert len(flags) == 104 and flags[-1] == (True, True)
    # the same card twice, a matched card as second card, a mismatch, then random play
    down = [p for p in range(52) if p not in pairs[:2]]
    mismatch = next(p for p in down if values[p] != values[down[0]])
    rng = np.random.default_rng(0)
    script = [*pairs[:2], down[0], down[0], down[0], pairs[0], down[0], mismatch, pairs[0]]
    script += rng.integers(0, 52, 97).tolist()
    flags = _scripted_parity(env, concentration.ConcentrationEasy(), twin.content, script)
    assert len(flags) == 104 and flags[-1] == (False, True)

    # CartPole: always push right; with L set to the falling step, both flags are set
    content = {"state": np.zeros(4)}
    env = games.PositionOnlyCartPole(1, episode_length=200)
    fall = len(
        _scripted_parity(env, position_only_cartpole.PositionOnlyCartPole(), content, [1] * 200)
    )
    env = games.PositionOnlyCartPole(1, episode_length=fall)
    pop = position_only_cartpole.PositionOnlyCartPole(max_episode_length=fall)
    flags = _scripted_parity(env, pop, content, [1] * fall)
    assert flags[-1] == (True, True)


# -- random policy: our batched env vs POPGym's own env -----------------------------------
def _batched_random_returns(name: str, num_envs: int, per_env: int) -> np.ndarray:
    """The first ``per_env`` episodes of each env (unbiased: no length-biased cut-off)."""
    env = memory.make(name, num_envs=num_envs, seed=11)
    env.reset(seed=12)
    g = torch.Generator().manual_seed(13)
    returns, counts = [], torch.zeros(num_envs, dtype=torch.long)
    while int(counts.min()) < per_env:
        _, _, terminated, truncated, info = env.step(
            torch.randint(0, env.num_actions, (num_envs,), generator=g)
        )
        keep = (terminated | truncated) & (counts < per_env)
        returns.append(info["episode_return"][keep].numpy())
        counts += (terminated | truncated).long()
    return np.concatenate(returns)


def _popgym_random_returns(name: str, episodes: int) -> np.ndarray:
    env = _popgym_env(name)
    env.reset(seed=21)
    env.action_space.seed(22)
    returns = np.zeros(episodes)
    for k in range(episodes):
        env.reset()
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            returns[k] += reward
            done = terminated or truncated
    return returns


# Episodes per task, sized by the random-return sd s (POPGym, 300 episodes: bandit 0.18 /
# 0.14 / 0.11, battleship 0.17 / 0.16 / 0.16, minesweeper 0.32 / 0.12 / 0.08,
# concentration 0.10 / 0.07 / 0.09, cartpoles <= 0.06) so that the standard error of the
# difference of means stays < 0.0075: the 0.03 tolerance is 4 standard errors.
# name -> (our envs, our episodes per env, POPGym episodes)
RANDOM_EPISODES = {
    "MultiarmedBanditEasy": (1500, 1, 1200),
    "MultiarmedBanditMedium": (1500, 1, 700),
    "MultiarmedBanditHard": (1500, 1, 500),
    **{f"Battleship{d}": (1200, 1, 1000) for d in games.DIFFICULTIES},
    "MineSweeperEasy": (1000, 6, 4000),
    "MineSweeperMedium": (1000, 2, 600),
    "MineSweeperHard": (1000, 1, 300),
    "ConcentrationEasy": (500, 1, 500),
    "ConcentrationMedium": (500, 1, 250),
    "ConcentrationHard": (500, 1, 400),
    **{f"PositionOnlyCartPole{d}": (500, 1, 300) for d in games.DIFFICULTIES},
    **{f"NoisyPositionOnlyCartPole{d}": (500, 1, 300) for d in games.DIFFICULTIES},
}


@pytest.mark.parametrize("name", NAMES)
def test_random_policy_return_matches_popgym(name: str) -> None:
    num_envs, per_env, popgym_episodes = RANDOM_EPISODES[name]
    ours = _batched_random_returns(name, num_envs, per_env)
    theirs = _popgym_random_returns(name, popgym_episodes)
    se = math.sqrt(ours.var() / ours.size + theirs.var() / theirs.size)
    assert se < 0.0075, f"standard error {se:.4f} too large for the 0.03 tolerance"
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.03)


# -- samplers ------------------------------------------------------------------------------
def _placements(N: int, size: int) -> list[frozenset[int]]:
    lines = [[r * N + c for c in range(N)] for r in range(N)]
    lines += [[r * N + c for r in range(N)] for c in range(N)]
    return [frozenset(line[s : s + size]) for line in lines for s in range(N - size + 1)]


def _exact_board_law(N: int, ships: tuple[int, ...]) -> dict[frozenset[int], float]:
    """Each ship in turn uniform among the in-bounds placements clear of earlier ships."""
    law: dict[frozenset[int], float] = {frozenset(): 1.0}
    for size in ships:
        nxt: dict[frozenset[int], float] = Counter()
        for board, p in law.items():
            legal = [s for s in _placements(N, size) if not s & board]
            for s in legal:
                nxt[board | s] += p / len(legal)
        law = nxt
    return law


def _chi_square(samples: list[frozenset[int]], law: dict[frozenset[int], float]) -> float:
    counts = Counter(samples)
    assert set(counts) <= set(law), "sampled a board the law gives probability 0"
    n = len(samples)
    return sum((counts[b] - n * p) ** 2 / (n * p) for b, p in law.items())


def test_battleship_placement_law_matches_popgym() -> None:
    """Chi-square of ours (batched + twin) and POPGym against the exact law, 4x4, ships 3, 2.

    With ~200 cells, the statistic has mean ~dof and sd ~sqrt(2 dof); 5 sd is the bound.
    """
    N, ships = 4, (3, 2)
    law = _exact_board_law(N, ships)
    dof = len(law) - 1
    bound = dof + 5 * math.sqrt(2 * dof)
    env = games.Battleship(100_000, seed=0, board_size=N, ship_sizes=ships)
    env.reset()
    ours = [frozenset(np.flatnonzero(row).tolist()) for row in env.board.numpy()]
    assert _chi_square(ours, law) < bound
    twin = games.BattleshipGym(board_size=N, ship_sizes=ships)
    twin.reset(seed=0)
    twin_boards = []
    for _ in range(4000):
        twin.reset()
        twin_boards.append(frozenset(np.flatnonzero(twin.content["board"]).tolist()))
    assert _chi_square(twin_boards, law) < bound
    pop = battleship.Battleship(board_size=N, ship_sizes=list(ships))
    pop.reset(seed=0)
    theirs = []
    for _ in range(8000):
        pop.reset()
        theirs.append(frozenset(np.flatnonzero(pop.board).tolist()))
    assert _chi_square(theirs, law) < bound


def test_battleship_cell_frequencies_match_popgym() -> None:
    """Per-square ship frequency on the Easy board, ours vs POPGym, within 4.5 standard errors."""
    env = memory.make("BattleshipEasy", num_envs=50_000, seed=1)
    env.reset()
    ours = env.board.float().mean(0).numpy()
    assert torch.all(env.board.sum(1) == 12)
    pop = battleship.BattleshipEasy()
    pop.reset(seed=1)
    n = 6000
    theirs = np.zeros(64)
    for _ in range(n):
        pop.reset()
        theirs += pop.board.reshape(-1) / n
    se = np.sqrt(theirs * (1 - theirs) / n + ours * (1 - ours) / 50_000)
    assert np.all(np.abs(ours - theirs) < 4.5 * se + 1e-9)


def test_mines_are_a_uniform_subset() -> None:
    env = games.MineSweeper(36_000, seed=2, board_size=3, num_mines=2)
    env.reset()
    assert torch.all(env.mines.sum(1) == 2)
    subsets = Counter(tuple(np.flatnonzero(row)) for row in env.mines.numpy())
    assert len(subsets) == math.comb(9, 2)
    n, k = 36_000, math.comb(9, 2)
    chi2 = sum((c - n / k) ** 2 / (n / k) for c in subsets.values())
    assert chi2 < (k - 1) + 5 * math.sqrt(2 * (k - 1))


def test_concentration_deck_is_uniform() -> None:
    env = memory.make("ConcentrationHard", num_envs=20_000, seed=3)
    env.reset()
    values = env.values.numpy()
    assert np.all(np.sort(values, axis=1) == np.repeat(np.arange(13), 4))
    freq = (values == 0).mean(0)  # P(an ace at each position) = 4/52
    assert np.all(np.abs(freq - 4 / 52) < 5 * math.sqrt(4 / 52 * 48 / 52 / 20_000))


def test_cartpole_initial_state_and_noise_law() -> None:
    env = memory.make("NoisyPositionOnlyCartPoleHard", num_envs=20_000, seed=4)
    env.reset()
    state = env.state.numpy()
    assert np.all(np.abs(state) <= 0.05)
    np.testing.assert_allclose(state.std(0), 0.1 / math.sqrt(12), rtol=0.03)
    noise = env.noise.numpy()
    assert noise.shape == (20_000, 201, 2)
    assert abs(noise.mean()) < 0.002
    assert noise.std() == pytest.approx(0.3, rel=0.01)


# -- oracles -------------------------------------------------------------------------------
@pytest.mark.parametrize("difficulty", games.DIFFICULTIES)
def test_bandit_oracle_pulls_the_best_arm(difficulty: str) -> None:
    """Best arm of K uniforms pays K/(K+1) on average: return (K-1)/(K+1)."""
    env = memory.make("MultiarmedBandit" + difficulty, num_envs=500, seed=5)
    env.reset()
    K = env.num_arms
    for _ in range(env.max_episode_steps):
        assert torch.equal(env.oracle(), env.probs.argmax(1))
        _, _, _, truncated, info = env.step(env.oracle())
    assert truncated.all()
    returns = info["episode_return"].numpy()
    assert returns.mean() == pytest.approx((K - 1) / (K + 1), abs=0.01)


def test_cartpole_oracle_survives_from_every_corner() -> None:
    """The oracle's margin: from the 16 corners of the initial box, 600 steps, far from the
    limits (oracle_return = 1 rests on this)."""
    corners = np.array(list(itertools.product([-0.05, 0.05], repeat=4)))
    env = memory.make("PositionOnlyCartPoleHard", num_envs=16, seed=0)
    env.reset(content={"state": corners})
    peak = torch.zeros(4)
    for step in range(600):
        peak = torch.maximum(peak, env.state.abs().max(0).values)
        _, _, terminated, truncated, _ = env.step(env.oracle())
        assert not terminated.any() and bool(truncated.all()) == (step == 599)
    assert peak[0] < 0.5 and peak[2] < 0.1


# -- content, state, validation ------------------------------------------------------------
def test_injected_content_lasts_one_episode() -> None:
    """Always-paying bandits and zero noise apply to the injected episode only."""
    env = memory.make("MultiarmedBanditEasy", num_envs=64, seed=6)
    env.reset(content={"probs": np.ones((64, 10)), "uniforms": np.zeros((64, 200))})
    rewards = [env.step(env.oracle())[1] for _ in range(200)]
    assert torch.all(torch.stack(rewards) == 1 / 200)
    rewards = [env.step(env.oracle())[1] for _ in range(200)]
    assert torch.any(torch.stack(rewards) < 0)

    env = memory.make("NoisyPositionOnlyCartPoleEasy", num_envs=64, seed=6)
    obs = env.reset(content={"state": np.zeros((64, 4)), "noise": np.zeros((64, 201, 2))})
    assert torch.equal(obs, env.state[:, [0, 2]].float())
    for _ in range(199):
        obs, *_ = env.step(env.oracle())
        assert torch.equal(obs, env.state[:, [0, 2]].float())
    for _ in range(5):  # the oracle lasts 200 steps, then new episodes: fresh noise
        obs, *_ = env.step(env.oracle())
        assert not torch.equal(obs, env.state[:, [0, 2]].float())


def test_noise_is_fresh_across_episodes() -> None:
    """No noise slot is reused: consecutive episodes see independent noise at each step."""
    env = memory.make("NoisyPositionOnlyCartPoleEasy", num_envs=200, seed=7)
    env.reset()
    first = env.noise.clone()
    for _ in range(201):
        env.step(env.oracle())
    # 200 steps ended every episode; slots 0..200 were all shown and redrawn (a slot left
    # stale, even only the final one, would make >= 1/201 of the entries equal)
    assert (env.noise == first).float().mean() < 1e-3


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("Easy")])
def test_state_dict_loads_twice(name: str) -> None:
    """In-place table updates must not leak into a saved state."""
    env = memory.make(name, num_envs=4, seed=8)
    env.reset()
    saved = env.state_dict()
    g = torch.Generator().manual_seed(0)
    actions = [torch.randint(0, env.num_actions, (4,), generator=g) for _ in range(30)]
    runs = []
    for _ in range(2):
        env.load_state_dict(saved)
        runs.append(torch.stack([env.step(a)[1] for a in actions]))
    assert torch.equal(runs[0], runs[1])


def test_reset_seed_replays() -> None:
    for name in NAMES:
        env = memory.make(name, num_envs=3, seed=9)
        a = env.reset(seed=1)
        first = [env.step(env.oracle())[0] for _ in range(5)]
        b = env.reset(seed=1)
        second = [env.step(env.oracle())[0] for _ in range(5)]
        assert torch.equal(a, b) and all(map(torch.equal, first, second)), name


def test_cartpole_twin_observation_space() -> None:
    twin = games.PositionOnlyCartPoleGym(prev_action=True, first_flag=True)
    space = twin.observation_space
    np.testing.assert_allclose(space.high, [4.8, 2 * 12 * 2 * math.pi / 360, 1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(space.low[:2], -space.high[:2])
    assert np.all(space.low[2:] == 0)
    check_env(twin, skip_render_check=True)
    env = games.PositionOnlyCartPole(2, prev_action=True, first_flag=True)
    assert env.obs_shape == space.shape


@pytest.mark.parametrize(
    ("cls", "params", "match"),
    [
        (games.MultiarmedBandit, {"num_arms": 0}, "num_arms"),
        (games.MultiarmedBanditGym, {"episode_length": 2.5}, "episode_length"),
        (games.Battleship, {"board_size": 3}, "ship_sizes"),
        (games.BattleshipGym, {"board_size": 5, "ship_sizes": (4, 4, 4, 4, 4)}, "may not fit"),
        (games.Battleship, {"ship_sizes": 3}, "sequence"),
        (games.MineSweeper, {"board_size": 2, "num_mines": 2}, "num_mines=2"),
        (games.MineSweeperGym, {"num_mines": 0}, "num_mines"),
        (games.Concentration, {"deck_type": "suits"}, "suits"),
        (games.ConcentrationGym, {"num_decks": 0}, "num_decks"),
        (games.PositionOnlyCartPole, {"episode_length": 0}, "episode_length"),
        (games.NoisyPositionOnlyCartPole, {"noise_sigma": 0.0}, "noise_sigma"),
        (games.NoisyPositionOnlyCartPoleGym, {"noise_sigma": -1.0}, "noise_sigma"),
    ],
)
def test_invalid_params_raise(cls: type, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**params)


def test_bad_content_raises() -> None:
    env = memory.make("BattleshipEasy", num_envs=2)
    with pytest.raises(ValueError, match="board"):
        env.reset(content={"board": np.zeros((2, 7, 7))})
    with pytest.raises(ValueError, match="missing"):
        env.reset(content={"ships": np.zeros((2, 8, 8))})
    twin = games.ConcentrationGym()
    with pytest.raises(ValueError, match="permutation"):
        twin.reset(options={"content": {"deck": np.zeros(52, dtype=np.int64)}})


@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
def test_step_without_host_sync_on_cuda() -> None:
    """Every tier-D task steps on CUDA with synchronising calls turned into errors."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    for name in NAMES:
        env = memory.make(name, num_envs=256, device="cuda", seed=0, check_range=False)
        env.reset()
        actions = torch.zeros(256, dtype=torch.long, device="cuda")
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                env.step(actions)
                env.step(env.oracle())
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_injected_cartpole_noise_lasts_one_episode() -> None:
    """An injected episode (zero noise) that ends early leaves its unshown slots behind; the
    next, freshly drawn episode must not show them: no observation equals the bare state."""
    env = memory.make("NoisyPositionOnlyCartPoleEasy", num_envs=1, seed=0)
    env.reset(content={"state": np.zeros((1, 4)), "noise": np.zeros((1, 201, 2))})
    steps, done = 0, False
    while not done:  # always push right: the pole falls within a few dozen steps
        _, _, terminated, truncated, _ = env.step(torch.tensor([1]))
        done, steps = bool(terminated | truncated), steps + 1
    assert steps < 100
    bare, shown = 0, 0
    for s in range(150):
        obs, _, terminated, truncated, info = env.step(torch.tensor([s % 2]))
        end = bool(terminated | truncated)
        o = info["final_obs"] if end else obs
        bare += int(torch.equal(o[0], env.state[0, [0, 2]].float()))
        shown += 1
        if end:
            break
    assert shown > 5 and bare == 0


def test_an_env_without_a_seed_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    memory.make("TMaze", num_envs=2)
    assert torch.equal(torch.rand(2), expected)


def test_noisy_cartpole_replays_after_an_injected_episode() -> None:
    """``reset(seed)`` and ``load_state_dict`` replay the same episodes even after an
    injected one: whether noise was injected is env state, cleared by a reset."""
    from envs.memory.games import NoisyPositionOnlyCartPoleGym

    def roll(env: Any, seed: int | None = None) -> torch.Tensor:
        out = [env.reset(seed=seed)] if seed is not None else []
        gen = torch.Generator().manual_seed(0)
        for _ in range(300):  # past the end of Easy's episodes: autoresets included
            out.append(env.step(torch.randint(0, 2, (env.num_envs,), generator=gen))[0])
        return torch.stack(out)

    def inject(env: Any) -> None:
        twin = NoisyPositionOnlyCartPoleGym(noise_sigma=0.1)
        twin.reset(seed=0)
        content = {k: np.asarray(v)[None].repeat(env.num_envs, 0) for k, v in twin.content.items()}
        env.reset(content=content)

    reference = roll(memory.make("NoisyPositionOnlyCartPoleEasy", 2, seed=0), seed=7)
    env = memory.make("NoisyPositionOnlyCartPoleEasy", 2, seed=0)
    inject(env)
    assert torch.equal(roll(env, seed=7), reference)

    env.reset(seed=3)
    saved = env.state_dict()
    before = roll(env)
    inject(env)
    env.load_state_dict(saved)
    assert torch.equal(roll(env), before)
