"""The run plan and its state (reproduce_utils/plan.py): stable run directories, commands, skip/resume."""

import sys
from pathlib import Path

import pytest
import torch

import reproduce as rp
from reproduce_utils import collect, plan
from conftest import by_name, fake_run, plan_runs, PPO_SMOKE_ARGS


def test_run_directory_is_stable_and_names_the_configuration():
    first, second = plan_runs("table1", "reduced", seeds=(1, 2)), plan_runs("table1", "reduced", seeds=(1, 2))
    assert [r.directory for r in first] == [r.directory for r in second]
    assert len({r.directory for r in first}) == len(first) == 10
    p3o = by_name(first)[("P3O", "Hopper-v5", 1)]
    assert p3o.directory == Path("runs/reproduce/reduced/p3o__Hopper-v5__seed1")
    assert p3o.total == 1_000_000
    # the same configuration in another experiment is the same directory (table2/4/5 reuse table1's runs)
    table1_dirs = {r.directory for r in first}
    for name in ("table2", "table4", "table5"):
        p3o_dirs = {r.directory for r in plan_runs(name, "reduced", seeds=(1, 2)) if r.variant.algo == "p3o"}
        assert p3o_dirs and p3o_dirs <= table1_dirs
    alpha = by_name(plan_runs("alpha", "reduced"))
    assert alpha[("alpha 0.1", "Hopper-v5", 1)].directory.name == "p3o__Hopper-v5__seed1__distill-alpha=0.1"
    assert alpha[("alpha 0.4 (default)", "Hopper-v5", 1)].directory == p3o.directory
    # what changes the run changes the directory: budget, steps, task, seed
    assert plan_runs("table1", "paper", envs=("Humanoid-v5",), algos=["ppo"])[0].total == 20_000_000
    assert plan_runs("table1", "paper", algos=["ppo"])[0].directory.parent.name == "paper"
    assert plan_runs("table1", "reduced", algos=["ppo"], total=2_000_000)[0].directory.parent.name == "reduced-2000000"
    dmc = plan_runs("dmc", "reduced", envs=("dm_control/hopper-hop",), algos=["ppo"])[0]
    assert dmc.directory.name == "ppo__dm_control_hopper-hop__seed1"


def test_command_of_a_new_run_carries_budget_method_and_overrides():
    runs = by_name(plan_runs("reset-frequency", "smoke"))
    run = runs[("every 20,000", "Hopper-v5", 1)]
    # smoke scales step-counted schedules by 1/50, at least one 512-step rollout; the directory says so
    assert run.directory.name == "p3o__Hopper-v5__seed1__reset-frequency=512"
    cmd = plan.command(run, plan.State("new"), threads=1)
    assert cmd[:2] == [sys.executable, "p3o_continuous.py"]
    pairs = dict(zip(cmd[2::2], cmd[3::2]))
    assert pairs["--env-id"] == "Hopper-v5" and pairs["--seed"] == "1" and pairs["--threads"] == "1"
    assert pairs["--total-timesteps"] == "8192" and pairs["--run-dir"] == str(run.directory)
    assert pairs["--reset-frequency"] == "512" and pairs["--hidden-dim"] == "32"
    rt = plan_runs("table5", "reduced", algos=["p3o-rt"])[0]
    assert rt.directory.name == "p3o-rt__Hopper-v5__seed1"
    assert plan.command(rt, plan.State("new"), 2)[-2:] == ["--recovery", "train"]
    friction = plan_runs("friction", "reduced", envs=("cyclefriction/Hopper-v5",), algos=["ppo"])[0]
    assert friction.args["--friction-period"] == "125000"


