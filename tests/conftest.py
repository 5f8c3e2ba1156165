"""Test-wide settings: one torch thread (small tensors; avoids oversubscribing 2-core CI)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    torch.set_num_threads(1)
