"""See inside the LSTM: gate recordings, probes for task variables, training diagnostics, videos.

``record`` runs a policy and keeps, per step and per unit, the first layer's gates
(input / forget / candidate / output, or reset / update / candidate for a GRU), its cell and
hidden state, with the observation, action, reward and value. The hidden and cell states
are the ones the fused core (``RecurrentCore.step``, the acting path) computed; the gates
come from ``RecurrentCore.gates`` on the same input and the same reset-masked state, and the
recording keeps the largest gap between the cell / hidden state the gates imply and the
fused ones (``max_abs_error``; float rounding, ~1e-7).

``probe`` scores how well each unit's cell state (hidden state for a GRU) predicts a task
variable the agent must hold (a count, a cue): Pearson r for ordered variables, the
correlation ratio (eta) for categories, plus a linear probe on all units fitted on half the
episodes and scored on the other half. The variables come from the env as a table of
:class:`HiddenVariable` (``envs/memory/hidden.py``); this module knows no task.

``log_lstm_diagnostics`` logs ``lstm/*`` during training: gate histograms, saturated
fractions, the mean forget gate and state norms, replayed with ``RecurrentCore.gates`` from
a stored state over a small sample of the rollout.

``VideoRecorder`` wraps any batched env whose observations are images (uint8, 2-D or 3-D)
and writes env 0's episodes as MP4 files (imageio + imageio-ffmpeg, the ``video`` extra).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlstm.evaluate import select_action
from rlstm.vec import StepResult, VecEnv

# first-layer quantities recorded per core kind (the keys of ``RecurrentCore.gates``)
GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("input", "forget", "candidate", "output", "cell", "hidden"),
    "gru": ("reset", "update", "candidate", "hidden"),
}
# sigmoid gates, in (0, 1): the ones whose saturation is logged
SIGMOID_GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("input", "forget", "output"),
    "gru": ("reset", "update"),
}
SATURATION = 0.05  # a sigmoid gate below 0.05 or above 0.95 is saturated
VARIABLE_KINDS = ("scalar", "category")


@dataclass(frozen=True)
class HiddenVariable:
    """A task quantity the agent has to keep in memory, read from a batched env.

    ``read(env) -> (B,)`` gives its value for the observation the agent is about to act on
    (it is called before every ``env.step``). ``kind`` is ``scalar`` (ordered, e.g. a count:
    scored by Pearson r) or ``category`` (e.g. a cue or a suit: scored by the correlation
    ratio).
    """

    name: str
    kind: str
    read: Callable[[Any], Tensor]

    def __post_init__(self) -> None:
        if self.kind not in VARIABLE_KINDS:
            raise ValueError(
                f"HiddenVariable {self.name!r}: kind={self.kind!r} not in {VARIABLE_KINDS}"
            )


def _require_rnn(core: Any) -> str:
    kind = getattr(core, "kind", None)
    if kind not in GATES:
        raise ValueError(f"core kind {kind!r} has no gates to inspect; needs lstm or gru")
    return str(kind)


def _layer0(core: Any, state: Tensor) -> dict[str, Tensor]:
    """The first layer's hidden (and cell) state in ``state (S*l, B, H)``."""
    out = {"hidden": state[0]}
    if core.kind == "lstm":
        out["cell"] = state[core.num_layers]
    return out


# -- recording ----------------------------------------------------------------------------
@dataclass
class Recording:
    """Recorded episodes, concatenated in time: every array is ``(N, ...)`` over the ``N``
    steps of all episodes, episode ``e`` covering ``lengths[:e].sum()`` onwards.

    Arrays: one ``(N, H)`` float32 per name in ``GATES[kind]``; ``obs (N, *obs_shape)``;
    ``action``, ``reward`` (received after the action), ``value``, ``episode``, ``t`` (step
    in the episode), each ``(N,)``; ``var_<name> (N,)`` for every hidden variable.
    ``complete[e]`` is false for an episode cut by ``max_steps``.
    """

    kind: str
    arrays: dict[str, np.ndarray]
    lengths: np.ndarray
    complete: np.ndarray
    variables: dict[str, str]
    max_abs_error: float

    @property
    def gate_names(self) -> tuple[str, ...]:
        return GATES[self.kind]

    @property
    def state_name(self) -> str:
        """The state probes read: the cell state of an LSTM, the hidden state of a GRU."""
        return "cell" if self.kind == "lstm" else "hidden"

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def starts(self) -> np.ndarray:
        """``(N,)`` bool: the first step of each episode."""
        return self.arrays["t"] == 0

    def episode(self, index: int) -> dict[str, np.ndarray]:
        begin = int(self.lengths[:index].sum())
        end = begin + int(self.lengths[index])
        return {key: value[begin:end] for key, value in self.arrays.items()}

    def save(self, path: str | Path) -> Path:
        """Write every array, the lengths and the metadata to one ``.npz``."""
        path = Path(path)
        meta = {"kind": self.kind, "variables": self.variables, "max_abs_error": self.max_abs_error}
        arrays = {
            **self.arrays,
            "lengths": self.lengths,
            "complete": self.complete,
            "meta": np.array(json.dumps(meta)),
        }
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k not in ("lengths", "complete", "meta")}
            return cls(
                meta["kind"],
                arrays,
                data["lengths"],
                data["complete"],
                meta["variables"],
                float(meta["max_abs_error"]),
            )