def test_finished_run_is_skipped_partial_resumed_stale_restarted(tmp_path, capsys):
    runs = by_name(plan_runs("table1", "smoke", algos=["ppo", "p3o", "cycle"], runs_dir=tmp_path))
    done, partial, stale = (runs[(n, "Hopper-v5", 1)] for n in ("PPO", "P3O", "PPO+Cycle"))
    assert plan.run_state(done).status == "new"  # nothing there yet
    fake_run(done, 8192)
    partial_path = fake_run(partial, 4096)
    (stale.directory / "Hopper-v5__cycle__1__1700000000").mkdir(parents=True)  # died before a checkpoint

    assert plan.run_state(done).status == "done"
    state = plan.run_state(partial)
    assert (state.status, state.step, state.run_path) == ("partial", 4096, partial_path)
    cmd = plan.command(partial, state, threads=1)
    assert cmd[2:] == ["--resume", str(partial_path), "--total-timesteps", "8192"]
    state = plan.run_state(stale)
    assert state.status == "new"
    plan.prepare(stale, state)
    assert [p.name for p in stale.directory.iterdir()] == [plan.COMMITS_FILE]  # the stale run is gone
    assert plan.run_commits(stale.directory) == [plan.source_commit()]

    rp.main(["table1", "--budget", "smoke", "--envs", "Hopper-v5", "--seeds", "1", "--algos", "ppo", "p3o", "cycle",
             "--runs-dir", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert "3 runs: 1 finished (skipped), 1 to resume, 1 to start" in out
    assert "# ppo__Hopper-v5__seed1" not in out and "# p3o__Hopper-v5__seed1 (partial, at step 4,096)" in out
    assert f"--resume {partial_path}" in out and "# cycle__Hopper-v5__seed1 (new)" in out

    fake_run(stale, 8192)
    (stale.directory / "Hopper-v5__cycle__1__1700000001").mkdir()
    fake_dup = stale.directory / "Hopper-v5__cycle__1__1700000001" / "checkpoint.pt"
    torch.save({"global_step": 512, "args": PPO_SMOKE_ARGS}, fake_dup)
    with pytest.raises(SystemExit, match="2 runs with checkpoints"):
        plan.run_state(stale)


def test_unreadable_or_foreign_checkpoint_fails_its_run_and_the_others_go_on(tmp_path, capsys):
    runs = by_name(plan_runs("table1", "smoke", algos=["ppo", "p3o", "cycle", "redo"], runs_dir=tmp_path))
    good, foreign, unreadable, fallback = (runs[(n, "Hopper-v5", 1)] for n in ("PPO", "P3O", "PPO+Cycle", "PPO+ReDo"))
    fake_run(good, 8192, {"script": "ppo_continuous.py"}, returns=[1.0, 2.0])
    foreign_path = fake_run(foreign, 8192, {"script": "ppo_continuous.py"})  # a PPO run in P3O's directory
    cut_short = fake_run(unreadable, 8192) / "checkpoint.pt"
    cut_short.write_bytes(cut_short.read_bytes()[:200])
    fallback_path = fake_run(fallback, 4096)  # an unreadable latest checkpoint and a good one before it
    (fallback_path / "checkpoint.pt").rename(fallback_path / "checkpoint.prev.pt")
    (fallback_path / "checkpoint.pt").write_text("not a checkpoint\n")

    foreign_error = (f"{foreign_path / 'checkpoint.pt'} was written by ppo_continuous.py, not p3o_continuous.py; "
                     f"resume it with python ppo_continuous.py --resume {foreign_path}")
    assert (plan.run_state(foreign).status, plan.run_state(foreign).error) == ("failed", foreign_error)
    state = plan.run_state(unreadable)
    assert state.status == "failed" and state.error.startswith(f"{cut_short} is unreadable") and "\n" not in state.error
    state = plan.run_state(fallback)  # resumed: the algorithm file falls back to checkpoint.prev.pt as well
    assert (state.status, state.step, state.run_path) == ("partial", 4096, fallback_path)

    common = ["table1", "--budget", "smoke", "--envs", "Hopper-v5", "--seeds", "1", "--algos", "ppo", "p3o", "cycle",
              "redo", "--runs-dir", str(tmp_path), "--results-dir", str(tmp_path / "results")]
    assert rp.main([*common, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 finished (skipped), 1 to resume, 0 to start, 2 failed (not run)" in out
    assert f"FAILED p3o__Hopper-v5__seed1: {foreign_error}\n" in out
    assert f"FAILED cycle__Hopper-v5__seed1: {cut_short} is unreadable" in out
    assert f"--resume {fallback_path}" in out
    assert "--resume" not in out.replace(f"--resume {fallback_path}", "").replace(foreign_error, "")
    assert rp.main([*common, "--aggregate-only"]) == 1
    status = {r["algo"]: r["status"] for r in collect.read_csv(tmp_path / "results" / "table1" / "runs_smoke.csv")}
    assert status["ppo"] == "done" and status["redo"] == "partial" and status["p3o"] == f"failed: {foreign_error}"
    assert status["cycle"].startswith(f"failed: {cut_short} is unreadable")
    assert "2 runs failed: cycle__Hopper-v5__seed1, p3o__Hopper-v5__seed1" in capsys.readouterr().out
