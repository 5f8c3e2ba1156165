"""CUDA code paths (``pytest -m gpu`` on a machine with a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import envs.memory as memory
from rlstm.cli import main
from rlstm.config import PPOConfig
from rlstm.core import RecurrentCore, segment_sizes
from rlstm.ppo import minibatch_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cudnn_sequence_equals_step_loop(kind: str) -> None:
    core = RecurrentCore(kind, 16, 32, 2).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(32, 64, 16, device="cuda", generator=g, requires_grad=True)
    state = torch.randn(core.state_slots, 64, 32, device="cuda", generator=g)
    starts = torch.rand(32, 64, device="cuda", generator=g) < 0.1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out, final = core.sequence(x, state, starts)
    ref, ref_final = core.sequence_reference(x, state, starts)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(final, ref_final, rtol=1e-4, atol=1e-5)
    (gx,) = torch.autograd.grad(out.sum(), x)
    (rx,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", memory.task_names())
def test_memory_step_never_syncs_with_host(name: str) -> None:
    env = memory.make(name, num_envs=256, device="cuda", seed=0, check_range=False)
    env.reset()
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(30):
            env.step(torch.randint(0, env.num_actions, (256,), device="cuda", generator=g))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _cuda_rollout():  # type: ignore[no-untyped-def]
    from conftest import random_rollout

    agent, buf = random_rollout(num_envs=16)
    agent.cuda()
    for name, value in vars(buf).items():
        if isinstance(value, torch.Tensor):
            setattr(buf, name, value.cuda())
    return agent, buf


def test_update_minibatch_runs_without_a_host_sync() -> None:
    """With sizes from the epoch's one sync and fused Adam, a minibatch (loss, backward,
    clipping, the skip decision and the step) queues on the GPU without waiting for it."""
    agent, buf = _cuda_rollout()
    chunks = buf.chunks(8)
    groups = torch.arange(chunks.starts.shape[1], device="cuda").view(2, -1)
    (sizes, _) = segment_sizes(chunks.starts, groups)
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    mb = type(chunks)(*(field[:, groups[0]] for field in chunks))
    before = [p.detach().clone() for p in params]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ok, _ = minibatch_step(agent, params, optimizer, mb, PPOConfig(), sizes)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert bool(ok) and any(not torch.equal(a, b) for a, b in zip(before, params))


def test_update_syncs_per_epoch_not_per_minibatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole update, with one NaN minibatch skipped on the device: as many host syncs
    with 8 minibatches per epoch as with 2."""
    import warnings

    import rlstm.ppo

    real = rlstm.ppo.minibatch_loss
    calls: list[int] = []

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, stats = real(*args, **kwargs)
        calls.append(0)
        return (loss * float("nan"), stats) if len(calls) == 2 else (loss, stats)

    monkeypatch.setattr(rlstm.ppo, "minibatch_loss", poisoned)
    counts, skipped = [], []
    for minibatches in (2, 8):
        agent, buf = _cuda_rollout()
        params = list(agent.parameters())
        optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
        cfg = PPOConfig(num_steps=16, bptt_len=8, num_minibatches=minibatches, update_epochs=2)
        calls.clear()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                stats = rlstm.ppo.update(agent, params, optimizer, buf, cfg, torch.Generator())
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
        skipped.append(stats["skipped_updates"])
    assert skipped == [1.0, 1.0]
    assert counts[0] == counts[1], counts


