"""Reliability: exact resume, crash-safe checkpoints, signals, safe loading, NaN guards,
bad input (fuzzed), no clobbering. Faults injected here are summarised in
benchmarks/RESULTS.md under "Reliability"."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlstm.trainer
from rlstm import checkpoint
from rlstm.cli import main
from rlstm.config import ConfigError, build_config
from rlstm.trainer import make_run_dir

ROOT = Path(__file__).resolve().parents[1]
SMALL = [*TINY_RUN, "ppo.total_timesteps=768", "run.torch_threads=1"]


def _returns(run: Path) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("charts/episodic_return")]


def _interrupt_at_update(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """Deliver SIGTERM to this process as its k-th PPO update starts (a real signal)."""
    real_update = rlstm.trainer.update_steps
    calls = {"n": 0}

    def update(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == k:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(rlstm.trainer, "update_steps", update)


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=full"]) == 0

    _interrupt_at_update(monkeypatch, 2)
    code = main(["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=cut"])
    err = capsys.readouterr().err
    assert code == 143
    assert "stopped by SIGTERM after iteration 2" in err
    assert f"rlstm train --resume {tmp_path / 'cut'}" in err
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "cut")["iteration"] == 2
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0

    full, cut = checkpoint.load(tmp_path / "full"), checkpoint.load(tmp_path / "cut")
    assert cut["iteration"] == full["iteration"] == 6
    for key, value in full["agent"].items():
        assert torch.equal(value, cut["agent"][key]), key
    for (_, a), (_, b) in zip(
        full["optimizer"]["state"].items(), cut["optimizer"]["state"].items()
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )
    assert full["optimizer"]["param_groups"][0]["lr"] == cut["optimizer"]["param_groups"][0]["lr"]
    assert torch.equal(full["env"]["generator"], cut["env"]["generator"])
    assert torch.equal(full["next_state"], cut["next_state"])
    assert _returns(tmp_path / "full") == _returns(tmp_path / "cut")


_SAVER = """
import sys, torch
from rlstm.checkpoint import save_atomic
path = sys.argv[1]
i = 0
while True:
    i += 1
    save_atomic({"agent": {"w": torch.full((4_000_000,), float(i))}, "config": {}, "i": i}, path)
    print(i, flush=True)
"""


def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    kills = 0
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one complete save exists
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        data = checkpoint.load(path)
        w = data["agent"]["w"]
        assert torch.all(w == w[0]) and data["i"] >= 1  # a whole checkpoint, never a torn one
    assert kills == 5


def test_a_checkpoint_gets_the_permissions_of_the_run_s_other_files(tmp_path: Path) -> None:
    """Colleagues who can read a run's curves can also evaluate or resume it."""
    checkpoint.save_atomic({"agent": {}, "config": {}}, tmp_path / "checkpoint.pt")
    (tmp_path / "summary.json").write_text("{}")  # as the run's other files are written
    mode = (tmp_path / "checkpoint.pt").stat().st_mode & 0o777
    assert mode == (tmp_path / "summary.json").stat().st_mode & 0o777


