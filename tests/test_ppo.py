"""The PPO update: non-finite minibatches are skipped on the host path and, with fused Adam,
on the device (no host sync per minibatch), with the same result."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_rollout

import rlstm.ppo
from rlstm.buffer import Chunks
from rlstm.config import PPOConfig
from rlstm.ppo import update

REAL_LOSS = rlstm.ppo.minibatch_loss
CFG = PPOConfig(num_steps=16, bptt_len=8, num_minibatches=4, update_epochs=2, learning_rate=1e-2)


def _update(fused: bool, poisoned: set[int], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """One update where the minibatches numbered in ``poisoned`` (from 0) get a NaN loss."""
    agent, buf = random_rollout(num_envs=8)
    params = [p for p in agent.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=CFG.learning_rate, eps=CFG.adam_eps, fused=fused)
    calls = []

    def loss_fn(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, stats = REAL_LOSS(*args, **kwargs)
        calls.append(len(calls))
        return (loss * float("nan"), stats) if calls[-1] in poisoned else (loss, stats)

    monkeypatch.setattr(rlstm.ppo, "minibatch_loss", loss_fn)
    stats = update(agent, params, optimizer, buf, CFG, torch.Generator().manual_seed(2))
    return agent, optimizer, stats


@pytest.mark.parametrize("fused", [False, True])
def test_all_nonfinite_minibatches_leave_weights_and_optimizer_untouched(
    fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, _ = random_rollout(num_envs=8)
    agent, optimizer, stats = _update(fused, set(range(8)), monkeypatch)
    assert stats["skipped_updates"] == 8 and stats["applied_updates"] == 0
    for key, value in before.state_dict().items():
        assert torch.equal(value, agent.state_dict()[key]), key
    for state in optimizer.state.values():  # fused Adam made its state, then skipped
        assert float(state["step"]) == 0 and not state["exp_avg"].any()


def test_device_skip_equals_host_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    poisoned = {1, 6}
    host, _, host_stats = _update(False, poisoned, monkeypatch)
    device, optimizer, device_stats = _update(True, poisoned, monkeypatch)
    assert host_stats["skipped_updates"] == device_stats["skipped_updates"] == 2
    assert host_stats["applied_updates"] == device_stats["applied_updates"] == 6
    assert all(float(s["step"]) == 6 for s in optimizer.state.values())
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm"):
        assert device_stats[key] == pytest.approx(host_stats[key], rel=1e-4, abs=1e-6), key
    for key, value in host.state_dict().items():  # fused and foreach Adam round differently
        torch.testing.assert_close(device.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def _tiny_trainer(tmp_path, overrides=(), resume_from=None):  # type: ignore[no-untyped-def]
    from conftest import TINY_RUN

    from rlstm.cli import make_agent, make_env, setup_torch
    from rlstm.config import build_config
    from rlstm.trainer import Trainer

    cfg = build_config(None, [*TINY_RUN, "run.device=cpu", *overrides])
    device = setup_torch(cfg)
    env = make_env(cfg, device)
    return Trainer(cfg, env, make_agent(cfg, env), tmp_path, device, resume_from=resume_from)


def test_update_interleaved_with_the_next_rollout_equals_update(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``ppo.overlap_update``: the update of rollout k, run one minibatch step at a time
    between the env steps of rollout k+1, ends with the weights and statistics that the
    plain update of rollout k gives, though the buffer is overwritten meanwhile."""
    from rlstm.ppo import update, update_steps

    overlapped = _tiny_trainer(tmp_path / "a", ["ppo.overlap_update=true"])
    plain = _tiny_trainer(tmp_path / "b")
    for trainer in (overlapped, plain):
        trainer.collect()
        trainer.advantages()
    args = [overlapped.agent, overlapped.params, overlapped.optimizer, overlapped.buffer]
    overlapped.pending_update = update_steps(
        *args, overlapped.cfg.ppo, overlapped.shuffle_gen, None
    )
    before = [p.detach().clone() for p in overlapped.params]
    first_obs = overlapped.buffer.obs[0].clone()
    overlapped.collect()  # runs the pending update's steps between its env steps
    assert not torch.equal(first_obs, overlapped.buffer.obs[0])  # the buffer moved on
    steps = overlapped.cfg.ppo.update_epochs * overlapped.cfg.ppo.num_minibatches
    assert overlapped.interleaved[0] == steps
    # finished inside collect, or by the trainer's next call of the generator
    assert overlapped.pending_update is not None or overlapped.finished_updates
    overlapped._finish_update()
    ((_, got),) = overlapped.finished_updates
    want = update(
        plain.agent, plain.params, plain.optimizer, plain.buffer, plain.cfg.ppo, plain.shuffle_gen
    )
    assert got == pytest.approx(want, nan_ok=True)
    for a, b in zip(overlapped.params, plain.params, strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, p0) for a, p0 in zip(overlapped.params, before))