@torch.no_grad()
def record(
    agent: Any,
    env: VecEnv,
    episodes: int,
    variables: Sequence[HiddenVariable] = (),
    greedy: bool = True,
    seed: int = 0,
    max_steps: int = 100_000,
) -> Recording:
    """Run ``agent`` on ``env`` and record ``episodes`` whole episodes, spread over the
    ``B`` envs as evenly as possible (``B = episodes`` gives one episode per env).

    ``agent`` is a recurrent actor-critic with ``step(obs, state, starts)``,
    ``initial_state``, an ``encoder`` and a ``core`` (:class:`rlstm.core.RecurrentCore`,
    lstm or gru). Actions are arg-max with ``greedy``, else sampled (seeded). An episode
    ends where ``terminated | truncated``, i.e. where the core's state is reset (with Atari's
    ``life_loss=terminal`` that is a life). Episodes still running after ``max_steps`` steps
    are kept, marked incomplete.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    core = agent.core
    kind = _require_rnn(core)
    device = next(agent.parameters()).device
    B = env.num_envs
    quota = [episodes // B + (1 if i < episodes % B else 0) for i in range(B)]
    finished: list[list[dict[str, list[Any]]]] = [[] for _ in range(B)]
    current: list[dict[str, list[Any]]] = [{} for _ in range(B)]
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    obs = env.reset(seed=seed)
    state = agent.initial_state(B, device)
    starts = torch.ones(B, dtype=torch.bool, device=device)
    max_err = 0.0
    for _ in range(max_steps):
        active = [b for b in range(B) if len(finished[b]) < quota[b]]
        if not active:
            break
        values = {f"var_{v.name}": v.read(env).detach().float() for v in variables}
        masked = state * (~starts).to(state.dtype)[None, :, None]
        gates = core.gates(agent.encode(obs), masked)
        logits, value, new_state = agent.step(obs, state, starts)
        fused = _layer0(core, new_state)
        for name, tensor in fused.items():
            max_err = max(max_err, float((gates[name] - tensor).abs().max()))
        gates.update(fused)  # keep the numbers the policy acted on
        action = select_action(logits, greedy, gen)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated | truncated
        step = {
            **{name: gates[name] for name in GATES[kind]},
            "obs": obs,
            "action": action,
            "reward": reward,
            "value": value,
            **values,
        }
        host = {key: tensor.cpu().numpy() for key, tensor in step.items()}
        done_host = done.cpu().numpy()
        for b in active:
            episode = current[b]
            for key, array in host.items():
                episode.setdefault(key, []).append(array[b])
            if done_host[b]:
                episode["complete"] = [True]
                finished[b].append(episode)
                current[b] = {}
        obs, state, starts = next_obs, new_state, done
    for b in range(B):  # episodes cut by max_steps
        if len(finished[b]) < quota[b] and current[b]:
            current[b]["complete"] = [False]
            finished[b].append(current[b])
    ordered = [episode for per_env in finished for episode in per_env]
    if not ordered:
        raise ValueError(f"no step recorded in max_steps={max_steps}")
    lengths = np.array([len(e["action"]) for e in ordered], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {}
    for key in ordered[0]:
        if key != "complete":
            arrays[key] = np.concatenate([np.stack(e[key]) for e in ordered])
    arrays["episode"] = np.repeat(np.arange(len(ordered)), lengths)
    arrays["t"] = np.concatenate([np.arange(n) for n in lengths])
    complete = np.array([e["complete"][0] for e in ordered], dtype=bool)
    return Recording(kind, arrays, lengths, complete, {v.name: v.kind for v in variables}, max_err)


# -- probes -------------------------------------------------------------------------------
@dataclass
class Probe:
    """How well the units' states predict one hidden variable.

    ``scores (H,)``: per unit, Pearson r (``scalar``, signed) or the correlation ratio eta in
    [0, 1] (``category``). ``best_units``: units by decreasing ``|score|``. ``linear``: a
    linear probe on all units, fitted on half the episodes and scored on the others
    (``held_out``; with one episode, or one per class, it is fitted and scored on the same
    steps): R^2 of ridge regression for a scalar, accuracy of linear discriminant analysis
    for a category.

    The best unit is picked on the data it is scored on, so with few episodes even noise
    scores well. ``null_best`` and ``null_linear`` are the same figures with the variable
    circularly shifted against the states (alignment broken, both time courses kept): the
    95th percentile of the best unit's ``|score|`` and the mean linear score over the shifts.
    A probe says something where its figures clear these. ``constant``: the variable took
    one value (nothing to probe; ``linear`` is nan).
    """

    variable: str
    kind: str
    state: str
    scores: np.ndarray
    best_units: list[int]
    linear: float
    null_best: float = math.nan
    null_linear: float = math.nan
    held_out: bool = True
    constant: bool = False

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best_units[0]])

    @property
    def linear_metric(self) -> str:
        return "r2" if self.kind == "scalar" else "accuracy"

    def to_dict(self, top: int = 5) -> dict[str, Any]:
        metric = "r" if self.kind == "scalar" else "eta"
        return {
            "variable": self.variable,
            "kind": self.kind,
            "state": self.state,
            "metric": metric,
            "best_units": [
                {"unit": u, metric: float(self.scores[u])} for u in self.best_units[:top]
            ],
            f"linear_probe_{self.linear_metric}": self.linear,
            f"null_best_{metric}": self.null_best,
            f"null_linear_probe_{self.linear_metric}": self.null_linear,
            "held_out": self.held_out,
            "constant": self.constant,
        }


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``x (N, H)`` with ``y (N,)``; 0 where either is constant."""
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean()
    denom = np.sqrt((x**2).sum(0) * (y**2).sum())
    num = (x * y[:, None]).sum(0)
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