def test_ctrl_c_and_sigterm_save_and_exit_nonzero_with_resume_hint(tmp_path: Path) -> None:
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        name = sig.name.lower()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rlstm",
                "train",
                *SMALL,
                "ppo.total_timesteps=10000000",
                f"run.out_dir={tmp_path}",
                f"run.run_name={name}",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until training is under way
            if line.startswith("iter 2/"):
                break
        proc.send_signal(sig)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == code
        last = err.strip().splitlines()[-1]
        assert f"stopped by {sig.name}" in last and "rlstm train --resume" in last
        assert f"rlstm: {sig.name}: stopping after this iteration" in err  # said at once
        assert checkpoint.load(tmp_path / name)["iteration"] >= 2


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path: Path) -> None:
    """Mid-iteration (2,048 envs: ~4 s per iteration on a 2-core CPU), without a traceback,
    naming the checkpoint that survives."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlstm",
            "train",
            "env.num_envs=2048",
            "ppo.total_timesteps=100000000",
            "run.progress=false",
            "run.checkpoint_every=1",
            f"run.out_dir={tmp_path}",
            "run.run_name=twice",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # one iteration done: a checkpoint exists
        if line.startswith("iter 1/"):
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rlstm: stopped at once by a second Ctrl-C; the last checkpoint")
    assert "rlstm train --resume" in last
    assert checkpoint.load(tmp_path / "twice")["iteration"] >= 1


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {_Exploit.marker}",))

    marker = ""


def test_crafted_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    bad = tmp_path / "checkpoint.pt"
    torch.save({"agent": {}, "config": {}, "payload": _Exploit()}, bad)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to load"):
        checkpoint.load(bad)
    assert not marker.exists()
    pickled = tmp_path / "plain.pt"
    pickled.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(pickled)
    assert not marker.exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(junk)


def test_checkpoint_from_another_config_is_refused_naming_the_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "train",
                *SMALL,
                "ppo.total_timesteps=128",
                f"run.out_dir={tmp_path}",
                "run.run_name=a",
            ]
        )
        == 0
    )
    run = tmp_path / "a"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "agent.hidden_size=32"]) == 2
    assert "agent.hidden_size=16, this run has agent.hidden_size=32" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "agent.core=gru"]) == 2
    assert "agent.core='lstm', this run has agent.core='gru'" in capsys.readouterr().err
    # the embedded default adds the first-step flag: (5,) observations; without it (4,)
    assert main(["train", "--resume", str(run), "env.first_flag=false"]) == 2
    assert "checkpoint obs shape (5,) != env obs shape (4,)" in capsys.readouterr().err


def test_nonfinite_loss_never_reaches_weights_and_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import rlstm.ppo

    assert (
        main(
            [
                "train",
                *SMALL,
                "ppo.total_timesteps=256",
                "run.checkpoint_every=1",
                f"run.out_dir={tmp_path}",
                "run.run_name=n",
            ]
        )
        == 0
    )
    good = checkpoint.load(tmp_path / "n")
    real = rlstm.ppo.minibatch_loss

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(rlstm.ppo, "minibatch_loss", poisoned)
    code = main(
        [
            "train",
            "--resume",
            str(tmp_path / "n"),
            "ppo.total_timesteps=768",
            "ppo.max_nonfinite_updates=6",
        ]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "NaN/Inf" in err and "last good checkpoint" in err
    after = checkpoint.load(tmp_path / "n")  # loadable; the skipped updates changed nothing
    for key, value in good["agent"].items():
        assert torch.equal(value, after["agent"][key])
    acc = EventAccumulator(str(tmp_path / "n"))
    acc.Reload()
    assert max(e.value for e in acc.Scalars("losses/skipped_updates")) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env.id=ALE/NoSuchGame-v5"], "NoSuchGame"),
        (["env.id=NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["ppo.gamma=2"], "ppo.gamma=2.0 must lie in [0, 1]"),
        (["ppo.num_steps=abc"], "expected an integer"),
    ],
)
def test_bad_input_gets_one_line_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["train", *SMALL, f"run.out_dir={tmp_path}", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_unwritable_run_directory_and_malformed_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", *SMALL, f"run.out_dir={blocker / 'runs'}"]) == 2
    assert "cannot be created" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: {num_steps: [\n")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_concurrent_runs_with_the_same_name_get_distinct_dirs(tmp_path: Path) -> None:
    made: list[Path] = []
    threads = [
        threading.Thread(target=lambda: made.append(make_run_dir(tmp_path, "same")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8


KEYS = [
    "env.num_envs",
    "ppo.bptt_len",
    "ppo.gamma",
    "ppo.learning_rate",
    "agent.core",
    "ppo.target_kl",
    "env.kwargs",
    "run.device",
    "ppo.anneal_lr",
    "ppo.nope",
    "x.y",
]
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4))
def test_fuzz_config_loader_accepts_or_names_the_problem(pairs: list[tuple[str, object]]) -> None:
    overrides = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in pairs]
    try:
        build_config(overrides=overrides)
    except ConfigError as exc:
        assert str(exc)  # a message, never another exception type


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_yaml_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("y") / "c.yaml"
    path.write_text(text)
    try:
        build_config(path)
    except ConfigError:
        pass


ACTION_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.int8, torch.float32, torch.bool]


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["RepeatFirstEasy", "CountRecallEasy", "TMaze", "BattleshipEasy"]),
    shape=st.lists(st.integers(0, 5), max_size=2),
    dtype=st.sampled_from(ACTION_DTYPES),
    low=st.integers(-300, 300),
    span=st.integers(0, 400),
)
def test_fuzz_env_step_input(
    name: str, shape: list[int], dtype: torch.dtype, low: int, span: int
) -> None:
    import envs.memory

    env = envs.memory.make(name, num_envs=4, seed=0)
    env.reset()
    g = torch.Generator().manual_seed(abs(low))
    values = torch.randint(0, span + 1, tuple(shape), generator=g) + low
    try:
        actions = values.to(dtype)
    except RuntimeError:
        return
    valid = (
        tuple(shape) == (4,)
        and not dtype.is_floating_point
        and dtype != torch.bool
        and bool(((actions.long() >= 0) & (actions.long() < env.num_actions)).all())
    )
    if valid:
        obs, reward, terminated, truncated, _ = env.step(actions)
        assert obs.shape == (4, *env.obs_shape) and torch.isfinite(reward).all()
    else:
        with pytest.raises(ValueError):
            env.step(actions)


def test_a_signal_in_the_final_iteration_completes_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing is left to resume: the run ends normally, with its summary."""
    _interrupt_at_update(monkeypatch, 6)  # SMALL has 6 iterations
    assert main(["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=s"]) == 0
    assert "stopped by" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["iterations"] == 6 and summary["steps"] == 768


def test_resuming_a_finished_run_changes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "f"
    assert main(["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=f"]) == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "already ran its 6 iterations (768 steps)" in err
    assert "rlstm: training" not in err  # it does not claim to train
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # no new event file either


def test_time_limit_counts_this_launch_not_the_runs_total(tmp_path: Path) -> None:
    """A run that already trained for days gets ``run.time_limit`` afresh on resume."""
    run = tmp_path / "t"
    args = [*SMALL, f"run.out_dir={tmp_path}", "run.run_name=t", "ppo.total_timesteps=256"]
    assert main(["train", *args]) == 0
    data = checkpoint.load(run)
    data["elapsed"] = 3 * 86400.0
    checkpoint.save_atomic(data, run / checkpoint.LATEST)
    resume = ["train", "--resume", str(run), "ppo.total_timesteps=768", "run.time_limit=600"]
    assert main(resume) == 0
    assert checkpoint.load(run)["iteration"] == 6  # all four left, not one per launch
