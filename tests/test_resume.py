"""--resume in every training file: an unreadable, truncated, foreign or other-format checkpoint and an
argument that differs from the run's exit with one line; a run killed with SIGKILL resumes from its last
readable checkpoint (the one before the latest, when that is cut short) to the uninterrupted result."""

import dataclasses
import importlib
import subprocess
import sys
import time

import pytest
import torch
import tyro

from conftest import ROOT, TINY, load_checkpoint, only_run, run_script
from test_sac import TINY_SAC

SCRIPTS = ["ppo_continuous.py", "p3o_continuous.py", "ppo_cycle.py", "ppo_redo.py", "ppo_cbp.py", "sac_sbp.py"]
# per family: the tiny configuration and checkpoint_every, which counts updates in PPO and env steps in SAC
SHORT = {"ppo_continuous.py": [*TINY, "--checkpoint-every", "1"],
         "sac_sbp.py": [*TINY_SAC, "--checkpoint-every", "200"]}
STEP = {"ppo_continuous.py": 512, "sac_sbp.py": 200}  # steps between two checkpoints of SHORT
SHARED_RUNS = {"test_run_killed_by_sigkill_resumes_from_its_last_readable_checkpoint": [
    (script, *args, "--total-timesteps", 8 * STEP[script]) for script, args in SHORT.items()]}  # uninterrupted


def module(script):
    return importlib.import_module(script[: -len(".py")])


def hand_made_run(tmp_path, script, **args):
    """A run directory whose checkpoint has what `script` writes and reads first (its name, format and
    arguments; the rest is only read once they pass) and some weights."""
    m = module(script)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"script": script, "format": m.CHECKPOINT_FORMAT, "args": dataclasses.asdict(m.Args(**args)),
                "agent": {"weight": torch.randn(64, 64)}}, run / "checkpoint.pt")
    return run


def edit_checkpoint(path, drop_args=(), **entries):
    """Set entries of a checkpoint (None deletes one) and delete some of its saved arguments."""
    state = torch.load(path, weights_only=False)
    for key, value in entries.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    for name in drop_args:
        del state["args"][name]
    torch.save(state, path)


