"""PPO with truncated BPTT over stored chunks: losses and the update loop.

The update reads top to bottom in :func:`update`: chunk start states (stored, burned in, or
refreshed), then epochs x minibatches of whole shuffled chunks, each one sequence call
through the core (one cuDNN call on the GPU), the CleanRL losses, and a gradient step that
never applies a NaN/Inf.

Under torchrun each rank updates on its own rollout; advantage normalisation, gradients, the
skip and early-stop decisions and the returned statistics are global (:mod:`rlstm.distributed`),
so the step equals one process's step on the union of the ranks' minibatches.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from typing import Protocol

import torch
from torch import Tensor, nn

from rlstm import distributed
from rlstm.buffer import Chunks, RolloutBuffer
from rlstm.config import PPOConfig
from rlstm.core import segment_capacity, segment_sizes


class Policy(Protocol):
    """What the trainer needs from an agent (``agents.RecurrentAgent`` implements it)."""

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> Tensor: ...

    def step(self, obs: Tensor, state: Tensor, starts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``obs (B, ...)`` -> ``(logits (B, A), value (B,), new_state)``."""
        ...

    def sequence(
        self,
        obs: Tensor,
        state: Tensor,
        starts: Tensor,
        need_state: bool = True,
        sizes: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``obs (L, M, ...)`` -> ``(logits (L, M, A), values (L, M), final_state)``;
        the final state may be ``None`` when ``need_state`` is false; ``sizes`` are the
        chunks' :func:`rlstm.core.segment_sizes`."""
        ...


LOSS_KEYS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "old_approx_kl",
    "approx_kl",
    "clipfrac",
    "grad_norm",
)
MINIBATCH_KEYS = LOSS_KEYS[:-1]  # what minibatch_loss returns (grad_norm comes after the step)


