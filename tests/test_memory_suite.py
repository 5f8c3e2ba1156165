"""Suite-wide checks that every registered memory task must pass.

Per-task semantics (POPGym parity, task rules) live in the tier test files.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs.memory as memory

NAMES = memory.task_names()


def _difficulty(name: str) -> str:
    batched, _, _ = memory.REGISTRY[name]
    return name.removeprefix(batched.name)


@pytest.mark.parametrize("name", NAMES)
def test_check_env(name: str) -> None:
    env = gym.make(memory.gym_id(name))
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", NAMES)
def test_batched_matches_gym_twin(name: str) -> None:
    """Same episode content in both implementations -> same obs/reward/flags at every step."""
    B = 6
    _, twin_cls, params = memory.REGISTRY[name]
    twins = [twin_cls(**params) for _ in range(B)]
    first = [t.reset(seed=100 + i)[0] for i, t in enumerate(twins)]
    content = {
        key: np.stack([np.asarray(t.content[key]) for t in twins]) for key in twins[0].content
    }
    env = memory.make(name, num_envs=B, seed=0)
    obs = env.reset(content=content)
    np.testing.assert_allclose(obs.numpy(), np.stack(first), atol=1e-5)
    rng = np.random.default_rng(0)
    alive = np.ones(B, dtype=bool)
    for _ in range(env.max_episode_steps + 1):
        actions = rng.integers(0, env.num_actions, size=B)
        obs, reward, terminated, truncated, info = env.step(torch.as_tensor(actions))
        for i, twin in enumerate(twins):
            if not alive[i]:
                continue
            t_obs, t_rew, t_term, t_trunc, _ = twin.step(int(actions[i]))
            done = t_term or t_trunc
            got = info["final_obs"][i] if done else obs[i]
            np.testing.assert_allclose(got.numpy(), t_obs, atol=1e-4, err_msg=f"env {i} obs")
            assert reward[i].item() == pytest.approx(t_rew, abs=1e-5), f"env {i} reward"
            assert bool(terminated[i]) == t_term and bool(truncated[i]) == t_trunc, f"env {i}"
            alive[i] = not done
        if not alive.any():
            break
    assert not alive.any(), "an episode outlived max_episode_steps"


def _run_policy(env: memory.MemoryTask, policy, episodes: int) -> np.ndarray:
    env.reset(seed=1)
    returns: list[np.ndarray] = []
    count = 0
    while count < episodes:
        _, _, terminated, truncated, info = env.step(policy(env))
        done = terminated | truncated
        if done.any():
            returns.append(info["episode_return"][done].numpy())
            count += int(done.sum())
    return np.concatenate(returns)


def _random_policy(env: memory.MemoryTask) -> torch.Tensor:
    return torch.randint(0, env.num_actions, (env.num_envs,), generator=env.generator)


RANDOM_CASES = [
    (name, memory.REGISTRY[name][0].random_return[_difficulty(name)])
    for name in NAMES
    if _difficulty(name) in memory.REGISTRY[name][0].random_return
]


@pytest.mark.parametrize(("name", "expected"), RANDOM_CASES)
def test_random_policy_return_matches_spec(name: str, expected: float) -> None:
    env = memory.make(name, num_envs=512, seed=3)
    returns = _run_policy(env, _random_policy, episodes=2000)
    assert returns.mean() == pytest.approx(expected, abs=0.03)


ORACLE_CASES = [
    (name, memory.REGISTRY[name][0].oracle_return[_difficulty(name)])
    for name in NAMES
    if _difficulty(name) in memory.REGISTRY[name][0].oracle_return
]


@pytest.mark.parametrize(("name", "expected"), ORACLE_CASES)
def test_oracle_reaches_max_return(name: str, expected: float) -> None:
    env = memory.make(name, num_envs=64, seed=4)
    returns = _run_policy(env, lambda e: e.oracle(), episodes=64)
    assert returns.mean() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_bad_actions_raise(name: str) -> None:
    env = memory.make(name, num_envs=4, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="dtype"):
        env.step(torch.zeros(4))
    with pytest.raises(ValueError, match="lie in"):
        env.step(torch.full((4,), env.num_actions))
    with pytest.raises(ValueError, match="lie in"):
        env.step(torch.full((4,), -1))


@pytest.mark.parametrize("name", NAMES)
def test_autoreset_and_state_roundtrip(name: str) -> None:
    """Same-step autoreset: obs after done is a first step; state_dict replays exactly."""
    env = memory.make(name, num_envs=8, seed=5, first_flag=True)
    env.reset()
    saved = env.state_dict()
    g = torch.Generator().manual_seed(0)
    acts = [torch.randint(0, env.num_actions, (8,), generator=g) for _ in range(40)]
    first = [env.step(a) for a in acts]
    env.load_state_dict(saved)
    for a, (obs, rew, term, trunc, _) in zip(acts, first):
        obs2, rew2, term2, trunc2, _ = env.step(a)
        assert torch.equal(obs, obs2) and torch.equal(rew, rew2)
        assert torch.equal(term, term2) and torch.equal(trunc, trunc2)
        done = term | trunc
        assert torch.all(obs[done, -1] == 1.0), "obs after done must be a first step"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_autoreset_starts_the_next_episode_as_the_twin_does(name: str, seed: int) -> None:
    """Same-step autoreset: the observation returned with ``done`` is the new episode's first,
    equal to the twin's reset with the same content, and the two agree through that episode.
    One env, whose autoreset is handed the second episode's content (content is injected
    for every env at once, so a batch of one makes the autoreset a reset with content)."""
    _, twin_cls, params = memory.REGISTRY[name]
    twin, spare = twin_cls(**params), twin_cls(**params)
    first, _ = twin.reset(seed=200 + seed)
    spare.reset(seed=300 + seed)

    def content(source: Any) -> dict[str, np.ndarray]:
        return {k: np.asarray(v)[None] for k, v in source.content.items()}

    second = content(spare)
    env = memory.make(name, num_envs=1, seed=seed)
    obs = env.reset(content=content(twin))
    np.testing.assert_allclose(obs[0].numpy(), first, atol=1e-5)
    queued = {k: torch.as_tensor(v) for k, v in second.items()}
    draw = env._new_episode

    def new_episode(mask: torch.Tensor, content: Any = None) -> None:
        # every step calls it; content is only ever handed over for an episode that begins
        draw(mask, queued if content is None and bool(mask.any()) else content)

    env._new_episode = new_episode
    rng = np.random.default_rng(seed)
    episodes = 0
    for _ in range(2 * env.max_episode_steps + 2):
        action = int(rng.integers(0, env.num_actions))
        obs, reward, terminated, truncated, info = env.step(torch.tensor([action]))
        t_obs, t_rew, t_term, t_trunc, _ = twin.step(action)
        done = t_term or t_trunc
        got = info["final_obs"][0] if done else obs[0]
        np.testing.assert_allclose(got.numpy(), t_obs, atol=1e-4, err_msg=f"episode {episodes}")
        assert reward[0].item() == pytest.approx(t_rew, abs=1e-5)
        assert bool(terminated[0]) == t_term and bool(truncated[0]) == t_trunc
        if done:
            episodes += 1
            if episodes == 2:
                break
            reset_obs, _ = twin.reset(options={"content": {k: v[0] for k, v in second.items()}})
            np.testing.assert_allclose(obs[0].numpy(), reset_obs, atol=1e-5, err_msg="new episode")
    assert episodes == 2, "an episode outlived max_episode_steps"
