"""evaluate.py on a short run of every training file: deterministic returns on fresh seeds, the run's own
frozen observation statistics, videos and a GIF, Cycle Friction at a chosen friction, one-line failures."""

import csv
import shutil
import sys

import numpy as np
import pytest
import torch

import envs
import evaluate
from conftest import TINY, load_checkpoint, read_scalars, run_in_process, run_script
from test_sac import TINY_SAC

# per file: a run of 2 updates (SAC: 600 steps, 300 of them learning) that goes through the file's method
METHOD = {"ppo_continuous.py": [], "p3o_continuous.py": ["--reset-frequency", "512", "--reset-rate", "0.1"],
          "ppo_cycle.py": ["--reset-frequency", "512", "--reset-rate", "0.25"],
          "ppo_redo.py": ["--reset-frequency", "512", "--reset-rate", "0.1"],
          "ppo_cbp.py": ["--maturity-threshold", "5", "--replacement-rate", "0.05"],
          "sac_sbp.py": ["--reset-frequency", "100"]}
RUNS = {script: (script, *([*TINY_SAC, "--total-timesteps", "600"] if script == "sac_sbp.py" else
                           [*TINY, "--total-timesteps", "1024"]), *method) for script, method in METHOD.items()}
SHARED_RUNS = {"runs": list(RUNS.values())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_runs):
    """{file: its run directory}, each a short run on InvertedPendulum-v5 (SAC: Pendulum-v1), copied here (the
    tests write their evaluations beside it)."""
    return {script: shared_runs.copy(*run, to=tmp_path_factory.mktemp(script[:-3]) / "run")
            for script, run in RUNS.items()}


def evaluate_main(monkeypatch, *argv):
    """Run evaluate.py in this process."""
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *map(str, argv)])
    evaluate.main()


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def training_episodes(run):
    """The run's own (return, length) per episode, from TensorBoard."""
    tags = read_scalars(run)
    return [(r, l) for (_, r), (_, l) in zip(tags["charts/episodic_return"], tags["charts/episodic_length"])]


@pytest.mark.parametrize("script", METHOD)
def test_evaluation_of_every_file_is_deterministic_on_fresh_seeds_and_agrees_with_its_run(
        runs, script, monkeypatch, capsys):
    run = runs[script]
    evaluate_main(monkeypatch, run, "--episodes", 3, "--seed", 50)
    rows = read_rows(run / "evaluation.csv")
    assert [int(r["seed"]) for r in rows] == [50, 51, 52] and {r["script"] for r in rows} == {script}
    returns, lengths = np.array([float(r["return"]) for r in rows]), np.array([int(r["length"]) for r in rows])
    assert f"return {returns.mean():.1f} ± {returns.std():.1f}" in capsys.readouterr().out
    episodes = training_episodes(run)
    assert episodes
    if script == "sac_sbp.py":  # Pendulum-v1: every episode is the 200-step time limit, reward in [-16.3, 0]
        assert set(lengths) == {l for _, l in episodes} == {200}
        assert all(-16.3 * 200 <= r <= 0 for r in [*returns, *(r for r, _ in episodes)])
    else:  # InvertedPendulum-v5: raw reward 1 on every step but the falling one, in the run and here alike
        assert all(r == l - 1 for r, l in episodes if l < 1000)
        assert all(r == l - 1 for r, l in zip(returns, lengths) if l < 1000)
    evaluate_main(monkeypatch, run, "--episodes", 3, "--seed", 50, "--csv", run / "again.csv")
    assert [r["return"] for r in read_rows(run / "again.csv")] == [str(r) for r in returns]  # the mean action
    # a checkpoint that names no file (older versions wrote none) is refused in one line
    old = run.parent / "format0"
    shutil.copytree(run, old)
    state = torch.load(old / "checkpoint.pt", weights_only=False)
    del state["script"], state["format"]
    torch.save(state, old / "checkpoint.pt")
    with pytest.raises(SystemExit) as error:
        evaluate_main(monkeypatch, old, "--episodes", 3, "--seed", 50)
    assert "names no file" in str(error.value.code) and "\n" not in str(error.value.code)