def resume_error(monkeypatch, script, run, *argv):
    """The one line `python script --resume run argv` exits with (before any env or file is made)."""
    monkeypatch.setattr(sys, "argv", [script, "--resume", str(run), *argv])
    with pytest.raises(SystemExit) as error:
        module(script).main()
    message = str(error.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("case", ["truncated", "not a torch file", "another file's run", "another format",
                                  "another file's run from before format 1", "--env-id differs"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_that_cannot_be_resumed_exits_with_one_line(tmp_path, monkeypatch, script, case):
    other = "p3o_continuous.py" if script == "ppo_continuous.py" else "ppo_continuous.py"
    run = hand_made_run(tmp_path, other if case.startswith("another file's") else script, env_id="Hopper-v5")
    checkpoint, argv = run / "checkpoint.pt", []
    if case == "truncated":  # a full disk, a copy cut short
        checkpoint.write_bytes(checkpoint.read_bytes()[:9000])
        expected = [f"{checkpoint} is unreadable", "no readable checkpoint before it"]
    elif case == "not a torch file":
        checkpoint.write_text("not a checkpoint\n")
        expected = [f"{checkpoint} is unreadable"]
    elif case == "another file's run":
        expected = [f"{checkpoint} was written by {other}, not {script}", f"python {other} --resume {run}"]
    elif case == "another format":
        edit_checkpoint(checkpoint, format=module(script).CHECKPOINT_FORMAT + 1)
        expected = [f"{checkpoint} has checkpoint format {module(script).CHECKPOINT_FORMAT + 1}"]
    elif case == "another file's run from before format 1":  # no name: told apart by its arguments
        edit_checkpoint(checkpoint, format=None, script=None)
        expected = [f"{checkpoint} is not a checkpoint of {script}"]
    else:
        argv = ["--env-id", "Ant-v5"]
        expected = ["--env-id Ant-v5 (the run has Hopper-v5)", "only --total-timesteps, --cuda"]
    message = resume_error(monkeypatch, script, run, *argv)
    for text in expected:
        assert text in message, (text, message)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_from_a_version_with_other_arguments_is_refused_in_one_line(tmp_path, monkeypatch, script):
    """Older versions' checkpoints (one lacking an argument added since, or holding one since removed) are
    refused naming the argument, never resumed with a guessed value."""
    run = hand_made_run(tmp_path, script)
    assert module(script).load_checkpoint(str(run))["agent"]["weight"].shape == (64, 64)  # this version's: read
    edit_checkpoint(run / "checkpoint.pt", drop_args=["gamma"])
    message = resume_error(monkeypatch, script, run)
    assert f"is from a version of {script} with other arguments (--gamma)" in message, message
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    state["args"] = {**dataclasses.asdict(module(script).Args()), "old_flag": 1}
    torch.save(state, run / "checkpoint.pt")
    assert "(--old-flag)" in resume_error(monkeypatch, script, run)


@pytest.mark.parametrize("script", SCRIPTS)
def test_arguments_given_with_resume_may_change_only_when_allowed(tmp_path, monkeypatch, script):
    m = module(script)
    saved = dataclasses.asdict(m.Args(env_id="Hopper-v5", seed=3, threads=2, cuda=True, metrics_every=7))

    def resumed(*argv):
        argv = ["--resume", "RUN", *argv]
        return m.resumed_args(tyro.cli(m.Args, args=argv), saved, argv)

    # allowed ones replace the run's (--name value, --name=value, snake_case, --flag); the same value may be
    # repeated; what is not given is the run's, except --cuda, which is always the command's
    args = resumed("--total-timesteps", "4096", "--threads=1", "--checkpoint_every", "9", "--async-envs",
                   "--env-id=Hopper-v5", "--seed", "3", "--torch-deterministic", "--run-dir", "elsewhere")
    assert (args.total_timesteps, args.threads, args.checkpoint_every, args.async_envs) == (4096, 1, 9, True)
    assert (args.seed, args.metrics_every, args.cuda, args.resume) == (3, 7, False, "RUN")
    assert resumed("--cuda").cuda
    # another argument that differs from the run's, even when it is the default value, is refused naming both
    for argv, text in [(["--seed", "1"], "--seed 1 (the run has 3)"),
                       (["--env_id", "Ant-v5"], "--env-id Ant-v5 (the run has Hopper-v5)"),
                       (["--no-torch-deterministic"], "--torch-deterministic False (the run has True)")]:
        with pytest.raises(SystemExit) as error:
            resumed(*argv)
        assert text in str(error.value.code) and "\n" not in str(error.value.code)


@pytest.mark.parametrize("script", SCRIPTS)
def test_save_keeps_the_checkpoint_before_and_a_failed_write_exits_in_one_line(tmp_path, script):
    save, path = module(script).save_checkpoint, str(tmp_path / "checkpoint.pt")
    save(path, {"global_step": 1})
    save(path, {"global_step": 2})

    def steps():
        return [torch.load(tmp_path / name)["global_step"] for name in ("checkpoint.pt", "checkpoint.prev.pt")]

    assert steps() == [2, 1]
    with pytest.raises(SystemExit) as error:  # a write that fails half way (a full disk alike)
        save(path, {"global_step": 3, "unpicklable": lambda: 0})
    message = str(error.value.code)
    assert message.startswith(f"error: could not write the checkpoint {path}.tmp") and "\n" not in message
    assert f"the last one, {path}, is intact" in message
    assert steps() == [2, 1] and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def run_killed(script, args, run_dir):
    """Start a long run, SIGKILL it once it has written two checkpoints; return its run directory."""
    cmd = [sys.executable, str(ROOT / script), *args, "--total-timesteps", "1000000", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(run_dir.glob("*/checkpoint.prev.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return only_run(run_dir)


def assert_same_networks(a, b):
    """The state dicts of two checkpoints' networks (PPO: agent; SAC: actor, qf, qf_target) are equal."""
    nets = [k for k, v in a.items()
            if isinstance(v, dict) and v and all(isinstance(t, torch.Tensor) for t in v.values())]
    assert nets
    for net in nets:
        for name, tensor in a[net].items():
            assert torch.equal(tensor, b[net][name]), (net, name)


@pytest.mark.parametrize("script", SHORT)
def test_run_killed_by_sigkill_resumes_from_its_last_readable_checkpoint(tmp_path, script, shared_runs):
    total = 8 * STEP[script]
    full = shared_runs.path(script, *SHORT[script], "--total-timesteps", total)
    run = run_killed(script, SHORT[script], tmp_path / "killed")
    step = load_checkpoint(run)["global_step"]  # the kill left a readable checkpoint
    assert 0 < step < total, step
    # and should the latest be cut short too (a full disk, a copy), the one before it is the fall-back
    latest = run / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:-100])
    proc = run_script(script, "--resume", run, "--total-timesteps", total, run_dir=tmp_path / "unused")
    assert f"warning: {latest} is unreadable" in proc.stdout, proc.stdout
    assert f"resuming from the checkpoint before it, {run / 'checkpoint.prev.pt'}" in proc.stdout
    assert f"resumed {run} at step {step - STEP[script]:,}" in proc.stdout
    a, b = load_checkpoint(full), load_checkpoint(run)
    assert a["global_step"] == b["global_step"] == total
    assert_same_networks(a, b)
    assert torch.load(run / "checkpoint.prev.pt", weights_only=False)["global_step"] == total - STEP[script]
