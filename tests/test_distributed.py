"""Data-parallel training (rlstm.distributed): 2 CPU processes on gloo, localhost.

Workers are plain subprocesses given torchrun's variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); each runs one of the ``_worker_*``
functions below, writes what it saw to ``out/``, and the test compares in the parent.
The last test launches the real CLI under ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_RUN, random_rollout
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlstm import checkpoint, distributed
from rlstm.buffer import RolloutBuffer
from rlstm.config import PPOConfig, build_config
from rlstm.ppo import update

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORLD = 2
# env.num_envs=8 is the total: 4 envs on each of the 2 ranks
SMALL = [*TINY_RUN, "run.torch_threads=1", "run.device=cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(worker: str, out: Path, timeout: float = 120.0) -> None:
    """Run ``worker(out)`` in ``WORLD`` processes joined in one gloo group; all must exit 0."""
    for attempt in range(3):
        codes, logs = _run_ranks(worker, out, timeout)
        # the free port can be taken by another process before rank 0 binds it: try another
        if any(codes) and any("EADDRINUSE" in log for log in logs) and attempt < 2:
            continue
        break
    for r, (code, log) in enumerate(zip(codes, logs)):
        assert code == 0, f"rank {r} exited with {code}:\n{log}"


def _run_ranks(worker: str, out: Path, timeout: float) -> tuple[list[int], list[str]]:
    port = _free_port()
    procs, log_paths = [], []
    for r in range(WORLD):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": str(WORLD),
            "LOCAL_WORLD_SIZE": str(WORLD),
            "OMP_NUM_THREADS": "1",
        }
        code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_distributed as t; "
        code += f"t.{worker}({str(out)!r})"
        log_paths.append(out / f"{worker}.rank{r}.log")
        with log_paths[-1].open("w") as log:  # a file, not a pipe: a chatty rank never blocks
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=log, stderr=log
                )
            )
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):  # a failed rank would leave the other waiting
        if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.05)
    codes = [p.wait() for p in procs]
    return codes, [path.read_text() for path in log_paths]


# -- 1. the update: 2 ranks on halves == 1 process on the union ---------------------------
UPDATE_CFG = dict(
    num_steps=16,
    bptt_len=8,
    num_minibatches=1,  # one minibatch of all chunks: both setups see the same data per step
    update_epochs=2,
    learning_rate=1e-2,
    max_grad_norm=0.5,
)


def _envs(buf: RolloutBuffer, lo: int, hi: int) -> RolloutBuffer:
    """Envs ``lo:hi`` of ``buf`` as a buffer of their own (one rank's share)."""
    part = RolloutBuffer.__new__(RolloutBuffer)
    part.num_steps, part.num_envs = buf.num_steps, hi - lo
    for name, value in vars(buf).items():
        if isinstance(value, torch.Tensor):
            dim = 2 if name == "states" else 1  # states (T, S, B, H); the rest (T, B, ...)
            setattr(part, name, value.narrow(dim, lo, hi - lo).clone())
    return part


def _update(agent: torch.nn.Module, buf: RolloutBuffer) -> dict[str, float]:
    cfg = PPOConfig(**UPDATE_CFG)  # type: ignore[arg-type]
    params = [p for p in agent.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_eps)
    return update(agent, params, optimizer, buf, cfg, torch.Generator().manual_seed(2))


def _worker_update(out: str) -> None:
    torch.set_num_threads(1)
    distributed.init()
    r, half = distributed.rank(), 2
    agent, union = random_rollout(WORLD * half)
    stats = _update(agent, _envs(union, r * half, (r + 1) * half))
    # Chan's combine with unequal counts: rank r holds 3 + 4r values
    values = torch.arange(100.0 * r, 100.0 * r + 3 + 4 * r) ** 1.5
    mean, var = distributed.mean_var(values)
    errors = []
    for args in ((5, 2, 1), (8, 2, 3), (6, 1, 1, 2)):
        try:
            distributed.local_num_envs(*args)
        except ValueError as exc:
            errors.append(str(exc))
    torch.save(
        {
            "agent": agent.state_dict(),
            "stats": stats,
            "mean_var": (float(mean), float(var)),
            "errors": errors,
            "local_envs": distributed.local_num_envs(8, 2, 4),
        },
        Path(out) / f"rank{r}.pt",
    )
    distributed.destroy()


def test_two_rank_update_equals_one_process_on_the_union(tmp_path: Path) -> None:
    _launch("_worker_update", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    agent, union = random_rollout(4)
    initial = agent.actor.weight.clone()
    expected = _update(agent, union)
    for key, value in agent.state_dict().items():
        assert torch.equal(ranks[0]["agent"][key], ranks[1]["agent"][key]), key
        torch.testing.assert_close(ranks[0]["agent"][key], value, rtol=1e-4, atol=1e-6)
    assert not torch.equal(agent.actor.weight, initial)  # it did learn
    for key, value in expected.items():
        assert ranks[0]["stats"][key] == ranks[1]["stats"][key], key
        assert ranks[0]["stats"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # control: the update on rank 0's half alone is not what the ranks computed
    alone, whole = random_rollout(4)
    _update(alone, _envs(whole, 0, 2))
    assert not torch.allclose(alone.actor.weight, ranks[0]["agent"]["actor.weight"], atol=1e-6)

    values = torch.cat([torch.arange(0.0, 3.0), torch.arange(100.0, 107.0)]) ** 1.5
    for r in range(WORLD):
        mean, var = ranks[r]["mean_var"]
        assert mean == pytest.approx(float(values.mean()), rel=1e-6)
        assert var == pytest.approx(float(values.var()), rel=1e-5)
        assert ranks[r]["local_envs"] == 4
        assert "env.num_envs=5 is the total over all ranks" in ranks[r]["errors"][0]
        assert "ppo.num_minibatches=3 does not divide each rank's 8 chunks" in ranks[r]["errors"][1]
        assert "env.num_groups=2 does not divide each rank's 3 envs" in ranks[r]["errors"][2]


# -- 2. training: identical weights on every rank, global episodes, exact resume ----------
def _worker_train(out: str) -> None:
    import rlstm.trainer
    from rlstm.cli import make_agent, make_env, setup_torch
    from rlstm.trainer import Trainer, TrainingStopped, make_run_dir

    distributed.init()
    r = distributed.rank()
    cfg = build_config(overrides=[*SMALL, "ppo.total_timesteps=768", "run.checkpoint_every=0"])
    p = cfg.ppo
    num_envs = distributed.local_num_envs(cfg.env.num_envs, p.num_chunks_per_env, p.num_minibatches)
    cpu = torch.device("cpu")

    def trainer(name: str, resume: dict[str, Any] | None = None) -> Trainer:
        setup_torch(cfg)
        if r == 1:
            torch.manual_seed(123)  # a different init: the start broadcast must undo it
        env = make_env(cfg, cpu, num_envs, distributed.rank_seed(cfg.run.seed))
        agent = make_agent(cfg, env)
        if resume is None:
            run_dir = distributed.on_rank0(lambda: make_run_dir(out, name))
        else:
            run_dir = Path(out) / name
        return Trainer(cfg, env, agent, run_dir, cpu, resume_from=resume)

    def record(t: Trainer, name: str) -> None:
        torch.save(
            {
                "agent": t.agent.state_dict(),
                "exp_avg": [s["exp_avg"] for s in t.optimizer.state.values()],
                "recent_returns": t.recent_returns,
                "next_obs": t.next_obs,
                "iteration": t.iteration,
            },
            Path(out) / f"{name}_rank{r}.pt",
        )

    full = trainer("full")
    full.train()
    record(full, "full")

    # only rank 1 sees a SIGTERM, as its 2nd update starts: both ranks must stop after it
    cut = trainer("cut")
    real_update, calls = rlstm.trainer.update_steps, {"n": 0}

    def update_and_signal(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2 and r == 1:
            cut._stop_signal = "SIGTERM"
        return real_update(*args, **kwargs)

    rlstm.trainer.update_steps = update_and_signal  # type: ignore[assignment]
    try:
        cut.train()
        raise AssertionError("training was not stopped")
    except TrainingStopped as exc:
        assert exc.exit_code == 143 and "stopped by SIGTERM after iteration 2" in str(exc), exc
        assert "torchrun [same options] -m rlstm train --resume" in str(exc), exc
    finally:
        rlstm.trainer.update_steps = real_update
    record(cut, "stopped")
    if r == 0:  # keep the stop's checkpoint; the resumed run overwrites it
        shutil.copy(Path(out) / "cut" / checkpoint.LATEST, Path(out) / "stopped.pt")
    data = distributed.on_rank0(lambda: checkpoint.load(Path(out) / "cut"))
    resumed = trainer("cut", resume=data)
    resumed.train()
    record(resumed, "resumed")
    distributed.destroy()


def _returns(run: Path) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("charts/episodic_return")]


def test_ranks_stay_identical_log_globally_and_resume_exactly(tmp_path: Path) -> None:
    _launch("_worker_train", tmp_path)
    load = lambda name, r: torch.load(tmp_path / f"{name}_rank{r}.pt")  # noqa: E731
    full = [load("full", r) for r in range(WORLD)]
    # the same weights and optimizer state on every rank after 6 iterations of updates
    for key, value in full[0]["agent"].items():
        assert torch.equal(value, full[1]["agent"][key]), key
    for a, b in zip(full[0]["exp_avg"], full[1]["exp_avg"]):
        assert torch.equal(a, b)
    # each rank its own envs and seed stream; the episode statistics are global
    assert not torch.equal(full[0]["next_obs"], full[1]["next_obs"])
    assert full[0]["recent_returns"] == full[1]["recent_returns"]
    returns = _returns(tmp_path / "full")
    # 4 envs per rank, episodes of 51 steps: each rank ends 4, the charts show all 8 at the
    # global step 51 x 8 envs
    assert len(full[0]["recent_returns"]) == 8
    assert [s for s, _ in returns] == [51 * 8] * 8
    # rank 0 alone wrote: one event file, the config, the summary; no stray directories
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cut", "full"]
    events = [p for p in (tmp_path / "full").iterdir() if p.name.startswith("events.")]
    assert len(events) == 1
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["steps"] == 768

    # the signal one rank saw stopped both at iteration 2; the checkpoint holds both ranks
    assert [load("stopped", r)["iteration"] for r in range(WORLD)] == [2, 2]
    saved = checkpoint.load(tmp_path / "stopped.pt")
    assert saved["world_size"] == WORLD and len(saved["ranks"]) == WORLD
    assert saved["iteration"] == 2 and saved["global_step"] == 256
    for r in range(WORLD):  # each rank's own envs, gathered into rank 0's file
        assert torch.equal(saved["ranks"][r]["next_obs"], load("stopped", r)["next_obs"])
    assert torch.equal(saved["next_obs"], saved["ranks"][0]["next_obs"])
    # resumed on both ranks, the run ends bit for bit where the uninterrupted one did
    for r in range(WORLD):
        resumed = load("resumed", r)
        assert resumed["iteration"] == 6
        for key, value in full[r]["agent"].items():
            assert torch.equal(value, resumed["agent"][key]), key
        assert torch.equal(full[r]["next_obs"], resumed["next_obs"])
        assert full[r]["recent_returns"] == resumed["recent_returns"]
    assert _returns(tmp_path / "full") == _returns(tmp_path / "cut")


# -- 3. the CLI under torchrun: train, stop, resume -----------------------------------------
def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={WORLD}", "-m", "rlstm", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_torchrun_cli_trains_checkpoints_and_resumes(tmp_path: Path) -> None:
    first = _torchrun(
        *SMALL, "ppo.total_timesteps=256", f"run.out_dir={tmp_path}", "run.run_name=t"
    )
    assert first.returncode == 0, first.stderr
    assert "x 2 ranks (4 envs each)" in first.stderr
    assert first.stdout.count('"steps": 256') == 1  # rank 0 alone prints the summary
    run = tmp_path / "t"
    before = checkpoint.load(run)
    assert before["world_size"] == 2 and before["global_step"] == 256
    assert [rank["next_obs"].shape[0] for rank in before["ranks"]] == [4, 4]

    second = _torchrun("--resume", str(run), "ppo.total_timesteps=512")
    assert second.returncode == 0, second.stderr
    after = checkpoint.load(run)
    assert after["global_step"] == 512 and after["iteration"] == 4
    assert not torch.equal(before["agent"]["actor.weight"], after["agent"]["actor.weight"])
    assert json.loads((run / "summary.json").read_text())["steps"] == 512
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [e.step for e in acc.Scalars("charts/SPS")] == [128, 256, 384, 512]
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
