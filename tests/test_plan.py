"""The run plan and its state (reproduce_utils/plan.py): stable run directories, commands, skip/resume, and the
extension of a run that finished at a shorter budget (N/2 steps extended to N end as a straight N-step run)."""

import dataclasses
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ppo_continuous
import reproduce as rp
from reproduce_utils import collect, plan, registry
from conftest import by_name, fake_run, load_checkpoint, plan_runs, PPO_SMOKE_ARGS, read_scalars


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
    # the started run goes first (the table's order puts the cycle reset before P3O): its rows come soonest
    assert out.index("# p3o__Hopper-v5__seed1 (partial") < out.index("# cycle__Hopper-v5__seed1 (new)")

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


# ---- Extending a run that finished at a shorter budget ----

# smoke budget: 512-step rollouts, P3O resets every 1,000 steps (checked per rollout): 2 resets before the
# 2,048-step boundary and 2 after it, each followed by distillation
HALF, FULL = 2048, 4096
TIMING = ("charts/SPS", "reset/seconds")  # wall-clock values, the only scalars two identical runs may differ in
COMMON = ["--budget", "smoke", "--envs", "InvertedPendulum-v5", "--seeds", "1", "--algos", "ppo", "p3o",
          "--workers", "2", "--threads", "1", "--eval-episodes", "0"]


def reproduce_runs(tmp_path, runs, total):
    assert rp.main(["table1", *COMMON, "--total-timesteps", str(total), "--runs-dir", str(tmp_path / runs),
                    "--results-dir", str(tmp_path / f"results_{runs}_{total}")]) == 0


def run_path(tmp_path, runs, total, algo):
    """The one timestamped run directory of the algorithm's configuration."""
    (path,) = [p for p in (tmp_path / runs / f"smoke-{total}" / f"{algo}__InvertedPendulum-v5__seed1").iterdir()
               if p.is_dir()]
    return path


