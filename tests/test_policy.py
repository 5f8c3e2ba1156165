"""``TrainedPolicy``: a trained run used from Python, against ``rlstm eval``'s loop."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_RUN

import envs.memory  # noqa: F401 - registers the NumPy twins with gymnasium
from agents import NatureCNN, RecurrentAgent, TrainedPolicy
from rlstm import checkpoint
from rlstm.cli import main, make_env
from rlstm.config import AgentConfig, Config, config_from_dict
from rlstm.evaluate import evaluate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    args = ["train", *TINY_RUN, "ppo.total_timesteps=256", f"run.out_dir={out}", "run.run_name=p"]
    assert main(args) == 0
    return out / "p"


def test_greedy_predict_loop_scores_as_rlstm_eval(run_dir: Path) -> None:
    """Acting through ``predict`` (state handed back, episode starts passed in) gives the same
    episodes as ``evaluate``, the loop behind ``rlstm eval``, on the same env and seed: two
    episodes per env, so the second runs from a state zeroed by ``episode_start``."""
    policy = TrainedPolicy.load(run_dir)
    B = 6
    cfg = config_from_dict(policy.config)  # the run's env: first_flag from the default
    cpu = torch.device("cpu")
    reference = evaluate(policy.agent, make_env(cfg, cpu, B, seed=3), 2 * B, greedy=True, seed=3)
    env = make_env(cfg, cpu, B, seed=3)
    obs, state, starts = env.reset(seed=3), None, None
    ref_state, ref_starts = policy.initial_state(B), torch.ones(B, dtype=torch.bool)
    returns: list[float] = []
    counts = torch.zeros(B, dtype=torch.long)
    while (counts < 2).any():
        action, state = policy.predict(obs, state, starts, deterministic=True)
        with torch.no_grad():  # the state as training carries it
            _, _, ref_state = policy.agent.step(obs, ref_state, ref_starts)
        torch.testing.assert_close(state, ref_state, rtol=0, atol=0)
        obs, _, terminated, truncated, info = env.step(action)
        starts = ref_starts = terminated | truncated
        for i in (starts & (counts < 2)).nonzero().flatten().tolist():
            returns.append(float(info["episode_return"][i]))
        counts += starts
    assert len(returns) == 2 * B and len(set(returns)) > 1
    assert returns == reference["returns"]


def test_one_observation_of_the_numpy_twin(run_dir: Path) -> None:
    """A single gymnasium env: one observation in, one NumPy action out, the same as the
    batch of one, through a whole episode."""
    policy = TrainedPolicy.load(run_dir, seed=5)
    env = gym.make("rlstm/RepeatPreviousEasy-v0", first_flag=policy.config["env"]["first_flag"])
    obs, _ = env.reset(seed=0)
    action, state = policy.predict(obs, deterministic=True)
    batch_state = policy.initial_state(1)
    start, steps, done = True, 0, False
    while not done:
        batch_action, batch_state = policy.predict(obs[None], batch_state, [start], True)
        assert isinstance(action, np.ndarray) and action.shape == ()
        assert action == batch_action[0]
        torch.testing.assert_close(state, batch_state)
        obs, _, terminated, truncated, _ = env.step(action)
        done, start, steps = terminated or truncated, False, steps + 1
        action, state = policy.predict(obs, state, done, deterministic=True)
    assert steps > 1


def test_frames_get_the_cnn_and_match_the_agent(tmp_path: Path) -> None:
    """A checkpoint of a frame agent loads with the Nature CNN (the weights say so) and acts
    as the saved agent does, with the state zeroed at an episode start."""
    torch.manual_seed(0)
    cfg = AgentConfig(hidden_size=16)
    agent = RecurrentAgent((84, 84), torch.uint8, 4, cfg)
    config = Config()
    config.agent = cfg
    data = {
        "config": config.to_dict(),
        "agent": agent.state_dict(),
        "obs_shape": [84, 84],
        "num_actions": 4,
    }
    checkpoint.save_atomic(data, tmp_path / "checkpoint.pt")
    policy = TrainedPolicy.load(tmp_path)
    assert isinstance(policy.agent.encoder, NatureCNN)
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (5, 3, 84, 84), dtype=torch.uint8, generator=g)
    starts = torch.tensor([[1, 1, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    state, ref_state = None, agent.initial_state(3)
    with torch.no_grad():
        for t in range(5):
            action, state = policy.predict(frames[t], state, starts[t], deterministic=True)
            logits, _, ref_state = agent.step(frames[t], ref_state, starts[t])
            assert torch.equal(action, logits.argmax(-1))
            torch.testing.assert_close(state, ref_state)


def test_a_numpy_or_float64_state_acts_as_the_state_it_holds(run_dir: Path) -> None:
    """sb3-contrib's predict hands its state back as NumPy; ours takes that too."""
    policy = TrainedPolicy.load(run_dir)
    obs = np.pad(np.eye(4, dtype=np.float32), ((0, 0), (0, policy.obs_shape[0] - 4)))
    _, state = policy.predict(obs, deterministic=True)
    logits_ref = policy.agent.step(torch.as_tensor(obs), state, torch.zeros(4, dtype=torch.bool))
    for given in (state.numpy(), state.double(), state.numpy().astype(np.float64)):
        action, next_state = policy.predict(obs, given, deterministic=True)
        assert np.array_equal(action, logits_ref[0].argmax(-1).numpy())
        torch.testing.assert_close(next_state, logits_ref[2])


def test_sampling_is_seeded(run_dir: Path) -> None:
    obs = np.eye(4, dtype=np.float32)[[0, 1, 2, 3] * 16]
    obs = np.pad(obs, ((0, 0), (0, TrainedPolicy.load(run_dir).obs_shape[0] - 4)))
    a = [TrainedPolicy.load(run_dir, seed=s).predict(obs)[0] for s in (1, 1, 2)]
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], a[2])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.predict(np.zeros((2, 3))), "obs has shape (2, 3)"),
        (lambda p: p.predict(np.zeros((2, *p.obs_shape)), p.initial_state(3)), "state has shape"),
        (lambda p: p.predict(np.zeros((2, *p.obs_shape)), None, [True]), "episode_start has 1"),
        (
            lambda p: p.predict(np.zeros((2, *p.obs_shape)), np.zeros((1, 2, 3), dtype=np.int64)),
            "state has dtype torch.int64",
        ),
    ],
)
def test_bad_input_names_the_problem(run_dir: Path, call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(TrainedPolicy.load(run_dir))


def test_a_device_torch_does_not_know_is_clear(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="device 'gpu': must be auto, cpu, cuda or cuda:N"):
        TrainedPolicy.load(run_dir, device="gpu")


def test_missing_checkpoint_is_clear(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        TrainedPolicy.load(tmp_path / "nothing")
