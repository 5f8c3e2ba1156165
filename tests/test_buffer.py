"""GAE against a hand computation; chunking, stored states, refresh and burn-in."""

from __future__ import annotations

import pytest
import torch

from agents import RecurrentAgent
from rlstm.buffer import RolloutBuffer, compute_gae
from rlstm.config import AgentConfig
from rlstm.ppo import burn_in_states, refresh_states


def test_gae_matches_hand_computation() -> None:
    """One env, 4 steps: step 1 truncates (bootstrap from the final obs' value 10),
    step 2 terminates (no bootstrap), step 3 runs on (bootstrap from next_value)."""
    g, lam = 0.9, 0.5
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[0.5], [1.5], [2.5], [3.5]])
    term = torch.tensor([[False], [False], [True], [False]])
    trunc = torch.tensor([[False], [True], [False], [False]])
    final_v = torch.tensor([[0.0], [10.0], [99.0], [0.0]])  # 99 at a terminal must be ignored
    next_v = torch.tensor([7.0])
    adv, ret = compute_gae(r, v, term, trunc, final_v, next_v, g, lam)

    d3 = 4.0 + g * 7.0 - 3.5
    a3 = d3
    d2 = 3.0 + 0.0 - 2.5  # terminated: no bootstrap, recursion cut
    a2 = d2
    d1 = 2.0 + g * 10.0 - 1.5  # truncated: bootstrap from the final obs, recursion cut
    a1 = d1
    d0 = 1.0 + g * 1.5 - 0.5
    a0 = d0 + g * lam * a1
    expected = torch.tensor([[a0], [a1], [a2], [a3]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + v)


def test_gae_no_dones_equals_discounted_sum_with_lambda_one() -> None:
    T = 6
    r = torch.rand(T, 3)
    v = torch.zeros(T, 3)
    f = torch.zeros(T, 3, dtype=torch.bool)
    adv, _ = compute_gae(r, v, f, f, torch.zeros(T, 3), torch.zeros(3), 0.8, 1.0)
    expected = torch.stack([sum(0.8**k * r[t + k] for k in range(T - t)) for t in range(T)])
    torch.testing.assert_close(adv, expected)


def _filled_buffer(T: int = 12, B: int = 3, L: int = 4):
    torch.manual_seed(0)
    agent = RecurrentAgent((5,), torch.float32, 3, AgentConfig(hidden_size=6, encoder_hidden=8))
    buf = RolloutBuffer(T, B, (5,), torch.float32, (agent.core.state_slots, 6), torch.device("cpu"))
    state = agent.initial_state(B)
    buf.obs.copy_(torch.randn(T, B, 5))
    buf.starts.copy_(torch.rand(T, B) < 0.2)
    buf.starts[0] = True
    with torch.no_grad():
        for t in range(T):
            buf.states[t] = state
            _, _, state = agent.step(buf.obs[t], state, buf.starts[t])
    buf.next_state.copy_(state)
    return agent, buf


def test_chunk_k_gets_state_recorded_at_step_kL() -> None:
    agent, buf = _filled_buffer()
    buf.actions.copy_(torch.arange(12)[:, None].expand(12, 3))
    chunks = buf.chunks(4)
    K, B = 3, 3
    for k in range(K):
        for b in range(B):
            j = k * B + b
            torch.testing.assert_close(chunks.states[:, j], buf.states[k * 4, :, b])
            assert chunks.actions[:, j].tolist() == list(range(k * 4, k * 4 + 4))
            torch.testing.assert_close(chunks.obs[:, j], buf.obs[k * 4 : k * 4 + 4, b])


def test_refresh_equals_fresh_full_pass() -> None:
    agent, buf = _filled_buffer()
    # perturb the weights: stored states are now stale, refreshed ones must follow the new weights
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.1 * torch.randn_like(p))
    refreshed = refresh_states(agent, buf, 4)
    state = buf.states[0]
    fresh = []
    with torch.no_grad():
        for t in range(12):
            if t % 4 == 0:
                fresh.append(state)
            _, _, state = agent.step(buf.obs[t], state, buf.starts[t])
    expected = torch.cat(fresh, dim=1)
    torch.testing.assert_close(refreshed, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(refreshed, buf.chunks(4).states)


def test_burn_in_reproduces_stored_states_with_unchanged_weights() -> None:
    """With the weights that collected the data, burning in from the state stored b steps
    earlier must land exactly on the stored chunk-start state."""
    agent, buf = _filled_buffer()
    for b in (1, 3, 8):
        burned = burn_in_states(agent, buf, 4, b)
        torch.testing.assert_close(burned, buf.chunks(4).states, rtol=1e-5, atol=1e-6)


def test_state_after_reads_next_state_at_the_end() -> None:
    _, buf = _filled_buffer()
    t = torch.tensor([0, 11])
    b = torch.tensor([2, 1])
    after = buf.state_after(t, b)
    torch.testing.assert_close(after[:, 0], buf.states[1, :, 2])
    torch.testing.assert_close(after[:, 1], buf.next_state[:, 1])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_obs_stored_in_own_dtype(dtype: torch.dtype) -> None:
    buf = RolloutBuffer(4, 2, (84, 84), dtype, (2, 8), torch.device("cpu"))
    assert buf.obs.dtype == dtype and buf.final_obs.dtype == dtype


@pytest.mark.parametrize("b", [1, 3, 8])
def test_burn_in_follows_new_weights_from_the_state_stored_b_steps_earlier(b: int) -> None:
    """With changed weights, chunk k's start state is a step loop over ``[kL - b, kL)`` from
    the state stored at ``kL - b`` (``b`` capped at ``kL``); the first chunk keeps its stored
    state. It then differs from the stale stored states."""
    agent, buf = _filled_buffer()
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.1 * torch.randn_like(p))
    burned = burn_in_states(agent, buf, 4, b)
    expected = [buf.states[0]]
    with torch.no_grad():
        for t0 in (4, 8):
            start = t0 - min(b, t0)
            state = buf.states[start]
            for t in range(start, t0):
                _, _, state = agent.step(buf.obs[t], state, buf.starts[t])
            expected.append(state)
    torch.testing.assert_close(burned, torch.cat(expected, dim=1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(burned, buf.chunks(4).states)