def assert_same(a, b, where="checkpoint"):
    """Every tensor, array and number of two checkpoints' nested contents is identical (wall-clock time apart)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if str(k).endswith(".mjdata"):  # the simulator's state (its pickle also holds uninitialised scratch memory)
                da, db = pickle.loads(a[k]), pickle.loads(b[k])
                for name in ("time", "qpos", "qvel", "act", "qacc_warmstart", "ctrl"):
                    assert np.array_equal(getattr(da, name), getattr(db, name)), f"{where}[{k!r}].{name}"
            elif k != "reset_seconds":
                assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """Runs of N/2 steps extended to N (runs 'extended') and straight runs of N (runs 'straight'), PPO and P3O."""
    tmp_path = tmp_path_factory.mktemp("extend")
    reproduce_runs(tmp_path, "extended", HALF)
    half = {algo: load_checkpoint(run_path(tmp_path, "extended", HALF, algo)) for algo in ("ppo", "p3o")}
    reproduce_runs(tmp_path, "extended", FULL)
    reproduce_runs(tmp_path, "straight", FULL)
    return tmp_path, half


@pytest.mark.parametrize("algo", ["ppo", "p3o"])
def test_extended_run_ends_as_the_straight_run(extended, algo):
    tmp_path, half = extended
    straight, longer = run_path(tmp_path, "straight", FULL, algo), run_path(tmp_path, "extended", FULL, algo)
    a, b = load_checkpoint(straight), load_checkpoint(longer)
    assert a["global_step"] == b["global_step"] == FULL
    assert a["args"]["total_timesteps"] == b["args"]["total_timesteps"] == FULL
    for key in set(a) - {"args"}:  # networks, optimisers, normalisation, env and RNG states, method state
        assert_same(a[key], b[key], key)
    if algo == "p3o":  # resets and distillation on both sides of the boundary
        assert 0 < half["p3o"]["sbp"]["resets"] < b["sbp"]["resets"]
        assert 0 < half["p3o"]["sbp"]["distill_epochs"] < b["sbp"]["distill_epochs"]
    sa, sb = read_scalars(straight), read_scalars(longer)
    assert sa.keys() == sb.keys() and "charts/episodic_return" in sa
    for tag in set(sa) - set(TIMING):
        assert sa[tag] == sb[tag], tag  # every logged value at every step, the first N/2 from the copied events


@pytest.mark.parametrize("algo", ["ppo", "p3o"])
def test_extending_keeps_the_shorter_run_and_names_it(extended, algo):
    tmp_path, half = extended
    shorter = run_path(tmp_path, "extended", HALF, algo)
    longer = run_path(tmp_path, "extended", FULL, algo)
    assert longer.name == shorter.name  # the copy, continued: not a fresh start of the same seed
    assert f"resumed {longer} at step {HALF:,}" in (longer.parent / "stdout.log").read_text()
    assert load_checkpoint(shorter)["global_step"] == HALF  # not continued in place: its tables still read it
    assert_same(half[algo], load_checkpoint(shorter))
    config = shorter.parent.parent.parent / f"smoke-{FULL}" / shorter.parent.name
    assert (config / plan.EXTENDS_FILE).read_text() == f"smoke-{HALF}/{shorter.parent.name} {HALF}\n"
    assert plan.run_commits(config) == plan.run_commits(shorter.parent)  # launched from one commit here
    rows = {r["algo"]: r for r in collect.read_csv(tmp_path / f"results_extended_{FULL}" / "table1" / f"runs_smoke-{FULL}.csv")}
    assert rows[algo]["extends"] == f"smoke-{HALF} ({HALF:,} steps)" and rows[algo]["status"] == "done"
    straight = collect.read_csv(tmp_path / f"results_straight_{FULL}" / "table1" / f"runs_smoke-{FULL}.csv")
    assert all("extends" not in r for r in straight)  # no column where no run extends one
    table = (tmp_path / f"results_extended_{FULL}" / "table1" / f"table1_smoke-{FULL}.md").read_text()
    label = registry.ALGOS[algo].label
    assert f"{label} InvertedPendulum seed 1 from smoke-{HALF} ({HALF:,} steps)" in table


def test_only_a_finished_shorter_run_of_the_same_options_is_extended(tmp_path):
    """A run is extended from the longest finished shorter run with the same options; an unfinished one, a
    longer one, or one with other options (Cycle Friction's period differs by budget) is not."""
    def one(budget, env="InvertedPendulum-v5", total=None):
        (run,), _ = plan.plan(registry.EXPERIMENTS["table1"], budget, [1], [env], ["ppo"], tmp_path, total)
        return run

    def fake(run, step):  # a checkpoint as the file writes it, reached `step`
        path = run.directory / "run"
        path.mkdir(parents=True)
        torch.save({"script": "ppo_continuous.py", "format": 1, "global_step": step,
                    "args": {**dataclasses.asdict(ppo_continuous.Args()), "num_envs": 2,
                             "num_steps": 256, "total_timesteps": run.total}}, path / "checkpoint.pt")

    target = one("smoke", total=FULL)
    assert plan.shorter_run(target) is None
    fake(one("smoke", total=1024), 1024)
    fake(one("smoke", total=2048), 1536)  # unfinished: not a candidate
    fake(one("smoke", total=16384), 16384)  # longer: not a candidate
    label, state = plan.shorter_run(target)
    assert (label, state.step) == ("smoke-1024", 1024)
    fake(one("smoke", total=3072), 3072)
    assert plan.shorter_run(target)[0] == "smoke-3072"  # the longest finished one
    friction = "cyclefriction/InvertedPendulum-v5"
    fake(one("cycle", friction), registry.CYCLE_FRICTION_PPO_STEPS)  # --friction-period 500,000 at the cycle budget
    assert plan.shorter_run(one("paper", friction)) is None
    fake(one("cycle"), registry.BUDGETS["cycle"]["ppo"])  # the same options: the cycle run extends to the paper budget
    assert plan.shorter_run(one("paper"))[0] == "cycle"
