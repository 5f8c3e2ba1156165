"""``rlstm suite`` end to end on a tiny CPU budget: report files, resume, failed cells."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

import envs.memory
from rlstm import suite
from rlstm.cli import main
from rlstm.config import ConfigError

# Two iterations of 8 envs x 16 steps per cell, a few eval episodes: each cell takes well
# under a second; the suite's bookkeeping, not learning, is under test here.
TINY = [
    "--seeds", "1",
    "--steps", "256",
    "--eval-episodes", "8",
    "--device", "cpu",
    "--jobs", "1",
    "--lengths", "TMaze=3",
]  # fmt: skip
SMALL_SET = [
    "--set",
    "env.num_envs=8",
    "ppo.num_steps=16",
    "ppo.bptt_len=16",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=1",
    "agent.hidden_size=8",
    "agent.encoder_hidden=8",
    "run.torch_threads=1",
]
TIERS = {
    "A": envs.memory.diagnostics.TASKS,
    "B": envs.memory.probes.TASKS,
    "C": envs.memory.counting.TASKS,
    "D": envs.memory.games.TASKS,
}


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["cell"]: row for row in csv.DictReader(f)}


def test_suite_writes_table_csv_chart_and_rerun_skips_finished_cells(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "RepeatFirstEasy,TMaze", "--cores", "lstm,none", *TINY]
    argv += ["--out", str(out), *SMALL_SET]
    assert main(argv) == 0
    cells = [
        "RepeatFirstEasy__lstm__s1",
        "RepeatFirstEasy__none__s1",
        "TMaze-L3__lstm__s1",
        "TMaze-L3__none__s1",
    ]
    for name in ("suite.md", "suite.csv", "suite.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "suite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "suite.md").read_text()
    assert "| task | lstm return | lstm MMER | none return | none MMER |" in table
    assert "| RepeatFirstEasy | " in table
    assert "| TMaze | success >= 95.0% |" in table  # the sweep's longest length learned
    assert "| TMaze | 3 | " in table
    assert "4 done, 0 failed" in table
    rows = _csv(out / "suite.csv")
    assert sorted(rows) == sorted(cells)
    assert {row["status"] for row in rows.values()} == {"done"}
    assert all(row["eval_episodes"] == "8" for row in rows.values())
    assert rows["TMaze-L3__lstm__s1"]["length"] == "3"
    for name in cells:
        run = out / "runs" / name
        assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
        assert json.loads((run / "eval.json").read_text())["episodes"] == 8
        result = json.loads((out / "cells" / f"{name}.json").read_text())
        assert result["status"] == "done" and result["steps"] == 256
        assert result["config"]["agent"]["core"] == name.split("__")[1]
    tmaze = json.loads((out / "cells" / "TMaze-L3__lstm__s1.json").read_text())
    assert tmaze["config"]["env"]["kwargs"] == {"length": 3}
    assert isinstance(tmaze["learned"], bool)

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    runs = sorted(p.name for p in (out / "runs").iterdir())
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert sum(f"skip {name} (finished earlier)" in err for name in cells) == 4
    assert "0 cells run, 4 skipped" in err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    assert sorted(p.name for p in (out / "runs").iterdir()) == runs


def test_failing_cell_is_reported_and_retried_on_rerun(tmp_path: Path, capsys) -> None:
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "RepeatFirstEasy,TMaze", "--cores", "lstm", *TINY]
    argv += ["--out", str(out), *SMALL_SET]
    # An env kwarg only TMaze's cells get, and TMaze does not take.
    assert main([*argv, "TMaze:env.kwargs={bogus: 1}"]) == 1
    err = capsys.readouterr().err
    assert "1 cells failed: TMaze-L3__lstm__s1" in err
    table = (out / "suite.md").read_text()
    assert "1 done, 1 failed" in table
    assert "| TMaze | success >= 95.0% | FAILED |" in table
    assert "## Failed cells" in table and "| TMaze-L3__lstm__s1 | " in table and "bogus" in table
    rows = _csv(out / "suite.csv")
    assert rows["RepeatFirstEasy__lstm__s1"]["status"] == "done"
    assert rows["TMaze-L3__lstm__s1"]["status"] == "failed"
    assert "bogus" in rows["TMaze-L3__lstm__s1"]["error"]
    assert (out / "suite.png").stat().st_size > 0
    assert (out / "cells" / "RepeatFirstEasy__lstm__s1.json").is_file()
    assert not (out / "cells" / "TMaze-L3__lstm__s1.json").exists()

    # Without the bad override the rerun retries only the failed cell.
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "skip RepeatFirstEasy__lstm__s1" in err and "1 cells run, 1 skipped" in err
    assert (out / "cells" / "TMaze-L3__lstm__s1.json").is_file()
    assert not (out / "cells" / "TMaze-L3__lstm__s1.failed.json").exists()
    assert "2 done, 0 failed" in (out / "suite.md").read_text()


def test_an_interrupted_cell_resumes_with_the_rerun_config(tmp_path: Path) -> None:
    """A cell stopped before its summary (Ctrl-C) continues from its checkpoint under the
    rerun's settings: here a larger --steps, which the cell's record then shows."""
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "RepeatFirstEasy", "--cores", "lstm", *TINY]
    argv += ["--out", str(out), *SMALL_SET]
    assert main(argv) == 0
    name = "RepeatFirstEasy__lstm__s1"
    (out / "runs" / name / "summary.json").unlink()  # as if stopped after its checkpoint
    (out / "cells" / f"{name}.json").unlink()
    longer = [a if a != "256" else "512" for a in argv]
    assert main(longer) == 0
    result = json.loads((out / "cells" / f"{name}.json").read_text())
    assert result["steps"] == 512 and result["config"]["ppo"]["total_timesteps"] == 512
    summary = json.loads((out / "runs" / name / "summary.json").read_text())
    assert summary["steps"] == 512 and summary["finished"]


def test_a_crash_inside_a_cell_is_its_one_line_error(tmp_path: Path) -> None:
    def crashing_main(argv: list[str]) -> int:
        if argv[0] == "train" and "RepeatPrevious" in argv[-1]:
            raise RuntimeError("simulated crash in training")
        return main(argv)

    opts = suite.SuiteOptions(
        tasks=["RepeatFirstEasy", "RepeatPreviousEasy"],
        cores=["gru"],
        seeds=1,
        out=tmp_path / "suite",
        steps=256,
        overrides=SMALL_SET[1:],
        device="cpu",
        eval_episodes=4,
    )
    lines: list[str] = []
    result = suite.run_suite(opts, suite.in_process_runner(crashing_main), lines.append)
    assert result.failed == ["RepeatPreviousEasy__gru__s1"] and result.done == 1
    failure = json.loads(
        (opts.out / "cells" / "RepeatPreviousEasy__gru__s1.failed.json").read_text()
    )
    assert failure["error"] == "RuntimeError: simulated crash in training"
    assert "Traceback" in (opts.out / "logs" / "RepeatPreviousEasy__gru__s1.log").read_text()
    assert "| RepeatPreviousEasy | FAILED | FAILED |" in result.report


def test_tiers_and_task_names_resolve() -> None:
    tiers = suite.tier_tasks(TIERS)
    assert suite.resolve_tasks("easy", tiers) == [
        "RepeatFirstEasy",
        "RepeatPreviousEasy",
        "AutoencodeEasy",
        "CountRecallEasy",
    ]
    assert len(suite.resolve_tasks("A", tiers)) == 12
    assert suite.resolve_tasks("b", tiers)[:2] == ["MemoryChain", "TMaze"]
    assert suite.resolve_tasks("TMaze,easy,TMaze", tiers)[:2] == ["TMaze", "RepeatFirstEasy"]
    assert "RememberAB" in suite.resolve_tasks("C", tiers)
    every = suite.resolve_tasks("A,B,C,D", tiers)
    assert sorted(every) == sorted(envs.memory.task_names())
    with pytest.raises(ConfigError, match="unknown tier or task 'Nope'"):
        suite.resolve_tasks("easy,Nope", tiers)


def test_cell_configs_layer_task_yaml_sweep_and_overrides(tmp_path: Path) -> None:
    opts = suite.SuiteOptions(
        tasks=["TMaze", "CopyEasy"],
        cores=["none"],
        seeds=1,
        out=tmp_path,
        overrides=["ppo.learning_rate=0.01"],
        task_overrides={"TMaze": ["env.kwargs={length: 7}", "ppo.gamma=0.999"]},
        lengths={"TMaze": [1000]},
    )
    yamls = suite.task_configs(suite.DEFAULT_CONFIGS)
    assert yamls["TMaze"].name == "tmaze_100.yaml"
    assert [c.name for c in opts.cells()] == ["TMaze-L1000__none__s1", "CopyEasy__none__s1"]
    tmaze = suite.cell_config(suite.Cell("TMaze", "none", 1, 1000), opts, yamls)
    # configs/memory/tmaze_100.yaml has 512 envs x 256 steps: chunks of 2048 >= 2 x 1002 steps
    # hold over half of the episodes, and 64 envs keep the batch at 131k steps
    assert tmaze.env.num_envs == 64
    assert tmaze.env.kwargs == {"length": 1000}  # the sweep's length wins
    assert tmaze.ppo.bptt_len == tmaze.ppo.num_steps == 2048
    assert tmaze.ppo.gamma == 0.999 and tmaze.ppo.learning_rate == 0.01
    assert tmaze.agent.core == "none" and tmaze.run.seed == 1
    assert tmaze.run.run_name == "TMaze-L1000__none__s1"
    assert tmaze.run.out_dir == str(tmp_path / "runs")
    copy = suite.cell_config(suite.Cell("CopyEasy", "none", 1), opts, yamls)
    assert copy.env.num_envs == suite.GENERIC_CONFIG["env"]["num_envs"]
    assert copy.ppo.gamma == 0.99 and copy.ppo.learning_rate == 0.01


@pytest.mark.parametrize(
    ("task", "length", "expected"),
    [
        # fixed-length episodes: chunks of exactly one episode, as many as fit in num_steps
        ("MemoryChain", 10, (64, 55, 11)),
        ("MemoryChain", 100, (40, 101, 101)),  # num_steps grew: 64 * 64 // 101 = 40 envs
        ("RememberAB", 1000, (8, 1002, 1002)),  # 64 * 64 // 1002 = 4, at least a minibatch
        # TMaze (detours lengthen episodes): untouched while episodes fit twice in a chunk
        ("TMaze", 10, (64, 64, 64)),
        ("TMaze", 100, (16, 256, 256)),  # 2 x 102 = 204 steps -> 256; 64 * 64 // 256 envs
    ],
)
def test_sweep_chunks_hold_whole_episodes(
    task: str, length: int, expected: tuple[int, int, int]
) -> None:
    sweep = suite.SWEEPS[task]
    num_envs, num_steps, bptt_len = suite.sweep_chunks(sweep, length, 64, 64, 64, 8)
    assert (num_envs, num_steps, bptt_len) == expected
    assert num_steps % bptt_len == 0 and num_envs * (num_steps // bptt_len) % 8 == 0
    steps = sweep.episode_steps(length)
    if sweep.fixed_steps:
        assert bptt_len == steps
    else:
        assert bptt_len >= min(2 * steps, 64)


def test_sweep_cells_get_chrono_init_for_their_length(tmp_path: Path) -> None:
    """chrono_init rises to the episode's steps where the task's config sets it."""
    opts = suite.SuiteOptions(
        tasks=["RememberAB", "TMaze", "MemoryChain"], cores=["lstm"], seeds=1, out=tmp_path
    )
    yamls = suite.task_configs(suite.DEFAULT_CONFIGS)
    assert yamls["RememberAB"].name == "remember_ab.yaml"
    short = suite.cell_config(suite.Cell("RememberAB", "lstm", 1, 10), opts, yamls)
    assert short.agent.chrono_init == 102  # the config's own value covers 12 steps
    long = suite.cell_config(suite.Cell("RememberAB", "lstm", 1, 1000), opts, yamls)
    assert long.agent.chrono_init == 1002
    assert long.ppo.bptt_len == long.ppo.num_steps == 1002 and long.env.num_envs == 64
    tmaze = suite.cell_config(suite.Cell("TMaze", "gru", 1, 1000), opts, yamls)
    assert tmaze.agent.chrono_init >= 1002
    tmaze = suite.cell_config(suite.Cell("TMaze", "lstm", 1, 10), opts, yamls)
    assert tmaze.agent.chrono_init == 128
    chain = suite.cell_config(suite.Cell("MemoryChain", "lstm", 1, 100), opts, yamls)
    assert chain.agent.chrono_init == 101 and chain.ppo.bptt_len == 101

    # a config without chrono init keeps it off at every length
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "chain.yaml").write_text("env: {id: MemoryChain}\nagent: {forget_bias: 2.0}\n")
    yamls = suite.task_configs(configs)
    plain = suite.cell_config(suite.Cell("MemoryChain", "lstm", 1, 100), opts, yamls)
    assert plain.agent.chrono_init == 0 and plain.agent.forget_bias == 2.0
    # --set overrides come last and win over the sweep's raise
    opts.task_overrides = {"TMaze": ["agent.chrono_init=300"]}
    yamls = suite.task_configs(suite.DEFAULT_CONFIGS)
    tmaze = suite.cell_config(suite.Cell("TMaze", "lstm", 1, 1000), opts, yamls)
    assert tmaze.agent.chrono_init == 300


def test_longest_length_learned_per_seed() -> None:
    rows = [
        {"status": "done", "seed": 1, "length": 10, "learned": True},
        {"status": "done", "seed": 1, "length": 100, "learned": False},
        {"status": "done", "seed": 1, "length": 1000, "learned": True},
        {"status": "done", "seed": 2, "length": 10, "learned": False},
        {"status": "failed", "seed": 3, "length": 10},
    ]
    per_seed = suite.longest_learned(rows)
    assert per_seed == {1: 1000, 2: None}
    assert suite._fmt_longest(per_seed, [10, 100, 1000], False) == "< 10 [< 10, 1000]"
    assert suite._fmt_longest({1: 100}, [10, 100], False) == "100"
    assert suite._fmt_longest({}, [10], True) == "FAILED"
    assert suite.SWEEPS["MemoryChain"].learned(0.63)
    assert not suite.SWEEPS["MemoryChain"].learned(0.625)  # strictly more than 62.5%
    assert suite.SWEEPS["TMaze"].learned(0.95) and not suite.SWEEPS["RememberAB"].learned(0.9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "Nope"], "unknown tier or task 'Nope'"),
        (["--cores", "lstm,transformer"], "--cores='lstm,transformer'"),
        (["--seeds", "0"], "--seeds=0 must be >= 1"),
        (["--lengths", "Copy=10"], "'Copy' is not swept"),
        (["--set", "Nope:ppo.gamma=0.9"], "task 'Nope' is not among --tasks"),
        (["--set", "ppo.num_steps=10"], "not a multiple of ppo.bptt_len"),
        (["--configs", "no/such/dir"], "--configs='no/such/dir' is not a directory"),
    ],
)
def test_bad_suite_input_is_one_clear_line(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    code = main(["suite", "--out", str(tmp_path / "s"), "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rlstm: error:") and message in err
    assert not (tmp_path / "s" / "runs").exists()  # nothing ran


def test_jobs_run_cells_in_subprocesses(tmp_path: Path) -> None:
    args = argparse.Namespace(
        tasks="RepeatFirstEasy",
        cores="none",
        seeds=1,
        steps=256,
        out=str(tmp_path / "suite"),
        overrides=SMALL_SET[1:],
        lengths=[],
        jobs=2,
        device="cpu",
        eval_episodes=8,
        greedy=False,
        configs=str(suite.DEFAULT_CONFIGS),
    )
    lines: list[str] = []
    assert suite.main(args, TIERS, cli_main=main, log=lines.append) == 0
    rows = _csv(tmp_path / "suite" / "suite.csv")
    assert [row["status"] for row in rows.values()] == ["done"]
    assert any("2 at a time" in line for line in lines)
    log = (tmp_path / "suite" / "logs" / "RepeatFirstEasy__none__s1.log").read_text()
    assert "$ rlstm train" in log and "$ rlstm eval" in log  # one child ran both


def test_other_eval_settings_evaluate_finished_cells_again_without_training(
    tmp_path: Path, capsys
) -> None:
    """The table's header states this run's evaluation, so its numbers must come from it."""
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "RepeatFirstEasy", "--cores", "lstm", *TINY]
    argv += ["--out", str(out), *SMALL_SET]
    assert main(argv) == 0
    cell = out / "cells" / "RepeatFirstEasy__lstm__s1.json"
    checkpoint_bytes = (out / "runs" / "RepeatFirstEasy__lstm__s1" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    again = [*argv, "--eval-episodes", "12", "--greedy"]  # the last --eval-episodes wins
    assert main(again) == 0
    assert "evaluate RepeatFirstEasy__lstm__s1 again" in capsys.readouterr().err
    result = json.loads(cell.read_text())
    assert (result["eval_episodes"], result["greedy"], result["steps"]) == (12, True, 256)
    run = out / "runs" / "RepeatFirstEasy__lstm__s1"
    assert (run / "checkpoint.pt").read_bytes() == checkpoint_bytes  # not trained on
    assert _csv(out / "suite.csv")["RepeatFirstEasy__lstm__s1"]["greedy"] == "True"
    assert "over 12 episodes (greedy actions)" in (out / "suite.md").read_text()
    capsys.readouterr()
    assert main(again) == 0  # same settings again: skipped
    assert "skip RepeatFirstEasy__lstm__s1 (finished earlier)" in capsys.readouterr().err


def test_a_cell_stopped_by_its_time_limit_is_not_done_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "RepeatFirstEasy", "--cores", "lstm", *TINY]
    argv += ["--out", str(out), *SMALL_SET]
    assert main([*argv, "run.time_limit=1e-9"]) == 1  # stops after its first iteration
    assert "stopped at run.time_limit after 128 of 256 steps" in capsys.readouterr().err
    assert not (out / "cells" / "RepeatFirstEasy__lstm__s1.json").exists()
    assert main(argv) == 0
    result = json.loads((out / "cells" / "RepeatFirstEasy__lstm__s1.json").read_text())
    assert result["status"] == "done" and result["steps"] == 256


def test_a_finished_run_whose_eval_was_cut_trains_on_when_steps_grew(tmp_path: Path) -> None:
    """Training done, evaluation interrupted, then a rerun with more --steps: the cell trains
    on to them and records the config it trained with."""
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "RepeatFirstEasy", "--cores", "lstm", *TINY]
    argv += ["--out", str(out), *SMALL_SET]
    assert main(argv) == 0
    (out / "cells" / "RepeatFirstEasy__lstm__s1.json").unlink()  # as if eval never finished
    longer = [a if a != "256" else "512" for a in argv]
    assert main(longer) == 0
    result = json.loads((out / "cells" / "RepeatFirstEasy__lstm__s1.json").read_text())
    assert result["steps"] == 512
    assert result["config"]["ppo"]["total_timesteps"] == 512


def test_a_failed_re_evaluation_and_an_old_tmaze_success_are_not_reported_as_done(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "suite"
    argv = ["suite", "--tasks", "TMaze", "--cores", "lstm", *TINY, "--out", str(out)]
    argv += SMALL_SET
    assert main(argv) == 0
    cell = out / "cells" / "TMaze-L3__lstm__s1.json"
    # a result from before TMaze's success was the cued arm: evaluated again, with a note
    # for the settings that changed since it trained
    old = json.loads(cell.read_text())
    del old["eval_version"]
    cell.write_text(json.dumps(old))
    capsys.readouterr()
    assert main([*argv, "ppo.ent_coef=0.02"]) == 0
    err = capsys.readouterr().err
    assert "evaluate TMaze-L3__lstm__s1 again" in err
    assert "note: TMaze-L3__lstm__s1 finished with different ppo.ent_coef" in err
    assert json.loads(cell.read_text())["eval_version"] == suite.EVAL_VERSION
    # an evaluation that fails leaves a failed cell, not the old numbers under a new header
    (out / "runs" / "TMaze-L3__lstm__s1" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main([*argv, "--eval-episodes", "12"]) == 1
    assert not cell.exists()
    assert _csv(out / "suite.csv")["TMaze-L3__lstm__s1"]["status"] == "failed"