def correlation_ratio(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correlation ratio eta of every column of ``x (N, H)`` with categories ``labels (N,)``:
    sqrt(between-category variance / total variance), the categorical analogue of ``|r|``."""
    x = x.astype(np.float64)
    centred = x - x.mean(0)
    total = (centred**2).sum(0)
    between = np.zeros(x.shape[1])
    for label in np.unique(labels):
        members = labels == label
        between += members.sum() * (x[members].mean(0) - x.mean(0)) ** 2
    ratio = np.divide(between, total, out=np.zeros_like(total), where=total > 0)
    return np.sqrt(np.clip(ratio, 0.0, 1.0))


def _linear_probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, kind: str) -> float:
    """Fit on the ``train`` steps, score on the others: ridge regression (R^2) for a scalar,
    linear discriminant analysis with a shared, shrunk covariance (accuracy) for a category
    (unlike least squares on one-hot targets, LDA also reads a category coded as one
    ordered unit)."""
    test = ~train if (~train).any() else train
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mean) / std
    ridge = 1e-2 * np.eye(z.shape[1])
    if kind == "category":
        classes, index = np.unique(y, return_inverse=True)
        present = [k for k in range(len(classes)) if (index[train] == k).any()]
        means = np.stack([z[train][index[train] == k].mean(0) for k in present])
        centred = z[train] - means[np.searchsorted(present, index[train])]
        cov = centred.T @ centred / max(1, len(centred)) + ridge
        w = np.linalg.solve(cov, means.T)  # (H, K)
        prior = np.log([np.mean(index[train] == k) for k in present])
        logits = z[test] @ w - 0.5 * (means * w.T).sum(1) + prior
        return float((np.asarray(present)[logits.argmax(1)] == index[test]).mean())
    a = np.concatenate([z, np.ones((len(z), 1))], axis=1)
    target = y.astype(np.float64)
    coef = np.linalg.solve(
        a[train].T @ a[train] + np.pad(ridge, (0, 1)), a[train].T @ target[train]
    )
    pred = a[test] @ coef
    sst = ((target[test] - target[test].mean()) ** 2).sum()
    return float(1.0 - ((target[test] - pred) ** 2).sum() / sst) if sst > 0 else math.nan


def probe_split(episode: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
    """The steps to fit a linear probe on: whole episodes, every other one. For a category,
    every other one among the episodes that start with each value, so that each value seen
    in two or more episodes is on both sides (episode parity alone left a TMaze cue out of
    the fit in most 8-episode recordings, capping the held-out accuracy)."""
    ids, first = np.unique(episode, return_index=True)
    keys = y[first] if kind == "category" else np.zeros(len(ids))
    fit = [member for key in np.unique(keys) for member in ids[keys == key][0::2]]
    return np.isin(episode, fit)


NULL_SHIFTS = 19  # circular shifts for the null figures (the 95th percentile of 20 - 1)


def probe(rec: Recording, variable: str, state: str | None = None) -> Probe:
    """Score every unit's state (default ``rec.state_name``) against ``var_<variable>``."""
    kind = rec.variables[variable]
    state = state or rec.state_name
    x, y = rec.arrays[state], rec.arrays[f"var_{variable}"]

    def unit_scores(target: np.ndarray) -> np.ndarray:
        return pearson(x, target) if kind == "scalar" else correlation_ratio(x, target)

    scores = unit_scores(y)
    best = [int(u) for u in np.argsort(-np.abs(scores), kind="stable")]
    if len(np.unique(y)) < 2:
        return Probe(variable, kind, state, scores, best, math.nan, constant=True)
    train = probe_split(rec.arrays["episode"], y, kind)
    held_out = bool((~train).any())
    linear = _linear_probe(x, y, train, kind)
    n = len(y)
    shifts = np.random.default_rng(0).integers(n // 4, max(n // 4 + 1, 3 * n // 4), NULL_SHIFTS)
    null_best = [float(np.abs(unit_scores(np.roll(y, int(k)))).max()) for k in shifts]
    null_linear = [_linear_probe(x, np.roll(y, int(k)), train, kind) for k in shifts[:5]]
    finite = [value for value in null_linear if math.isfinite(value)]
    return Probe(
        variable,
        kind,
        state,
        scores,
        best,
        linear,
        null_best=float(np.percentile(null_best, 95)),
        null_linear=float(np.mean(finite)) if finite else math.nan,
        held_out=held_out,
    )


# -- report -------------------------------------------------------------------------------
def _first_episodes(rec: Recording, max_steps: int, max_episodes: int) -> slice:
    """The steps of the first whole episodes, at most ``max_episodes`` of them within
    ``max_steps`` steps (at least the start of the first one)."""
    ends = np.cumsum(rec.lengths)[:max_episodes]
    fit = ends[ends <= max_steps]
    return slice(0, int(fit[-1]) if len(fit) else min(max_steps, int(ends[0])))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_report(
    rec: Recording,
    out_dir: str | Path,
    writer: Any = None,
    step: int = 0,
    max_plot_steps: int = 1000,
    max_plot_episodes: int = 8,
) -> dict[str, Any]:
    """Write ``inspect.npz``, one heatmap PNG per recorded quantity, one probe plot per
    hidden variable and ``probes.json`` to ``out_dir``; with a TensorBoard ``writer`` the
    same images go to ``inspect/heatmap/<name>`` and ``inspect/probe/<variable>``, and each
    probe's best score to the scalar ``inspect/probe_<variable>``.

    Plots show the first whole episodes (at most ``max_plot_episodes``) that fit in
    ``max_plot_steps`` steps; the probes use every step. Returns the summary written to
    ``probes.json``.
    """
    from rlstm import plotting

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec.save(out / "inspect.npz")
    shown = _first_episodes(rec, max_plot_steps, max_plot_episodes)
    a = {key: value[shown] for key, value in rec.arrays.items()}
    starts, rewards = a["t"] == 0, a["reward"]
    obs = a["obs"] if a["obs"].ndim == 2 and a["obs"].shape[1] <= 64 else None
    images: dict[str, Path] = {}
    for name in rec.gate_names:
        fig = plotting.unit_heatmap(
            a[name],
            starts,
            rewards,
            title=f"{rec.kind} {name} (units x time)",
            gate=name in SIGMOID_GATES[rec.kind],
            actions=a["action"],
            obs=obs,
        )
        image = plotting.render(fig)
        images[f"heatmap/{name}"] = plotting.write_png(image, out / f"heatmap_{name}.png")
        if writer is not None:
            writer.add_image(f"inspect/heatmap/{name}", image, step, dataformats="HWC")
    probes = []
    for variable in rec.variables:
        result = probe(rec, variable)
        probes.append(result.to_dict())
        unit = result.best_units[0]
        fig = plotting.probe_plot(
            a[result.state][:, unit],
            a[f"var_{variable}"],
            starts,
            title=f"{variable}: {result.state} unit {unit} "
            f"({probes[-1]['metric']} = {result.best_score:+.3f})",
            unit_label=f"{result.state}[{unit}]",
            variable_label=variable,
        )
        image = plotting.render(fig)
        images[f"probe/{variable}"] = plotting.write_png(image, out / f"probe_{variable}.png")
        if writer is not None:
            writer.add_image(f"inspect/probe/{variable}", image, step, dataformats="HWC")
            writer.add_scalar(f"inspect/probe_{variable}", abs(result.best_score), step)
    finished = [i for i in range(len(rec.lengths)) if rec.complete[i]]
    summary = {
        "kind": rec.kind,
        "episodes": len(rec.lengths),
        "complete_episodes": len(finished),
        "steps": rec.num_steps,
        # over the episodes that ended (a cut one's return is partial); nan if none did
        "mean_return": float(np.mean([rec.episode(i)["reward"].sum() for i in finished]))
        if finished
        else math.nan,
        "max_abs_error_vs_fused": rec.max_abs_error,
        "probes": probes,
        "files": {key: str(path) for key, path in images.items()},
    }
    # strict JSON: nan (no episode ended, an undefined score) is written as null
    (out / "probes.json").write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False))
    if writer is not None:
        writer.flush()
    return summary