def test_graphed_update_equals_eager() -> None:
    """Updates replayed from CUDA graphs (capturable fused Adam, tensor learning rate)
    leave the same weights and statistics as eager updates, with new rollout data and a new
    learning rate between updates reaching the graphs."""
    import copy

    from rlstm.ppo import GraphedMinibatchStep, set_learning_rate, update

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    agent, buf = _cuda_rollout()
    twin = copy.deepcopy(agent)
    twin.core.rnn.flatten_parameters()  # deepcopy leaves cuDNN's weights uncompacted
    cfg = PPOConfig(num_steps=16, bptt_len=8, num_minibatches=4, update_epochs=4)
    eager_params, graph_params = list(agent.parameters()), list(twin.parameters())
    eager_opt = torch.optim.Adam(eager_params, lr=1e-3, fused=True)
    graph_opt = torch.optim.Adam(
        graph_params, lr=torch.tensor(1e-3, device="cuda"), fused=True, capturable=True
    )
    graphed = GraphedMinibatchStep(twin, graph_params, graph_opt, cfg)
    for i, lr in enumerate((1e-3, 5e-4, 2e-4)):
        buf.obs += 0.5 * i  # new data: load() must copy it into the graphs' static chunks
        buf.advantages = buf.advantages.flip(0) * (1 + i)
        set_learning_rate(eager_opt, lr)
        set_learning_rate(graph_opt, lr)
        want = update(agent, eager_params, eager_opt, buf, cfg, torch.Generator().manual_seed(0))
        got = update(
            twin, graph_params, graph_opt, buf, cfg, torch.Generator().manual_seed(0), graphed
        )
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-5), key
    assert not graphed.failed and graphed.graphs, "no minibatch was replayed from a graph"
    for a, b in zip(eager_params, graph_params, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    moved = [
        not torch.equal(a, b) for a, b in zip(_cuda_rollout()[0].parameters(), agent.parameters())
    ]
    assert any(moved)


def test_graphed_update_skips_nonfinite_steps_on_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NaN loss inside a captured step reaches Adam as ``found_inf``: replayed steps leave
    the weights as they were and count as skipped."""
    import rlstm.ppo
    from rlstm.ppo import GraphedMinibatchStep, update

    real = rlstm.ppo.minibatch_loss

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(rlstm.ppo, "minibatch_loss", poisoned)
    agent, buf = _cuda_rollout()
    params = list(agent.parameters())
    opt = torch.optim.Adam(
        params, lr=torch.tensor(1e-3, device="cuda"), fused=True, capturable=True
    )
    cfg = PPOConfig(num_steps=16, bptt_len=8, num_minibatches=4, update_epochs=4)
    graphed = GraphedMinibatchStep(agent, params, opt, cfg)
    before = [p.detach().clone() for p in params]
    stats = update(agent, params, opt, buf, cfg, torch.Generator().manual_seed(0), graphed)
    assert graphed.graphs and not graphed.failed
    assert stats["skipped_updates"] == 16 and stats["applied_updates"] == 0
    for a, b in zip(before, params, strict=True):
        assert torch.equal(a, b)


def test_train_and_eval_on_cuda(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "train",
                "env.id=RepeatPreviousEasy",
                "env.num_envs=256",
                "ppo.num_steps=32",
                "ppo.bptt_len=16",
                "ppo.total_timesteps=32768",
                "ppo.state_refresh=epoch",
                "run.device=cuda",
                "run.progress=false",
                f"run.out_dir={tmp_path}",
                "run.run_name=g",
            ]
        )
    assert not [w for w in caught if "could not be captured" in str(w.message)]
    assert code == 0
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["steps"] == 32768
    assert main(["eval", str(tmp_path / "g"), "--episodes", "64", "--device", "cuda"]) == 0
    # 2,048-step minibatches: the update ran from CUDA graphs; its checkpoint keeps plain
    # learning rates and resumes into another graphed run.
    from rlstm import checkpoint

    saved = checkpoint.load(tmp_path / "g")
    assert all(isinstance(g["lr"], float) for g in saved["optimizer"]["param_groups"])
    assert main(["train", "--resume", str(tmp_path / "g"), "ppo.total_timesteps=65536"]) == 0
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["steps"] == 65536


def test_overlapped_graphed_update_trains_on_cuda(tmp_path: Path) -> None:
    """``ppo.overlap_update`` with CUDA-graph minibatch steps interleaved between env steps:
    the run completes, its steps ran inside the rollouts and from graphs, losses finite."""
    from rlstm.cli import make_agent, make_env, setup_torch
    from rlstm.config import build_config
    from rlstm.trainer import Trainer

    cfg = build_config(
        None,
        [
            "env.id=RepeatPreviousEasy",
            "env.num_envs=256",
            "ppo.num_steps=32",
            "ppo.bptt_len=16",
            "ppo.total_timesteps=65536",
            "ppo.overlap_update=true",
            "run.device=cuda",
            "run.progress=false",
        ],
    )
    device = setup_torch(cfg)
    env = make_env(cfg, device)
    trainer = Trainer(cfg, env, make_agent(cfg, env), tmp_path, device)
    summary = trainer.train()
    assert summary["steps"] == 65536
    assert trainer.interleaved[0] > 0  # the last rollout ran steps of the update before it
    assert trainer.graphed is not None and trainer.graphed.graphs and not trainer.graphed.failed
    assert all(torch.isfinite(p).all() for p in trainer.params)


@pytest.mark.parametrize(("encoder", "bf16"), [("mlp", False), ("cnn", False), ("cnn", True)])
def test_captured_policy_step_equals_eager(encoder: str, bf16: bool) -> None:
    """The CUDA-graph policy step returns what the eager step returns, step after step with
    the state carried and random starts, and still after the weights change in place (with
    the CNN under bf16 autocast too, as configs/atari/*.yaml run it)."""
    from agents import RecurrentAgent
    from rlstm.acting import PolicyStep
    from rlstm.config import AgentConfig

    torch.manual_seed(0)
    if encoder == "cnn":
        shape, dtype = (84, 84), torch.uint8
        obs_seq = torch.randint(0, 256, (6, 16, *shape), dtype=dtype, device="cuda")
    else:
        shape, dtype = (5,), torch.float32
        obs_seq = torch.randn(6, 16, *shape, device="cuda")
    config = AgentConfig(encoder=encoder, hidden_size=32, bf16=bf16)
    agent = RecurrentAgent(shape, dtype, 4, config).cuda()
    captured = PolicyStep(agent, capture=True)
    state = agent.initial_state(16, "cuda")
    starts = torch.rand(6, 16, device="cuda") < 0.3
    opt = torch.optim.SGD(agent.parameters(), lr=0.1)
    for t in range(6):
        with torch.no_grad():
            want = agent.step(obs_seq[t], state, starts[t])
        got = captured(obs_seq[t], state, starts[t])
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        state = got[2]
        if t == 2:  # an optimizer step moves the weights in place: no recapture needed
            loss = sum(p.square().sum() for p in agent.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert not captured.failed and len(captured.graphs) == 1


def test_bf16_cnn_is_close_to_fp32() -> None:
    from agents import RecurrentAgent
    from rlstm.config import AgentConfig

    torch.manual_seed(0)
    fp32 = RecurrentAgent((84, 84), torch.uint8, 6, AgentConfig(encoder="cnn")).cuda()
    bf16 = RecurrentAgent((84, 84), torch.uint8, 6, AgentConfig(encoder="cnn", bf16=True)).cuda()
    bf16.load_state_dict(fp32.state_dict())
    obs = torch.randint(0, 256, (8, 84, 84), dtype=torch.uint8, device="cuda")
    a, b = fp32.encode(obs), bf16.encode(obs)
    assert b.dtype == torch.float32
    assert not torch.equal(a, b)  # bf16 arithmetic did run
    torch.testing.assert_close(b, a, rtol=0.05, atol=0.05)


def test_resume_into_a_graphed_run_sets_the_optimizer_up_for_capture(tmp_path: Path) -> None:
    """A resumed run's Adam reads its rate from device memory (a CUDA tensor), is fused and
    capturable, takes the resume's ppo.adam_eps before any capture, and then trains from
    graphs."""
    from rlstm import checkpoint
    from rlstm.cli import make_agent, make_env, setup_torch
    from rlstm.config import build_config
    from rlstm.trainer import Trainer

    args = [
        "env.id=RepeatPreviousEasy",
        "env.num_envs=256",
        "ppo.num_steps=32",
        "ppo.bptt_len=16",
        "run.device=cuda",
        "run.progress=false",
    ]
    run = tmp_path / "r"
    assert (
        main(
            [
                "train",
                *args,
                "ppo.total_timesteps=16384",
                f"run.out_dir={tmp_path}",
                "run.run_name=r",
            ]
        )
        == 0
    )
    data = checkpoint.load(run)
    cfg = build_config(
        None, ["ppo.total_timesteps=32768", "ppo.adam_eps=1e-8"], base=data["config"]
    )
    device = setup_torch(cfg)
    env = make_env(cfg, device)
    trainer = Trainer(cfg, env, make_agent(cfg, env), run, device, resume_from=data)
    groups = trainer.optimizer.param_groups
    assert all(isinstance(g["lr"], torch.Tensor) and g["lr"].is_cuda for g in groups)
    assert all(g["fused"] and g["capturable"] and g["eps"] == 1e-8 for g in groups)
    assert all(s["step"].is_cuda for s in trainer.optimizer.state.values())
    assert trainer.train()["steps"] == 32768
    assert trainer.graphed is not None and trainer.graphed.graphs and not trainer.graphed.failed


def test_the_atari_configs_path_runs_from_graphs(tmp_path: Path) -> None:
    """configs/atari/pong.yaml at a small size: two env groups, the overlapped update, the
    CNN under bf16 autocast, the captured policy step and graphed minibatch steps; no
    capture falls back to eager."""
    import warnings

    pytest.importorskip("ale_py")
    config = Path(__file__).resolve().parents[1] / "configs" / "atari" / "pong.yaml"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "train",
                str(config),
                "env.num_envs=16",
                "ppo.num_steps=32",
                "ppo.bptt_len=16",
                "ppo.num_minibatches=2",
                "ppo.total_timesteps=2048",
                "agent.hidden_size=64",
                "run.device=cuda",
                "run.progress=false",
                f"run.out_dir={tmp_path}",
                "run.run_name=a",
            ]
        )
    assert code == 0
    assert not [w for w in caught if "could not be captured" in str(w.message)]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["steps"] == 2048