@torch.no_grad()
def refresh_states(agent: Policy, buffer: RolloutBuffer, bptt_len: int) -> Tensor:
    """Chunk start states recomputed with the current weights: one pass over the rollout.

    Runs each block of ``bptt_len`` steps for all envs from the previous block's final state
    (the first from the stored state at step 0). Returns ``(S*l, K*B, H)`` in chunk order.
    """
    T, L = buffer.num_steps, bptt_len
    state = buffer.states[0]
    starts_of_chunks = [state]
    for k in range(T // L - 1):
        sl = slice(k * L, (k + 1) * L)
        _, _, final = agent.sequence(buffer.obs[sl], state, buffer.starts[sl])
        assert final is not None, "need_state=True must return the final state"
        state = final
        starts_of_chunks.append(state)
    return torch.cat(starts_of_chunks, dim=1)


@torch.no_grad()
def burn_in_states(agent: Policy, buffer: RolloutBuffer, bptt_len: int, burn_in: int) -> Tensor:
    """Chunk start states after ``burn_in`` steps without gradient (R2D2's burn-in).

    Chunk k starts at ``t0 = k*L``; its state is recomputed by running the current weights
    over steps ``[t0 - b, t0)`` from the state stored at ``t0 - b``, ``b = min(burn_in, t0)``
    (the first chunk's stored state is exact already). Returns ``(S*l, K*B, H)``.
    """
    T, L = buffer.num_steps, bptt_len
    states = [buffer.states[0]]
    for t0 in range(L, T, L):
        b = min(burn_in, t0)
        sl = slice(t0 - b, t0)
        _, _, state = agent.sequence(buffer.obs[sl], buffer.states[t0 - b], buffer.starts[sl])
        assert state is not None, "need_state=True must return the final state"
        states.append(state)
    return torch.cat(states, dim=1)


def minibatch_loss(
    agent: Policy,
    mb: Chunks,
    cfg: PPOConfig,
    adv: Tensor,
    sizes: tuple[int, int] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped-surrogate PPO loss of one minibatch of chunks ``(L, M)``."""
    logits, newvalue, _ = agent.sequence(
        mb.obs, mb.states, mb.starts, need_state=False, sizes=sizes
    )
    # Written out rather than through torch.distributions.Categorical, whose argument and
    # sample validation costs two host syncs per minibatch on CUDA.
    log_probs = logits.log_softmax(-1)
    newlogprob = log_probs.gather(-1, mb.actions[..., None]).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    logratio = newlogprob - mb.logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

    if cfg.norm_adv:
        if distributed.is_distributed():  # over the union of every rank's minibatch
            mean, var = distributed.mean_var(adv)
            adv = (adv - mean) / (var.sqrt() + 1e-8)
        else:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(
        -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
    ).mean()

    if cfg.clip_vloss:
        v_unclipped = (newvalue - mb.returns) ** 2
        v_clipped = mb.values + (newvalue - mb.values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - mb.returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - mb.returns) ** 2).mean()

    loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
    stats = {
        "policy_loss": pg_loss.detach(),
        "value_loss": v_loss.detach(),
        "entropy": entropy.detach(),
        "old_approx_kl": old_approx_kl,
        "approx_kl": approx_kl,
        "clipfrac": clipfrac,
    }
    return loss, stats


def minibatch_step(
    agent: Policy,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    mb: Chunks,
    cfg: PPOConfig,
    sizes: tuple[int, int] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss, backward, clipping and the optimizer step of one minibatch.

    A NaN/Inf loss or gradient never reaches the weights: the step is skipped. Fused Adam
    (CUDA) skips it on the device, as under GradScaler (``found_inf`` leaves weights, moments
    and step count as they were), so with ``sizes`` given nothing here waits for the host;
    any other optimizer learns the verdict through one host sync. Returns ``(applied, stats)``
    with ``applied`` a bool tensor and ``stats`` the :data:`LOSS_KEYS` as tensors.
    """
    loss, stats = minibatch_loss(agent, mb, cfg, mb.advantages, sizes)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if distributed.is_distributed():
        # One all-reduce averages the gradients, the loss and the statistics, so every rank
        # clips, skips and stops early on the same numbers and weights stay equal.
        local = torch.stack([loss.detach(), *(stats[k] for k in MINIBATCH_KEYS)])
        shared = distributed.all_reduce_grads(params, local)
        assert shared is not None, "all_reduce_grads returns the extra tensor"
        loss = shared[0]
        stats = dict(zip(MINIBATCH_KEYS, shared[1:]))
    grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    ok = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
    if optimizer.defaults.get("fused"):
        setattr(optimizer, "found_inf", (~ok).float())  # noqa: B010 - GradScaler's hook
        try:
            optimizer.step()
        finally:
            delattr(optimizer, "found_inf")
    elif bool(ok):
        optimizer.step()
    stats["grad_norm"] = grad_norm.detach()
    return ok, stats


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's learning rate; in place where it is a tensor (a captured step
    reads it from device memory)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


class GraphedMinibatchStep:
    """:func:`minibatch_step` replayed from CUDA graphs: one launch instead of hundreds.

    A PPO minibatch is a few hundred small kernels, each launched from Python; with small
    minibatches the host, not the GPU, sets the pace (Pong, 512 steps per minibatch on an
    H100: ~10 ms of launches for ~1.8 ms of GPU work; benchmarks/RESULTS.md). Captured, a
    minibatch costs its GPU time.

    A graph needs static shapes and addresses. :meth:`load` copies the epoch's chunks into
    static tensors; a call copies the minibatch's chunk indices into a static index tensor
    and the graph gathers the minibatch itself. The segment layout of the core is sized to a
    capacity instead of the minibatch's own count: segments rounded up to ``M * 2^k`` (at most
    ``M * L``), the longest segment to ``L``; the padding changes no output or gradient
    (:meth:`rlstm.core.RecurrentCore.sequence`). One graph per capacity; the first
    ``warmup`` minibatches of a capacity run eagerly on a side stream (real steps, as capture
    requires), the next is captured and replayed. The optimizer must be a fused Adam with
    ``capturable=True`` and a tensor learning rate (set it with :func:`set_learning_rate`).
    If capture fails the steps stay eager with a warning: same numbers, only slower.
    A replay returns the same output tensors every time, overwritten by the next replay:
    read them before the next call (:func:`update_steps` does).
    """

    def __init__(
        self,
        agent: Policy,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        cfg: PPOConfig,
        warmup: int = 2,
    ) -> None:
        self.agent, self.params, self.optimizer, self.cfg = agent, params, optimizer, cfg
        self.warmup = warmup
        self.chunks: Chunks | None = None
        self.idx: Tensor | None = None
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[Tensor, dict[str, Tensor]]]] = {}
        self.eager_steps: dict[int, int] = {}
        self.failed = False
        self.side: torch.cuda.Stream | None = None  # the warm-ups' stream

    def _eager(self, cap: int) -> tuple[Tensor, dict[str, Tensor]]:
        """A step outside any graph; capturable Adam warns about each such step's cost,
        which here is the point (warm-up) or already reported (capture failed)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*running without CUDA graph capture")
            return self._step(cap)

    def load(self, chunks: Chunks) -> None:
        """Copy the chunks (with this epoch's start states) into the static tensors."""
        if self.chunks is not None and all(
            (s.shape, s.dtype) == (c.shape, c.dtype) for s, c in zip(self.chunks, chunks)
        ):
            for static, new in zip(self.chunks, chunks):
                static.copy_(new)
            return
        self.chunks = Chunks(*(c.clone() for c in chunks))
        self.graphs.clear()  # they read the old tensors
        self.eager_steps.clear()

    def _step(self, cap: int) -> tuple[Tensor, dict[str, Tensor]]:
        assert self.chunks is not None and self.idx is not None
        mb = Chunks(*(field[:, self.idx] for field in self.chunks))
        sizes = (cap, self.chunks.starts.shape[0])
        return minibatch_step(self.agent, self.params, self.optimizer, mb, self.cfg, sizes)

    def __call__(self, idx: Tensor, segments: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One minibatch step on the loaded chunks ``idx``, which hold ``segments`` segments
        (:func:`rlstm.core.segment_sizes`); returns what :func:`minibatch_step` returns."""
        if self.idx is None or self.idx.shape != idx.shape:
            self.idx = idx.clone()
            self.graphs.clear()
            self.eager_steps.clear()
        self.idx.copy_(idx)
        assert self.chunks is not None, "load() the chunks first"
        cap = segment_capacity(idx.numel(), segments, self.chunks.starts.shape[0])
        if cap in self.graphs:
            graph, out = self.graphs[cap]
            graph.replay()
            return out
        if self.failed:
            return self._eager(cap)
        if self.eager_steps.get(cap, 0) < self.warmup:
            self.eager_steps[cap] = self.eager_steps.get(cap, 0) + 1
            current = torch.cuda.current_stream()
            self.side = self.side or torch.cuda.Stream()
            self.side.wait_stream(current)
            with torch.cuda.stream(self.side):
                out = self._eager(cap)
            current.wait_stream(self.side)
            return out
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self._step(cap)
        except RuntimeError as exc:
            self.failed = True
            warnings.warn(
                f"the PPO minibatch step could not be captured as a CUDA graph ({exc}); "
                "updating eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            torch.cuda.synchronize()
            return self._eager(cap)
        self.graphs[cap] = (graph, out)
        graph.replay()
        return out


def update(
    agent: Policy,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    buffer: RolloutBuffer,
    cfg: PPOConfig,
    generator: torch.Generator,
    graphed: GraphedMinibatchStep | None = None,
) -> dict[str, float]:
    """One PPO update over the rollout in ``buffer``; returns means over all minibatches.

    Besides the CleanRL losses, the result has ``explained_variance``, ``skipped_updates``
    (minibatches whose loss or gradient was not finite: never applied), ``applied_updates``,
    the runs of skipped minibatches in a row (``skipped_leading`` before the first applied
    one, ``skipped_trailing`` after the last, ``skipped_longest``) and ``epochs`` run.
    With ``graphed`` (CUDA) each minibatch step is replayed from a CUDA graph.
    """
    return finish(update_steps(agent, params, optimizer, buffer, cfg, generator, graphed))


def finish(steps: Generator[None, None, dict[str, float]]) -> dict[str, float]:
    """Run the rest of an :func:`update_steps` generator; return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def update_steps(
    agent: Policy,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    buffer: RolloutBuffer,
    cfg: PPOConfig,
    generator: torch.Generator,
    graphed: GraphedMinibatchStep | None = None,
) -> Generator[None, None, dict[str, float]]:
    """:func:`update` one minibatch step at a time: a generator that yields after each step
    and returns the result. What it needs from ``buffer`` is copied here, before the
    generator is returned, so the buffer may take the next rollout while the steps run
    (``ppo.overlap_update``); not with ``ppo.state_refresh=epoch`` or ``ppo.burn_in``,
    which reread it every epoch."""
    chunks = buffer.chunks(cfg.bptt_len)  # a copy
    y_pred, y_true = buffer.values.flatten(), buffer.returns.flatten()
    if distributed.is_distributed():  # over every rank's rollout
        var_y = distributed.mean_var(y_true)[1]
        var_residual = distributed.mean_var(y_true - y_pred)[1]
    else:
        var_y = y_true.var()
        var_residual = (y_true - y_pred).var()

    def minibatch_steps() -> Generator[None, None, dict[str, float]]:
        num_chunks = chunks.starts.shape[1]
        per_mb = num_chunks // cfg.num_minibatches
        device = chunks.starts.device
        totals = torch.zeros(len(LOSS_KEYS), device=device)  # sums over applied minibatches
        # whether each minibatch step was applied: one copy per step, read once at the end
        applied = torch.zeros(cfg.update_epochs * cfg.num_minibatches, device=device)
        # the last applied minibatch's approx KL: CleanRL's ppo.target_kl rule
        last_kl = torch.zeros((), device=device)
        tried = 0
        epochs_run = 0
        for _ in range(cfg.update_epochs):
            if cfg.state_refresh == "epoch":
                start_states = refresh_states(agent, buffer, cfg.bptt_len)
            elif cfg.burn_in:
                start_states = burn_in_states(agent, buffer, cfg.bptt_len, cfg.burn_in)
            else:
                start_states = chunks.states
            order = torch.randperm(num_chunks, generator=generator).to(device)
            groups = order.view(cfg.num_minibatches, per_mb)
            sizes = segment_sizes(chunks.starts, groups)  # the epoch's sync (with target_kl's)
            epoch_chunks = chunks._replace(states=start_states)
            if graphed is not None:
                graphed.load(epoch_chunks)
            epoch = torch.zeros_like(totals)
            for i, idx in enumerate(groups):
                if graphed is not None:
                    ok, stats = graphed(idx, sizes[i][0])
                else:
                    mb = Chunks(*(field[:, idx] for field in epoch_chunks))
                    ok, stats = minibatch_step(agent, params, optimizer, mb, cfg, sizes[i])
                epoch += torch.where(ok, torch.stack([stats[key] for key in LOSS_KEYS]), 0.0)
                if cfg.target_kl is not None:  # a kernel per minibatch only when it is used
                    last_kl = torch.where(ok, stats["approx_kl"], last_kl)
                applied[tried] = ok
                tried += 1
                yield
            totals += epoch
            epochs_run += 1
            if cfg.target_kl is not None and float(last_kl) > cfg.target_kl:
                break

        oks = [bool(ok) for ok in applied[:tried].tolist()]
        steps = sum(oks)
        skipped = tried - steps
        result = {key: value / max(steps, 1) for key, value in zip(LOSS_KEYS, totals.tolist())}
        result["explained_variance"] = (
            float("nan") if var_y == 0 else float(1 - var_residual / var_y)
        )
        result["skipped_updates"] = float(skipped)
        result["applied_updates"] = float(steps)
        # runs of skipped steps: before the first applied one, after the last, the longest
        runs = [len(run) for run in "".join("+" if ok else "-" for ok in oks).split("+")]
        for name, value in zip(("leading", "trailing", "longest"), (runs[0], runs[-1], max(runs))):
            result[f"skipped_{name}"] = float(value)
        result["epochs"] = float(epochs_run)
        return result

    return minibatch_steps()
