"""Config precedence and every rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlstm.config import Config, ConfigError, build_config, config_from_dict, help_text


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  bptt_len: 8\n  learning_rate: 1e-3\nrun:\n  seed: 7\n")
    base = {"ppo": {"bptt_len": 4, "gamma": 0.5}}
    cfg = build_config(path, ["run.seed=3"], base=base)
    assert cfg.ppo.bptt_len == 8  # yaml beats base
    assert cfg.ppo.gamma == 0.5  # base beats defaults
    assert cfg.ppo.learning_rate == pytest.approx(1e-3)  # "1e-3" read as a number
    assert cfg.run.seed == 3  # override beats yaml
    assert cfg.ppo.num_steps == Config().ppo.num_steps  # untouched default


def test_override_value_types() -> None:
    cfg = build_config(
        overrides=[
            "env.kwargs={length: 100}",
            "ppo.target_kl=0.02",
            "agent.core=gru",
            "ppo.anneal_lr=false",
            "env.id=123",
        ]
    )
    assert cfg.env.kwargs == {"length": 100}
    assert cfg.ppo.target_kl == 0.02
    assert cfg.agent.core == "gru" and cfg.ppo.anneal_lr is False
    assert cfg.env.id == "123"
    assert build_config(overrides=["ppo.target_kl=null"]).ppo.target_kl is None
    # YAML 1.1 reads 1e6 and 1.0e6 as strings; whole numbers written so are integers
    for text in ("1e6", "1.0e6", "1000000.0"):
        assert build_config(overrides=[f"ppo.total_timesteps={text}"]).ppo.total_timesteps == 10**6


def test_derived_values_are_properties() -> None:
    cfg = build_config(
        overrides=["env.num_envs=8", "ppo.num_steps=64", "ppo.bptt_len=16", "ppo.num_minibatches=4"]
    )
    assert cfg.batch_size == 512
    assert cfg.num_chunks == 32
    assert cfg.chunks_per_minibatch == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ppo.bptt_len=7", "num_steps=128 is not a multiple of ppo.bptt_len=7"),
        ("ppo.num_minibatches=3", "num_minibatches=3 does not divide"),
        ("ppo.foo=1", "unknown key 'ppo.foo'"),
        ("optim.lr=1", "unknown section 'optim'"),
        ("ppo.gamma=high", "ppo.gamma='high': expected a number"),
        ("ppo.num_steps=1.5", "ppo.num_steps=1.5: expected an integer"),
        ("ppo.num_steps=true", "expected an integer"),
        ("ppo.num_steps=1.5e0", "ppo.num_steps='1.5e0': expected an integer"),
        ("ppo.anneal_lr=2", "ppo.anneal_lr=2: expected true or false"),
        ("ppo.gamma=1.5", "ppo.gamma=1.5 must lie in [0, 1]"),
        ("ppo.learning_rate=0", "ppo.learning_rate=0.0 must be > 0"),
        ("run.log_episodes=-3", "run.log_episodes=-3 must be >= 0"),
        ("env.num_envs=0", "env.num_envs=0 must be >= 1"),
        ("agent.core=transformer", "agent.core='transformer': must be one of lstm, gru, none"),
        ("ppo.state_refresh=always", "ppo.state_refresh='always'"),
        ("run.device=tpu", "run.device='tpu'"),
        ("ppo.total_timesteps=10", "less than one iteration"),
        ("env.kwargs=5", "expected a mapping"),
        ("ppo", "must look like section.key=value"),
        ("bptt_len=4", "must look like section.key"),
        ("configs/x.yaml", "(the CONFIG file comes before the overrides)"),
        ("run.run_name=a/b", "plain directory name"),
        ("ppo.target_kl=-1", "ppo.target_kl=-1.0 must be > 0"),
        ("ppo.learning_rate=inf", "ppo.learning_rate=inf: must be a finite number"),
        ("ppo.target_kl=nan", "ppo.target_kl=nan: must be a finite number"),
        ("agent.forget_bias=-inf", "agent.forget_bias=-inf: must be a finite number"),
        ("run.seed=-1", "run.seed=-1 must be >= 0"),
        ("run.device=cudax", "run.device='cudax'"),
        ("run.device=cuda:abc", "run.device='cuda:abc'"),
    ],
)
def test_rejections_name_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(overrides=[override])
    assert message in str(info.value)


def test_inconsistent_recurrent_settings_rejected() -> None:
    with pytest.raises(ConfigError, match="burn_in=4 with ppo.state_refresh=epoch"):
        build_config(overrides=["ppo.burn_in=4", "ppo.state_refresh=epoch"])
    with pytest.raises(ConfigError, match="core=none has no state"):
        build_config(overrides=["agent.core=none", "ppo.state_refresh=epoch"])
    for setting in ("ppo.state_refresh=epoch", "ppo.burn_in=4"):
        with pytest.raises(ConfigError, match="overlap_update=true with ppo.burn_in"):
            build_config(overrides=["ppo.overlap_update=true", setting])


def test_advantage_normalisation_needs_two_steps_per_minibatch() -> None:
    """One step per minibatch has no advantage std: every update would be NaN."""
    tiny = ["env.num_envs=1", "ppo.num_steps=4", "ppo.bptt_len=1", "ppo.total_timesteps=64"]
    with pytest.raises(ConfigError, match="leaves 1 step\\(s\\) per minibatch"):
        build_config(overrides=[*tiny, "ppo.num_minibatches=4"])
    assert build_config(overrides=[*tiny, "ppo.num_minibatches=2"]).ppo.num_minibatches == 2
    assert build_config(overrides=[*tiny, "ppo.num_minibatches=4", "ppo.norm_adv=false"])


def test_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        build_config(scalar)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("ppo:\n  bptt_len: 16\n  clip: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'ppo.clip'"):
        build_config(wrong)


def test_resolved_config_roundtrip() -> None:
    cfg = build_config(overrides=["agent.hidden_size=32", "env.kwargs={length: 5}"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_help_lists_every_option_with_doc_and_default() -> None:
    text = help_text()
    for section in ("env", "agent", "ppo", "run"):
        for name in getattr(Config(), section).__dataclass_fields__:
            assert f"{section}.{name}=" in text
    assert "ppo.bptt_len=32" in text and "truncated BPTT chunk length" in text


def test_an_explicit_cuda_device_becomes_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph capture, streams and events use the current device: ``run.device=cuda:1`` must
    make GPU 1 current, or captures land on GPU 0 (checked without a GPU: calls recorded)."""
    import torch

    from rlstm.trainer import resolve_device

    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert current == [torch.device("cuda:1")]
    assert resolve_device("cuda") == torch.device("cuda") and len(current) == 1
    assert resolve_device("cuda:1", make_current=False) == torch.device("cuda:1")
    assert len(current) == 1  # a library caller keeps its current device
    with pytest.raises(ConfigError, match="run.device='cuda:2' but this machine has 2 GPU"):
        resolve_device("cuda:2")
