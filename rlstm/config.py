"""Typed run configuration: defaults < YAML file < ``section.key=value`` overrides.

Four sections, each a dataclass whose fields carry a one-line doc (``rlstm train --help``
prints them): ``env`` (what to train on), ``agent`` (the network), ``ppo`` (every PPO and
recurrent hyperparameter, CleanRL names), ``run`` (seed, device, output, checkpoints).
Everything is validated before anything runs; errors name the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with a one-line doc shown by ``--help``."""
    return field(metadata={"doc": text}, **kwargs)


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the value."""


@dataclass
class EnvConfig:
    id: str = doc(
        "env id: a memory task (RepeatFirstEasy, TMaze, ...), an Atari id (ALE/Pong-v5) "
        "or any registered gymnasium id (CartPole-v1, module:Id)",
        default="RepeatFirstEasy",
    )
    backend: str = doc("memory | atari | gymnasium | auto (inferred from id)", default="auto")
    num_envs: int = doc(
        "number of parallel envs (B); under torchrun the total over all ranks, split evenly",
        default=64,
    )
    kwargs: dict[str, Any] = doc(
        "extra task params, e.g. {length: 100} for TMaze", default_factory=dict
    )
    prev_action: bool | None = doc(
        "memory tasks: previous action in the obs (null = the task's default)", default=None
    )
    first_flag: bool | None = doc(
        "memory tasks: first-step flag in the obs (null = the task's default)", default=None
    )
    # Atari (ale-py vector env). Defaults follow Machado et al. 2018 (the v5 protocol), except
    # sticky actions, which follow the id as gymnasium registers it.
    repeat_action_probability: float | None = doc(
        "Atari: sticky-action probability (null = the id's: 0.25 for ALE/<Game>-v5, "
        "0 for <Game>NoFrameskip-v4)",
        default=None,
    )
    full_action_space: bool = doc("Atari: all 18 actions instead of the minimal set", default=False)
    frameskip: int = doc("Atari: emulator frames per agent step (max-pooled)", default=4)
    noop_max: int = doc("Atari: up to this many no-ops at reset", default=30)
    life_loss: str = doc(
        "Atari: none (only game over ends an episode) | terminal (a life loss cuts the value "
        "bootstrap and resets the memory, as DQN / CleanRL)",
        default="none",
    )
    clip_rewards: bool = doc("Atari: train on sign-clipped rewards (scores stay raw)", default=True)
    flicker: float = doc(
        "Atari: probability of blanking each frame (Flickering Atari)", default=0.0
    )
    stack_num: int = doc("Atari: frames stacked per obs (1: the LSTM infers motion)", default=1)
    max_episode_steps: int = doc(
        "Atari: truncate episodes after this many agent steps", default=27000
    )
    num_threads: int = doc(
        "Atari: emulator threads per group (0 = one per env, capped by the cores)", default=0
    )
    num_groups: int = doc(
        "Atari: env groups stepped alternately, so the emulators of one group run while the "
        "policy acts for another (1 = one synchronous batch)",
        default=1,
    )


@dataclass
class AgentConfig:
    encoder: str = doc("mlp | cnn | auto (cnn for image obs, mlp otherwise)", default="auto")
    encoder_hidden: int = doc("width of the MLP encoder's layers", default=128)
    encoder_layers: int = doc("number of MLP encoder layers", default=1)
    core: str = doc("recurrent core: lstm | gru | none (memoryless control)", default="lstm")
    hidden_size: int = doc("recurrent state size (H)", default=128)
    num_layers: int = doc("stacked recurrent layers", default=1)
    forget_bias: float = doc(
        "initial bias of the LSTM forget gate / GRU update gate, every layer (0 = CleanRL's "
        "zeros; larger keeps memories longer); core=none ignores it",
        default=0.0,
    )
    chrono_init: int = doc(
        "chrono initialisation for memories up to this many steps: LSTM forget bias "
        "log U(1, T-1) and input bias its negative, GRU update bias log U(1, T-1) "
        "(Tallec & Ollivier 2018); 0 = off; core=none ignores it",
        default=0,
    )
    bf16: bool = doc(
        "CUDA: run the encoder (the CNN, for frames) under bfloat16 autocast", default=False
    )


@dataclass
class PPOConfig:
    total_timesteps: int = doc(
        "env steps to train for, summed over envs (and over ranks under torchrun)",
        default=500_000,
    )
    num_steps: int = doc("rollout length per env per iteration (T)", default=128)
    num_minibatches: int = doc(
        "minibatches per epoch (sets of whole chunks; under torchrun each rank gives its share)",
        default=4,
    )
    update_epochs: int = doc("epochs over the rollout per iteration", default=4)
    learning_rate: float = doc("Adam learning rate", default=2.5e-4)
    anneal_lr: bool = doc("anneal the learning rate linearly to 0", default=True)
    gamma: float = doc("discount factor", default=0.99)
    gae_lambda: float = doc("GAE lambda", default=0.95)
    clip_coef: float = doc("surrogate clipping coefficient", default=0.2)
    clip_vloss: bool = doc("clip the value loss as the surrogate", default=True)
    ent_coef: float = doc("entropy bonus coefficient", default=0.01)
    vf_coef: float = doc("value loss coefficient", default=0.5)
    max_grad_norm: float = doc("global gradient norm clip", default=0.5)
    target_kl: float | None = doc(
        "stop the epochs early when an epoch's last minibatch passes this approx KL "
        "(CleanRL's rule; null = off)",
        default=None,
    )
    norm_adv: bool = doc("normalise advantages per minibatch", default=True)
    bptt_len: int = doc("truncated BPTT chunk length (L); num_steps must be a multiple", default=32)
    burn_in: int = doc(
        "steps run without gradient before each chunk, from the state stored that many steps "
        "earlier, to refresh the chunk's start state (R2D2)",
        default=0,
    )
    state_refresh: str = doc(
        "none (chunks start from the states stored while acting) | epoch (recompute chunk "
        "start states with the current weights before each epoch)",
        default="none",
    )
    adam_eps: float = doc(
        "Adam epsilon (CleanRL's 1e-5; the long-memory configs use 1e-8: their gradients "
        "through hundreds of steps are smaller than 1e-5)",
        default=1e-5,
    )
    overlap_update: bool = doc(
        "run each update while the next rollout is collected: its minibatch steps are "
        "interleaved, in order, between env steps, so acting continues with weights the "
        "update is changing (hides the update behind emulation with env.num_groups > 1; "
        "losses are charted when an update finishes; needs state_refresh=none, burn_in=0 "
        "and a single process)",
        default=False,
    )
    max_nonfinite_updates: int = doc(
        "stop after this many minibatch updates in a row skipped for a NaN/Inf loss or gradient",
        default=5,
    )

    @property
    def num_chunks_per_env(self) -> int:
        return self.num_steps // self.bptt_len


@dataclass
class RunConfig:
    seed: int = doc("seed for torch and the envs", default=1)
    device: str = doc(
        "auto (cuda when present) | cpu | cuda | cuda:N; under torchrun auto and cuda mean "
        "the rank's local GPU (cuda:LOCAL_RANK)",
        default="auto",
    )
    run_name: str = doc(
        "run directory name under out_dir (default: <env>__<seed>__<time>)", default=""
    )
    out_dir: str = doc("parent directory of run directories", default="runs")
    checkpoint_every: int = doc("checkpoint every N iterations (0 = only at the end)", default=25)
    torch_deterministic: bool = doc(
        "deterministic torch kernels (cudnn.deterministic)", default=True
    )
    torch_threads: int = doc("CPU threads for torch (0 = torch's default)", default=0)
    progress: bool = doc("progress bar on a terminal (plain lines otherwise)", default=True)
    time_limit: float = doc(
        "stop cleanly after the iteration that passes this many seconds of this launch "
        "(a resumed run gets them afresh; 0 = off)",
        default=0.0,
    )
    cuda_graph: bool = doc(
        "CUDA: capture the acting policy step as a CUDA graph (replayed every env step), "
        "and the PPO minibatch step too where run.cuda_graph_update allows",
        default=True,
    )
    cuda_graph_update: int = doc(
        "CUDA, single process: replay each PPO minibatch step from a CUDA graph when a "
        "minibatch holds at most this many env steps (small ones are bound by kernel "
        "launches, large ones by the GPU; one graph per segment capacity, each holding a "
        "minibatch's activations; 0 = never)",
        default=16384,
    )
    log_episodes: int = doc(
        "most finished episodes per iteration written to charts/episodic_* (an even "
        "subsample of them above this; 0 = every one); the running mean uses every episode",
        default=256,
    )
    lstm_log_every: int = doc(
        "log lstm/* diagnostics (gate histograms, saturation, mean forget gate, state norms) "
        "every N iterations (0 = off)",
        default=10,
    )


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def batch_size(self) -> int:
        """Env steps per iteration: ``num_envs * num_steps``."""
        return self.env.num_envs * self.ppo.num_steps

    @property
    def num_chunks(self) -> int:
        """BPTT chunks per rollout: ``num_envs * num_steps / bptt_len``."""
        return self.env.num_envs * self.ppo.num_chunks_per_env

    @property
    def chunks_per_minibatch(self) -> int:
        """Chunks per minibatch (M)."""
        return self.num_chunks // self.ppo.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.ppo.total_timesteps // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "agent": AgentConfig,
    "ppo": PPOConfig,
    "run": RunConfig,
}

CHOICES: dict[str, tuple[str, ...]] = {
    "env.backend": ("auto", "memory", "atari", "gymnasium"),
    "env.life_loss": ("none", "terminal"),
    "agent.encoder": ("auto", "mlp", "cnn"),
    "agent.core": ("lstm", "gru", "none"),
    "ppo.state_refresh": ("none", "epoch"),
}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the field type ``tp``; convert only lossless cases."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping like {{length: 100}}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = value
        if isinstance(value, str):  # YAML 1.1 reads "1e6" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, float) and number.is_integer():
            return int(number)
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: expected a string")
    raise AssertionError(f"unsupported config type {tp} for {key}")


def _apply(cfg: Config, section: str, key: str, value: Any) -> None:
    full = f"{section}.{key}"
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown section {section!r} in {full!r}; sections: {', '.join(SECTIONS)}"
        )
    types_ = _field_types(SECTIONS[section])
    if key not in types_:
        raise ConfigError(f"unknown key {full!r}; keys of {section}: {', '.join(sorted(types_))}")
    setattr(getattr(cfg, section), key, _coerce(full, value, types_[key]))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file: a mapping of sections to mappings of keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"ppo.bptt_len=16" -> ("ppo", "bptt_len", 16)``; the value is read as YAML."""
    if "=" not in text:
        first = text.endswith((".yaml", ".yml"))
        hint = " (the CONFIG file comes before the overrides)" if first else ""
        raise ConfigError(f"override {text!r} must look like section.key=value{hint}")
    dotted, raw = text.split("=", 1)
    if dotted.count(".") != 1:
        raise ConfigError(f"override key {dotted!r} must look like section.key (e.g. ppo.bptt_len)")
    section, key = dotted.split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return section, key, value