def test_evaluation_normalises_observations_with_the_runs_statistics_frozen():
    stats = {"obs_mean": np.arange(4.0), "obs_var": np.full(4, 4.0), "obs_count": 1e6}
    vec, obs = envs.make_env("InvertedPendulum-v5", 1, seed=3, normalize=True, frozen_obs_stats=stats)
    raw, _ = envs.make_env("InvertedPendulum-v5", 1, seed=3)[0].reset(seed=3)
    np.testing.assert_allclose(obs, (raw - stats["obs_mean"]) / np.sqrt(4.0 + 1e-8), rtol=1e-6)
    for _ in range(20):
        vec.step(np.zeros((1, 1), dtype=np.float32))
    assert np.array_equal(vec.obs_mean, stats["obs_mean"]) and np.array_equal(vec.obs_var, stats["obs_var"])


def test_friction_is_held_at_the_chosen_multiplier(runs):
    run_args = evaluate.load_run(str(runs["ppo_continuous.py"]))[0].Args(env_id="Hopper-v5")
    env_id, period, start = evaluate.evaluation_env(run_args, 1)
    vec, _ = envs.make_env(env_id, 1, seed=0, friction_period=period, start_step=start)
    model = vec.env.envs[0].unwrapped.model
    default = np.array([1.0, 0.9, 0.9, 0.9, 2.0])  # Hopper-v5's sliding friction
    for _ in range(300):  # over several episodes
        vec.step(np.ones((1, 3), dtype=np.float32))
        np.testing.assert_allclose(model.geom_friction[:, 0], default * 1)
    assert env_id == "cyclefriction/Hopper-v5"
    assert evaluate.evaluation_env(run_args, 3)[2] // period % len(envs.FRICTION_SCHEDULE) == 1  # 4, [3], 2, 1


def test_video_per_episode_and_gif_are_readable_with_one_frame_per_step(runs, tmp_path):
    ppo, p3o = runs["ppo_continuous.py"], runs["p3o_continuous.py"]
    gif = tmp_path / "agents.gif"
    proc = run_script("evaluate.py", ppo, p3o, "--episodes", 2, "--video", "--video-size", 64, "--gif", gif,
                      "--friction", 2, run_dir=None)
    assert proc.stderr == "", proc.stderr  # no noise at exit: the renderers were closed
    for run in (ppo, p3o):
        rows = read_rows(run / "evaluation.csv")
        assert {(r["env_id"], r["friction"]) for r in rows} == {("cyclefriction/InvertedPendulum-v5", "2")}
        for row in rows:
            frames = envs.read_mp4(row["video"])
            assert frames.shape == (int(row["length"]) + 1, 64, 64, 3)  # the first observation and one per step
            assert frames.std() > 0
    from PIL import Image

    image = Image.open(gif)
    assert image.n_frames > 1 and image.size[0] == 2 * 64 and image.size[1] > 64  # side by side, labelled


def test_strip_holds_the_asked_frames_of_each_run_in_labelled_rows(runs, tmp_path):
    ppo, p3o = runs["ppo_continuous.py"], runs["p3o_continuous.py"]
    from PIL import Image

    strip = tmp_path / "strip.png"
    run_script("evaluate.py", ppo, p3o, "--episodes", 1, "--video-size", 32, "--strip", strip, "--strip-start", 0,
               "--strip-every", 2, "--strip-frames", 3, "--csv", tmp_path / "rows.csv", run_dir=None)
    image = np.asarray(Image.open(strip).convert("RGB"))
    length = int(read_rows(tmp_path / "rows.csv")[0]["length"])
    assert image.shape[1] == 32 * min(3, len(range(0, length + 1, 2)))  # frames 0, 2, 4 side by side
    band = (image.shape[0] - 2 * 32) // 2
    assert band > 0 and image.shape[0] == 2 * (32 + band)  # one row per run under its label
    assert (image[:band] == 255).mean() > 0.5 and image[band:band + 32].std() > 0  # white label band, then frames


