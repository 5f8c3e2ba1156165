"""Rules of the tier B probes (MemoryChain, TMaze, Copy) and tier C counting tasks
(CountAB, SelectiveCount, RememberAB): hand-played episodes, random-policy returns against
values derived by hand, and batched-vs-twin statistics.

Every hand-played episode runs in both implementations with the same injected content and
must agree step by step (``_play``), so each rule is checked twice.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs.memory as memory
from envs.memory.base import MemoryTask, MemoryTaskGym
from envs.memory.counting import CountAB, RememberAB, SelectiveCount, SelectiveCountGym
from envs.memory.probes import Copy, MemoryChain, TMaze

Step = tuple[np.ndarray, float, bool, bool]


def _play(name: str, content: dict[str, Any], actions: list[int], **params: Any) -> list[Step]:
    """Play one episode with ``content`` in the twin and the batched env (B=1).

    Returns the twin's ``[(obs, reward, terminated, truncated), ...]``, first entry the reset
    obs (reward 0); the batched env must agree at every step and the episode must end
    exactly at the last action.
    """
    batched_cls, twin_cls, defaults = memory.REGISTRY[name]
    twin = twin_cls(**{**defaults, **params})
    env = memory.make(name, num_envs=1, seed=0, **params)
    obs, _ = twin.reset(seed=0, options={"content": content})
    b_obs = env.reset(content={k: np.asarray(v)[None] for k, v in content.items()})
    np.testing.assert_allclose(b_obs[0].numpy(), obs, atol=1e-6)
    steps: list[Step] = [(obs, 0.0, False, False)]
    for i, action in enumerate(actions):
        obs, reward, term, trunc, _ = twin.step(action)
        b_obs, b_rew, b_term, b_trunc, info = env.step(torch.tensor([action]))
        done = term or trunc
        got = info["final_obs"] if done else b_obs
        np.testing.assert_allclose(got[0].numpy(), obs, atol=1e-6, err_msg=f"step {i} obs")
        assert b_rew[0].item() == pytest.approx(reward, abs=1e-6), f"step {i} reward"
        assert (bool(b_term[0]), bool(b_trunc[0])) == (term, trunc), f"step {i} flags"
        assert done == (i == len(actions) - 1), f"episode ended at step {i} of {len(actions)}"
        steps.append((obs, reward, term, trunc))
    if done:
        assert info["episode_return"][0].item() == pytest.approx(sum(s[1] for s in steps), abs=1e-5)
    return steps


def _ret(steps: list[Step]) -> float:
    return sum(s[1] for s in steps)


def _obs(steps: list[Step]) -> np.ndarray:
    return np.stack([s[0] for s in steps])


# -- random-policy returns ---------------------------------------------------------------


def _batched_random_returns(env: MemoryTask, seed: int) -> np.ndarray:
    """The first episode's return in each of the ``B`` envs under uniform random actions.

    One episode per env (rather than the first N episodes to finish) keeps long episodes
    from being under-sampled.
    """
    env.reset(seed=seed)
    g = torch.Generator().manual_seed(seed)
    first = torch.zeros(env.num_envs)
    finished = torch.zeros(env.num_envs, dtype=torch.bool)
    for _ in range(env.max_episode_steps):
        actions = torch.randint(0, env.num_actions, (env.num_envs,), generator=g)
        _, _, term, trunc, info = env.step(actions)
        new = (term | trunc) & ~finished
        first = torch.where(new, info["episode_return"], first)
        finished |= new
    assert bool(finished.all()), "an episode outlived max_episode_steps"
    return first.numpy()


def _twin_random_returns(twin: MemoryTaskGym, episodes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    twin.reset(seed=seed)
    out = []
    for _ in range(episodes):
        twin.reset()
        total, done = 0.0, False
        while not done:
            _, reward, term, trunc, _ = twin.step(int(rng.integers(twin.num_actions)))
            total, done = total + reward, term or trunc
        out.append(total)
    return np.asarray(out)


def _tmaze_random_return(L: int) -> float:
    """Expected return of the uniform random policy in TMaze(length=L), by dynamic
    programming over the position distribution up to the time limit ``2 (L + 1)``."""
    p = np.zeros(L + 1)
    p[0] = 1.0
    total = 0.0
    for _ in range(2 * (L + 1)):
        # corridor: back / up / down cost 1/L; junction: forward / back cost 1/L, arms +-1
        total += p[:L].sum() * 0.75 * (-1 / L) + p[L] * 0.5 * (-1 / L)
        q = np.zeros(L + 1)
        q[1 : L + 1] += 0.25 * p[:L]  # forward
        q[:L] += 0.5 * p[:L]  # up / down bump
        np.add.at(q, np.maximum(np.arange(L) - 1, 0), 0.25 * p[:L])  # back (wall at 0)
        q[L] += 0.25 * p[L]  # forward at the junction
        q[L - 1] += 0.25 * p[L]  # back from the junction (the other half leaves via an arm)
        p = q
    return total


def _count_random_return(n_max: int) -> float:
    """Expected return of the random policy in CountAB / SelectiveCount: ``n ~ U{1..n_max}``;
    each of the ``n + 1`` answers is right with probability 1/2; ``k`` right answers then a
    mistake give ``(k - 1) / (n + 1)``, all right gives 1."""
    values = []
    for n in range(1, n_max + 1):
        ks = np.arange(n + 1)
        values.append((0.5 ** (ks + 1) * (ks - 1) / (n + 1)).sum() + 0.5 ** (n + 1))
    return float(np.mean(values))


RANDOM_CASES = [
    ("MemoryChain", {}, 0.0),
    ("TMaze", {}, _tmaze_random_return(10)),
    ("TMaze", {"length": 3}, _tmaze_random_return(3)),
    ("CopyEasy", {}, 2 / 8 - 1),
    ("CountABEasy", {}, _count_random_return(5)),
    ("SelectiveCountEasy", {}, _count_random_return(5)),
    ("RememberAB", {}, 0.0),
]


@pytest.mark.parametrize(("name", "params", "expected"), RANDOM_CASES)
def test_random_policy_return_batched_twin_and_analytic(
    name: str, params: dict[str, Any], expected: float
) -> None:
    """Random-policy mean return: batched (2048 episodes, one per env; more envs push CPU ops over
    torch's parallel grain size, which stalls on a busy 2-core box) and twin (2000) both match the
    value derived by hand within 4.5 standard errors, and each other."""
    batched = _batched_random_returns(memory.make(name, num_envs=2048, seed=1, **params), 2)
    _, twin_cls, defaults = memory.REGISTRY[name]
    twin = _twin_random_returns(twin_cls(**{**defaults, **params}), 2000, seed=3)
    se_b = batched.std() / np.sqrt(len(batched)) + 1e-3
    se_t = twin.std() / np.sqrt(len(twin)) + 1e-3
    assert batched.mean() == pytest.approx(expected, abs=4.5 * se_b)
    assert twin.mean() == pytest.approx(expected, abs=4.5 * se_t)
    assert batched.mean() == pytest.approx(twin.mean(), abs=4.5 * np.hypot(se_b, se_t))


def test_analytic_random_returns_sanity() -> None:
    # n = 1: answers (b, stop); k = 0: -1/2 w.p. 1/2, k = 1: 0 w.p. 1/4, both right: 1 w.p. 1/4
    assert _count_random_return(1) == pytest.approx(-0.25 + 0.25)
    # L = 1: the junction is one step away; every path is penalised or +-1 at random
    assert -(2 * 2) * 0.75 <= _tmaze_random_return(1) < 0


# -- MemoryChain ---------------------------------------------------------------------------


def test_memory_chain_obs_layout_and_reward() -> None:
    L = 4
    steps = _play("MemoryChain", {"context": [1], "query": 0}, [0] * L + [1], memory_length=L)
    obs = _obs(steps)
    assert obs.shape == (L + 2, 4)
    # [time left, query one-hot, (bit == 0, bit == 1)]
    np.testing.assert_allclose(obs[0], [1.0, 0, 0, 1])
    for t in range(1, L):
        np.testing.assert_allclose(obs[t], [1 - t / L, 0, 0, 0])
    np.testing.assert_allclose(obs[L], [0.0, 1, 0, 0])  # decision step shows the query
    np.testing.assert_allclose(obs[L + 1], [0.0, 0, 0, 0])  # terminal obs
    assert [s[1] for s in steps[1:]] == [0, 0, 0, 0, 1.0]
    assert steps[-1][2] and not steps[-1][3]
    # context 0: answering 1 is wrong
    steps = _play("MemoryChain", {"context": [0], "query": 0}, [0] * L + [1], memory_length=L)
    np.testing.assert_allclose(steps[0][0], [1.0, 0, 1, 0])
    assert _ret(steps) == -1.0


def test_memory_chain_multiple_bits() -> None:
    content = {"context": [0, 1, 1], "query": 2}
    steps = _play("MemoryChain", content, [0, 0, 1], memory_length=2, num_bits=3)
    np.testing.assert_allclose(steps[0][0], [1, 0, 0, 0, 1, 0, 0, 1, 0, 1])
    np.testing.assert_allclose(steps[2][0], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert _ret(steps) == 1.0
    env = memory.make("MemoryChain", num_envs=2, num_bits=3)
    assert env.obs_shape == (10,) and env.max_episode_steps == 11


def test_memory_chain_length_one() -> None:
    steps = _play("MemoryChain", {"context": [1], "query": 0}, [0, 1], memory_length=1)
    np.testing.assert_allclose(_obs(steps), [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    assert _ret(steps) == 1.0


# -- TMaze ---------------------------------------------------------------------------------


F, BK, UP, DN = 0, 1, 2, 3


@pytest.mark.parametrize("cue", [0, 1])
def test_tmaze_forward_then_cued_arm(cue: int) -> None:
    L = 5
    steps = _play("TMaze", {"cue": cue}, [F] * L + [UP + cue], length=L)
    obs = _obs(steps)
    np.testing.assert_allclose(obs[0], np.eye(4)[cue])  # [cue up, cue down, corridor, junction]
    np.testing.assert_allclose(obs[1:L], np.tile([0, 0, 1, 0], (L - 1, 1)))
    np.testing.assert_allclose(obs[L], [0, 0, 0, 1])
    np.testing.assert_allclose(obs[L + 1], [0, 0, 0, 0])  # in an arm
    assert _ret(steps) == 1.0 and steps[-1][2]


def test_tmaze_wrong_arm_and_penalties() -> None:
    L = 4
    assert _ret(_play("TMaze", {"cue": 0}, [F] * L + [DN], length=L)) == -1.0
    # bumping up/down in the corridor, back into the wall, forward at the junction: -1/L each
    acts = [UP, BK, F, DN, F, F, F, F, UP]
    steps = _play("TMaze", {"cue": 0}, acts, length=L)
    assert [s[1] for s in steps[1:]] == pytest.approx(
        [-1 / L, -1 / L, 0, -1 / L, 0, 0, 0, -1 / L, 1]
    )
    np.testing.assert_allclose(steps[2][0], [0, 0, 1, 0])  # back at the start: no cue again
    # going back costs and undoes progress: F F BK then 3 F to the junction
    steps = _play("TMaze", {"cue": 1}, [F, F, BK, F, F, DN], length=3)
    assert _ret(steps) == pytest.approx(1 - 1 / 3)
    # back from the junction leaves it
    steps = _play("TMaze", {"cue": 1}, [F, F, BK, F, DN], length=2)
    np.testing.assert_allclose(_obs(steps)[2:5], [[0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert _ret(steps) == pytest.approx(1 - 1 / 2)


def test_tmaze_time_limit_truncates() -> None:
    L = 3
    env = memory.make("TMaze", length=L)
    assert env.max_episode_steps == 2 * (L + 1)
    steps = _play("TMaze", {"cue": 0}, [UP] * (2 * (L + 1)), length=L)
    assert steps[-1][3] and not steps[-1][2]
    assert _ret(steps) == pytest.approx(-2 * (L + 1) / L)


def test_tmaze_long_corridor_via_gym_make() -> None:
    env = gym.make("rlstm/TMaze-v0", length=1000)
    assert env.unwrapped.max_episode_steps == 2002
    batched = memory.make("TMaze", num_envs=3, length=1000, seed=0)
    batched.reset()
    total = torch.zeros(3)
    for _ in range(1001):
        _, reward, term, _, _ = batched.step(batched.oracle())
        total += reward
    assert bool(term.all()) and torch.equal(total, torch.ones(3))


# -- Copy ----------------------------------------------------------------------------------


def test_copy_phases_and_rewards() -> None:
    symbols = [3, 0, 7, 7, 1, 2, 5, 4, 6, 0]
    G, m = 2, 10
    acts = [0] * (m + G) + symbols
    steps = _play("CopyEasy", {"symbols": symbols}, acts, gap=G)
    obs = _obs(steps)
    assert obs.shape == (2 * m + G + 1, 10)
    np.testing.assert_allclose(obs[:m], np.eye(10)[symbols])
    np.testing.assert_allclose(obs[m : m + G], np.tile(np.eye(10)[8], (G, 1)))  # blank
    np.testing.assert_allclose(obs[m + G : 2 * m + G], np.tile(np.eye(10)[9], (m, 1)))  # delim
    np.testing.assert_allclose(obs[-1], np.zeros(10))
    assert [s[1] for s in steps[1 : m + G + 1]] == [0.0] * (m + G)
    assert _ret(steps) == pytest.approx(1.0) and steps[-1][2]
    # two wrong outputs: 8/10 - 2/10
    wrong = acts[:]
    wrong[m + G] = 1
    wrong[-1] = 1
    assert _ret(_play("CopyEasy", {"symbols": symbols}, wrong, gap=G)) == pytest.approx(0.6)


def test_copy_zero_gap_and_difficulties() -> None:
    steps = _play("CopyEasy", {"symbols": [1, 2]}, [0, 0, 1, 2], gap=0, num_symbols=2)
    np.testing.assert_allclose(_obs(steps)[2], np.eye(10)[9])
    assert _ret(steps) == pytest.approx(1.0)
    gaps = {d: memory.REGISTRY["Copy" + d][2]["gap"] for d in ("Easy", "Medium", "Hard")}
    assert gaps == {"Easy": 10, "Medium": 100, "Hard": 500}
    assert memory.make("CopyHard").max_episode_steps == 520


# -- CountAB -------------------------------------------------------------------------------


B_, STOP = 0, 1


def test_count_ab_perfect_episode() -> None:
    n = 3
    steps = _play("CountABEasy", {"n": n}, [STOP, B_, STOP] + [B_] * n + [STOP])
    obs = _obs(steps)
    np.testing.assert_allclose(obs[:n], np.tile([1, 0, 0], (n, 1)))  # watch actions ignored
    np.testing.assert_allclose(obs[n], [0, 1, 0])  # X: the first answer step
    np.testing.assert_allclose(obs[n + 1 :], np.tile([0, 0, 1], (n + 1, 1)))
    assert [s[1] for s in steps[1:]] == pytest.approx([0] * n + [1 / (n + 1)] * (n + 1))
    assert _ret(steps) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_count_ab_first_mistake_ends(k: int) -> None:
    """``k`` right answers, then a wrong one: ``(k - 1) / (n + 1)`` and terminated."""
    n = 3
    wrong = STOP if k < n else B_  # stopping early, or one b too many
    steps = _play("CountABEasy", {"n": n}, [B_] * n + [B_] * k + [wrong])
    assert steps[-1][1] == pytest.approx(-1 / (n + 1))
    assert _ret(steps) == pytest.approx((k - 1) / (n + 1)) and steps[-1][2]


def test_count_ab_difficulties_and_prev_action() -> None:
    n_max = {d: memory.REGISTRY["CountAB" + d][2]["n_max"] for d in ("Easy", "Medium", "Hard")}
    assert n_max == {"Easy": 5, "Medium": 20, "Hard": 100}
    assert not CountAB.needs_prev_action
    env = memory.make("CountABEasy", num_envs=2, prev_action=True)
    assert env.obs_shape == (5,)


def test_count_ab_n_distribution_batched_vs_twin() -> None:
    env = memory.make("CountABMedium", num_envs=8192, seed=0)
    env.reset()
    ns = env.n.numpy()
    _, twin_cls, params = memory.REGISTRY["CountABMedium"]
    twin = twin_cls(**params)
    twin.reset(seed=0)
    twin_n = []
    for _ in range(4000):
        twin.reset()
        twin_n.append(int(twin.content["n"]))
    tn = np.asarray(twin_n)
    for sample in (ns, tn):
        assert sample.min() == 1 and sample.max() == 20
        assert sample.mean() == pytest.approx(10.5, abs=4.5 * 5.77 / np.sqrt(len(sample)))


# -- SelectiveCount ------------------------------------------------------------------------


def test_selective_count_only_as_count() -> None:
    content = {"n": 2, "m": 3, "order": [1, 0, 1, 1, 0, -1, -1, -1, -1, -1]}
    steps = _play("SelectiveCountEasy", content, [STOP] * 5 + [B_, B_, STOP])
    obs = _obs(steps)
    a, x, X, blank = np.eye(4)
    np.testing.assert_allclose(obs, [x, a, x, x, a, X, blank, blank, blank])
    assert _ret(steps) == pytest.approx(1.0)
    # counting the x's too is wrong at the third b
    steps = _play("SelectiveCountEasy", content, [B_] * 5 + [B_, B_, B_])
    assert _ret(steps) == pytest.approx(1 / 3)


def test_selective_count_rejects_inconsistent_order() -> None:
    bad = {"n": 2, "m": 1, "order": [1, 1, 0, -1, -1, -1, -1, -1, -1, -1]}
    with pytest.raises(ValueError, match="order"):
        SelectiveCountGym(n_max=5, m_max=5).reset(options={"content": bad})
    env = SelectiveCount(1, n_max=5, m_max=5)
    with pytest.raises(ValueError, match="order"):
        env.reset(content={k: np.asarray(v)[None] for k, v in bad.items()})


def _watch_sequences(env: SelectiveCount, steps: int, resets: int) -> tuple[np.ndarray, np.ndarray]:
    """Reset ``env`` ``resets`` times and read the first ``steps`` watch symbols of each
    episode: ``(n, m)`` per episode, shape ``(resets * B, 2)``, and the symbols (0 = a,
    1 = x, -1 from the end of the watch phase on), shape ``(resets * B, steps)``.

    (A few thousand envs at a time: larger CPU tensors cross torch's parallel grain size,
    which stalls on a busy 2-core machine.)
    """
    nms, seqs = [], []
    for seed in range(resets):
        obs = env.reset(seed=seed)
        nms.append(torch.stack([env.n, env.m], 1))
        seq = []
        watching = torch.ones(env.num_envs, dtype=torch.bool)
        for _ in range(steps):
            field = obs.argmax(1)
            watching &= field < 2
            seq.append(torch.where(watching, field, -1))
            obs, *_ = env.step(torch.zeros(env.num_envs, dtype=torch.long))
        seqs.append(torch.stack(seq, 1))
    return torch.cat(nms).numpy(), torch.cat(seqs).numpy()


def test_selective_count_lazy_order_is_uniform() -> None:
    """The batched class draws the watch order lazily; for ``n = m = 2`` all 6 orders must be
    equally likely, as in the twin's permutation."""
    nm, seq = _watch_sequences(SelectiveCount(4096, n_max=2, m_max=2), 4, resets=8)
    pick = (nm[:, 0] == 2) & (nm[:, 1] == 2)
    orders = sorted(set(permutations([0, 0, 1, 1])))
    counts = np.array([(seq[pick] == np.array(o)).all(1).sum() for o in orders])
    assert counts.sum() == pick.sum() > 4000
    freq = counts / counts.sum()
    assert np.abs(freq - 1 / 6).max() < 4.5 * np.sqrt(1 / 6 * 5 / 6 / counts.sum())
    # the twin's orders have the same (uniform) distribution
    twin = SelectiveCountGym(n_max=2, m_max=2)
    twin.reset(seed=0)
    tw = []
    for _ in range(6000):
        twin.reset()
        if int(twin.content["n"]) == int(twin.content["m"]) == 2:
            tw.append(tuple(twin.content["order"][:4]))
    tcounts = np.array([tw.count(o) for o in orders])
    assert np.abs(tcounts / len(tw) - 1 / 6).max() < 4.5 * np.sqrt(1 / 6 * 5 / 6 / len(tw))


def test_selective_count_position_of_as_batched_vs_twin() -> None:
    """Mean fraction of a's at each watch position, over all (n, m): batched vs twin."""
    nm, seq = _watch_sequences(SelectiveCount(4096, n_max=3, m_max=3), 6, resets=5)
    twin = SelectiveCountGym(n_max=3, m_max=3)
    twin.reset(seed=1)
    rows = []
    for _ in range(4000):
        twin.reset()
        rows.append(twin.content["order"])
    tseq = np.stack(rows)
    for pos in range(6):
        b, t = seq[:, pos], tseq[:, pos]
        pb, pt = (b == 0).sum() / (b >= 0).sum(), (t == 0).sum() / (t >= 0).sum()
        se = np.sqrt(0.25 / (b >= 0).sum() + 0.25 / (t >= 0).sum())
        assert pb == pytest.approx(pt, abs=4.5 * se), f"position {pos}"
    assert set(np.unique(nm[:, 0])) == {1, 2, 3} and set(np.unique(nm[:, 1])) == {0, 1, 2, 3}


# -- RememberAB ----------------------------------------------------------------------------


@pytest.mark.parametrize("cue", [0, 1])
def test_remember_ab_episode(cue: int) -> None:
    k = 3
    A, Bc, x, Y = np.eye(4)
    steps = _play("RememberAB", {"cue": cue, "k": k}, [1 - cue] * (k + 1) + [cue])
    np.testing.assert_allclose(_obs(steps), [A if cue == 0 else Bc, x, x, x, Y, np.zeros(4)])
    assert [s[1] for s in steps[1:]] == [0, 0, 0, 0, 1.0] and steps[-1][2]
    steps = _play("RememberAB", {"cue": cue, "k": k}, [cue] * (k + 1) + [1 - cue])
    assert _ret(steps) == -1.0
    steps = _play("RememberAB", {"cue": cue, "k": 0}, [1 - cue, cue], k_min=0)  # cue, then Y
    assert _ret(steps) == 1.0


def test_remember_ab_thousand_step_delay() -> None:
    env = gym.make("rlstm/RememberAB-v0", k_min=1000, k_max=1000)
    obs, _ = env.reset(seed=0)
    cue = int(obs.argmax())
    for _ in range(1001):
        obs, reward, term, trunc, _ = env.step(0)
        assert reward == 0.0 and not (term or trunc)
    np.testing.assert_allclose(obs, [0, 0, 0, 1])
    _, reward, term, _, _ = env.step(cue)
    assert reward == 1.0 and term
    batched = memory.make("RememberAB", num_envs=4, k_min=990, k_max=1000, seed=0)
    assert batched.max_episode_steps == 1002
    batched.reset()
    lengths = torch.zeros(4, dtype=torch.long)
    for _ in range(1002):
        _, _, b_term, _, info = batched.step(batched.oracle())
        lengths = torch.where(b_term & (lengths == 0), info["episode_length"], lengths)
    assert bool(((lengths >= 992) & (lengths <= 1002)).all())


# -- parameters and content validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "params", "match"),
    [
        (MemoryChain, {"memory_length": 0}, "memory_length"),
        (MemoryChain, {"num_bits": 0}, "num_bits"),
        (MemoryChain, {"memory_length": 2.5}, "memory_length"),
        (TMaze, {"length": 0}, "length"),
        (Copy, {"gap": -1}, "gap"),
        (Copy, {"alphabet": 1}, "alphabet"),
        (CountAB, {"n_max": 0}, "n_max"),
        (SelectiveCount, {"m_max": -1}, "m_max"),
        (RememberAB, {"k_min": 5, "k_max": 4}, "k_max"),
        (RememberAB, {"k_min": -1}, "k_min"),
    ],
)
def test_invalid_params_raise(cls: type[MemoryTask], params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(2, **params)
    twin_cls = next(t for b, t in memory.PAIRS if b is cls)
    with pytest.raises(ValueError, match=match):
        twin_cls(**params)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("TMaze", {"cue": [2, 0]}, r"content\['cue'\]"),
        ("TMaze", {"kue": [0, 0]}, "missing"),
        ("CopyEasy", {"symbols": np.zeros((2, 9), dtype=np.int64)}, "shape"),
        ("CountABEasy", {"n": [0, 1]}, r"content\['n'\]"),
        ("RememberAB", {"cue": [0, 1], "k": [11, 1]}, r"content\['k'\]"),
    ],
)
def test_bad_content_raises(name: str, content: dict[str, Any], match: str) -> None:
    env = memory.make(name, num_envs=2)
    with pytest.raises(ValueError, match=match):
        env.reset(content=content)
    _, twin_cls, params = memory.REGISTRY[name]
    with pytest.raises(ValueError, match=match):
        twin_cls(**params).reset(
            options={"content": {k: np.asarray(v)[0] for k, v in content.items()}}
        )


