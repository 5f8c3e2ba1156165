"""The Atari backend (envs/atari.py) against the rlstm.vec protocol, on CPU.

Building an emulator costs ~0.2 s and a seeded reset another ~0.2 s per env (ale-py reloads
the ROM), so each test uses 2 envs and module fixtures share envs between tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from envs.atari import AtariEnv, env_steps_per_second, game_of


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """On a 2-core box, torch's OpenMP threads and ale-py's workers fight for the cores:
    tiny tensor ops after a step took ~2 ms instead of 0.04 ms (ATARI.md: keep env threads
    + torch threads <= cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "atari").glob("*.yaml"))
CAP = 20  # max_episode_steps of the truncation fixture


def random_actions(env: AtariEnv, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(env.num_actions, (steps, env.num_envs), generator=gen)


@pytest.fixture(scope="module")
def pong_capped():
    env = AtariEnv("ALE/Pong-v5", 2, seed=3, max_episode_steps=CAP)
    yield env
    env.close()


def test_shapes_dtypes_device(pong_capped: AtariEnv) -> None:
    env = pong_capped
    assert env.obs_shape == (84, 84) and env.obs_dtype == torch.uint8
    assert env.num_actions == 6  # Pong's minimal action set
    obs = env.reset(seed=0)
    assert obs.shape == (2, 84, 84) and obs.dtype == torch.uint8 and obs.device.type == "cpu"
    obs, reward, terminated, truncated, info = env.step(torch.zeros(2, dtype=torch.long))
    assert obs.shape == (2, 84, 84) and obs.dtype == torch.uint8
    assert reward.shape == (2,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["final_obs"].shape == (2, 84, 84) and info["final_obs"].dtype == torch.uint8
    assert info["episode_return"].dtype == torch.float32
    assert info["episode_length"].dtype == torch.int64
    for key in ("episode_done", "game_over"):
        assert info[key].shape == (2,) and info[key].dtype == torch.bool
    assert (obs > 0).any(), "Pong frames have a grey background, never all zero"


def test_stack_num_shape() -> None:
    env = AtariEnv("PongNoFrameskip-v4", 1, stack_num=4, noop_max=0)
    try:
        assert env.obs_shape == (4, 84, 84)
        assert env.reset().shape == (1, 4, 84, 84)
        obs, *_ = env.step(torch.zeros(1, dtype=torch.long))
        assert obs.shape == (1, 4, 84, 84)
    finally:
        env.close()


def test_truncation_same_step_autoreset(pong_capped: AtariEnv) -> None:
    """After exactly CAP agent steps every game is cut; ``final_obs`` is the last frame of the
    cut game and ``obs`` a new game's first. A twin without the cap (same seeds, same
    sticky-action draws) plays identical frames until then. ale-py leaves its frameskip loop
    at the cut before grabbing the 4th frame, so its final frame max-pools frame 3 with the
    previous step's last frame: close to the twin's frame, not equal."""
    twin = AtariEnv("ALE/Pong-v5", 2, seed=3, max_episode_steps=1000)
    try:
        actions = random_actions(pong_capped, CAP)
        obs0, obs0_twin = pong_capped.reset(seed=11), twin.reset(seed=11)
        assert torch.equal(obs0, obs0_twin), "same seed, same first frames"
        for t in range(CAP):
            obs, _, terminated, truncated, info = pong_capped.step(actions[t])
            obs_twin, *_ = twin.step(actions[t])
            assert not terminated.any()
            if t < CAP - 1:
                assert not truncated.any() and not info["episode_done"].any()
                assert torch.equal(obs, obs_twin)
                assert torch.equal(info["final_obs"], obs)
        assert truncated.all() and info["episode_done"].all() and not info["game_over"].any()
        assert info["episode_length"].tolist() == [CAP, CAP]
        final = info["final_obs"]
        for i in range(2):
            assert (final[i] != obs_twin[i]).sum() < (obs[i] != obs_twin[i]).sum()
            assert not torch.equal(final[i], obs[i])
        # the next game counts from zero again
        _, _, _, _, info = pong_capped.step(actions[0])
        assert info["episode_length"].tolist() == [1, 1]
    finally:
        twin.close()


def test_episode_return_is_the_raw_game_score() -> None:
    """Space Invaders pays 5-30 points per invader: rewards arrive unclipped, and the
    reported return is the sum of one game's raw rewards; sign-clipping is the trainer's."""
    steps = 150
    env = AtariEnv("ALE/SpaceInvaders-v5", 2, seed=5, max_episode_steps=steps)
    try:
        env.reset()
        total = torch.zeros(2)
        for action in random_actions(env, steps, seed=1):
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
        assert truncated.all() and not terminated.any()
        assert total.max() > 1, "random play shoots some invaders within 150 steps"
        assert torch.equal(info["episode_return"], total)
        assert info["episode_length"].tolist() == [steps, steps]
    finally:
        env.close()

    from rlstm.cli import reward_transform
    from rlstm.config import build_config

    assert reward_transform(build_config(overrides=["env.id=ALE/SpaceInvaders-v5"])) is torch.sign
    no_clip = build_config(overrides=["env.id=ALE/SpaceInvaders-v5", "env.clip_rewards=false"])
    assert reward_transform(no_clip) is None


def test_life_loss_terminal_keeps_the_game_score() -> None:
    """Breakout, 5 lives. ``life_loss=terminal`` plays the same games as ``none`` (same seed,
    same actions) but also reports each lost life as terminated, with ``final_obs == obs``;
    the score and length keep accumulating and are reported at the game over only."""
    steps = 400
    terminal = AtariEnv(
        "BreakoutNoFrameskip-v4", 2, seed=7, repeat_action_probability=0.0, life_loss="terminal"
    )
    plain = AtariEnv(
        "BreakoutNoFrameskip-v4", 2, seed=7, repeat_action_probability=0.0, life_loss="none"
    )
    try:
        assert torch.equal(terminal.reset(), plain.reset())
        running = torch.zeros(2)
        life_losses = torch.zeros(2, dtype=torch.long)
        games = torch.zeros(2, dtype=torch.long)
        lives = torch.full((2,), 5)
        for action in random_actions(terminal, steps, seed=2):
            obs, reward, terminated, truncated, info = terminal.step(action)
            obs_p, reward_p, terminated_p, truncated_p, info_p = plain.step(action)
            assert torch.equal(obs, obs_p) and torch.equal(reward, reward_p)
            assert not truncated.any()
            done = info["episode_done"]
            assert torch.equal(done, terminated_p) and torch.equal(done, info_p["episode_done"])
            assert torch.equal(done, info["game_over"])
            running += reward
            lost = terminated & ~done
            assert (info["lives"][lost] == lives[lost] - 1).all()
            assert torch.equal(info["final_obs"][~done], obs[~done])
            life_losses += lost.long()
            assert torch.equal(info["episode_return"][~done], running[~done]), "running score"
            for i in done.nonzero().flatten().tolist():
                assert info["episode_return"][i] == running[i] == info_p["episode_return"][i]
                assert info["episode_length"][i] == info_p["episode_length"][i]
                assert life_losses[i] == 4, "four lives lost in play, the fifth ends the game"
                assert terminated[i] and info["lives"][i] == 5
                running[i], life_losses[i] = 0.0, 0
                games[i] += 1
            lives = info["lives"]
        assert (games >= 1).all(), "random play loses a game of Breakout within 400 steps"
    finally:
        terminal.close()
        plain.close()


def test_flicker_blanks_half_the_frames_consistently() -> None:
    """p=0.5: about half of all frames are all zero; a frame keeps its fate as it moves
    through the stack and in ``final_obs``."""
    steps = 200
    env = AtariEnv("ALE/Pong-v5", 2, seed=9, flicker=0.5, stack_num=2, max_episode_steps=60)
    try:
        prev = env.reset()
        blank = [(prev[:, 1] == 0).flatten(1).all(1)]
        for action in random_actions(env, steps):
            obs, _, _, _, info = env.step(action)
            done = info["episode_done"]
            newest = (obs[:, 1] == 0).flatten(1).all(1)
            blank.append(newest)
            keep = ~done
            assert torch.equal(obs[keep, 0], prev[keep, 1]), "stack shifts frame and blanking"
            assert torch.equal(info["final_obs"][keep], obs[keep])
            assert torch.equal(info["final_obs"][done, 0], prev[done, 1])
            prev = obs
        frac = torch.cat(blank).float().mean().item()
        assert abs(frac - 0.5) < 0.1, f"blank fraction {frac} over {2 * (steps + 1)} frames"
    finally:
        env.close()


def test_no_flicker_no_blank_frames(pong_capped: AtariEnv) -> None:
    obs = pong_capped.reset(seed=2)
    frames = [obs]
    for action in random_actions(pong_capped, 50):
        obs, _, _, _, info = pong_capped.step(action)
        frames += [obs, info["final_obs"]]
    assert not (torch.cat(frames) == 0).flatten(1).all(1).any()


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("ALE/Pongg-v5", "unknown Atari game 'Pongg'; did you mean Pong"),
        ("ALE/Pong-v4", "is not an Atari id"),
        ("CartPole-v1", "expected ALE/<Game>-v5 or <Game>NoFrameskip-v4"),
        ("FooBarNoFrameskip-v4", "known games include"),
        ("ALE/Pong-ram-v5", "RAM observations are not supported.*takes ALE/Pong-v5 "),
        ("ALE/Joust-v5", "Joust has no single-player mode"),  # ale-py would exit the process
        ("WarlordsNoFrameskip-v4", "Warlords has no single-player mode"),
    ],
)
def test_bad_ids(env_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AtariEnv(env_id, 2)


@pytest.mark.parametrize("env_id", ["Pong-v4", "PongDeterministic-v4", "Pong-v5"])
def test_other_atari_forms_are_pointed_to_the_ones_rlstm_takes(env_id: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from rlstm.cli import main

    assert main(["train", f"env.id={env_id}", "run.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "takes ALE/Pong-v5 (v5 protocol, sticky actions) or PongNoFrameskip-v4" in err
    assert main(["train", "env.id=ALE/Pong-v5", "env.backend=gymnasium", "run.device=cpu"]) == 2
    assert "run on rlstm's Atari backend (env.backend=auto or atari)" in capsys.readouterr().err


def test_gymnasiums_own_blackjack_is_not_taken_for_the_atari_game() -> None:
    from envs.gym_vec import GymVecEnv

    env = GymVecEnv("Blackjack-v1", 2)  # the Atari game is Blackjack too
    env.close()


def test_ids_map_to_rom_names() -> None:
    assert game_of("ALE/Pong-v5") == game_of("PongNoFrameskip-v4") == "pong"
    assert game_of("ALE/MsPacman-v5") == "ms_pacman"
    assert game_of("MontezumaRevengeNoFrameskip-v4") == "montezuma_revenge"
    assert game_of("BeamRiderNoFrameskip-v4") == "beam_rider"


def test_games_are_the_ids_gymnasium_registers() -> None:
    import ale_py
    import gymnasium as gym

    from envs.atari import games

    gym.register_envs(ale_py)
    registered = {i for i in gym.registry if i.startswith("ALE/") and "-ram" not in i}
    assert {f"ALE/{name}-v5" for name in games()} == registered


@pytest.mark.parametrize("env_id", ["ALE/Breakout-v5", "BreakoutNoFrameskip-v4"])
def test_sticky_actions_follow_the_id_as_gymnasium_registers_it(env_id: str) -> None:
    import ale_py
    import gymnasium as gym

    from rlstm.config import build_config

    gym.register_envs(ale_py)
    expected = gym.spec(env_id).kwargs["repeat_action_probability"]
    assert build_config(overrides=[f"env.id={env_id}"]).env.repeat_action_probability == expected
    env = AtariEnv(env_id, 1)
    try:
        assert env.repeat_action_probability == expected
    finally:
        env.close()
    stated = build_config(overrides=[f"env.id={env_id}", "env.repeat_action_probability=0.1"])
    assert stated.env.repeat_action_probability == 0.1  # a stated protocol wins


def test_missing_rom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALE_ROMS_DIR", str(tmp_path))  # an empty ROM directory
    with pytest.raises(ValueError, match="ALE/Pong-v5.*cannot load the ROM 'pong'"):
        AtariEnv("ALE/Pong-v5", 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"life_loss": "episodic"}, "life_loss='episodic' must be one of none, terminal"),
        ({"flicker": 1.5}, r"flicker=1.5 must lie in \[0, 1\]"),
        ({"stack_num": 0}, "stack_num=0 must be an integer >= 1"),
        ({"fire_reset": 3}, "fire_reset=3 must be true or false"),
        ({"max_episode_steps": 10**9}, "x frameskip 4 passes ale-py's frame limit 2147483647"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AtariEnv("ALE/Pong-v5", 2, **kwargs)


def test_bad_actions_state_dict_and_close(pong_capped: AtariEnv) -> None:
    pong_capped.reset()
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 5\], got values in \[0, 6\]"):
        pong_capped.step(torch.tensor([0, 6]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        pong_capped.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(NotImplementedError, match="no clone/restore"):
        pong_capped.state_dict()
    env = AtariEnv("ALE/Pong-v5", 1)
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configs_build(path: Path) -> None:
    from rlstm.cli import backend_of
    from rlstm.config import build_config

    cfg = build_config(path)
    assert backend_of(cfg) == "atari"
    assert "protocol" in path.read_text().lower(), "each config states its protocol"
    env = AtariEnv.from_config(cfg.env, cfg.env.num_groups, "cpu", cfg.run.seed)
    try:
        assert env.obs_shape == (84, 84)
        assert env.life_loss == cfg.env.life_loss
    finally:
        env.close()


def test_env_kwargs_cannot_shadow_a_setting_in_a_new_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``config.yaml`` must describe the env that runs; a run saved with such kwargs before
    this check still builds its env (eval, inspect, resume)."""
    from rlstm.cli import main
    from rlstm.config import build_config

    sets = ["env.id=ALE/Pong-v5", "env.kwargs={life_loss: terminal}", "run.device=cpu"]
    assert main(["train", *sets, f"run.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "env.kwargs sets life_loss: set env.life_loss instead" in err
    cfg = build_config(overrides=sets)
    assert AtariEnv.shadowed_settings(cfg.env) == ["life_loss"]
    env = AtariEnv.from_config(cfg.env, 1, "cpu", 0)
    try:
        assert env.life_loss == "terminal"
    finally:
        env.close()


def test_resume_says_the_games_start_afresh(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from rlstm.cli import main

    tiny = [
        "env.id=ALE/Pong-v5",
        "env.num_envs=2",
        "env.num_threads=1",
        "ppo.num_steps=8",
        "ppo.bptt_len=8",
        "ppo.num_minibatches=1",
        "ppo.update_epochs=1",
        "agent.hidden_size=16",
        "run.progress=false",
        "run.torch_threads=1",
    ]
    run = tmp_path / "p"
    args = ["train", *tiny, f"run.out_dir={tmp_path}", "run.run_name=p"]
    assert main([*args, "ppo.total_timesteps=16"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "ppo.total_timesteps=32"]) == 0
    err = capsys.readouterr().err
    assert "AtariEnv cannot save its envs' state: weights and optimizer continue" in err
    assert main(["train", "--resume", str(run)]) == 0  # finished: nothing trains, or restarts
    err = capsys.readouterr().err
    assert "already ran its 2 iterations" in err and "start afresh" not in err


def test_env_steps_per_second() -> None:
    assert env_steps_per_second("ALE/Pong-v5", 2, seconds=0.2, num_threads=1, warmup_steps=2) > 0


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    """Pinned, non-blocking copies deliver the CPU env's frames; flicker stays on the device."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    cpu = AtariEnv("ALE/Pong-v5", 4, "cpu", seed=1, max_episode_steps=30)
    gpu = AtariEnv("ALE/Pong-v5", 4, "cuda", seed=1, max_episode_steps=30)
    flick = AtariEnv("ALE/Pong-v5", 4, "cuda", seed=1, max_episode_steps=30, flicker=0.5)
    try:
        assert torch.equal(cpu.reset(), gpu.reset().cpu())
        flick.reset()
        for action in random_actions(cpu, 70):
            out_c = cpu.step(action)
            out_g = gpu.step(action.cuda())
            obs_f, *_, info_f = flick.step(action.cuda())
            assert out_g[0].is_cuda and out_g[0].dtype == torch.uint8 and obs_f.is_cuda
            for a, b in zip(out_c[:4], out_g[:4]):
                assert torch.equal(a, b.cpu())
            for key in ("final_obs", "episode_return", "episode_length", "episode_done"):
                assert torch.equal(out_c[4][key], out_g[4][key].cpu())
            blank = (obs_f == 0).flatten(1).all(1)
            assert torch.equal(obs_f[~blank], out_g[0][~blank])
    finally:
        cpu.close()
        gpu.close()
        flick.close()


def test_groups_step_as_separate_envs() -> None:
    """Group g of a run seeded s is the AtariEnv seeded s * G + g, stepped the same way."""
    from envs.atari import AtariGroups

    grouped = AtariGroups("ALE/Pong-v5", 4, 2, seed=3, max_episode_steps=CAP)
    parts = [AtariEnv("ALE/Pong-v5", 2, seed=3 * 2 + g, max_episode_steps=CAP) for g in range(2)]
    try:
        assert grouped.num_envs == 4 and grouped.obs_shape == (84, 84)
        assert torch.equal(grouped.reset(), torch.cat([env.reset() for env in parts]))
        for action in random_actions(grouped, CAP + 5, seed=2):
            obs, reward, terminated, truncated, info = grouped.step(action)
            ref = [env.step(a) for env, a in zip(parts, action.chunk(2), strict=True)]
            assert torch.equal(obs, torch.cat([r[0] for r in ref]))
            assert torch.equal(reward, torch.cat([r[1] for r in ref]))
            assert torch.equal(terminated | truncated, torch.cat([r[2] | r[3] for r in ref]))
            for key in ("final_obs", "episode_return", "episode_length", "episode_done"):
                assert torch.equal(info[key], torch.cat([r[4][key] for r in ref]))
        assert truncated.dtype == torch.bool
    finally:
        grouped.close()
        for env in parts:
            env.close()
    with pytest.raises(ValueError, match="num_groups=3 must be >= 1 and divide"):
        AtariGroups("ALE/Pong-v5", 4, 3)


def test_send_recv_misuse_is_named(pong_capped: AtariEnv) -> None:
    pong_capped.reset()
    with pytest.raises(RuntimeError, match="recv called without send"):
        pong_capped.recv()
    pong_capped.send(torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="send called twice without recv"):
        pong_capped.send(torch.zeros(2, dtype=torch.long))
    pong_capped.reset()  # a reset finishes the step in flight
    obs, *_ = pong_capped.step(torch.zeros(2, dtype=torch.long))
    assert obs.shape == (2, 84, 84)


def test_overlapped_collect_equals_groups_stepped_in_turn(tmp_path: Path) -> None:
    """The trainer's send/recv overlap changes timing only: the buffer equals a reference
    that acts for each group and steps it before moving on to the next."""
    import copy

    from agents import RecurrentAgent
    from envs.atari import AtariGroups
    from rlstm.acting import sample_actions
    from rlstm.cli import make_env, reward_transform
    from rlstm.config import build_config
    from rlstm.trainer import Trainer

    T, G, B = 12, 2, 4
    cfg = build_config(
        overrides=[
            "env.id=ALE/Pong-v5",
            f"env.num_envs={B}",
            f"env.num_groups={G}",
            "env.max_episode_steps=5",  # truncations and episode starts inside the rollout
            f"ppo.num_steps={T}",
            "ppo.bptt_len=4",
            "ppo.num_minibatches=1",
            f"ppo.total_timesteps={T * B}",
            "agent.hidden_size=8",
            "run.device=cpu",
        ]
    )
    env = make_env(cfg, torch.device("cpu"))
    assert isinstance(env, AtariGroups)
    agent = RecurrentAgent(env.obs_shape, env.obs_dtype, env.num_actions, cfg.agent)
    reference_agent = copy.deepcopy(agent)
    trainer = Trainer(cfg, env, agent, tmp_path, torch.device("cpu"), reward_transform(cfg))
    gen = torch.Generator().manual_seed(0)
    gen.set_state(trainer.action_gen.get_state())
    trainer.collect()
    buf = trainer.buffer
    env.close()

    size = B // G
    parts = [
        AtariEnv("ALE/Pong-v5", size, seed=trainer.seed * G + g, max_episode_steps=5)
        for g in range(G)
    ]
    obs = [env.reset() for env in parts]
    state = [reference_agent.initial_state(size) for _ in range(G)]
    starts = [torch.ones(size, dtype=torch.bool) for _ in range(G)]
    try:
        with torch.no_grad():
            for t in range(T):
                for g, part in enumerate(parts):
                    cols = slice(g * size, (g + 1) * size)
                    assert torch.equal(buf.obs[t, cols], obs[g])
                    assert torch.equal(buf.starts[t, cols], starts[g])
                    torch.testing.assert_close(buf.states[t, :, cols], state[g])
                    logits, value, state[g] = reference_agent.step(obs[g], state[g], starts[g])
                    action, _ = sample_actions(logits, gen)
                    assert torch.equal(buf.actions[t, cols], action)
                    torch.testing.assert_close(buf.values[t, cols], value)
                    obs[g], reward, terminated, truncated, info = part.step(action)
                    assert torch.equal(buf.rewards[t, cols], torch.sign(reward))
                    starts[g] = terminated | truncated
                    assert torch.equal(buf.terminated[t, cols], terminated)
                    assert torch.equal(buf.truncated[t, cols], truncated)
                    assert torch.equal(buf.final_obs[t, cols], info["final_obs"])
        assert buf.truncated.any() and buf.starts[1:].any()
        assert torch.equal(trainer.next_obs, torch.cat(obs))
        torch.testing.assert_close(trainer.next_state, torch.cat(state, dim=1))
    finally:
        for part in parts:
            part.close()


def test_eval_builds_one_batch_whatever_the_groups() -> None:
    """Groups shape only how training overlaps: eval / inspect may ask for any env count."""
    from rlstm.cli import make_env
    from rlstm.config import build_config

    cfg = build_config(CONFIGS[0].parent / "pong.yaml")
    assert cfg.env.num_groups == 2
    env = make_env(cfg, torch.device("cpu"), num_envs=3, groups=False)
    try:
        assert isinstance(env, AtariEnv) and env.num_envs == 3
    finally:
        env.close()
    with pytest.raises(Exception, match="num_groups=2 must be >= 1 and divide num_envs=3"):
        make_env(cfg, torch.device("cpu"), num_envs=3)


def test_overlapped_update_runs_between_group_steps(tmp_path: Path) -> None:
    """``ppo.overlap_update`` with two env groups: the previous rollout's minibatch steps run
    inside the next rollout, right after a group's actions are sent, and end with the weights
    the plain update gives on the same rollout."""
    from rlstm.cli import make_agent, make_env, reward_transform
    from rlstm.config import build_config
    from rlstm.ppo import update, update_steps
    from rlstm.trainer import Trainer

    def trainer(name: str, overlap: bool) -> Trainer:
        cfg = build_config(
            overrides=[
                "env.id=ALE/Pong-v5",
                "env.num_envs=4",
                "env.num_groups=2",
                "ppo.num_steps=8",
                "ppo.bptt_len=4",
                "ppo.num_minibatches=2",
                "ppo.update_epochs=2",
                "agent.hidden_size=8",
                f"ppo.overlap_update={str(overlap).lower()}",
                "run.device=cpu",
            ]
        )
        torch.manual_seed(0)
        env = make_env(cfg, torch.device("cpu"))
        agent = make_agent(cfg, env)
        return Trainer(cfg, env, agent, tmp_path / name, torch.device("cpu"), reward_transform(cfg))

    overlapped, plain = trainer("o", True), trainer("p", False)
    try:
        for t in (overlapped, plain):
            t.collect()
            t.advantages()
        o = overlapped
        o.pending_update = update_steps(
            o.agent, o.params, o.optimizer, o.buffer, o.cfg.ppo, o.shuffle_gen
        )
        o.collect()
        # 8 steps x 2 groups, 4 minibatch steps: one after every 4th group send
        assert o.interleaved[0] == 4
        o._finish_update()
        want = update(
            plain.agent,
            plain.params,
            plain.optimizer,
            plain.buffer,
            plain.cfg.ppo,
            plain.shuffle_gen,
        )
        assert o.finished_updates[0][1] == pytest.approx(want, nan_ok=True)
        for a, b in zip(o.params, plain.params, strict=True):
            assert torch.equal(a, b)
    finally:
        overlapped.env.close()
        plain.env.close()
