"""``rlstm train | eval | bench | suite | inspect | plot``: the one place that wires
``agents/`` and ``envs/`` to the core.

Errors a user can fix (bad config, missing env id, unreadable checkpoint) print one line,
``rlstm: error: ...``, and exit with status 2 before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from rlstm import checkpoint, distributed
from rlstm.config import Config, ConfigError, build_config, config_from_dict, help_text
from rlstm.trainer import Trainer, TrainingStopped, make_run_dir, resolve_device

# `rlstm train` with no CONFIG: a memory task that needs memory and learns in a few minutes
# on a laptop CPU (RepeatFirstEasy: repeat the first card's suit for 51 steps; the first-step
# flag tells the agent which card to keep). configs/memory/repeat_first_easy.yaml is the same.
DEFAULT_CONFIG: dict[str, Any] = {
    "env": {"id": "RepeatFirstEasy", "num_envs": 32, "first_flag": True},
    "agent": {"core": "lstm", "hidden_size": 64, "encoder_hidden": 64},
    "ppo": {
        "total_timesteps": 200_000,
        "num_steps": 64,
        "bptt_len": 64,
        "num_minibatches": 4,
        "update_epochs": 4,
        "learning_rate": 3e-3,
        "ent_coef": 0.01,
        "gamma": 0.9,
        "gae_lambda": 0.9,
    },
    "run": {"torch_threads": 1},
}


TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before any run.torch_threads applies


class UsageError(Exception):
    """A user error reported as one line, exit status 2."""


class StoppedAtOnce(Exception):
    """Training stopped mid-iteration by a second Ctrl-C (already reported): exit status 130."""


# -- wiring -------------------------------------------------------------------------------
def backend_of(cfg: Config) -> str:
    if cfg.env.backend != "auto":
        return cfg.env.backend
    import envs.memory

    env_id = cfg.env.id
    if env_id.removeprefix("rlstm/").removesuffix("-v0") in envs.memory.REGISTRY:
        return "memory"
    if env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4"):
        return "atari"
    return "gymnasium"


def make_env(
    cfg: Config,
    device: torch.device,
    num_envs: int | None = None,
    seed: int | None = None,
    groups: bool = True,
):  # noqa: ANN201 - returns the backend's VecEnv
    """Build the batched env ``cfg.env`` describes, on ``device``. ``groups=False`` builds an
    Atari env as one batch whatever ``env.num_groups`` (evaluation has nothing to overlap)."""
    e = cfg.env if groups else dataclasses.replace(cfg.env, num_groups=1)
    n = num_envs or e.num_envs
    backend = backend_of(cfg)
    seed = cfg.run.seed if seed is None else seed
    try:
        if backend == "memory":
            import envs.memory

            opts: dict[str, Any] = dict(e.kwargs)
            if e.prev_action is not None:
                opts["prev_action"] = e.prev_action
            if e.first_flag is not None:
                opts["first_flag"] = e.first_flag
            return envs.memory.make(e.id, n, device, seed, check_range=False, **opts)
        if backend == "atari":
            from envs.atari import AtariEnv

            return AtariEnv.from_config(e, n, device, seed)
        from envs.gym_vec import GymVecEnv

        return GymVecEnv(e.id, n, device, **e.kwargs)
    except TypeError as exc:
        raise UsageError(f"env.kwargs={e.kwargs!r} do not fit env.id={e.id!r}: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def reward_transform(cfg: Config) -> Any:
    """Atari trains on sign-clipped rewards while logging raw game scores."""
    if backend_of(cfg) == "atari" and cfg.env.clip_rewards:
        return torch.sign
    return None


def make_agent(cfg: Config, env: Any) -> torch.nn.Module:
    from agents import RecurrentAgent

    try:
        return RecurrentAgent(env.obs_shape, env.obs_dtype, env.num_actions, cfg.agent)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# Agent settings that only initialise the weights or pick the arithmetic: a checkpoint made
# with other values still fits.
INIT_OR_COMPUTE_ONLY = ("forget_bias", "chrono_init", "bf16")


def check_compatible(data: dict[str, Any], cfg: Config, env: Any, agent: torch.nn.Module) -> None:
    """Refuse a checkpoint whose spaces or network differ, naming the mismatch."""
    saved_agent = data["config"].get("agent", {})
    for key, value in cfg.agent.__dict__.items():
        if key in INIT_OR_COMPUTE_ONLY:  # do not change the network's shape
            continue
        if key in saved_agent and saved_agent[key] != value:
            raise UsageError(
                f"checkpoint was trained with agent.{key}={saved_agent[key]!r}, "
                f"this run has agent.{key}={value!r}"
            )
    saved_obs = tuple(data.get("obs_shape", ()))
    if saved_obs != tuple(env.obs_shape):
        raise UsageError(
            f"checkpoint obs shape {saved_obs} != env obs shape {tuple(env.obs_shape)}"
        )
    if data.get("num_actions") != env.num_actions:
        raise UsageError(
            f"checkpoint has {data.get('num_actions')} actions, env has {env.num_actions}"
        )
    own = agent.state_dict()
    for key, value in data["agent"].items():
        if key not in own:
            raise UsageError(
                f"checkpoint has parameter {key!r} that this agent lacks (different core?)"
            )
        if tuple(own[key].shape) != tuple(value.shape):
            raise UsageError(
                f"checkpoint parameter {key!r} has shape {tuple(value.shape)}, this agent "
                f"expects {tuple(own[key].shape)} (different hidden size or layers?)"
            )
    missing = set(own) - set(data["agent"])
    if missing:
        raise UsageError(f"checkpoint lacks parameters {sorted(missing)} (different core?)")


def setup_torch(cfg: Config, device_flag: str = "run.device") -> torch.device:
    device = resolve_device(cfg.run.device, device_flag)
    torch.manual_seed(cfg.run.seed)
    # 0: torch's own default, also after an earlier in-process run (a suite cell) set another
    torch.set_num_threads(cfg.run.torch_threads or TORCH_DEFAULT_THREADS)
    torch.backends.cudnn.deterministic = cfg.run.torch_deterministic
    torch.backends.cudnn.benchmark = not cfg.run.torch_deterministic
    return device


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return checkpoint.load(path)
    except checkpoint.CheckpointError as exc:
        raise UsageError(str(exc)) from None


# -- commands -----------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    distributed.init()  # under torchrun: join the process group (nothing in a single process)
    try:
        code = _train(args)
    except BaseException:
        distributed.destroy(synchronize=False)  # a failing rank exits; torchrun stops the rest
        raise
    distributed.destroy()
    return code


def _train(args: argparse.Namespace) -> int:
    if args.resume:
        # rank 0 reads the checkpoint and hands it to the other ranks (no shared disk needed)
        data, run_dir = distributed.on_rank0(lambda: _read_resume(args.resume))
        cfg = config_from_dict(data["config"])
        for override in args.overrides:
            if override.split("=", 1)[0] in ("run.out_dir", "run.run_name"):
                raise UsageError(
                    f"{override}: a resumed run stays in {run_dir} (copy the directory to move it)"
                )
        if args.overrides or args.config:
            cfg = build_config(args.config, args.overrides, base=cfg.to_dict())
    else:
        cfg = build_config(
            args.config, args.overrides, base=None if args.config else DEFAULT_CONFIG
        )
        data = None
    if data is None and backend_of(cfg) == "atari":
        from envs.atari import AtariEnv

        shadowed = AtariEnv.shadowed_settings(cfg.env)
        if shadowed:
            raise UsageError(
                f"env.kwargs sets {', '.join(shadowed)}: set env.{shadowed[0]} instead "
                "(env.kwargs passes only options without a setting of their own, e.g. "
                "fire_reset)"
            )
    world, main_rank = distributed.world_size(), distributed.rank() == 0
    if cfg.ppo.overlap_update and world > 1:
        raise UsageError(
            "ppo.overlap_update=true runs in a single process only, not under torchrun: "
            "add ppo.overlap_update=false (the Atari configs turn it on)"
        )
    try:  # env.num_envs is the total over ranks: each rank steps its share
        num_envs = distributed.local_num_envs(
            cfg.env.num_envs,
            cfg.ppo.num_chunks_per_env,
            cfg.ppo.num_minibatches,
            cfg.env.num_groups if backend_of(cfg) == "atari" else 1,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    device = setup_torch(cfg)
    env = make_env(cfg, device, num_envs=num_envs, seed=distributed.rank_seed(cfg.run.seed))
    agent = make_agent(cfg, env)
    if data is not None:
        check_compatible(data, cfg, env, agent)
    else:
        run_dir = distributed.on_rank0(lambda: _new_run_dir(cfg))
    trainer = Trainer(cfg, env, agent, run_dir, device, reward_transform(cfg), resume_from=data)
    to_train = trainer.iteration < trainer.num_iterations  # else train() says there is nothing
    if trainer.fresh_episodes and main_rank and to_train:
        print(
            f"rlstm: {trainer.fresh_episodes}: weights and optimizer continue, "
            "episodes start afresh",
            file=sys.stderr,
        )
    if main_rank and to_train:
        ranks = f" x {world} ranks ({num_envs} envs each)" if world > 1 else ""
        print(f"rlstm: training {cfg.env.id} on {device}{ranks} -> {run_dir}", file=sys.stderr)
    try:
        summary = trainer.train()
    except TrainingStopped as exc:
        if main_rank:
            print(f"rlstm: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, mid-iteration
        if main_rank:
            saved = run_dir / checkpoint.LATEST
            kept = (
                f"the last checkpoint, {saved}, is intact; resume with: {trainer.resume_command}"
                if saved.is_file()
                else "no checkpoint was saved yet"
            )
            print(f"rlstm: stopped at once by a second Ctrl-C; {kept}", file=sys.stderr)
        # as an error, so that cmd_train leaves without waiting for ranks still in an update
        raise StoppedAtOnce from None
    finally:
        env.close()
    if main_rank:
        print(json.dumps(summary, indent=2))
        if not summary["finished"]:
            print(
                f"rlstm: stopped at run.time_limit={cfg.run.time_limit:g} s after iteration "
                f"{summary['iterations']} of {trainer.num_iterations}; resume with: "
                f"{trainer.resume_command}",
                file=sys.stderr,
            )
    return 0


def _read_resume(path: str) -> tuple[dict[str, Any], Path]:
    data = load_checkpoint(path)
    run_dir = Path(path)
    return data, run_dir.parent if run_dir.is_file() else run_dir


def _new_run_dir(cfg: Config) -> Path:
    name = cfg.run.run_name or f"{cfg.env.id.replace('/', '_')}__{cfg.run.seed}__{_timestamp()}"
    try:
        return make_run_dir(cfg.run.out_dir, name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def require_dir(flag: str, path: str | Path | None) -> None:
    """An output directory option must not name an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file; it must name a directory")


