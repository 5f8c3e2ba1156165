"""Test-wide settings: one torch thread (small tensors; avoids oversubscribing 2-core CI),
and ``TINY_RUN``, the overrides of the smallest run that goes through the whole training loop
(the CLI, reliability and torchrun tests build on it: ``from conftest import TINY_RUN``)."""

import pytest
import torch

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
