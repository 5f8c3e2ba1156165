"""Test-wide settings: one torch thread (small tensors; avoids oversubscribing 2-core CI),
and ``TINY_RUN``, the overrides of the smallest run that goes through the whole training loop
(the CLI, reliability and torchrun tests build on it: ``from conftest import TINY_RUN``), and
``random_rollout``, a filled buffer for tests of the update."""

import pytest
import torch

from rlstm.buffer import RolloutBuffer
from rlstm.config import AgentConfig

TINY_RUN = [
    "env.id=RepeatPreviousEasy",
    "env.num_envs=8",
    "ppo.num_steps=16",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=2",
    "agent.hidden_size=16",
    "agent.encoder_hidden=16",
    "run.progress=false",
]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def random_rollout(num_envs: int, num_steps: int = 16) -> tuple[torch.nn.Module, RolloutBuffer]:
    """A fixed agent and a rollout it collected on random observations (episode starts with
    p = 0.1), with random advantages (mean 0.5, std 2, so the normalisation matters)."""
    from agents import RecurrentAgent

    T, obs_dim, num_actions = num_steps, 5, 3
    torch.manual_seed(0)
    agent = RecurrentAgent(
        (obs_dim,), torch.float32, num_actions, AgentConfig(hidden_size=16, encoder_hidden=16)
    )
    g = torch.Generator().manual_seed(1)
    state_shape = (agent.core.state_slots, 16)
    buf = RolloutBuffer(T, num_envs, (obs_dim,), torch.float32, state_shape, torch.device("cpu"))
    state = agent.initial_state(num_envs)
    starts = torch.ones(num_envs, dtype=torch.bool)
    with torch.no_grad():
        for t in range(T):
            obs = torch.randn(num_envs, obs_dim, generator=g)
            buf.obs[t], buf.starts[t], buf.states[t] = obs, starts, state
            logits, value, state = agent.step(obs, state, starts)
            action = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
            buf.actions[t] = action
            buf.logprobs[t] = logits.log_softmax(-1).gather(1, action[:, None]).squeeze(1)
            buf.values[t] = value
            starts = torch.rand(num_envs, generator=g) < 0.1
        buf.next_state.copy_(state)
    buf.advantages = torch.randn(T, num_envs, generator=g) * 2 + 0.5
    buf.returns = buf.advantages + buf.values
    return agent, buf
