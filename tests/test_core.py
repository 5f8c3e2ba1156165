"""The recurrent core: the fused sequence path equals the step-by-step reference."""

from __future__ import annotations

import pytest
import torch

from rlstm.core import RecurrentCore, segment_capacity, segment_sizes


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


def test_segment_sizes_count_each_group_of_chunks() -> None:
    g = torch.Generator().manual_seed(3)
    L, N = 13, 24
    starts = torch.rand(L, N, generator=g) < 0.2
    starts[:, 0] = False  # a chunk without resets: one segment of L
    starts[:, 1] = True  # a reset at every step: L segments of 1
    groups = torch.randperm(N, generator=g).view(4, 6)
    expected = []
    for group in groups.tolist():
        segments, longest = 0, 0
        for j in group:
            begins = [0] + [t for t in range(1, L) if starts[t, j]]
            lengths = [b - a for a, b in zip(begins, begins[1:] + [L])]
            segments += len(lengths)
            longest = max(longest, *lengths)
        expected.append((segments, longest))
    assert segment_sizes(starts, groups) == expected


def test_capacity_with_final_state_is_refused() -> None:
    """Padding segments have no final state: with ``need_state=True`` the sizes must be the
    chunks' own, and a larger count is a clear error rather than a wrong state."""
    core = RecurrentCore("lstm", 3, 4).double()
    x, state, starts = _inputs(core, L=5, M=2, p_start=0.3, seed=0)
    segments, longest = segment_sizes(starts, torch.arange(2)[None])[0]
    core.sequence(x, state, starts, method="segments", sizes=(segments, longest))
    with pytest.raises(ValueError, match="static capacity works only with need_state=False"):
        core.sequence(x, state, starts, method="segments", sizes=(segments + 2, longest))


def test_segment_capacity_rounds_up_to_a_doubling_of_the_chunks() -> None:
    # 16 chunks of 32 steps: 16 segments fit 16, then 32, 64, ... up to one per step
    assert [segment_capacity(16, n, 32) for n in (16, 17, 32, 33, 100, 512)] == [
        16,
        32,
        32,
        64,
        128,
        512,
    ]
    assert segment_capacity(16, 300, 20) == 320  # 16 * 20 steps: never more


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("p_start", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("given_sizes", ["none", "exact", "capacity"])
def test_training_path_outputs_and_grads_equal_step_loop(
    kind: str, layers: int, p_start: float, given_sizes: str
) -> None:
    """``need_state=False`` (the padded single-call path used by the loss), sizing its batch
    itself, with sizes from ``segment_sizes`` (no sync in the call) as the eager PPO update
    passes them, or with a larger static capacity (unused segments and a longer padded
    time axis) as the CUDA-graph update passes it."""
    torch.manual_seed(1)
    core = RecurrentCore(kind, 6, 5, layers).double()
    x, state, starts = _inputs(core, L=13, M=9, p_start=p_start, seed=10 + layers)
    sizes = None
    if given_sizes != "none":
        sizes = segment_sizes(starts, torch.arange(9)[None])[0]
        if given_sizes == "capacity":
            sizes = (sizes[0] + 7, 13 + 2)
    out, final = core.sequence(x, state, starts, need_state=False, method="segments", sizes=sizes)
    ref_out, ref_final = core.sequence_reference(x, state, starts)
    if final is not None:  # only a reset-free plain call returns its final state: the right one
        assert not bool(starts[1:].any())
        torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-12)
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