@pytest.mark.parametrize("case", ["not a directory", "no checkpoint", "truncated", "another format", "training seeds",
                                  "MUJOCO_GL=disable"])
def test_a_run_that_cannot_be_evaluated_exits_with_one_line(runs, tmp_path, monkeypatch, case):
    run = tmp_path / "run"
    shutil.copytree(runs["ppo_continuous.py"], run, ignore=shutil.ignore_patterns("evaluation.csv"))
    argv, checkpoint = [run], run / "checkpoint.pt"
    if case == "not a directory":
        argv, expected = [tmp_path / "nowhere"], "is not a directory"
    elif case == "no checkpoint":
        checkpoint.unlink()
        (run / "checkpoint.prev.pt").unlink(missing_ok=True)
        expected = "has no checkpoint.pt"
    elif case == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:9000])
        (run / "checkpoint.prev.pt").unlink(missing_ok=True)
        expected = f"{checkpoint} is unreadable"
    elif case == "another format":
        state = load_checkpoint(run)
        state["format"] += 1
        torch.save(state, checkpoint)
        expected = f"has checkpoint format {state['format']}"
    elif case == "training seeds":
        argv, expected = [run, "--seed", 0], "would evaluate on seeds [1, 2] that"
    else:
        monkeypatch.setattr(envs, "USER_MUJOCO_GL", "disable")
        argv, expected = [run, "--video"], "MUJOCO_GL=disable turns rendering off"
    with pytest.raises(SystemExit) as error:
        evaluate_main(monkeypatch, *argv)
    message = str(error.value.code)
    assert message.startswith("error: ") and "\n" not in message and expected in message, message
    assert not (run / "evaluation.csv").exists()


@pytest.mark.parametrize("head_bias, beyond", [(5.0, 1.0), (1.0, 0.0)])
def test_beyond_bounds_is_the_share_of_mean_action_components_the_env_clips(runs, tmp_path, monkeypatch, capsys,
                                                                             head_bias, beyond):
    run = tmp_path / "run"
    shutil.copytree(runs["ppo_continuous.py"], run, ignore=shutil.ignore_patterns("evaluation.csv"))
    state = load_checkpoint(run)
    head = max((k for k in state["agent"] if k.startswith("actor_mean.")), key=lambda k: int(k.split(".")[1]))
    head = head.rsplit(".", 1)[0]  # the last Linear: its output is the mean action whatever the observation
    state["agent"][head + ".weight"].zero_()
    state["agent"][head + ".bias"].fill_(head_bias)  # InvertedPendulum-v5's bounds are +-3
    torch.save(state, run / "checkpoint.pt")
    evaluate_main(monkeypatch, run, "--episodes", 2, "--seed", 50)
    assert [float(r["beyond_bounds"]) for r in read_rows(run / "evaluation.csv")] == [beyond, beyond]
    assert f"{beyond:.0%} of action components beyond the bounds" in capsys.readouterr().out
    evaluate_main(monkeypatch, runs["sac_sbp.py"], "--episodes", 2, "--seed", 50, "--csv", tmp_path / "sac.csv")
    assert [float(r["beyond_bounds"]) for r in read_rows(tmp_path / "sac.csv")] == [0.0, 0.0]  # tanh-squashed


def test_evaluate_help_documents_the_gif():
    proc = run_in_process("evaluate.py", "--help")
    assert proc.returncode == 0 and "--gif" in proc.stdout and "side by side" in " ".join(proc.stdout.split())


def test_episode_label_separates_file_seed_and_task():
    row = {"script": "p3o_continuous.py", "train_seed": 1, "env_id": "HalfCheetah-v5", "return": 8329.4}
    assert evaluate.episode_label(row) == ["p3o_continuous, seed 1, HalfCheetah-v5", "return 8329"]
