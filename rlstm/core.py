"""Recurrent cores (LSTM default, GRU, or none) with episode resets in one place.

The state of a core is one tensor ``(S * num_layers, B, H)``: for an LSTM the hidden states
of every layer then the cell states (``S = 2``), for a GRU the hidden states (``S = 1``), for
``none`` nothing (``S = 0``). ``starts (B,)`` / ``(L, M)`` marks the first step of an
episode; the state entering such a step is zeroed. That rule lives here and nowhere else.

``sequence`` is the training path. A chunk that holds an episode start cannot be one plain
cuDNN call (the state must be zeroed mid-sequence), and a Python loop over time costs many
calls' worth (9x to 50x one call on an H100, benchmarks/RESULTS.md). Instead the chunk is
cut at every start into segments, each segment is laid out from time 0 of its own column,
and all segments run as one call: segments that begin at an episode start get a zero state,
the first segment of each column gets the column's stored state. The PPO loss needs only
outputs, so its call is a plain padded one (padding after a segment's end cannot change its
outputs); where final states are needed (state refresh, burn-in) it is a packed-sequence
call. Outputs are scattered back to ``(L, M, H)``. This equals the
step-by-step reference (``sequence_reference``) up to float rounding, values and gradients
(tests/test_core.py). Sizing the padded batch takes one host sync per call, unless the caller
passes the sizes: the PPO update gets every minibatch's sizes from :func:`segment_sizes` in
one sync per epoch, so its minibatches run without any.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

KINDS = ("lstm", "gru", "none")
# On CPU the step loop beats one wide segment call once M * H reaches this (measured at
# M * H = 512: segments 3.5x faster; at 16384 and above: the loop 1.3-1.9x faster).
CPU_LOOP_MIN_WORK = 4096


def segment_sizes(starts: Tensor, groups: Tensor) -> list[tuple[int, int]]:
    """``(segments, longest segment)`` of each group of chunks, in one host sync.

    ``starts (L, N)`` marks the episode starts of ``N`` chunks; ``groups (G, M)`` holds the
    chunk indices of G minibatches. A chunk has one segment plus one per start after t=0;
    the pair is what :meth:`RecurrentCore.sequence` needs to size its padded batch.
    """
    L = starts.shape[0]
    time = torch.arange(L, device=starts.device)[:, None]
    begins = starts.clone()
    begins[0] = True
    first = torch.where(begins, time, 0).cummax(0).values  # (L, N) start of each step's segment
    longest = (time - first).amax(0) + 1  # (N,)
    segments = begins.sum(0)  # (N,)
    per_group = torch.stack([segments[groups].sum(1), longest[groups].amax(1)], dim=1)
    return [(int(n), int(m)) for n, m in per_group.tolist()]


def segment_capacity(num_chunks: int, segments: int, length: int) -> int:
    """A static segment count for ``num_chunks`` chunks of ``length`` steps holding
    ``segments`` segments: the smallest ``num_chunks * 2^k`` that fits, at most one segment
    per step. Few distinct values, so a CUDA graph per value covers a whole run."""
    assert num_chunks > 0, "no chunks"
    capacity = num_chunks
    while capacity < segments:
        capacity *= 2
    return min(capacity, num_chunks * length)


class RecurrentCore(nn.Module):
    """``kind`` in lstm | gru | none; ``none`` is a memoryless ReLU layer of the same width.

    ``forget_bias`` / ``chrono_init`` initialise the keep gate (LSTM forget gate, GRU update
    gate) of every layer; see :meth:`_init_weights`. ``none`` ignores both.
    """

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        forget_bias: float = 0.0,
        chrono_init: int = 0,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"core kind {kind!r} must be one of {', '.join(KINDS)}")
        if chrono_init == 1 or chrono_init < 0:
            raise ValueError(f"chrono_init={chrono_init} must be 0 (off) or >= 2")
        if chrono_init and forget_bias:
            raise ValueError(
                f"chrono_init={chrono_init} with forget_bias={forget_bias}: use one or the other"
            )
        self.kind = kind
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn: nn.LSTM | nn.GRU | None
        if kind == "lstm":
            self.rnn = nn.LSTM(input_size, hidden_size, num_layers)
        elif kind == "gru":
            self.rnn = nn.GRU(input_size, hidden_size, num_layers)
        else:
            self.rnn = None
            linear = nn.Linear(input_size, hidden_size)
            nn.init.orthogonal_(linear.weight, 2**0.5)
            nn.init.zeros_(linear.bias)
            self.mlp = nn.Sequential(linear, nn.ReLU())
        self._init_weights(forget_bias, chrono_init)

    def _init_weights(self, forget_bias: float, chrono_init: int) -> None:
        """Orthogonal weights, zero biases (CleanRL), then the keep-gate bias of every layer.

        The keep gate is the LSTM's forget gate ``f`` (gate order i, f, g, o) and the GRU's
        update gate ``z`` (order r, z, n; ``h' = (1 - z) n + z h``). With zero biases it
        starts at 0.5, so memories and gradients halve every step: a cue 100 steps back is
        out of reach. ``forget_bias`` adds a constant to that slice of ``bias_ih``;
        ``chrono_init=T`` draws it per unit as ``log U(1, T - 1)`` and, for the LSTM, sets
        the input-gate bias to its negative, so the units' time constants spread over
        ``1 .. T`` steps (Tallec & Ollivier 2018, "Can recurrent neural networks warp
        time?"). ``bias_hh`` stays zero. Both are ignored by ``core=none``.
        """
        if self.rnn is None:
            return
        for name, param in self.rnn.named_parameters():
            if "bias" in name:
                nn.init.zeros_(param)
            else:
                nn.init.orthogonal_(param, 1.0)
        if not (forget_bias or chrono_init):
            return
        H = self.hidden_size
        with torch.no_grad():
            for layer in range(self.num_layers):
                bias = cast(Tensor, getattr(self.rnn, f"bias_ih_l{layer}"))
                keep = bias[H : 2 * H]  # LSTM forget gate f / GRU update gate z
                if chrono_init:
                    keep.copy_(torch.empty(H).uniform_(1.0, chrono_init - 1.0).log())
                    if self.kind == "lstm":
                        bias[:H].copy_(-keep)  # input gate i
                else:
                    keep.fill_(forget_bias)

    @property
    def state_slots(self) -> int:
        """``S * num_layers``: the leading dim of the state tensor."""
        return {"lstm": 2, "gru": 1, "none": 0}[self.kind] * self.num_layers

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        """Zeros ``(S * num_layers, batch, H)``."""
        return torch.zeros(self.state_slots, batch, self.hidden_size, device=device)

    def _run(self, x: Any, state: Tensor) -> tuple[Any, Tensor]:
        """One cuDNN call on ``x`` (a tensor or a packed sequence); state in our layout."""
        assert self.rnn is not None
        if self.kind == "lstm":
            h, c = state.chunk(2, dim=0)
            out, (h, c) = self.rnn(x, (h.contiguous(), c.contiguous()))
            return out, torch.cat([h, c], dim=0)
        out, h = self.rnn(x, state.contiguous())
        return out, h

    def step(self, x: Tensor, state: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """One step for ``B`` envs: ``x (B, in)``, ``state (S*l, B, H)``, ``starts (B,)`` bool.

        Returns ``(out (B, H), new_state)``; the state is zeroed where ``starts``.
        """
        if self.rnn is None:
            return self.mlp(x), state
        state = state * (~starts).to(state.dtype)[None, :, None]
        out, new_state = self._run(x[None], state)
        return out[0], new_state

    def sequence(
        self,
        x: Tensor,
        state: Tensor,
        starts: Tensor,
        need_state: bool = True,
        method: str = "auto",
        sizes: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Run ``x (L, M, in)`` from ``state (S*l, M, H)`` with resets at ``starts (L, M)``.

        Returns ``(out (L, M, H), final_state (S*l, M, H))``, equal to the step loop.
        ``need_state=False`` (the training loss needs only outputs) may return ``None`` for
        the final state and takes the faster path: one plain padded cuDNN call, since padding
        at the end of a segment cannot change its outputs; a packed call, which also yields
        each segment's own final state, costs several times more on cuDNN.

        ``method``: ``segments`` (the above), ``loop`` (``step`` over time), or ``auto``:
        segments on CUDA, where one call is latency-bound and wider batches are nearly free;
        on CPU segments for small batches, where the loop's per-step overhead dominates
        (3.5x faster for the default config), and the loop for large ones, where compute
        grows with the segment count (1.9x faster at 128 x 128; benchmarks/RESULTS.md).

        ``sizes``: ``(segments, longest segment)`` of these chunks, from :func:`segment_sizes`;
        given, the segments path does not sync with the host to size its batch. With
        ``need_state=False`` either may be larger than the chunks need (a static capacity,
        as a captured CUDA graph wants): the extra segments and steps are padding, whose
        outputs are never read and whose gradients are zero.
        """
        L, M = starts.shape
        if self.rnn is None:
            return self.mlp(x), state
        if method == "auto":
            small = M * self.hidden_size < CPU_LOOP_MIN_WORK
            method = "segments" if x.device.type == "cuda" or small else "loop"
        if method not in ("segments", "loop"):
            raise ValueError(f"method={method!r} must be auto, segments or loop")
        state = state * (~starts[0]).to(state.dtype)[None, :, None]
        if method == "loop":
            if not bool(starts[1:].any()):
                return self._run(x, state)
            return self.sequence_reference(x, state, starts)

        # Segments: a new one begins at t=0 of every column and at every inner start. The
        # layout is computed on the device; unless the caller knows its two sizes, they reach
        # the host in one transfer, the only host sync of the training path.
        if sizes is None:
            (sizes,) = segment_sizes(starts, torch.arange(M, device=x.device)[None])
        num_segments, longest = sizes
        if num_segments == M:  # no reset inside the chunks: one plain call
            return self._run(x, state)
        begins = starts.clone()
        begins[0] = True
        flat_begins = begins.t().reshape(-1)  # (M*L,), column-major: position m*L + t
        position = torch.arange(M * L, device=x.device)
        seg_id = flat_begins.cumsum(0) - 1  # segment of every position
        first = torch.where(flat_begins, position, 0).cummax(0).values  # its segment's start
        offset = position - first  # time of every position inside its segment
        seg_first = torch.full((num_segments,), M * L, device=x.device, dtype=torch.long)
        seg_first.scatter_reduce_(0, seg_id, position, "amin")  # (S,) start position
        used = seg_first < M * L  # false only for capacity beyond the chunks' segments
        seg_first = torch.where(used, seg_first, 0)
        seg_column, seg_begin = seg_first // L, seg_first % L
        # Inputs laid out per segment: (longest, S, in), padded at the end of short segments.
        flat_x = x.transpose(0, 1).reshape(M * L, -1)
        padded = flat_x.new_zeros(longest, num_segments, flat_x.shape[-1])
        padded[offset, seg_id] = flat_x
        # A segment beginning at t>0 begins an episode (zero state); one at t=0 continues
        # the column's (already reset-masked) state; unused capacity gets a zero state.
        keep = (seg_begin == 0) & used
        seg_state = state[:, seg_column] * keep.to(state.dtype)[None, :, None]
        if not need_state:
            out, _ = self._run(padded, seg_state)
            return out[offset, seg_id].view(M, L, -1).transpose(0, 1), None
        if not bool(used.all()):  # this path syncs for the lengths anyway
            raise ValueError(
                f"sizes={sizes}: more segments than the chunks hold; a static capacity "
                "works only with need_state=False"
            )
        end = torch.full((1,), M * L, device=x.device, dtype=torch.long)
        lengths = torch.diff(seg_first, append=end)  # segments are contiguous in flat order
        packed = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=False)
        out_packed, seg_final = self._run(packed, seg_state)
        out, _ = pad_packed_sequence(out_packed, total_length=longest)
        flat_out = out[offset, seg_id]  # (M*L, H)
        # The final state of a column is that of its last segment, the one holding its
        # position m*L + L - 1.
        final = seg_final[:, seg_id[L - 1 :: L]]
        return flat_out.view(M, L, -1).transpose(0, 1), final

    def sequence_reference(self, x: Tensor, state: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """The slow, obviously correct path: ``step`` in a Python loop over time."""
        outs = []
        for t in range(x.shape[0]):
            out, state = self.step(x[t], state, starts[t])
            outs.append(out)
        return torch.stack(outs), state

    def gates(self, x: Tensor, state: Tensor) -> dict[str, Tensor]:
        """LSTM/GRU gate activations of one step of the first layer (for inspection)."""
        assert self.rnn is not None, "core=none has no gates"
        w_ih, w_hh, b_ih, b_hh = (
            cast(Tensor, getattr(self.rnn, name))
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        )
        h = state[0]
        if self.kind == "lstm":
            c = state[self.num_layers]
            i, f, g, o = (x @ w_ih.t() + h @ w_hh.t() + b_ih + b_hh).chunk(4, dim=-1)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c_new = f * c + i * g
            return {
                "input": i,
                "forget": f,
                "candidate": g,
                "output": o,
                "cell": c_new,
                "hidden": o * c_new.tanh(),
            }
        gi = x @ w_ih.t() + b_ih
        gh = h @ w_hh.t() + b_hh
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
        n = (in_ + r * hn).tanh()
        return {"reset": r, "update": z, "candidate": n, "hidden": (1 - z) * n + z * h}