# -- training diagnostics -----------------------------------------------------------------
@torch.no_grad()
def lstm_diagnostics(
    core: Any, features: Tensor, state: Tensor, starts: Tensor
) -> dict[str, Tensor]:
    """Replay the first layer's gates over ``features (L, M, in)`` from ``state (S*l, M, H)``
    with resets at ``starts (L, M)``. Returns each gate's activations ``(L, M, H)`` by name
    (``GATES[core.kind]``)."""
    _require_rnn(core)
    L = features.shape[0]
    assert starts.shape == features.shape[:2], f"starts {tuple(starts.shape)} vs features"
    steps: dict[str, list[Tensor]] = {}
    for t in range(L):
        masked = state * (~starts[t]).to(state.dtype)[None, :, None]
        for name, value in core.gates(features[t], masked).items():
            steps.setdefault(name, []).append(value)
        _, state = core.step(features[t], state, starts[t])
    return {name: torch.stack(values) for name, values in steps.items()}


def log_lstm_diagnostics(
    core: Any, features: Tensor, state: Tensor, starts: Tensor, writer: Any, step: int
) -> dict[str, float]:
    """Log ``lstm/*`` for the sample ``features (L, M, in)`` from ``state`` with ``starts``:
    a histogram per gate (``lstm/<gate>``), the fraction of sigmoid gates saturated below
    0.05 or above 0.95 (``lstm/saturated_<gate>``, ``lstm/saturated``), the mean forget
    (LSTM) or update (GRU) gate, and the mean L2 norm of the cell and hidden state over
    units. A ``none`` core logs nothing. Returns the scalars."""
    if getattr(core, "kind", None) not in GATES:
        return {}
    gates = lstm_diagnostics(core, features, state, starts)
    scalars: dict[str, float] = {}
    saturated = []
    for name in SIGMOID_GATES[core.kind]:
        sat = ((gates[name] < SATURATION) | (gates[name] > 1 - SATURATION)).float()
        saturated.append(sat.flatten())
        scalars[f"lstm/saturated_{name}"] = float(sat.mean())
        scalars[f"lstm/mean_{name}"] = float(gates[name].mean())
    scalars["lstm/saturated"] = float(torch.cat(saturated).mean())
    for name in ("cell", "hidden"):
        if name in gates:
            scalars[f"lstm/{name}_norm"] = float(gates[name].norm(dim=-1).mean())
    for name in GATES[core.kind]:
        writer.add_histogram(f"lstm/{name}", gates[name].flatten().float().cpu(), step)
    for key, value in scalars.items():
        writer.add_scalar(key, value, step)
    return scalars