def build_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Defaults < ``base`` (a dict, e.g. an embedded default) < YAML file < overrides."""
    cfg = Config()
    layers = [base or {}]
    if path is not None:
        layers.append(load_yaml(path))
    for layer in layers:
        for section, values in layer.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown section {section!r}; sections: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"section {section!r} must be a mapping, got {values!r}")
            for key, value in values.items():
                _apply(cfg, section, str(key), value)
    for text in overrides:
        _apply(cfg, *parse_override(text))
    validate(cfg)
    return cfg


def sticky_actions_of(env_id: str) -> float:
    """An Atari id's own sticky-action probability, as gymnasium registers it: 0 for
    ``<Game>NoFrameskip-v4`` (DQN / CleanRL), 0.25 for ``ALE/<Game>-v5`` (Machado et al.)."""
    return 0.0 if env_id.endswith("NoFrameskip-v4") else 0.25


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a saved (resolved) config."""
    return build_config(base=data)


# run.device (and --device): what torch.device accepts that rlstm runs on
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate(cfg: Config) -> None:
    """Reject impossible or inconsistent settings, naming the values; resolve the settings
    whose default depends on others (``env.repeat_action_probability`` on ``env.id``)."""
    for section in SECTIONS:
        for key, value in getattr(cfg, section).__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{key}={value}: must be a finite number")
    for full, allowed in CHOICES.items():
        section, key = full.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{full}={value!r}: must be one of {', '.join(allowed)}")
    e, a, p, r = cfg.env, cfg.agent, cfg.ppo, cfg.run
    if e.repeat_action_probability is None:  # resolved here, so config.yaml records it
        e.repeat_action_probability = sticky_actions_of(e.id)
    positive = {
        "env.num_envs": e.num_envs,
        "env.frameskip": e.frameskip,
        "env.stack_num": e.stack_num,
        "env.max_episode_steps": e.max_episode_steps,
        "agent.encoder_hidden": a.encoder_hidden,
        "agent.encoder_layers": a.encoder_layers,
        "agent.hidden_size": a.hidden_size,
        "agent.num_layers": a.num_layers,
        "env.num_groups": e.num_groups,
        "ppo.total_timesteps": p.total_timesteps,
        "ppo.num_steps": p.num_steps,
        "ppo.num_minibatches": p.num_minibatches,
        "ppo.update_epochs": p.update_epochs,
        "ppo.bptt_len": p.bptt_len,
        "ppo.max_nonfinite_updates": p.max_nonfinite_updates,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1")
    non_negative = {
        "env.noop_max": e.noop_max,
        "env.num_threads": e.num_threads,
        "agent.chrono_init": a.chrono_init,
        "ppo.burn_in": p.burn_in,
        "ppo.ent_coef": p.ent_coef,
        "ppo.vf_coef": p.vf_coef,
        "run.seed": r.seed,
        "run.checkpoint_every": r.checkpoint_every,
        "run.torch_threads": r.torch_threads,
        "run.time_limit": r.time_limit,
        "run.lstm_log_every": r.lstm_log_every,
        "run.log_episodes": r.log_episodes,
        "run.cuda_graph_update": r.cuda_graph_update,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    unit = {
        "env.repeat_action_probability": e.repeat_action_probability,
        "env.flicker": e.flicker,
        "ppo.gamma": p.gamma,
        "ppo.gae_lambda": p.gae_lambda,
    }
    for key, value in unit.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}={value} must lie in [0, 1]")
    for key, value in {
        "ppo.learning_rate": p.learning_rate,
        "ppo.clip_coef": p.clip_coef,
        "ppo.max_grad_norm": p.max_grad_norm,
        "ppo.adam_eps": p.adam_eps,
    }.items():
        if not value > 0:
            raise ConfigError(f"{key}={value} must be > 0")
    if p.target_kl is not None and p.target_kl <= 0:
        raise ConfigError(f"ppo.target_kl={p.target_kl} must be > 0 or null")
    if not e.id:
        raise ConfigError("env.id is empty")
    if e.num_envs % e.num_groups:
        raise ConfigError(
            f"env.num_groups={e.num_groups} does not divide env.num_envs={e.num_envs}"
        )
    if a.chrono_init == 1:
        raise ConfigError("agent.chrono_init=1: must be 0 (off) or >= 2 (memories of T steps)")
    if a.chrono_init and a.forget_bias:
        raise ConfigError(
            f"agent.chrono_init={a.chrono_init} with agent.forget_bias={a.forget_bias}: "
            "chrono sets the forget bias itself; use one or the other"
        )
    if p.num_steps % p.bptt_len:
        raise ConfigError(
            f"ppo.num_steps={p.num_steps} is not a multiple of ppo.bptt_len={p.bptt_len}"
        )
    if p.norm_adv and cfg.batch_size < 2 * p.num_minibatches:
        raise ConfigError(
            f"ppo.norm_adv with ppo.num_minibatches={p.num_minibatches} leaves "
            f"{cfg.batch_size / p.num_minibatches:g} step(s) per minibatch (env.num_envs="
            f"{e.num_envs} x ppo.num_steps={p.num_steps}): normalising advantages needs >= 2"
        )
    if cfg.num_chunks % p.num_minibatches:
        raise ConfigError(
            f"ppo.num_minibatches={p.num_minibatches} does not divide the "
            f"{cfg.num_chunks} chunks (env.num_envs={e.num_envs} x "
            f"ppo.num_steps={p.num_steps} / ppo.bptt_len={p.bptt_len})"
        )
    if p.burn_in and p.state_refresh == "epoch":
        raise ConfigError(
            f"ppo.burn_in={p.burn_in} with ppo.state_refresh=epoch: refresh already recomputes "
            "exact chunk start states; use one or the other"
        )
    if p.overlap_update and (p.burn_in or p.state_refresh != "none"):
        raise ConfigError(
            f"ppo.overlap_update=true with ppo.burn_in={p.burn_in} / "
            f"ppo.state_refresh={p.state_refresh}: both reread the rollout every epoch, "
            "which the next rollout overwrites; turn them off or the overlap"
        )
    if p.burn_in >= p.num_steps:
        raise ConfigError(f"ppo.burn_in={p.burn_in} must be < ppo.num_steps={p.num_steps}")
    if a.core == "none" and (p.burn_in or p.state_refresh != "none"):
        raise ConfigError(
            "agent.core=none has no state: ppo.burn_in and ppo.state_refresh must be off"
        )
    if p.total_timesteps < cfg.batch_size:
        raise ConfigError(
            f"ppo.total_timesteps={p.total_timesteps} is less than one iteration "
            f"(env.num_envs x ppo.num_steps = {cfg.batch_size})"
        )
    if not DEVICE_PATTERN.fullmatch(r.device):
        raise ConfigError(f"run.device={r.device!r}: must be auto, cpu, cuda or cuda:N")
    if "/" in r.run_name or r.run_name in (".", ".."):
        raise ConfigError(f"run.run_name={r.run_name!r} must be a plain directory name")


def help_text() -> str:
    """Every option with its doc and default, for ``rlstm train --help``."""
    lines = []
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            lines.append(f"  {section}.{f.name}={default!r}")
            lines.append(f"      {f.metadata['doc']}")
    return "\n".join(lines)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
