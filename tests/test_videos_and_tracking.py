"""--capture-video and --track in the training files: recording leaves training unchanged, videos are readable
and in TensorBoard, --track writes an offline W&B run, and what cannot work fails in one line first."""

import importlib
import os
import sys

import pytest
import torch

import envs
from conftest import TINY, load_checkpoint, only_run, run_script
from test_sac import TINY_SAC

SCRIPTS = ["ppo_continuous.py", "p3o_continuous.py", "ppo_cycle.py", "ppo_redo.py", "ppo_cbp.py", "sac_sbp.py"]
# the two families' tiny runs on a MuJoCo task (it renders), a few episodes each
SHORT = {"ppo_continuous.py": [*TINY, "--total-timesteps", "1024"],
         "sac_sbp.py": [*TINY_SAC, "--env-id", "InvertedPendulum-v5", "--total-timesteps", "400"]}


SHARED_RUNS = {"test_capture_video_leaves_the_parameters_unchanged_and_records_readable_episodes": [
    (script, *args) for script, args in SHORT.items()]}  # the PPO run is also test_ppo's and test_evaluate's


@pytest.mark.parametrize("script", SHORT)
def test_capture_video_leaves_the_parameters_unchanged_and_records_readable_episodes(tmp_path, script, shared_runs):
    proc = run_script(script, *SHORT[script], "--capture-video", "--video-every", "100", run_dir=tmp_path / "video")
    assert "Exception ignored" not in proc.stderr, proc.stderr  # the renderer was closed before exit
    plain, recorded = load_checkpoint(shared_runs.path(script, *SHORT[script])), load_checkpoint(
        only_run(tmp_path / "video"))
    weights = "agent" if "agent" in plain else "actor"
    for name, tensor in plain[weights].items():
        assert torch.equal(tensor, recorded[weights][name]), name
    run = only_run(tmp_path / "video")
    videos = sorted((run / "videos").glob("step-*.mp4"))
    starts = [int(v.stem[len("step-"):]) for v in videos]
    blocks = [start // 100 for start in starts]  # one recording per 100 steps at most, from step 0
    assert len(videos) >= 2 and starts[0] == 0 and all(a < b for a, b in zip(blocks, blocks[1:]))
    frames = envs.read_mp4(str(videos[0]))
    assert frames.shape[1:] == (256, 256, 3) and frames.shape[0] >= 2 and frames.std() > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    logged = events.Images("videos/env0")
    assert len(logged) == len(videos) and logged[0].encoded_image_string.startswith(b"GIF8")


@pytest.mark.parametrize("script, mode", [(script, "offline") for script in SHORT] + [("ppo_continuous.py", None)])
def test_track_offline_writes_a_wandb_run(tmp_path, script, mode):
    """WANDB_MODE=offline as a user sets it; and unset, with no API key: the run chooses offline itself."""
    env = {**os.environ, "WANDB_MODE": mode, "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    if mode is None:
        for name in ("WANDB_MODE", "WANDB_API_KEY"):
            env.pop(name, None)
        env["HOME"] = str(tmp_path)  # no ~/.netrc: no key from `wandb login`
    proc = run_script(script, *SHORT[script], "--track", "--wandb-project-name", "tests", run_dir=tmp_path / "runs",
                      env=env)
    assert mode or "logging offline" in proc.stdout
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, offline
    records = b"".join(path.read_bytes() for path in offline[0].glob("run-*.wandb"))  # what `wandb sync` uploads
    for key in (b"charts/episodic_return", b"losses/", b"plasticity/", b"wandb_project_name"):  # TensorBoard's keys
        assert key in records, key


@pytest.mark.parametrize("script", SCRIPTS)
def test_track_without_wandb_and_capture_video_without_opengl_fail_in_one_line(monkeypatch, script):
    module = importlib.import_module(script[: -len(".py")])
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when not installed
    with pytest.raises(SystemExit) as error:
        module.validate_args(module.Args(track=True))
    assert str(error.value.code).startswith("error: --track needs wandb") and "\n" not in str(error.value.code)
    monkeypatch.setattr(envs, "USER_MUJOCO_GL", "nonexistent")  # a user's MUJOCO_GL that renders nothing
    with pytest.raises(SystemExit) as error:
        module.validate_args(module.Args(capture_video=True))
    message = str(error.value.code)
    assert message.startswith("error: --capture-video needs OpenGL") and "\n" not in message
    assert "MUJOCO_GL=nonexistent" in message and "apt-get install libegl1" in message