def log_rollout_diagnostics(
    agent: Any,
    buffer: Any,
    writer: Any,
    step: int,
    num_steps: int = 32,
    num_envs: int = 16,
) -> dict[str, float]:
    """:func:`log_lstm_diagnostics` on the first ``num_steps`` steps of the first
    ``num_envs`` envs of a :class:`rlstm.buffer.RolloutBuffer`, from their stored state and
    with the agent's current weights."""
    core, encoder = getattr(agent, "core", None), getattr(agent, "encoder", None)
    if getattr(core, "kind", None) not in GATES or encoder is None:
        return {}
    L, M = min(num_steps, buffer.num_steps), min(num_envs, buffer.num_envs)
    with torch.no_grad():
        obs = buffer.obs[:L, :M]
        # the agent's own encode (bf16 autocast where it acts so), else the bare encoder
        encode = getattr(agent, "encode", encoder)
        features = encode(obs.reshape(L * M, *obs.shape[2:])).view(L, M, -1)
    return log_lstm_diagnostics(
        core, features, buffer.states[0][:, :M], buffer.starts[:L, :M], writer, step
    )


# -- video --------------------------------------------------------------------------------
def is_image_obs(shape: Sequence[int], dtype: torch.dtype) -> bool:
    return dtype == torch.uint8 and len(shape) in (2, 3)