def test_tmaze_success_is_the_cued_arm_whatever_the_detours_cost() -> None:
    """With L detours the return is 0 though the memory worked: success must say so. Env 0
    bumps twice, then takes the cued arm (return 0, success); env 1 walks straight to the
    wrong arm (return -1, no success); env 2 is the oracle (return 1, success)."""
    from envs.memory.probes import BACK, DOWN, FORWARD, UP
    from rlstm.evaluate import evaluate

    env = memory.make("TMaze", 3, "cpu", 0, length=2)
    env.reset(content={"cue": torch.tensor([0, 0, 1])})
    plan = [  # one row per step, one column per env
        [BACK, FORWARD, FORWARD],
        [BACK, FORWARD, FORWARD],
        [FORWARD, DOWN, DOWN],
        [FORWARD, FORWARD, FORWARD],
        [UP, FORWARD, FORWARD],
    ]
    ended: dict[int, tuple[float, bool]] = {}
    for actions in plan:
        _, _, terminated, _, info = env.step(torch.tensor(actions))
        for i in terminated.nonzero().flatten().tolist():
            ended.setdefault(
                i, (float(info["episode_return"][i]), bool(info["episode_success"][i]))
            )
    assert ended == {0: (pytest.approx(0.0, abs=1e-6), True), 1: (-1.0, False), 2: (1.0, True)}

    class Bumps(torch.nn.Module):
        """Bumps into the start's wall twice, then walks to the cued arm (it sees the cue)."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def initial_state(self, n: int, device: torch.device) -> torch.Tensor:
            return torch.zeros(n, 2, dtype=torch.long)  # (steps taken, cue)

        def step(self, obs, state, starts):  # type: ignore[no-untyped-def]
            state = torch.where(starts[:, None], torch.zeros_like(state), state)
            cue = torch.where(state[:, 0] == 0, obs[:, 1].long(), state[:, 1])
            t = state[:, 0]
            action = torch.where(t < 2, BACK, torch.where(t < 4, FORWARD, UP + cue))
            logits = torch.nn.functional.one_hot(action, 4).float() * 100
            return logits, torch.zeros(len(obs)), torch.stack([t + 1, cue], 1)

    result = evaluate(Bumps(), memory.make("TMaze", 4, "cpu", 0, length=2), 16, greedy=True)
    assert result["mean_return"] == pytest.approx(0.0, abs=1e-6)
    assert result["success_rate"] == 1.0
