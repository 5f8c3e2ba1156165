"""The CLI end to end, in process: run dir, TensorBoard tags, checkpoint, resume, eval."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlstm import checkpoint
from rlstm.cli import main

SMALL = TINY_RUN


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_writes_run_dir_tags_checkpoint_and_summary(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "train",
            *SMALL,
            "ppo.total_timesteps=512",
            f"run.out_dir={tmp_path}",
            "run.run_name=a",
            "run.checkpoint_every=2",
        ]
    )
    assert code == 0
    run = tmp_path / "a"
    assert {"config.yaml", "checkpoint.pt", "summary.json"} <= {p.name for p in run.iterdir()}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 512 and summary["iterations"] == 4
    assert set(summary) >= {"wall_time", "sps", "mean_return_last_100", "best_running_mean_return"}
    split = summary["time_split_seconds"]
    assert set(split) == {"act", "env", "update", "other"} and min(split.values()) >= 0
    assert 0 < sum(split.values()) <= summary["wall_time"] + 1e-3
    assert summary["sps_after_first_iteration"] > 0  # 3 of the 4 iterations' steps and time
    tags = _scalars(run)
    for tag in (
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/SPS",
        "charts/learning_rate",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/old_approx_kl",
        "losses/clipfrac",
        "losses/explained_variance",
        "losses/grad_norm",
        "perf/env_time",
        "perf/act_time",
        "perf/update_time",
    ):
        assert tag in tags, tag
    assert [s for s, _ in tags["charts/SPS"]] == [128, 256, 384, 512]
    # RepeatPreviousEasy episodes are 51 steps long
    assert all(v == 51 for _, v in tags["charts/episodic_length"])
    lr = [v for _, v in tags["charts/learning_rate"]]
    assert lr == sorted(lr, reverse=True) and lr[0] > lr[-1]  # annealed
    data = checkpoint.load(run)
    assert data["iteration"] == 4 and data["global_step"] == 512
    assert data["config"]["env"]["id"] == "RepeatPreviousEasy"


def test_episode_charts_are_capped_and_the_running_mean_counts_every_episode(
    tmp_path: Path,
) -> None:
    # 64 envs x 64 steps: each iteration ends 64-128 episodes of 51 steps, 3 iterations.
    args = [*SMALL, "env.num_envs=64", "ppo.num_steps=64", "ppo.total_timesteps=12288"]
    for name, cap in (("all", 0), ("capped", 5)):
        code = main(
            [
                "train",
                *args,
                f"run.out_dir={tmp_path}",
                f"run.run_name={name}",
                f"run.log_episodes={cap}",
            ]
        )
        assert code == 0
    every = _scalars(tmp_path / "all")["charts/episodic_return"]
    charted = _scalars(tmp_path / "capped")["charts/episodic_return"]
    assert len(every) > 100  # same seed, same training: the full run is the reference
    per_iteration = [
        sum(1 for s, _ in charted if (i - 1) * 4096 < s <= i * 4096) for i in (1, 2, 3)
    ]
    assert per_iteration == [5, 5, 5]
    assert set(charted) <= set(every)
    assert charted[0] == every[0] and charted[-1] == every[-1]  # the subsample spans it
    last_100 = sum(v for _, v in every[-100:]) / 100
    for name in ("all", "capped"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["mean_return_last_100"] == pytest.approx(last_100, abs=1e-6)
    best = [
        json.loads((tmp_path / n / "summary.json").read_text())["best_running_mean_return"]
        for n in ("all", "capped")
    ]
    assert best[0] == best[1]


def test_resume_continues_and_eval_reports(tmp_path: Path, capsys) -> None:
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "run.checkpoint_every=1"]
    assert main([*args, "ppo.total_timesteps=256", "run.run_name=r"]) == 0
    run = tmp_path / "r"
    before = checkpoint.load(run)
    assert main(["train", "--resume", str(run), "ppo.total_timesteps=512"]) == 0
    after = checkpoint.load(run)
    assert before["global_step"] == 256 and after["global_step"] == 512
    assert after["iteration"] == 4
    assert not torch.equal(before["agent"]["actor.weight"], after["agent"]["actor.weight"])
    assert json.loads((run / "summary.json").read_text())["steps"] == 512
    # two event files (run, resume): their load order follows the file names, not the steps
    steps = sorted(s for s, _ in _scalars(run)["charts/SPS"])
    assert steps == [128, 256, 384, 512]

    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "12", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "RepeatPreviousEasy: 12 episodes" in out
    report = json.loads((run / "eval.json").read_text())
    assert report["episodes"] == 12 and len(report["returns"]) == 12
    assert -1.0 <= report["mean_return"] <= 1.0


def test_overlapped_update_run_checkpoints_whole_updates_and_resumes(tmp_path: Path) -> None:
    """``ppo.overlap_update=true``: every update's losses are charted once, at the step of
    the rollout it learnt from (the first finishes during the second rollout), a checkpoint
    is written only with no update half done (the one of its iteration is finished first),
    and the run resumes."""
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "ppo.overlap_update=true"]
    assert main([*args, "ppo.total_timesteps=512", "run.checkpoint_every=3", "run.run_name=o"]) == 0
    run = tmp_path / "o"
    scalars = _scalars(run)
    assert [s for s, _ in scalars["charts/SPS"]] == [128, 256, 384, 512]
    # iteration 3 saved a checkpoint, so it finished two updates: iteration 2's and its own
    for key in ("losses/policy_loss", "losses/skipped_updates"):
        assert [s for s, _ in scalars[key]] == [128, 256, 384, 512]
    assert [s for s, _ in scalars["perf/update_time"]] == [128, 256, 384, 512]
    assert main(["train", "--resume", str(run), "ppo.total_timesteps=768"]) == 0
    assert checkpoint.load(run)["global_step"] == 768


def test_adam_eps_reaches_adam_and_survives_resume(tmp_path: Path) -> None:
    """TMaze-1000 and RememberAB-1000 learned on every seed only with ``ppo.adam_eps=1e-8``
    (benchmarks/RESULTS.md): Adam must get it from the config, and the checkpoint keep it."""
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "ppo.total_timesteps=128"]
    assert main([*args, "run.run_name=default"]) == 0
    assert main([*args, "run.run_name=small", "ppo.adam_eps=1e-8"]) == 0

    def eps(run: str) -> float:
        return checkpoint.load(tmp_path / run)["optimizer"]["param_groups"][0]["eps"]

    assert eps("default") == 1e-5 and eps("small") == 1e-8
    assert main(["train", "--resume", str(tmp_path / "small"), "ppo.total_timesteps=256"]) == 0
    assert checkpoint.load(tmp_path / "small")["global_step"] == 256 and eps("small") == 1e-8


def test_a_resume_trains_with_its_new_learning_rate_and_adam_eps(tmp_path: Path) -> None:
    """The loaded optimizer state carries the first run's rate and eps; a resume that
    changes ``ppo.learning_rate`` (without annealing) or ``ppo.adam_eps`` trains with the
    new ones, as its ``config.yaml`` says."""
    run = tmp_path / "r"
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=r", "ppo.anneal_lr=false"]
    assert main([*args, "ppo.total_timesteps=128", "ppo.learning_rate=0.001"]) == 0
    group = checkpoint.load(run)["optimizer"]["param_groups"][0]
    assert (group["lr"], group["eps"]) == (0.001, 1e-5)
    resume = ["train", "--resume", str(run), "ppo.total_timesteps=256"]
    assert main([*resume, "ppo.learning_rate=0.01", "ppo.adam_eps=1e-8"]) == 0
    group = checkpoint.load(run)["optimizer"]["param_groups"][0]
    assert (group["lr"], group["eps"]) == (0.01, 1e-8)


def test_same_run_name_never_shares_a_directory(tmp_path: Path) -> None:
    args = ["train", *SMALL, "ppo.total_timesteps=128", f"run.out_dir={tmp_path}", "run.run_name=x"]
    assert main(args) == 0 and main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x-2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ppo.bptt_len=5"], "not a multiple of ppo.bptt_len=5"),
        (["env.id=NoSuchEnv-v9"], "NoSuchEnv-v9"),
        (["agent.core=lstmm"], "agent.core='lstmm'"),
        (["env.id=TMaze", "env.kwargs={bogus: 1}"], "bogus"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code = main(["train", *SMALL, f"run.out_dir={tmp_path}", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rlstm: error:") and message in err
    assert "Traceback" not in err


def test_eval_of_missing_checkpoint_is_clear(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n" * 20, bytes(range(256)) * 4])
def test_eval_of_a_foreign_file_is_one_clear_line(tmp_path: Path, capsys, content: bytes) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlstm: error:") and "is not a readable checkpoint" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "runs/x", "--episodes", "0"], "argument --episodes: 0 must be >= 1"),
        (["eval", "runs/x", "--num-envs", "-2"], "argument --num-envs: -2 must be >= 1"),
        (["bench", "memory", "--sizes", "0"], "argument --sizes: 0 must be >= 1"),
        (["bench", "atari", "--seconds", "-1"], "argument --seconds: -1.0 must be > 0"),
        (["inspect", "runs/x", "--max-steps", "0"], "argument --max-steps: 0 must be >= 1"),
        (["eval", "runs/x", "--seed", "-1"], "argument --seed: -1 must be >= 0"),
    ],
)
def test_bad_counts_are_refused_before_anything_runs(capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env.id=nosuchmodule:Foo-v0"], "cannot import 'nosuchmodule'"),
        (
            ["env.id=RepeatFirstEasyy"],
            "not a registered gymnasium id; did you mean RepeatFirstEasy?",
        ),
        (["env.id=CartPol-v1"], "did you mean CartPole-v1"),
        pytest.param(
            ["env.id=LunarLander-v3"],
            "cannot be built: Box2D is not installed",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("Box2D") is not None, reason="Box2D is installed"
            ),
        ),
    ],
)
def test_gymnasium_ids_that_cannot_be_built_are_one_clear_line(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    assert main(["train", *SMALL, f"run.out_dir={tmp_path}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlstm: error:") and message in err


def test_unknown_memory_task_in_bench_is_one_clear_line(capsys) -> None:
    assert main(["bench", "memory", "--tasks", "Nope", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlstm: error: unknown memory task 'Nope'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "args",
    [
        ["train", *SMALL, "run.device=cuda"],
        ["bench", "core", "--device", "cuda"],
        ["bench", "memory", "--device", "cuda"],
    ],
)
def test_cuda_requested_without_cuda_is_one_clear_line(capsys, args: list[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlstm: error:") and "CUDA is not available" in err
    flag = "run.device" if args[0] == "train" else "--device"
    assert f"{flag}='cuda' but CUDA" in err  # names what the user set


@pytest.mark.parametrize(
    "env", [["env.id=CartPole-v1"], ["env.backend=gymnasium", "env.id=rlstm/RepeatFirstEasy-v0"]]
)
def test_gymnasium_backend_runs(tmp_path: Path, env: list[str]) -> None:
    code = main(
        [
            "train",
            *env,
            "env.num_envs=4",
            "ppo.num_steps=16",
            "ppo.bptt_len=8",
            "ppo.num_minibatches=2",
            "ppo.total_timesteps=128",
            "agent.core=gru",
            "run.progress=false",
            f"run.out_dir={tmp_path}",
            "run.run_name=c",
        ]
    )
    assert code == 0
    assert (tmp_path / "c" / "checkpoint.pt").is_file()


def test_resume_records_its_config_keeps_its_directory_and_sums_the_time_split(
    tmp_path: Path, capsys
) -> None:
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=r"]
    assert main([*args, "ppo.total_timesteps=256"]) == 0
    run = tmp_path / "r"
    before = json.loads((run / "summary.json").read_text())["time_split_seconds"]
    assert main(["train", "--resume", str(run), "run.out_dir=elsewhere"]) == 2
    assert "a resumed run stays in" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "ppo.total_timesteps=512"]) == 0
    assert "total_timesteps: 512" in (run / "config.yaml").read_text()
    after = json.loads((run / "summary.json").read_text())["time_split_seconds"]
    assert all(after[key] > before[key] for key in ("act", "env", "update"))


def test_resume_with_other_env_count_starts_episodes_afresh(tmp_path: Path, capsys) -> None:
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=n"]
    assert main([*args, "ppo.total_timesteps=256"]) == 0
    capsys.readouterr()
    resume = ["train", "--resume", str(tmp_path / "n"), "env.num_envs=16"]
    assert main([*resume, "ppo.total_timesteps=768"]) == 0
    err = capsys.readouterr().err
    assert "the checkpoint has 8 envs, this run 16: weights and optimizer continue" in err
    assert checkpoint.load(tmp_path / "n")["global_step"] == 768


def test_resume_with_another_task_starts_episodes_afresh(tmp_path: Path, capsys) -> None:
    """The saved games of TMaze-20 must not go on in TMaze-10; an unchanged resume keeps them."""
    tmaze = ["env.id=TMaze", "env.kwargs={length: 20}"]
    args = ["train", *SMALL, *tmaze, f"run.out_dir={tmp_path}", "run.run_name=m"]
    assert main([*args, "ppo.total_timesteps=256", "env.num_threads=3"]) == 0
    capsys.readouterr()
    resume = ["train", "--resume", str(tmp_path / "m")]
    assert main([*resume, "ppo.total_timesteps=512", "env.num_threads=0"]) == 0  # how, not what
    assert "episodes start afresh" not in capsys.readouterr().err
    assert main([*resume, "ppo.total_timesteps=768", "env.kwargs={length: 10}"]) == 0
    err = capsys.readouterr().err
    assert "env.kwargs changed since the checkpoint: weights and optimizer continue" in err


def test_a_time_limit_stop_is_not_finished_and_says_how_to_resume(tmp_path: Path, capsys) -> None:
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=t", "run.time_limit=1e-9"]
    assert main([*args, "ppo.total_timesteps=512"]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["iterations"] == 1 and not summary["finished"]
    err = capsys.readouterr().err
    assert f"after iteration 1 of 4; resume with: rlstm train --resume {tmp_path / 't'}" in err


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "RUN", "--video", "FILE"],
        ["inspect", "RUN", "--out", "FILE"],
        ["suite", "--out", "FILE", "--tasks", "RepeatFirstEasy", "--device", "cpu"],
    ],
)
def test_an_output_directory_that_is_a_file_is_one_clear_line(
    tmp_path: Path, capsys, args: list[str]
) -> None:
    file = tmp_path / "file.txt"
    file.write_text("mine\n")
    args = [str(file) if a == "FILE" else str(tmp_path / "nope") if a == "RUN" else a for a in args]
    assert main(args) == 2
    assert "is a file; it must name a directory" in capsys.readouterr().err
    assert file.read_text() == "mine\n"


def test_plot_creates_the_output_directory(tmp_path: Path) -> None:
    args = ["train", *SMALL, f"run.out_dir={tmp_path}", "run.run_name=p", "ppo.total_timesteps=256"]
    assert main(args) == 0
    out = tmp_path / "new" / "dir" / "curves.png"
    assert main(["plot", str(tmp_path / "p"), "--tag", "charts/SPS", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_eta_counts_hours_past_a_day(tmp_path: Path) -> None:
    import io
    import time

    from rlstm.logger import Logger

    stream = io.StringIO()
    logger = Logger(tmp_path, total_steps=100_001, progress=False, stream=stream)
    logger.start_time = time.perf_counter() - 1.0  # 1 step/s: 100,000 s (27.8 h) to go
    logger.dump(step=1, iteration=1, num_iterations=10)
    logger.close()
    assert "ETA 27:46:" in stream.getvalue()


def test_torch_threads_0_means_torchs_default_even_after_another_run_set_them() -> None:
    """Suite cells run one after another in one process; a cell's run.torch_threads=1 must
    not leak into the next cell's default."""
    from rlstm.cli import TORCH_DEFAULT_THREADS, setup_torch
    from rlstm.config import build_config

    before = torch.get_num_threads()
    try:
        other = TORCH_DEFAULT_THREADS + 1
        setup_torch(build_config(None, ["run.device=cpu", f"run.torch_threads={other}"]))
        assert torch.get_num_threads() == other
        setup_torch(build_config(None, ["run.device=cpu"]))
        assert torch.get_num_threads() == TORCH_DEFAULT_THREADS
    finally:
        torch.set_num_threads(before)


def test_gymnasium_envs_get_independent_seeds() -> None:
    """gymnasium seeds env i with seed + i: env 1 of seed 5 would replay env 0 of seed 6 (and
    a rank's env 1000 the next rank's env 0). Same seed: same episodes."""
    from envs.gym_vec import GymVecEnv

    def first_obs(seed: int) -> torch.Tensor:
        env = GymVecEnv("CartPole-v1", 2)
        try:
            return env.reset(seed=seed)
        finally:
            env.close()

    assert torch.equal(first_obs(5), first_obs(5))
    assert not torch.equal(first_obs(5)[1], first_obs(6)[0])