def video_frame(obs: Tensor | np.ndarray, scale: int = 4) -> np.ndarray:
    """One env's image observation -> an RGB frame ``(H', W', 3)`` uint8, upscaled ``scale``
    times (nearest) and padded to multiples of 16 for the encoder.

    ``(H, W)`` is grayscale; ``(H, W, 1|3|4)`` is channel-last; any other 3-D shape is a
    stack of grayscale frames ``(C, H, W)`` whose last (newest) frame is shown.
    """
    frame = obs.cpu().numpy() if isinstance(obs, Tensor) else np.asarray(obs)
    if frame.ndim == 3:
        frame = frame[..., :3] if frame.shape[-1] in (1, 3, 4) else frame[-1]
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    frame = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    h, w = frame.shape[:2]
    pad = ((0, -h % 16), (0, -w % 16), (0, 0))
    return np.ascontiguousarray(np.pad(frame, pad))


class VideoRecorder(VecEnv):
    """A batched env that writes env ``index``'s episodes to ``out_dir/episode_NNN.mp4``.

    Wraps any env whose observations are images (``is_image_obs``); everything else passes
    through, so ``evaluate(agent, VideoRecorder(env, "videos"), ...)`` films an evaluation.
    An episode ends where ``info["episode_done"]`` (Atari's game over) or, without it,
    ``terminated | truncated``; its last frame is ``info["final_obs"]``. At most
    ``max_videos`` episodes are written; an episode still running at ``close()`` is dropped.
    """

    def __init__(
        self,
        env: VecEnv,
        out_dir: str | Path,
        max_videos: int = 10,
        fps: int = 15,
        scale: int = 4,
        index: int = 0,
    ) -> None:
        if not is_image_obs(env.obs_shape, env.obs_dtype):
            raise ValueError(
                f"video needs image observations (uint8, 2-D or 3-D); this env's are "
                f"{env.obs_dtype} {tuple(env.obs_shape)}"
            )
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise ImportError(
                "video needs imageio and imageio-ffmpeg: pip install 'rlstm[video]'"
            ) from None
        self._imageio = imageio
        self.env = env
        self.num_envs, self.device = env.num_envs, env.device
        self.obs_shape, self.obs_dtype = env.obs_shape, env.obs_dtype
        self.num_actions = env.num_actions
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_videos, self.fps, self.scale, self.index = max_videos, fps, scale, index
        self.paths: list[Path] = []
        self._writer: Any = None
        self._path: Path | None = None

    def _open(self, obs: Tensor) -> None:
        if len(self.paths) >= self.max_videos:
            return
        self._path = self.out_dir / f"episode_{len(self.paths):03d}.mp4"
        self._writer = self._imageio.get_writer(
            self._path, fps=self.fps, codec="libx264", quality=7, macro_block_size=16
        )
        self._writer.append_data(video_frame(obs, self.scale))

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            assert self._path is not None
            self._path.unlink(missing_ok=True)
        self._writer, self._path = None, None

    def reset(self, seed: int | None = None) -> Tensor:
        obs = self.env.reset(seed=seed)
        self._discard()
        self._open(obs[self.index])
        return obs

    def step(self, actions: Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self._writer is None:
            return obs, reward, terminated, truncated, info
        i = self.index
        done = bool(info.get("episode_done", terminated | truncated)[i])
        if done:
            self._writer.append_data(video_frame(info["final_obs"][i], self.scale))
            self._writer.close()
            assert self._path is not None
            self.paths.append(self._path)
            self._writer, self._path = None, None
            self._open(obs[i])
        else:
            self._writer.append_data(video_frame(obs[i], self.scale))
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._discard()
        self.env.close()

    def __getattr__(self, name: str) -> Any:  # anything else: the wrapped env's
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)
