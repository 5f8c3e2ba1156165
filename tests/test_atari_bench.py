"""`rlstm bench atari`: a ~2 s run of the benchmark, and the error when sb3 is missing."""

from __future__ import annotations

import json
import math
import sys

import pytest

from envs import atari_bench
from rlstm.cli import main

# a small network and rollout so one training iteration takes well under a second on a CPU
SMALL = ["agent.hidden_size=32", "ppo.num_steps=16", "ppo.bptt_len=16", "ppo.num_minibatches=1"]


def test_bench_measures_raw_env_and_training() -> None:
    result = atari_bench.bench(
        "ALE/Pong-v5", num_envs=2, seconds=1.0, device="cpu", overrides=SMALL, log=lambda _: None
    )
    raw, train = result["raw_env"]["sps"], result["rlstm"]["sps"]
    for value in (raw, train, result["train_over_raw"], result["rlstm"]["wall_time"]):
        assert math.isfinite(value) and value > 0
    assert result["train_over_raw"] == pytest.approx(train / raw)
    assert result["rlstm"]["steps"] == result["rlstm"]["iterations"] * 2 * 16
    assert result["rlstm"]["wall_time"] >= 1.0  # stops after the iteration that passes 1 s
    assert result["machine"]["cpu_count"] >= 1 and result["env_threads"] >= 1
    assert "sb3" not in result
    for phase in ("raw_env", "rlstm"):
        others = result[phase]["others_cpu"]
        assert others is None or 0.0 <= others <= 1.0

    table = atari_bench.format_table(result)
    assert "| raw env (AtariEnv, random actions) | ALE/Pong-v5 | 2 |" in table
    assert "| rlstm training" in table
    assert f"training / raw env: {result['train_over_raw']:.2f}" in table
    assert "CPU cores" in table and "torch device: cpu" in table


def test_cli_writes_table_and_json(tmp_path, capsys) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(
        "env: {id: ALE/Pong-v5}\n"
        "agent: {encoder: cnn, hidden_size: 32}\n"
        "ppo: {num_steps: 16, bptt_len: 16, num_minibatches: 1}\n"
    )
    out = tmp_path / "bench.json"
    argv = ["bench", "atari", "--num-envs", "2", "--seconds", "0.5", "--device", "cpu"]
    assert main([*argv, "--config", str(config), "--json", str(out)]) == 0
    assert "training / raw env:" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["num_envs"] == 2 and data["rlstm"]["sps"] > 0 and data["raw_env"]["sps"] > 0


def test_compare_sb3_without_sb3_is_one_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # `import sb3_contrib` fails
    argv = ["bench", "atari", "--num-envs", "2", "--seconds", "1", "--compare", "sb3"]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("rlstm: error: --compare sb3 needs sb3-contrib")
    assert 'pip install -e ".[bench]"' in err


def test_compare_sb3_row_and_speedup() -> None:
    pytest.importorskip("sb3_contrib")
    pytest.importorskip("cv2")
    result = atari_bench.bench(
        "ALE/Pong-v5",
        num_envs=2,
        seconds=0.5,
        device="cpu",
        compare="sb3",
        sb3_vec="dummy",  # no worker processes to start: seconds, not tens of seconds
        overrides=SMALL,
        log=lambda _: None,
    )
    sb3 = result["sb3"]
    assert sb3["steps"] == sb3["iterations"] * 2 * 16 and sb3["iterations"] >= 1
    for value in (sb3["sps"], result["sb3_over_raw"], result["speedup_vs_sb3"]):
        assert math.isfinite(value) and value > 0
    table = atari_bench.format_table(result)
    assert "| sb3-contrib RecurrentPPO (DummyVecEnv" in table
    assert f"rlstm / sb3-contrib: {result['speedup_vs_sb3']:.2f}x" in table


def test_cli_passes_sb3_envs_to_the_bench(monkeypatch, capsys) -> None:
    """``--sb3-envs`` sets sb3-contrib's own env count (its zoo runs Atari PPO with 8)."""
    seen = {}

    def fake_bench(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        raise atari_bench.BenchError("stop here")

    monkeypatch.setattr(atari_bench, "bench", fake_bench)
    assert main(["bench", "atari", "--compare", "sb3", "--sb3-envs", "8"]) == 2
    assert seen["sb3_envs"] == 8 and seen["sb3_vec"] == "subproc"
    assert "stop here" in capsys.readouterr().err


def test_bench_needs_an_atari_id_and_takes_its_sticky_actions() -> None:
    with pytest.raises(atari_bench.BenchError, match="'CartPole-v1' is not an Atari id"):
        atari_bench.bench_config(None, "CartPole-v1", 2, 1.0, "cpu", 1, None)
    # the default config (configs/atari/pong.yaml) states the NoFrameskip protocol: no sticky
    # actions; another id brings its own, unless --set says otherwise
    assert (
        atari_bench.bench_config(None, None, 2, 1.0, "cpu", 1, None).env.repeat_action_probability
        == 0.0
    )
    v5 = atari_bench.bench_config(None, "ALE/Pong-v5", 2, 1.0, "cpu", 1, None)
    assert v5.env.repeat_action_probability == 0.25
    stated = atari_bench.bench_config(
        None, "ALE/Pong-v5", 2, 1.0, "cpu", 1, None, ["env.repeat_action_probability=0.0"]
    )
    assert stated.env.repeat_action_probability == 0.0