def cmd_eval(args: argparse.Namespace) -> int:
    from rlstm.evaluate import evaluate

    require_dir("--video", args.video)
    data = load_checkpoint(args.path)
    cfg = config_from_dict(data["config"])
    cfg.run.device = args.device or "auto"
    device = setup_torch(cfg, "--device")
    num_envs = args.num_envs or min(cfg.env.num_envs, args.episodes)
    env = make_env(cfg, device, num_envs=num_envs, seed=args.seed, groups=False)
    if args.video:  # films env 0's episodes (image observations only)
        from rlstm.inspection import VideoRecorder

        try:
            env = VideoRecorder(env, args.video)
        except (ValueError, ImportError) as exc:
            env.close()
            raise UsageError(str(exc)) from None
    agent = make_agent(cfg, env).to(device)
    check_compatible(data, cfg, env, agent)
    agent.load_state_dict(data["agent"])
    agent.eval()
    try:
        result = evaluate(agent, env, args.episodes, greedy=args.greedy, seed=args.seed)
    finally:
        env.close()
    path = Path(args.path)
    out_dir = path if path.is_dir() else path.parent
    report = {k: v for k, v in result.items() if k not in ("returns", "lengths")}
    report.update(
        {"env": cfg.env.id, "greedy": args.greedy, "checkpoint_step": data["global_step"]}
    )
    if args.video:
        report["videos"] = [str(p) for p in env.paths]
    (out_dir / "eval.json").write_text(
        json.dumps({**report, "returns": result["returns"]}, indent=2)
    )
    print(
        f"{cfg.env.id}: {result['episodes']} episodes, return {result['mean_return']:.4f} "
        f"+- {result['std_return']:.4f}, length {result['mean_length']:.1f} "
        f"+- {result['std_length']:.1f}"
    )
    print(json.dumps(report, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.seconds is None:
        args.seconds = 60.0 if args.target == "atari" else 2.0
    if args.target == "memory":
        from envs.memory import bench as memory_bench

        devices = (
            [str(resolve_device(args.device, "--device"))]
            if args.device
            else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        )
        try:
            rows = memory_bench.bench(args.tasks, args.sizes, devices, args.seconds)
        except ValueError as exc:  # an unknown task
            raise UsageError(str(exc)) from None
        print(memory_bench.format_table(rows))
        return 0
    if args.target == "core":
        print(bench_core(args.device or "auto", args.seconds))
        return 0
    if args.target == "atari":
        from envs import atari_bench

        try:
            result = atari_bench.bench(
                args.env,
                args.num_envs,
                args.seconds,
                args.device or "auto",
                args.config,
                args.compare,
                args.torch_threads,
                args.env_threads,
                sb3_envs=args.sb3_envs,
                sb3_vec=args.sb3_vec,
                overrides=args.set,
            )
        except atari_bench.BenchError as exc:
            raise UsageError(str(exc)) from None
        print(atari_bench.format_table(result))
        if args.json:
            atari_bench.write_json(result, args.json)
        return 0
    raise UsageError(f"unknown bench target {args.target!r}")


def bench_core(device_name: str, seconds: float) -> str:
    """Time the core's training path (forward + backward) with episode resets against one
    reset-free cuDNN call on the same shapes, and against the Python step loop."""
    import time

    from rlstm.core import RecurrentCore, segment_capacity, segment_sizes

    device = resolve_device(device_name, "--device")
    torch.backends.cudnn.benchmark = True
    rows = [
        "| core | L x M | H | p(start) | reset-free call ms | with resets ms | ratio "
        "| with resets, sizes given ms | sized ratio | + final state (packed) ms | step loop ms "
        "| CUDA graphs: reset-free ms | with resets (capacity) ms | graph ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, (L, M), H, p in [
        ("lstm", (64, 128), 128, 0.02),
        ("lstm", (64, 128), 128, 0.1),
        ("lstm", (32, 1024), 256, 0.02),
        ("gru", (64, 128), 128, 0.02),
    ]:
        core = RecurrentCore(kind, H, H).to(device)
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(L, M, H, device=device, generator=g, requires_grad=True)
        state = torch.randn(core.state_slots, M, H, device=device, generator=g)
        starts = torch.rand(L, M, device=device, generator=g) < p
        no_starts = torch.zeros_like(starts)

        def timed(fn) -> float:
            for _ in range(3):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 12 or n < 3:
                fn()
                n += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / n * 1e3

        def run(path, x=x, state=state, s=no_starts, **kwargs):
            return lambda: path(x, state, s, **kwargs)[0].sum().backward()

        def outputs_only(x, state, s, core=core):
            return core.sequence(x, state, s, need_state=False, method="segments")

        # the PPO update's path: the sizes come from one sync per epoch, not per call
        (sizes,) = segment_sizes(starts, torch.arange(M, device=device)[None])

        def outputs_sized(x, state, s, core=core, sizes=sizes):
            return core.sequence(x, state, s, need_state=False, method="segments", sizes=sizes)

        def with_state(x, state, s, core=core):
            return core.sequence(x, state, s, method="segments")

        # the CUDA-graph update's path: a static segment capacity, replayed from a graph
        # (and the reset-free call given its sizes, since a graph cannot sync to size it)
        capacity = (segment_capacity(M, sizes[0], L), L)

        def outputs_capacity(x, state, s, core=core, capacity=capacity):
            return core.sequence(x, state, s, need_state=False, method="segments", sizes=capacity)

        def graphed(fn) -> Any:  # forward + backward captured once, then replayed
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            return graph.replay

        plain = timed(run(outputs_only, s=no_starts))
        fused = timed(run(outputs_only, s=starts))
        sized = timed(run(outputs_sized, s=starts))
        packed = timed(run(with_state, s=starts))
        loop = timed(run(core.sequence_reference, s=starts))
        graph_cells = "- | - | -"
        if device.type == "cuda":
            plain_graph = timed(graphed(run(outputs_sized, s=no_starts, sizes=(M, L))))
            resets_graph = timed(graphed(run(outputs_capacity, s=starts)))
            graph_cells = (
                f"{plain_graph:.2f} | {resets_graph:.2f} | {resets_graph / plain_graph:.2f}"
            )
        rows.append(
            f"| {kind} | {L} x {M} | {H} | {p} | {plain:.2f} | {fused:.2f} | "
            f"{fused / plain:.2f} | {sized:.2f} | {sized / plain:.2f} | {packed:.2f} | {loop:.2f} "
            f"| {graph_cells} |"
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"device: {device} ({name})\n" + "\n".join(rows)


def cmd_suite(args: argparse.Namespace) -> int:
    import envs.memory
    from rlstm import suite

    require_dir("--out", args.out)
    tiers = {
        "A": envs.memory.diagnostics.TASKS,
        "B": envs.memory.probes.TASKS,
        "C": envs.memory.counting.TASKS,
        "D": envs.memory.games.TASKS,
    }
    return suite.main(
        args,
        tiers,
        cli_main=main,
        echo=print,
        log=lambda line: print(f"rlstm suite: {line}", file=sys.stderr, flush=True),
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from torch.utils.tensorboard import SummaryWriter

    from rlstm.inspection import record, write_report

    require_dir("--out", args.out)
    data = load_checkpoint(args.path)
    cfg = config_from_dict(data["config"])
    cfg.run.device = args.device or "auto"
    device = setup_torch(cfg, "--device")
    # one env per episode
    env = make_env(cfg, device, num_envs=args.episodes, seed=args.seed, groups=False)
    agent = make_agent(cfg, env).to(device)
    check_compatible(data, cfg, env, agent)
    agent.load_state_dict(data["agent"])
    agent.eval()
    variables: tuple[Any, ...] = ()
    if backend_of(cfg) == "memory":
        from envs.memory.hidden import hidden_variables

        variables = hidden_variables(env)
    try:
        rec = record(
            agent,
            env,
            args.episodes,
            variables,
            greedy=args.greedy,
            seed=args.seed,
            max_steps=args.max_steps,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        env.close()
    path = Path(args.path)
    run_dir = path if path.is_dir() else path.parent
    out = Path(args.out) if args.out else run_dir / "inspect"
    writer = SummaryWriter(str(run_dir))  # images under inspect/* beside the run's curves
    try:
        summary = write_report(rec, out, writer, step=int(data["global_step"]))
    finally:
        writer.close()
    print(
        f"{cfg.env.id}: {summary['episodes']} episodes, {summary['steps']} steps, "
        f"mean return {summary['mean_return']:.4f} over the "
        f"{summary['complete_episodes']} that ended -> {out}"
    )
    for p in summary["probes"]:
        if p["constant"]:
            print(f"  {p['variable']}: took one value in these episodes: nothing to probe")
            continue
        metric, linear = p["metric"], "r2" if p["kind"] == "scalar" else "accuracy"
        best = ", ".join(f"{u['unit']} ({u[metric]:+.3f})" for u in p["best_units"][:3])
        where = "held out" if p["held_out"] else "on the fitted steps"
        null_best, null_linear = p[f"null_best_{metric}"], p[f"null_linear_probe_{linear}"]
        print(
            f"  {p['variable']}: best {p['state']} units by {metric}: {best} "
            f"(shifted-variable null {null_best:.3f}); linear probe {linear} "
            f"{p[f'linear_probe_{linear}']:.3f} {where} (null {null_linear:.3f})"
        )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rlstm.plotting import plot_curves

    try:
        summary = plot_curves(args.runs, args.out, tag=args.tag, x=args.x, group=not args.separate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for name, row in summary.items():
        x = row["final_x"]
        where = f"step {x:,.0f}" if args.x == "steps" else f"{x:,.0f} s"
        print(
            f"{name}: {len(row['runs'])} run(s), final {row['final']:.4f} at {where}, "
            f"best {row['best']:.4f}"
        )
    print(f"rlstm: wrote {args.out}", file=sys.stderr)
    return 0


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a seed)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _timestamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlstm", description="Recurrent PPO for memory tasks and Atari."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train an agent",
        description="Train recurrent PPO. Settings: defaults < CONFIG < key=value overrides.",
        epilog="options (section.key=default):\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", nargs="?", help="YAML config (omit for the embedded default)")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a trained agent with its state carried")
    ev.add_argument("path", help="run directory or checkpoint file")
    ev.add_argument("--episodes", type=positive_int, default=100)
    ev.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    ev.add_argument(
        "--num-envs", type=positive_int, default=None, help="parallel envs (default: the run's)"
    )
    ev.add_argument("--greedy", action="store_true", help="arg-max actions instead of sampling")
    ev.add_argument("--seed", type=non_negative_int, default=12345)
    ev.add_argument(
        "--video",
        metavar="DIR",
        help="write env 0's episodes (at most 10) as MP4s "
        "to DIR; image observations only; needs pip install 'rlstm[video]'",
    )
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="throughput benchmarks")
    bench.add_argument("target", choices=["memory", "core", "atari"])
    bench.add_argument(
        "--tasks",
        nargs="+",
        default=["RepeatFirstEasy", "RepeatPreviousEasy", "AutoencodeEasy", "CountRecallEasy"],
    )
    bench.add_argument("--sizes", nargs="+", type=positive_int, default=[1024, 16384, 65536])
    bench.add_argument(
        "--device", default=None, help="cpu or cuda (default: cpu, and cuda when present)"
    )
    bench.add_argument("--seconds", type=positive_float, default=None, help="default 2; atari: 60")
    # atari: raw env steps/s vs rlstm training steps/s (vs sb3-contrib with --compare sb3)
    bench.add_argument(
        "--env",
        default=None,
        help="atari: game id (default: the config's); its sticky actions follow the id",
    )
    bench.add_argument("--num-envs", type=positive_int, default=16, help="atari: parallel games")
    bench.add_argument("--config", default=None, help="atari: (default configs/atari/pong.yaml)")
    bench.add_argument("--compare", choices=["sb3"], default=None, help="atari: also time sb3")
    bench.add_argument("--sb3-vec", choices=["subproc", "dummy"], default="subproc")
    bench.add_argument(
        "--sb3-envs",
        type=positive_int,
        default=None,
        help="atari: sb3-contrib's env count (default --num-envs; the sb3 zoo's Atari PPO uses 8)",
    )
    bench.add_argument("--torch-threads", type=positive_int, default=1, help="atari (default 1)")
    bench.add_argument(
        "--env-threads",
        type=positive_int,
        default=None,
        help="atari: default cores - torch threads",
    )
    bench.add_argument("--json", metavar="FILE", help="atari: write the results as JSON")
    bench.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="atari: config overrides for the training run (e.g. env.num_groups=2 agent.bf16=true)",
    )
    bench.set_defaults(func=cmd_bench)

    from rlstm.suite import add_arguments as add_suite_arguments

    suite = sub.add_parser(
        "suite", help="train + evaluate tasks x cores x seeds; table, CSV, chart"
    )
    add_suite_arguments(suite)
    suite.set_defaults(func=cmd_suite)

    ins = sub.add_parser(
        "inspect",
        help="record LSTM gates and states; heatmaps and probes",
        description="Run the policy, record per step and unit the first layer's "
        "gates, cell and hidden state; write heatmaps, probes of the task's "
        "hidden variables and an .npz to --out, images to TensorBoard.",
    )
    ins.add_argument("path", help="run directory or checkpoint file")
    ins.add_argument("--episodes", type=positive_int, default=8, help="episodes (one env each)")
    ins.add_argument("--out", help="output directory (default RUN_DIR/inspect)")
    ins.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    ins.add_argument("--greedy", action="store_true", help="arg-max actions instead of sampling")
    ins.add_argument(
        "--max-steps", type=positive_int, default=10_000, help="cut episodes at this step"
    )
    ins.add_argument("--seed", type=non_negative_int, default=12345)
    ins.set_defaults(func=cmd_inspect)

    plot = sub.add_parser(
        "plot",
        help="learning curves from TensorBoard event files",
        description="Runs named alike but for the seed (NAME__s3, "
        "ENV__SEED__TIME, NAME-2) are drawn as one curve: their mean, "
        "with the min-max range shaded.",
    )
    plot.add_argument("runs", nargs="+", help="run directories, or directories of runs")
    plot.add_argument("--out", default="curves.png", help="image file (default curves.png)")
    plot.add_argument(
        "--x", choices=["steps", "time"], default="steps", help="env steps or wall time"
    )
    plot.add_argument("--tag", default="charts/episodic_return", help="scalar to plot")
    plot.add_argument("--separate", action="store_true", help="one curve per run, no grouping")
    plot.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.config and "=" in args.config:
        args.overrides.insert(0, args.config)  # `rlstm train key=value ...` without a CONFIG
        args.config = None
    try:
        return int(args.func(args))
    except (UsageError, ConfigError) as exc:
        print(f"rlstm: error: {exc}", file=sys.stderr)
        return 2
    except StoppedAtOnce:
        return 130
    except KeyboardInterrupt:
        print("rlstm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