def _biases(core: RecurrentCore, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    return getattr(core.rnn, f"bias_ih_l{layer}").detach(), getattr(
        core.rnn, f"bias_hh_l{layer}"
    ).detach()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
def test_default_init_leaves_every_bias_zero(kind: str, layers: int) -> None:
    core = RecurrentCore(kind, 6, 5, layers)
    for name, param in core.rnn.named_parameters():  # type: ignore[union-attr]
        if "bias" in name:
            assert not param.any(), name


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_forget_bias_sets_the_keep_gate_slice_of_every_layer(kind: str, layers: int) -> None:
    """LSTM gates (i, f, g, o): f = [H, 2H); GRU gates (r, z, n): z = [H, 2H)."""
    H = 5
    core = RecurrentCore(kind, 6, H, layers, forget_bias=1.5)
    for layer in range(layers):
        b_ih, b_hh = _biases(core, layer)
        assert torch.equal(b_ih[H : 2 * H], torch.full((H,), 1.5))
        assert not b_ih[:H].any() and not b_ih[2 * H :].any()
        assert not b_hh.any()


@pytest.mark.parametrize("layers", [1, 2])
def test_chrono_init_lstm_forget_log_uniform_input_its_negative(layers: int) -> None:
    H, T = 256, 100
    torch.manual_seed(0)
    core = RecurrentCore("lstm", 6, H, layers, chrono_init=T)
    for layer in range(layers):
        b_ih, b_hh = _biases(core, layer)
        b_i, b_f, b_g, b_o = b_ih.chunk(4)
        assert b_f.min() >= 0.0 and b_f.max() <= torch.log(torch.tensor(T - 1.0)) + 1e-6
        # exp(b_f) ~ U(1, T-1): its mean is T / 2 and it spreads over the whole range
        assert abs(b_f.exp().mean().item() - T / 2) < 0.15 * T
        assert b_f.exp().min() < 0.2 * T and b_f.exp().max() > 0.8 * T
        torch.testing.assert_close(b_i, -b_f)
        assert not b_g.any() and not b_o.any() and not b_hh.any()
    if layers > 1:  # every layer draws its own time constants
        assert not torch.equal(_biases(core, 0)[0], _biases(core, 1)[0])


@pytest.mark.parametrize("layers", [1, 2])
def test_chrono_init_gru_sets_the_update_gate_only(layers: int) -> None:
    H, T = 256, 1002
    core = RecurrentCore("gru", 6, H, layers, chrono_init=T)
    for layer in range(layers):
        b_ih, b_hh = _biases(core, layer)
        b_r, b_z, b_n = b_ih.chunk(3)
        assert b_z.min() >= 0.0 and b_z.max() <= torch.log(torch.tensor(T - 1.0)) + 1e-6
        assert b_z.exp().max() > 0.5 * T
        assert not b_r.any() and not b_n.any() and not b_hh.any()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keep_gate_init_opens_the_gate_and_paths_still_agree(kind: str) -> None:
    """The keep gate starts near sigmoid(bias), and the fused path still equals the loop."""
    torch.manual_seed(2)
    core = RecurrentCore(kind, 6, 5, 2, forget_bias=3.0).double()
    x = torch.zeros(4, 6, dtype=torch.float64)
    state = torch.zeros(core.state_slots, 4, 5, dtype=torch.float64)
    keep = core.gates(x, state)["forget" if kind == "lstm" else "update"]
    torch.testing.assert_close(keep, torch.full_like(keep, torch.tensor(3.0).sigmoid().item()))
    core = RecurrentCore(kind, 6, 5, 2, chrono_init=50).double()
    x, state, starts = _inputs(core, L=11, M=7, p_start=0.2, seed=3)
    out, final = core.sequence(x, state, starts, method="segments")
    ref_out, ref_final = core.sequence_reference(x, state, starts)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-12)


def test_none_core_ignores_keep_gate_init_and_bad_values_rejected() -> None:
    torch.manual_seed(0)
    plain = RecurrentCore("none", 3, 4)
    torch.manual_seed(0)
    biased = RecurrentCore("none", 3, 4, forget_bias=1.0)
    for a, b in zip(plain.parameters(), biased.parameters()):
        assert torch.equal(a, b)
    RecurrentCore("none", 3, 4, chrono_init=100)
    with pytest.raises(ValueError, match="chrono_init=1"):
        RecurrentCore("lstm", 3, 4, chrono_init=1)
    with pytest.raises(ValueError, match="one or the other"):
        RecurrentCore("lstm", 3, 4, forget_bias=1.0, chrono_init=10)


def test_agent_passes_keep_gate_init_to_its_core() -> None:
    from agents.recurrent import RecurrentAgent
    from rlstm.config import AgentConfig

    agent = RecurrentAgent((4,), torch.float32, 2, AgentConfig(hidden_size=8, forget_bias=2.0))
    b_ih, _ = _biases(agent.core, 0)
    assert torch.equal(b_ih[8:16], torch.full((8,), 2.0))
    agent = RecurrentAgent((4,), torch.float32, 2, AgentConfig(hidden_size=8, chrono_init=30))
    b_ih, _ = _biases(agent.core, 0)
    assert b_ih[8:16].min() >= 0 and b_ih[8:16].max() > 0 and torch.equal(b_ih[:8], -b_ih[8:16])