def test_resume_applies_this_runs_adam_kernel_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint's param groups carry the saving run's ``fused`` / ``capturable``; the
    resuming run keeps its own (a graph needs capturable Adam, the device skip fused Adam)."""
    data = _tiny_trainer(tmp_path / "a").state_dict()
    for group in data["optimizer"]["param_groups"]:
        group["fused"], group["capturable"] = True, True  # as saved by a CUDA-graph run
    resumed = _tiny_trainer(tmp_path / "b", resume_from=data)
    for group in resumed.optimizer.param_groups:
        assert group["fused"] == resumed.optimizer.defaults["fused"]
        assert group["capturable"] is False and isinstance(group["lr"], float)


@pytest.mark.parametrize("mark", ["device", "generator"])
def test_resume_on_another_device_keeps_weights_and_starts_episodes_afresh(
    tmp_path, mark: str
) -> None:  # type: ignore[no-untyped-def]
    """Envs and action streams cannot move between CPU and CUDA: a checkpoint saved on the
    other device resumes its weights, optimizer and counters with fresh episodes. Older
    checkpoints, which do not record the device, are recognised by the action generator's
    state (CUDA's Philox state is 16 bytes, the CPU's Mersenne Twister's 5056)."""
    first = _tiny_trainer(tmp_path / "a", ["ppo.total_timesteps=256"])
    first.train()
    data = first.state_dict()
    same = _tiny_trainer(tmp_path / "b", resume_from=data)
    assert same.fresh_episodes is None
    assert torch.equal(same.next_obs, first.next_obs) and not same.next_starts.all()
    if mark == "device":
        data["device"] = "cuda"
    else:  # as saved before the device was recorded, by a CUDA run
        del data["device"]
        data["rng"]["action"] = torch.zeros(16, dtype=torch.uint8)
    moved = _tiny_trainer(tmp_path / "c", resume_from=data)
    assert moved.fresh_episodes == "the checkpoint's envs were saved on another device"
    assert moved.next_starts.all()
    assert moved.global_step == first.global_step
    for a, b in zip(moved.params, first.params, strict=True):
        assert torch.equal(a, b)
    moved.cfg.ppo.total_timesteps = first.global_step + 256
    assert moved.train()["steps"] == first.global_step + 256


def test_skipped_minibatches_are_counted_in_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN losses at steps 0, 1, 4, 6 and 7 of 8: runs of 2 before the first applied step,
    2 after the last, 2 at most; the weights move only on the 3 applied steps."""
    agent, buf = random_rollout(num_envs=8)
    real = rlstm.ppo.minibatch_loss
    calls: list[int] = []

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, stats = real(*args, **kwargs)
        calls.append(0)
        return (loss * float("nan"), stats) if len(calls) - 1 in (0, 1, 4, 6, 7) else (loss, stats)

    monkeypatch.setattr(rlstm.ppo, "minibatch_loss", poisoned)
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    cfg = PPOConfig(num_steps=16, bptt_len=8, num_minibatches=4, update_epochs=2)
    stats = update(agent, params, optimizer, buf, cfg, torch.Generator().manual_seed(0))
    assert len(calls) == 8
    assert (stats["skipped_updates"], stats["applied_updates"]) == (5, 3)
    runs = (stats["skipped_leading"], stats["skipped_trailing"], stats["skipped_longest"])
    assert runs == (2, 2, 2)


def test_the_nonfinite_stop_counts_skips_in_a_row_across_updates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rlstm.trainer import TrainingStopped

    trainer = _tiny_trainer(tmp_path, ["ppo.max_nonfinite_updates=3"])

    def update(skipped: int, applied: int, runs: tuple[int, int, int]) -> dict[str, float]:
        names = ("skipped_leading", "skipped_trailing", "skipped_longest")
        return {"skipped_updates": skipped, "applied_updates": applied, **dict(zip(names, runs))}

    trainer._check_finite(update(5, 3, (2, 2, 2)))  # 5 skipped, never 3 in a row
    assert trainer.nonfinite_streak == 2
    trainer._check_finite(update(0, 8, (0, 0, 0)))
    assert trainer.nonfinite_streak == 0
    trainer._check_finite(update(2, 6, (0, 2, 2)))  # ends with 2 in a row ...
    with pytest.raises(TrainingStopped, match="3 consecutive updates"):
        trainer._check_finite(update(1, 7, (1, 0, 1)))  # ... and the next begins with 1
    trainer.nonfinite_streak = 0
    with pytest.raises(TrainingStopped, match="3 consecutive updates"):
        trainer._check_finite(update(3, 5, (0, 0, 3)))  # 3 in a row inside one update


class _FixedOutputs(torch.nn.Module):
    """A policy whose ``sequence`` returns given logits and values: the loss alone is tested."""

    def __init__(self, logits: list[list[float]], values: list[float]) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([logits]))  # (L=1, M, A)
        self.values = torch.nn.Parameter(torch.tensor([values]))  # (1, M)

    def sequence(self, obs, state, starts, need_state=True, sizes=None):  # type: ignore[no-untyped-def]
        return self.logits, self.values, None


def _hand_minibatch(ratios: list[float], advantages: list[float]) -> tuple[Chunks, torch.Tensor]:
    """Four samples of action 0 at p = 0.5 whose old log-probs give ``ratios``; old values 0,
    returns [1, 1, 0, 0]."""
    old = torch.log(0.5 / torch.tensor([ratios]))
    zeros = torch.zeros(1, 4)
    mb = Chunks(
        obs=zeros,
        actions=torch.zeros(1, 4, dtype=torch.long),
        logprobs=old,
        values=zeros,
        advantages=torch.tensor([advantages]),
        returns=torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
        starts=torch.zeros(1, 4, dtype=torch.bool),
        states=torch.zeros(0, 4, 1),
    )
    return mb, mb.advantages


@pytest.mark.parametrize(
    ("norm_adv", "clip_vloss", "policy_loss", "value_loss"),
    [
        # ratios 1.5, 0.5, 1.1, 0.9 with advantages 1, 1, -1, -1 and clip 0.2:
        # max(-A r, -A clip(r)) = -1.2, -0.5, 1.1, 0.9 -> mean 0.075
        # new values 1, -0.1, 0.5, 0 against returns 1, 1, 0, 0, old values 0:
        # clipped value loss max((v - R)^2, (clip(v, -0.2, 0.2) - R)^2) = 0.64, 1.21, 0.25, 0
        (False, True, 0.075, 0.5 * 2.1 / 4),
        (False, False, 0.075, 0.5 * 1.46 / 4),
        # normalised advantages +-sqrt(3)/2 (unbiased std): -1.5a, -0.5a, 1.1a, 0.9a
        (True, True, 3**0.5 / 2 * (-1.2 - 0.5 + 1.1 + 0.9) / 4, 0.5 * 2.1 / 4),
    ],
)
def test_minibatch_loss_matches_a_hand_computation(
    norm_adv: bool, clip_vloss: bool, policy_loss: float, value_loss: float
) -> None:
    from rlstm.ppo import minibatch_loss

    agent = _FixedOutputs([[0.0, 0.0]] * 4, [1.0, -0.1, 0.5, 0.0])
    mb, adv = _hand_minibatch([1.5, 0.5, 1.1, 0.9], [1.0, 1.0, -1.0, -1.0])
    cfg = PPOConfig(clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, norm_adv=norm_adv)
    cfg.clip_vloss = clip_vloss
    loss, stats = minibatch_loss(agent, mb, cfg, adv)
    entropy = math.log(2)
    kl = (0.5 - math.log(1.5) - 0.5 - math.log(0.5) + 0.1 - math.log(1.1) - 0.1 - math.log(0.9)) / 4
    assert float(stats["policy_loss"]) == pytest.approx(policy_loss, abs=1e-6)
    assert float(stats["value_loss"]) == pytest.approx(value_loss, abs=1e-6)
    assert float(stats["entropy"]) == pytest.approx(entropy, abs=1e-6)
    assert float(stats["clipfrac"]) == 0.5  # 1.5 and 0.5 lie outside [0.8, 1.2]
    assert float(stats["approx_kl"]) == pytest.approx(kl, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(
        policy_loss - 0.01 * entropy + 0.5 * value_loss, abs=1e-6
    )
    # Sample 0 takes the clipped surrogate term (a constant in the ratio), and the entropy's
    # gradient vanishes at uniform logits: its logits get no gradient, the others do.
    loss.backward()
    grad = agent.logits.grad
    assert grad is not None
    assert float(grad[0, 0].abs().max()) == 0.0
    assert all(float(grad[0, i].abs().max()) > 1e-3 for i in (1, 2, 3))


def test_truncation_bootstraps_from_the_final_obs_under_the_carried_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``Trainer.advantages``: a truncated step's bootstrap is the critic's value of its final
    observation under the state the episode carried into it (no reset), recomputed here by
    replaying the rollout step by step."""
    from rlstm.buffer import compute_gae

    trainer = _tiny_trainer(
        tmp_path, ["env.id=PositionOnlyCartPoleEasy", "env.kwargs={episode_length: 5}"]
    )
    trainer.collect()
    trainer.advantages()
    buf, agent, p = trainer.buffer, trainer.agent, trainer.cfg.ppo
    assert int(buf.truncated.sum()) >= 8  # episodes of 5 steps in a 16-step rollout
    final_values = torch.zeros_like(buf.values)
    with torch.no_grad():
        state = buf.states[0]
        for t in range(buf.num_steps):
            _, value, state = agent.step(buf.obs[t], state, buf.starts[t])
            torch.testing.assert_close(value, buf.values[t])  # the replay is the rollout
            no_start = torch.zeros_like(buf.starts[t])
            _, final_value, _ = agent.step(buf.final_obs[t], state, no_start)
            final_values[t] = torch.where(buf.truncated[t], final_value, 0.0)
        _, next_value, _ = agent.step(trainer.next_obs, trainer.next_state, trainer.next_starts)
    rollout = (buf.rewards, buf.values, buf.terminated, buf.truncated)
    discount = (p.gamma, p.gae_lambda)
    advantages, returns = compute_gae(*rollout, final_values, next_value, *discount)
    torch.testing.assert_close(buf.advantages, advantages)
    torch.testing.assert_close(buf.returns, returns)
    # and the bootstrap matters here: without it the advantages differ
    without, _ = compute_gae(*rollout, torch.zeros_like(final_values), next_value, *discount)
    assert not torch.allclose(buf.advantages, without)


def test_target_kl_stops_after_the_epoch_whose_last_minibatch_passes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CleanRL's rule: after each epoch, stop when the last minibatch's approx KL exceeds
    ``ppo.target_kl``. The reference is the KL of every minibatch of an update run without
    the target; each threshold is set just below an epoch's last KL."""
    from dataclasses import replace

    cfg = replace(CFG, update_epochs=4)
    kls: list[float] = []

    def loss_fn(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, stats = REAL_LOSS(*args, **kwargs)
        kls.append(float(stats["approx_kl"]))
        return loss, stats

    monkeypatch.setattr(rlstm.ppo, "minibatch_loss", loss_fn)

    def run(target_kl: float | None) -> dict[str, float]:
        kls.clear()
        agent, buf = random_rollout(num_envs=8)
        params = [p for p in agent.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_eps)
        gen = torch.Generator().manual_seed(2)
        return update(agent, params, optimizer, buf, replace(cfg, target_kl=target_kl), gen)

    assert run(None)["epochs"] == 4
    per_epoch = [kls[i : i + cfg.num_minibatches] for i in range(0, len(kls), cfg.num_minibatches)]
    last = [epoch[-1] for epoch in per_epoch]
    means = [sum(epoch) / len(epoch) for epoch in per_epoch]
    checked_a_difference = False
    for e in range(3):
        threshold = last[e] * (1 - 1e-6)
        expected = next(i for i, kl in enumerate(last) if kl > threshold) + 1
        assert run(threshold)["epochs"] == expected
        by_mean = next((i + 1 for i, kl in enumerate(means) if kl > threshold), 4)
        checked_a_difference |= by_mean != expected
    assert checked_a_difference, "the rollout does not tell the last KL from the mean"
    assert run(max(last) * 2)["epochs"] == 4
