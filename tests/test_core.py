"""The recurrent core: the fused sequence path equals the step-by-step reference."""

from __future__ import annotations

import pytest
import torch

from rlstm.core import RecurrentCore


def _inputs(core: RecurrentCore, L: int, M: int, p_start: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(L, M, core.input_size, generator=g, dtype=torch.float64, requires_grad=True)
    state = torch.randn(core.state_slots, M, core.hidden_size, generator=g, dtype=torch.float64)
    state.requires_grad_(True)
    starts = torch.rand(L, M, generator=g) < p_start
    return x, state, starts


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("p_start", [0.0, 0.1, 0.5, 1.0])
def test_sequence_equals_step_loop_values_and_grads(kind: str, layers: int, p_start: float) -> None:
    torch.manual_seed(0)
    core = RecurrentCore(kind, 6, 5, layers).double()
    x, state, starts = _inputs(core, L=11, M=7, p_start=p_start, seed=layers)
    out, final = core.sequence(x, state, starts, method="segments")
    ref_out, ref_final = core.sequence_reference(x, state, starts)
    assert final is not None
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-12)

    w_out, w_final = torch.randn_like(out), torch.randn_like(final)
    wrt = [x, state, *core.parameters()]
    grads = torch.autograd.grad((out * w_out).sum() + (final * w_final).sum(), wrt)
    ref_grads = torch.autograd.grad((ref_out * w_out).sum() + (ref_final * w_final).sum(), wrt)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("p_start", [0.0, 0.05, 0.3, 1.0])
def test_training_path_outputs_and_grads_equal_step_loop(
    kind: str, layers: int, p_start: float
) -> None:
    """``need_state=False`` (the padded single-call path used by the loss)."""
    torch.manual_seed(1)
    core = RecurrentCore(kind, 6, 5, layers).double()
    x, state, starts = _inputs(core, L=13, M=9, p_start=p_start, seed=10 + layers)
    out, final = core.sequence(x, state, starts, need_state=False, method="segments")
    ref_out, _ = core.sequence_reference(x, state, starts)
    assert final is None or p_start == 0.0
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(out)
    wrt = [x, state, *core.parameters()]
    grads = torch.autograd.grad((out * w).sum(), wrt)
    ref_grads = torch.autograd.grad((ref_out * w).sum(), wrt)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


def test_float32_sequence_within_tolerance() -> None:
    core = RecurrentCore("lstm", 8, 16, 1)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 64, 8, generator=g)
    state = torch.randn(2, 64, 16, generator=g)
    starts = torch.rand(32, 64, generator=g) < 0.05
    out, final = core.sequence(x, state, starts, method="segments")
    ref_out, ref_final = core.sequence_reference(x, state, starts)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, ref_final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_zeroed_exactly_at_starts(kind: str) -> None:
    """Where starts is true the output equals a run from a zero state; elsewhere not."""
    core = RecurrentCore(kind, 3, 4).double()
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    state = torch.randn(core.state_slots, 2, 4, dtype=torch.float64)
    starts = torch.tensor([[True, False]])
    out, _ = core.sequence(x, state, starts, method="segments")
    zero_out, _ = core.sequence(x, torch.zeros_like(state), torch.tensor([[False, False]]))
    kept_out, _ = core.sequence(x, state, torch.tensor([[False, False]]))
    torch.testing.assert_close(out[:, 0], zero_out[:, 0])
    torch.testing.assert_close(out[:, 1], kept_out[:, 1])
    assert not torch.allclose(out[:, 0], kept_out[:, 0])
    # step() follows the same rule
    step_out, new_state = core.step(x[0], state, starts[0])
    torch.testing.assert_close(step_out, out[0])
    # a start in the middle of a sequence cuts all memory of the past
    L = 6
    xs = torch.randn(L, 1, 3, dtype=torch.float64)
    mid = torch.zeros(L, 1, dtype=torch.bool)
    mid[3] = True
    a, _ = core.sequence(xs, state[:, :1], mid, method="segments")
    b, _ = core.sequence(
        xs[3:], torch.zeros_like(state[:, :1]), torch.zeros(3, 1, dtype=torch.bool)
    )
    torch.testing.assert_close(a[3:], b)


def test_none_core_is_memoryless() -> None:
    core = RecurrentCore("none", 3, 4)
    assert core.state_slots == 0
    x = torch.randn(5, 2, 3)
    out, state = core.sequence(x, core.initial_state(2), torch.zeros(5, 2, dtype=torch.bool))
    assert state.shape == (0, 2, 4)
    torch.testing.assert_close(out[2], core.step(x[2], state, torch.zeros(2, dtype=torch.bool))[0])


def test_lstm_gates_match_fused_step() -> None:
    core = RecurrentCore("lstm", 3, 4).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    state = torch.randn(2, 5, 4, dtype=torch.float64)
    gates = core.gates(x, state)
    out, new_state = core.step(x, state, torch.zeros(5, dtype=torch.bool))
    torch.testing.assert_close(gates["hidden"], out)
    torch.testing.assert_close(gates["cell"], new_state[1])


def test_auto_method_equals_reference_and_bad_method_rejected() -> None:
    core = RecurrentCore("lstm", 3, 4).double()
    x, state, starts = _inputs(core, L=6, M=3, p_start=0.3, seed=7)
    out, final = core.sequence(x, state, starts)  # CPU: auto -> loop
    ref, ref_final = core.sequence_reference(x, state, starts)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(final, ref_final)
    with pytest.raises(ValueError, match="method='fast'"):
        core.sequence(x, state, starts, method="fast")


def test_bad_kind_rejected() -> None:
    with pytest.raises(ValueError, match="transformer"):
        RecurrentCore("transformer", 3, 4)
