"""reproduce.py: stable run directories, skip/resume, aggregation on hand-made runs, one smoke
experiment end to end, and the Slurm job array through submitit."""

import dataclasses
import importlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import reproduce as rp
from conftest import ROOT, load_checkpoint, only_run, read_scalars, run_script

PPO_SMOKE_ARGS = {"num_envs": 2, "num_steps": 256}


def saved_args(script, args=None):
    """A checkpoint's arguments as `script` writes them (every field of its Args): its defaults, the smoke
    rollout shape and `args`."""
    defaults = dataclasses.asdict(importlib.import_module(Path(script).stem).Args())
    return {**defaults, **{k: v for k, v in {**PPO_SMOKE_ARGS, **(args or {})}.items() if k in defaults}}


def plan(name, budget="smoke", seeds=(1,), envs=("Hopper-v5",), algos=None, runs_dir="runs/reproduce", total=None):
    runs, missing = rp.plan(rp.EXPERIMENTS[name], budget, list(seeds), list(envs), algos, runs_dir, total)
    assert not missing, missing
    return runs


def by_name(runs):
    return {(r.variant.name, r.env, r.seed): r for r in runs}


def fake_run(run, global_step, state=None, returns=(), args=None):
    """A hand-made finished (or partial) run inside a configuration's directory: one TensorBoard
    event file of episodic returns and a checkpoint with `global_step` and a method state."""
    from torch.utils.tensorboard import SummaryWriter

    path = run.directory / f"{run.env.replace('/', '_')}__{run.variant.algo}__{run.seed}__1700000000"
    path.mkdir(parents=True)
    writer = SummaryWriter(str(path))
    for i, value in enumerate(returns):
        writer.add_scalar("charts/episodic_return", value, 100 * (i + 1))
        writer.add_scalar("plasticity/actor_weight_magnitude", 0.1 + 0.001 * i, 100 * (i + 1))
    writer.close()
    torch.save({"script": run.script, "format": 1, "global_step": global_step,
                "args": saved_args(run.script, args), **(state or {})}, path / "checkpoint.pt")
    return path


# ---- Run directories and commands ----

def test_run_directory_is_stable_and_names_the_configuration():
    first, second = plan("table1", "reduced", seeds=(1, 2)), plan("table1", "reduced", seeds=(1, 2))
    assert [r.directory for r in first] == [r.directory for r in second]
    assert len({r.directory for r in first}) == len(first) == 10
    p3o = by_name(first)[("P3O", "Hopper-v5", 1)]
    assert p3o.directory == Path("runs/reproduce/reduced/p3o__Hopper-v5__seed1")
    assert p3o.total == 1_000_000
    # the same configuration in another experiment is the same directory (table2/4/5 reuse table1's runs)
    table1_dirs = {r.directory for r in first}
    for name in ("table2", "table4", "table5"):
        p3o_dirs = {r.directory for r in plan(name, "reduced", seeds=(1, 2)) if r.variant.algo == "p3o"}
        assert p3o_dirs and p3o_dirs <= table1_dirs
    alpha = by_name(plan("alpha", "reduced"))
    assert alpha[("alpha 0.1", "Hopper-v5", 1)].directory.name == "p3o__Hopper-v5__seed1__distill-alpha=0.1"
    assert alpha[("alpha 0.4 (default)", "Hopper-v5", 1)].directory == p3o.directory
    # what changes the run changes the directory: budget, steps, task, seed
    assert plan("table1", "paper", envs=("Humanoid-v5",), algos=["ppo"])[0].total == 20_000_000
    assert plan("table1", "paper", algos=["ppo"])[0].directory.parent.name == "paper"
    assert plan("table1", "reduced", algos=["ppo"], total=2_000_000)[0].directory.parent.name == "reduced-2000000"
    dmc = plan("dmc", "reduced", envs=("dm_control/hopper-hop",), algos=["ppo"])[0]
    assert dmc.directory.name == "ppo__dm_control_hopper-hop__seed1"


def test_command_of_a_new_run_carries_budget_method_and_overrides():
    runs = by_name(plan("reset-frequency", "smoke"))
    run = runs[("every 20,000", "Hopper-v5", 1)]
    # smoke scales step-counted schedules by 1/50, at least one 512-step rollout; the directory says so
    assert run.directory.name == "p3o__Hopper-v5__seed1__reset-frequency=512"
    cmd = rp.command(run, rp.State("new"), threads=1)
    assert cmd[:2] == [sys.executable, "p3o_continuous.py"]
    pairs = dict(zip(cmd[2::2], cmd[3::2]))
    assert pairs["--env-id"] == "Hopper-v5" and pairs["--seed"] == "1" and pairs["--threads"] == "1"
    assert pairs["--total-timesteps"] == "8192" and pairs["--run-dir"] == str(run.directory)
    assert pairs["--reset-frequency"] == "512" and pairs["--hidden-dim"] == "32"
    rt = plan("table5", "reduced", algos=["p3o-rt"])[0]
    assert rt.directory.name == "p3o-rt__Hopper-v5__seed1"
    assert rp.command(rt, rp.State("new"), 2)[-2:] == ["--recovery", "train"]
    friction = plan("friction", "reduced", envs=("cyclefriction/Hopper-v5",), algos=["ppo"])[0]
    assert friction.args["--friction-period"] == "125000"


def test_finished_run_is_skipped_partial_resumed_stale_restarted(tmp_path, capsys):
    runs = by_name(plan("table1", "smoke", algos=["ppo", "p3o", "cycle"], runs_dir=tmp_path))
    done, partial, stale = (runs[(n, "Hopper-v5", 1)] for n in ("PPO", "P3O", "PPO+Cycle"))
    assert rp.run_state(done).status == "new"  # nothing there yet
    fake_run(done, 8192)
    partial_path = fake_run(partial, 4096)
    (stale.directory / "Hopper-v5__cycle__1__1700000000").mkdir(parents=True)  # died before a checkpoint

    assert rp.run_state(done).status == "done"
    state = rp.run_state(partial)
    assert (state.status, state.step, state.run_path) == ("partial", 4096, partial_path)
    cmd = rp.command(partial, state, threads=1)
    assert cmd[2:] == ["--resume", str(partial_path), "--total-timesteps", "8192"]
    state = rp.run_state(stale)
    assert state.status == "new"
    rp.prepare(stale, state)
    assert [p.name for p in stale.directory.iterdir()] == [rp.COMMITS_FILE]  # the stale run is gone
    assert rp.run_commits(stale.directory) == [rp.source_commit()]

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
        rp.run_state(stale)


def test_unreadable_or_foreign_checkpoint_fails_its_run_and_the_others_go_on(tmp_path, capsys):
    runs = by_name(plan("table1", "smoke", algos=["ppo", "p3o", "cycle", "redo"], runs_dir=tmp_path))
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
    assert (rp.run_state(foreign).status, rp.run_state(foreign).error) == ("failed", foreign_error)
    state = rp.run_state(unreadable)
    assert state.status == "failed" and state.error.startswith(f"{cut_short} is unreadable") and "\n" not in state.error
    state = rp.run_state(fallback)  # resumed: the algorithm file falls back to checkpoint.prev.pt as well
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
    status = {r["algo"]: r["status"] for r in rp.read_csv(tmp_path / "results" / "table1" / "runs_smoke.csv")}
    assert status["ppo"] == "done" and status["redo"] == "partial" and status["p3o"] == f"failed: {foreign_error}"
    assert status["cycle"].startswith(f"failed: {cut_short} is unreadable")
    assert "2 runs failed: cycle__Hopper-v5__seed1, p3o__Hopper-v5__seed1" in capsys.readouterr().out


def test_progress_is_parsed_from_the_files_output():
    text = ("run runs/x | Hopper-v5\nstep     204,800/1,000,000 | update 25/122 | SPS 1,650 | return   512.3 | "
            "ETA    8.0 min\nwriting checkpoint\n")
    assert rp.parse_progress(text) == (204_800, 1_000_000, 1_650, 8.0)
    assert rp.parse_progress("starting\n") is None


# ---- Aggregation (pure functions, hand-made event files, checkpoints and CSVs) ----

def test_final_return_interval_and_orphans():
    points = [(s, float(s)) for s in range(1, 21)]
    assert rp.final_return(points) == 19.5  # last 10% of 20 episodes: 19 and 20
    assert rp.final_return(points[:5]) == 5.0  # at least one episode
    assert np.isnan(rp.final_return([]))
    # 95% t-interval: 220 +- t(0.975, 1) x sd / sqrt(2) = 220 +- 12.7062 x 141.42 / 1.4142
    mean, low, high, n = rp.t_interval([120.0, 320.0, float("nan")])
    assert (mean, n) == (220.0, 2) and low == pytest.approx(220 - 1270.62, abs=0.01) and high == pytest.approx(
        220 + 1270.62, abs=0.01)
    assert rp.interval_text([120.0, 320.0]) == "220 [-1,051, 1,491] (n=2)"
    assert rp.interval_text([5.0]) == "5 (n=1)" and rp.interval_text([]) == "—"
    # a run resumed from a checkpoint at step 3 logs steps 4.. again: the first pass's 4, 5 are orphans
    logged = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (4, 4.0), (4, 4.5), (5, 5.0), (6, 6.0)]
    assert rp.drop_orphaned(logged) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (4, 4.5), (5, 5.0), (6, 6.0)]
    assert rp.method_statistics({"sbp": {"reset_counts": np.array([[0, 2], [1, 1]])}}) == {
        "neurons": 4, "total_resets": 4, "avg_resets_per_neuron": 1.0, "share_neurons_reset": 0.75}


def test_tables_from_hand_made_runs(tmp_path):
    """Table 4, Table 2 and the return table from hand-made event files and checkpoints."""
    runs = by_name(plan("table4", "smoke", seeds=(1, 2), runs_dir=tmp_path / "runs"))
    shape = (3, 32)
    half = np.zeros(96, dtype=np.int64)
    half[:48] = 2
    one, two_redo = np.zeros(96, dtype=np.int64), np.zeros(96, dtype=np.int64)
    one[5], two_redo[[7, 9]] = 6, 3
    states = {
        ("SBP (P3O)", 1): {"sbp": {"reset_counts": np.ones(shape, np.int64), "resets": 10, "distill_epochs": 30,
                                   "ppo_epochs": 160, "recovery_epochs": 0}},
        ("SBP (P3O)", 2): {"sbp": {"reset_counts": half.reshape(shape), "resets": 10, "distill_epochs": 30,
                                   "ppo_epochs": 160, "recovery_epochs": 0}},
        # CBP keeps one state per network: the actor's counts are Table 4's, not the critic's
        ("PPO+CBP", 1): {"cbp": {"actor": {"reset_counts": np.full(shape, 3)}, "critic": {"reset_counts":
                                                                                       np.full(shape, 100)}}},
        ("PPO+CBP", 2): {"cbp": {"actor": {"reset_counts": np.full(shape, 5)}, "critic": {"reset_counts":
                                                                                       np.full(shape, 100)}}},
        ("PPO+ReDo", 1): {"redo": {"reset_counts": one.reshape(shape), "resets": 1}},
        ("PPO+ReDo", 2): {"redo": {"reset_counts": two_redo.reshape(shape), "resets": 1}},
    }
    for (variant, seed), state in states.items():
        base = 100 if seed == 1 else 300
        fake_run(runs[(variant, "Hopper-v5", seed)], 8192, state, returns=[0.0] * 18 + [base, base + 40])
    common = ["--budget", "smoke", "--envs", "Hopper-v5", "--seeds", "1", "2", "--runs-dir", str(tmp_path / "runs"),
              "--results-dir", str(tmp_path / "results"), "--aggregate-only"]
    assert rp.main(["table4", *common]) == 0
    table4 = (tmp_path / "results" / "table4" / "table4_smoke.md").read_text()
    # two seeds: mean +- t(0.975, 1) x |a - b| / 2 = mean +- 6.3531 x |a - b|
    assert ("| SBP (P3O) | 96 | 96.0 [96.0, 96.0] (n=2) (paper 2,304.0) | 1.00 [1.00, 1.00] (n=2) (paper 3.00) | "
            "75.0 [-242.7, 392.7] (n=2) (paper 100.0) |") in table4
    assert ("| PPO+CBP | 96 | 384.0 [-835.8, 1,603.8] (n=2) (paper 44,208.6) | 4.00 [-8.71, 16.71] (n=2) (paper "
            "57.60) | 100.0 [100.0, 100.0] (n=2) (paper 100.0) |") in table4
    assert ("| PPO+ReDo | 96 | 6.0 [6.0, 6.0] (n=2) (paper 1,800.0) | 0.06 [0.06, 0.06] (n=2) (paper 2.30) | "
            "1.6 [-5.1, 8.2] (n=2) (paper 22.3) |") in table4
    # final return: mean of the last 10% (2 of 20 episodes): 120 and 320 -> 220 +- 1,270.6
    assert "| Hopper-v5 | " + " | ".join(["220 [-1,051, 1,491] (n=2)"] * 3) + " |" in table4
    assert (tmp_path / "results" / "table4" / "curves_smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = rp.read_csv(tmp_path / "results" / "table4" / "runs_smoke.csv")
    assert sorted(r["final_return"] for r in rows) == [120.0] * 3 + [320.0] * 3
    assert {r["total_resets"] for r in rows if r["algo"] == "cbp"} == {288.0, 480.0}

    assert rp.main(["table2", *common]) == 0  # the same P3O runs, another table
    table2 = (tmp_path / "results" / "table2" / "table2_smoke.md").read_text()
    assert "| Total distillation epochs | 30.0 [30.0, 30.0] (n=2) (paper 597.7) |" in table2
    assert "| Per-reset epochs | 3.00 [3.00, 3.00] (n=2) (paper 2.39) |" in table2
    assert "| Epoch ratio (distillation / PPO epochs) | 0.1875 [0.1875, 0.1875] (n=2) (paper 0.0327) |" in table2


def test_sac_table_counts_resets_distillation_epochs_and_seconds(tmp_path):
    runs = by_name(plan("table6", "smoke", seeds=(1, 2), runs_dir=tmp_path / "runs"))
    for seed, (epochs, seconds) in {1: (100, 30.0), 2: (140, 50.0)}.items():
        fake_run(runs[("SAC", "Hopper-v5", seed)], 2000, {"sbp": {"resets": 0, "distill_epochs": 0}},
                 returns=[100.0 * (2 * seed - 1)] * 20)
        fake_run(runs[("SAC+Cycle+INDS (SBP)", "Hopper-v5", seed)], 2000,
                 {"sbp": {"resets": 10, "distill_epochs": epochs, "reset_seconds": seconds}}, returns=[0.0] * 20)
    assert rp.main(["table6", "--budget", "smoke", "--envs", "Hopper-v5", "--seeds", "1", "2", "--runs-dir",
                    str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--aggregate-only"]) == 0
    table = (tmp_path / "results" / "table6" / "table6_smoke.md").read_text()
    # per reset: 10 and 14 epochs -> 12 +- 6.3531 x 4; plain SAC (no resets) and unfinished ReDo runs get no row
    assert ("| SAC+Cycle+INDS (SBP) | Hopper-v5 | 10 [10, 10] (n=2) | 12.0 [-13.4, 37.4] (n=2) | 40 [-87, 167] (n=2) |"
            in table)
    assert "| SAC | Hopper-v5 |" not in table and "| SAC+ReDo+INDS | Hopper-v5 |" not in table
    assert "| Hopper-v5 | 200 [-1,071, 1,471] (n=2) | 0 [0, 0] (n=2) | — |" in table  # final returns 100 and 300


def test_return_table_from_a_hand_made_csv(tmp_path):
    csv_path = tmp_path / "runs.csv"
    csv_path.write_text("variant,algo,env,seed,status,final_return\n"
                        "PPO,ppo,Hopper-v5,1,done,1000\nPPO,ppo,Hopper-v5,2,done,3000\nPPO,ppo,Hopper-v5,3,partial,\n"
                        "P3O,p3o,Hopper-v5,1,done,2500\n"
                        "PPO,ppo,Ant-v5,1,done,700\nPPO,ppo,Ant-v5,2,done,900\n")
    rows = rp.read_csv(csv_path)
    variants = [rp.Variant("ppo"), rp.Variant("p3o")]
    table = rp.returns_table(rows, variants, ["Hopper-v5", "Ant-v5"], rp.PAPER_TABLE1, want=2)
    assert "| Hopper-v5 | 2,000 [-10,706, 14,706] (n=2) (paper 3,613) | 2,500 (n=1) (paper 3,735) |" in table
    assert "| Ant-v5 | 800 [-471, 2,071] (n=2) (paper 3,514) | — (paper 5,683) |" in table


# ---- Statistics: intervals, Welch's test, IQM and probability of improvement ----

def test_welch_p_matches_the_textbook_value():
    # R: t.test(1:5, c(2, 4, 6, 8, 10)) -> t = -1.8974, df = 5.882, p-value = 0.1075
    assert rp.welch_p([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(0.1075, abs=5e-4)
    assert np.isnan(rp.welch_p([1.0], [2.0, 3.0])) and np.isnan(rp.welch_p([1.0, 1.0], [2.0, 2.0]))


def rows_of(returns, env="HalfCheetah-v5", key="final_return"):
    """Finished CSV rows: {method label: [return of seed 1, seed 2, ...]}."""
    algos = {v.name: v.algo for v in rp.BASELINES}
    return [{"variant": name, "algo": algos[name], "env": env, "seed": seed, "status": "done", key: value}
            for name, values in returns.items() for seed, value in enumerate(values, 1)]


def test_every_seed_and_welch_readings():
    rows = rows_of({"PPO": [1000, 2000, 3000], "PPO+Cycle": [10000, 12000, 11000], "P3O": [10000, 11000, 12000]})
    seeds = rp.every_seed_table(rows, rp.BASELINES, ["HalfCheetah-v5"])
    assert "| HalfCheetah-v5 | PPO | 2,000 [-484, 4,484] (n=3) | — | 1: 1,000; 2: 2,000; 3: 3,000 |" in seeds
    compared = rp.comparison_table(rows, rp.BASELINES, ["HalfCheetah-v5"])
    # P3O - PPO: 9,000, t = 11.02 on 4 df -> p = 0.0004; P3O - Cycle: 0 -> p = 1
    # p < 0.05 on 3 seeds each is not a claim: the project's rule asks for 5 seeds per method
    assert ("| HalfCheetah-v5 | training return | P3O | PPO | 3 vs 3 | +9,000 | 0.000 | not separated (p < 0.05, "
            "under 5 seeds) |") in compared
    assert "| HalfCheetah-v5 | training return | P3O | PPO+Cycle | 3 vs 3 | +0 | 1.000 | not separated |" in compared
    assert "PPO+CBP" not in compared  # no runs
    rows = rows_of({"PPO": [1000, 2000, 3000, 1500, 2500], "P3O": [10000, 11000, 12000, 10500, 11500]})
    compared = rp.comparison_table(rows, rp.BASELINES, ["HalfCheetah-v5"])
    assert "| HalfCheetah-v5 | training return | P3O | PPO | 5 vs 5 | +9,000 | 0.000 | P3O ahead |" in compared


def test_every_variant_of_p3o_is_compared_with_each_method_once():
    # P3O with the summed KL (issue: does the reading of tau decide P3O against Cycle?) gets its own rows
    variants = rp.BASELINES + (rp.Variant("p3o-sum"),)
    summed = variants[-1].name
    rows = rows_of({"PPO+Cycle": [1000, 2000, 3000, 1500, 2500], "P3O": [1000, 2000, 3000, 1500, 2500]})
    rows += [{"variant": summed, "algo": "p3o-sum", "env": "HalfCheetah-v5", "seed": seed, "status": "done",
              "final_return": value} for seed, value in enumerate([10000, 11000, 12000, 10500, 11500], 1)]
    compared = rp.comparison_table(rows, variants, ["HalfCheetah-v5"])
    assert "| HalfCheetah-v5 | training return | P3O | PPO+Cycle | 5 vs 5 | +0 | 1.000 | not separated |" in compared
    assert (f"| HalfCheetah-v5 | training return | {summed} | PPO+Cycle | 5 vs 5 | +9,000 | 0.000 | {summed} ahead |"
            in compared)
    assert f"| P3O | {summed} | 5 vs 5 | -9,000 | 0.000 | P3O behind |" in compared
    assert f"| {summed} | P3O |" not in compared  # each pair once
    assert len(compared.splitlines()) == 2 + 3  # header, rule and the three pairs with runs


def test_iqm_and_probability_of_improvement_on_known_scores():
    lo, hi = rp.normalisation("HalfCheetah-v5")
    assert (lo, hi) == (rp.RANDOM_RETURN["HalfCheetah"], 4575) and rp.normalisation("dm_control/dog-run") == (0, 1000)
    assert rp.normalisation("cyclefriction/Hopper-v5") == (rp.RANDOM_RETURN["Hopper"], 3613)
    # PPO: normalised scores 0..7 (IQM = mean of the middle half 2, 3, 4, 5 = 3.5); P3O: 10 in every run
    rows = rows_of({"PPO": [lo + k * (hi - lo) for k in range(8)], "P3O": [lo + 10 * (hi - lo)] * 8})
    table = rp.aggregate_table(rows, rp.BASELINES, ["HalfCheetah-v5"], "final_return")
    assert "| P3O | 8 x 1 | 10.000 [10.000, 10.000] |  |" in table
    assert "| PPO | 8 x 1 | 3.500 [" in table and "| 1.00 [1.00, 1.00] |" in table  # P3O above every PPO run
    assert rp.aggregate_table(rows, rp.BASELINES, ["HalfCheetah-v5"], "final_return") == table  # seeded bootstrap
    # each method's interval is drawn from the seed on its own: another method's runs do not move it
    spread = rows_of({"PPO": [lo + k ** 1.5 * (hi - lo) for k in range(8)],  # off a lattice: a drawn interval
                      "P3O": [lo + k ** 1.5 * (hi - lo) for k in range(5, 13)]})  # moves with its draws
    alone = rp.aggregate_table([r for r in spread if r["variant"] == "P3O"], rp.BASELINES, ["HalfCheetah-v5"],
                               "final_return")
    both = rp.aggregate_table(spread, rp.BASELINES, ["HalfCheetah-v5"], "final_return")
    p3o_line = next(line for line in alone.splitlines() if line.startswith("| P3O |"))
    assert p3o_line.startswith("| P3O | 8 x 1 | 24.943 [") and p3o_line.rstrip(" |") in both
    # a method is scored over the seeds it finished on every task: seed 2 of P3O is missing on Hopper
    two = rows_of({"P3O": [hi, hi]}) + rows_of({"P3O": [3613]}, env="Hopper-v5")
    scores, tasks = rp.normalised_scores(two, rp.BASELINES, ["HalfCheetah-v5", "Hopper-v5"], "final_return")
    assert tasks == ["HalfCheetah-v5", "Hopper-v5"] and scores["P3O"].tolist() == [[1.0, 1.0]]


def test_random_policy_references_are_what_random_return_measures():
    for task in ("Hopper", "HalfCheetah"):
        assert rp.random_return(f"{task}-v5") == pytest.approx(rp.RANDOM_RETURN[task], abs=0.05)


def test_figure_panels_keep_every_seed_and_the_band_is_the_t_interval():
    curves = [{"variant": "PPO", "env": "Hopper-v5", "seed": seed, "step": step, "charts/episodic_return": value}
              for seed, values in {1: (10.0, 20.0), 2: (30.0, 40.0), 3: (50.0,)}.items()
              for step, value in zip((100, 200), values)]
    panels = rp.tag_panels(curves, "charts/episodic_return")
    assert panels == {"Hopper-v5": {"PPO": [{100: 10.0, 200: 20.0}, {100: 30.0, 200: 40.0}, {100: 50.0}]}}
    steps, mean, low, high = rp.series_band(panels["Hopper-v5"]["PPO"])
    assert steps == [100, 200] and mean.tolist() == [30.0, 30.0]
    assert (low[0], high[0]) == pytest.approx(rp.t_interval([10.0, 30.0, 50.0])[1:3])  # three seeds at 100
    assert (low[1], high[1]) == pytest.approx(rp.t_interval([20.0, 40.0])[1:3])  # the third stopped before 200


def test_gradient_correlation_of_a_linear_policy_is_the_cosine_of_its_states():
    # mean = W s: the gradient of log pi(a | s) w.r.t. W is (a - mean) / sigma^2 s^T; with the same noise for
    # every sample (and so a zero log-std gradient, sum(noise^2 - 1) = 0) C[i, j] = cos(s_i, s_j)
    torch.manual_seed(0)
    actor = torch.nn.Linear(3, 2, bias=False)
    log_std = torch.tensor([0.3, -0.2])
    obs = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]])
    with torch.no_grad():
        actions = actor(obs) + log_std.exp() * torch.ones(4, 2)
    expected = torch.tensor([[1.0, 1, -1, 0], [1, 1, -1, 0], [-1, -1, 1, 0], [0, 0, 0, 1]])
    matrix = rp.gradient_correlation(actor, log_std, obs, actions)
    assert torch.allclose(matrix, expected, atol=1e-6)
    assert rp.off_diagonal_mean_abs(matrix) == pytest.approx(6 / 12)  # three |1| pairs of six, both ways


def test_fig7_points_are_each_p3o_run_against_the_mean_of_ppo(tmp_path):
    lo, hi = rp.normalisation("HalfCheetah-v5")
    rows = rows_of({"PPO": [1000.0, 3000.0], "P3O": [2000.0 + (hi - lo), 2000.0]})
    rows[2]["distill_per_reset"], rows[3]["distill_per_reset"] = 12.0, 3.0
    rows += rows_of({"P3O": [500.0]}, env="Hopper-v5")  # no PPO run on Hopper: no point
    assert rp.fig7_points(rows) == [("HalfCheetah-v5", 1, 12.0, pytest.approx(1.0)), ("HalfCheetah-v5", 2, 3.0, 0.0)]
    # the command: from results/<experiment>/runs_<budget>.csv alone
    out = tmp_path / "results"
    with pytest.raises(SystemExit, match="runs_cycle.csv does not exist"):
        rp.main(["fig7", "--from", "cycle", "--budget", "cycle", "--results-dir", str(out)])
    (out / "cycle").mkdir(parents=True)
    rp.write_csv(out / "cycle" / "runs_cycle.csv", rows)
    assert rp.main(["fig7", "--from", "cycle", "--budget", "cycle", "--results-dir", str(out)]) == 0
    assert "| HalfCheetah-v5 | 1 | 12.00 | +1.000 |" in (out / "fig7" / "fig7_cycle_cycle.md").read_text()
    assert (out / "fig7" / "fig7_cycle_cycle.png").read_bytes()[:4] == b"\x89PNG"


# ---- End to end: one smoke experiment, with a resume and a skip ----

def test_table1_smoke_end_to_end_resumes_then_skips(tmp_path):
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    runs = by_name(plan("table1", "smoke", envs=("InvertedPendulum-v5",), algos=["ppo", "p3o"], runs_dir=runs_dir))
    ppo = runs[("PPO", "InvertedPendulum-v5", 1)]
    # an interrupted run: the same configuration stopped at 4,096 of its 8,192 steps
    options = [x for o, v in ppo.args.items() for x in (o, v)]
    run_script("ppo_continuous.py", "--env-id", ppo.env, "--seed", 1, "--total-timesteps", 4096, "--threads", 1,
               "--exp-name", "ppo", *options, run_dir=ppo.directory)
    interrupted = only_run(ppo.directory)
    assert load_checkpoint(interrupted)["global_step"] == 4096

    cmd = [sys.executable, "reproduce.py", "table1", "--budget", "smoke", "--seeds", "1", "--envs",
           "InvertedPendulum-v5", "--algos", "ppo", "p3o", "--workers", "1", "--threads", "1",
           "--runs-dir", str(runs_dir), "--results-dir", str(results), "--progress-every", "5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 runs: 0 finished (skipped), 1 to resume, 1 to start" in proc.stdout
    assert only_run(ppo.directory) == interrupted  # continued, not restarted
    assert load_checkpoint(interrupted)["global_step"] == 8192
    returns = read_scalars(interrupted)["charts/episodic_return"]
    assert returns[-1][0] > 4096
    p3o_run = only_run(runs[("P3O", "InvertedPendulum-v5", 1)].directory)
    assert load_checkpoint(p3o_run)["sbp"]["resets"] == 8  # smoke: a reset every 1,000 steps, checked per 512

    table = (results / "table1" / "table1_smoke.md").read_text()
    assert "Budget **smoke**: 8,192 environment steps per run; seeds 1; 2/2 runs finished" in table
    row = next(line for line in table.splitlines() if line.startswith("| InvertedPendulum-v5 |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert len(cells) == 2 and all(c.endswith(" (n=1)") for c in cells), row
    for name in ("curves", "actor_weight_magnitude", "actor_grad_norm"):
        png = results / "table1" / f"{name}_smoke.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    rows = rp.read_csv(results / "table1" / "runs_smoke.csv")
    assert [(r["algo"], r["status"], r["steps"]) for r in rows] == [("ppo", "done", 8192), ("p3o", "done", 8192)]
    ppo_final = next(r["final_return"] for r in rows if r["algo"] == "ppo")
    assert ppo_final == pytest.approx(rp.final_return(returns))
    # the final checkpoint's deterministic evaluation: 10 episodes, kept beside the run and in the row
    evaluation = rp.read_csv(interrupted / rp.EVAL_FILE)
    assert not (interrupted / "evaluation.csv").exists()  # evaluate.py's own file is the user's
    assert [e["seed"] for e in evaluation] == list(range(rp.EVAL_SEED, rp.EVAL_SEED + 10))
    ppo_row = next(r for r in rows if r["algo"] == "ppo")
    assert ppo_row["eval_return"] == pytest.approx(np.mean([e["return"] for e in evaluation]))
    assert ppo_row["eval_episodes"] == 10 and "| InvertedPendulum-v5 | PPO |" in table.split("## Every seed")[1]
    # every run's curves in curves_smoke.csv, a point per hundredth of 8,192 steps up to the last
    curves = rp.read_csv(results / "table1" / "curves_smoke.csv")
    assert {(c["algo"], c["seed"]) for c in curves} == {("ppo", 1), ("p3o", 1)}
    assert max(c["step"] for c in curves if c["algo"] == "ppo") == 8192
    assert all("reset/distill_epochs" not in c for c in curves if c["algo"] == "ppo")
    assert any("reset/distill_epochs" in c for c in curves if c["algo"] == "p3o")
    # `metrics --paths`: the checkpoints say which file wrote each run; their names say ppo and p3o
    rp.metrics_figures([ppo.directory, p3o_run], results / "metrics", "smoke")
    runs_named = (results / "metrics" / "distillation_smoke.md").read_text().split("\n\n")[1]
    assert runs_named == (f"Means over each span's resets. Runs: ppo InvertedPendulum-v5 ({interrupted.name}), "
                          f"p3o InvertedPendulum-v5 ({p3o_run.name})")

    # Figs. 28-30 on the finished runs: a matrix per run, summarised per method
    assert rp.main(["gradcorr", "--from", "table1", "--budget", "smoke", "--seeds", "1", "--envs",
                    "InvertedPendulum-v5", "--runs-dir", str(runs_dir), "--results-dir", str(results)]) == 0
    gradcorr = (results / "gradcorr" / "gradcorr_table1_smoke.md").read_text()
    assert "| InvertedPendulum-v5 | PPO | " in gradcorr and "| InvertedPendulum-v5 | P3O | " in gradcorr
    # a seed in the CSV with no checkpoint here is kept (marked *); a seed with one is computed again
    values_csv = results / "gradcorr" / "gradcorr_table1_smoke.csv"
    first = {(r["variant"], r["seed"]): r["gradcorr"] for r in rp.read_csv(values_csv)}
    assert set(first) == {("PPO", 1), ("P3O", 1)} and all(0 < x < 1 for x in first.values())
    values_csv.write_text("env,variant,seed,gradcorr\nInvertedPendulum-v5,PPO,1,9.0\n"
                          "InvertedPendulum-v5,P3O,2,0.5\nInvertedPendulum-v5,P3O,3,0.25\n")
    assert rp.main(["gradcorr", "--from", "table1", "--budget", "smoke", "--seeds", "1", "2", "--envs",
                    "InvertedPendulum-v5", "--runs-dir", str(runs_dir), "--results-dir", str(results)]) == 0
    again = {(r["variant"], r["seed"]): r["gradcorr"] for r in rp.read_csv(values_csv)}
    assert again == {**first, ("P3O", 2): 0.5}  # seed 3 is not asked for
    table = (results / "gradcorr" / "gradcorr_table1_smoke.md").read_text()
    assert "| InvertedPendulum-v5 | P3O | " in table and f"1: {first[('P3O', 1)]:.3f}; 2*: 0.500 |" in table
    assert "seeds marked * are kept from `gradcorr_table1_smoke.csv`" in table

    # run again: both finished, nothing is started, the logs are untouched
    logs = {r.directory: (r.directory / "stdout.log").read_text() for r in runs.values()}
    evaluated = (interrupted / rp.EVAL_FILE).stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 runs: 2 finished (skipped), 0 to resume, 0 to start" in again.stdout
    assert "running" not in again.stdout
    assert {d: (d / "stdout.log").read_text() for d in logs} == logs
    assert (interrupted / rp.EVAL_FILE).stat().st_mtime_ns == evaluated  # read, not evaluated again


# ---- Slurm: the job array through submitit ----

def slurm_opts(tmp_path, **kw):
    return SimpleNamespace(slurm_logs=str(tmp_path / "slurm"), slurm_time=90, slurm_cpus=3, slurm_partition="gpu",
                           slurm_gpus=1, slurm_mem_gb=16, slurm_array_parallelism=4, threads=1, **kw)


def test_sigterm_to_the_pool_checkpoints_the_running_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "reproduce.py", "table1", "--budget", "smoke", "--total-timesteps", "1000000", "--seeds",
           "1", "--envs", "InvertedPendulum-v5", "--algos", "ppo", "--workers", "1", "--threads", "1",
           "--runs-dir", str(runs_dir), "--results-dir", str(tmp_path / "results")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = next(iter(plan("table1", envs=("InvertedPendulum-v5",), algos=["ppo"], runs_dir=runs_dir,
                         total=1_000_000))).directory / "stdout.log"
    deadline = time.time() + 120
    while not (log.is_file() and "\nstep" in log.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "SIGTERM" in out, out
    assert "SIGINT: finishing this update" in log.read_text()  # the pool passed it on as Ctrl-C
    assert 0 < load_checkpoint(only_run(log.parent))["global_step"] < 1_000_000


def test_slurm_job_array_script(tmp_path, monkeypatch):
    """With stand-ins for `sbatch` and `srun` on PATH (submitit looks for srun to tell it is on a
    cluster), submitit writes the real sbatch script of the array."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", f"cp \"$1\" {tmp_path / 'submitted.sh'}\necho 'Submitted batch job 4242'"),
                       ("srun", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = plan("table1", "reduced", seeds=(1, 2, 3), algos=["p3o"], runs_dir=tmp_path / "runs")
    jobs = [(r, rp.command(r, rp.State("new"), 3, cuda=True)) for r in runs]
    for r in runs:
        r.directory.mkdir(parents=True)
    submitted = rp.submit(jobs, slurm_opts(tmp_path))
    assert [j.job_id for j in submitted] == ["4242_0", "4242_1", "4242_2"]
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=3",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --time=90", "#SBATCH --mem=16GB"):
        assert line in script, script
    # each array task runs one command: the run's file, its --run-dir and seed, with --cuda
    for (run, argv), job in zip(jobs, submitted):
        fn = job.submission().function
        assert fn.command == argv and argv[1] == "p3o_continuous.py" and "--cuda" in argv
        assert argv[argv.index("--run-dir") + 1] == str(run.directory)
        assert (run.directory / "slurm_job").read_text().strip() == job.job_id


def test_slurm_launcher_runs_the_array_with_submitits_local_executor(tmp_path):
    runs = plan("table1", "smoke", seeds=(1, 2), envs=("InvertedPendulum-v5",), algos=["ppo"],
                runs_dir=tmp_path / "runs", total=1024)
    for r in runs:
        r.directory.mkdir(parents=True)
    jobs = [(r, rp.command(r, rp.State("new"), 1)) for r in runs]
    opts = slurm_opts(tmp_path)
    opts.slurm_gpus = 0
    submitted = rp.submit(jobs, opts, cluster="local")
    assert len(submitted) == 2
    assert rp.wait_jobs(jobs, submitted, progress_every=1) == []
    for r in runs:
        state = rp.run_state(r)
        assert (state.status, state.step) == ("done", 1024)
        assert load_checkpoint(state.run_path)["args"]["seed"] == r.seed


def test_distillation_over_the_run_is_split_into_spans():
    """Table 2 over the run, from curve rows (so reused runs count): per-reset epochs, post-reset alpha-DKL
    and std averaged per span of steps; a hundredth of the run holding two resets is one point, their mean."""
    curves = []
    for seed, offset in ((1, 0.0), (2, 2.0)):
        # resets at 96k, 196k, ..., 596k of 600k steps (each in a hundredth ending by 100k k): epochs k + offset,
        # KL 0.1 k, std 1 / k; and two more epochs-only resets in the first hundredth (0, 6k]: 2 + offset and 0
        # epochs, one point of their mean
        resets = [100_000 * k - 4_000 for k in range(1, 7)]
        scalars = {"reset/distill_epochs": [(5_000, 2.0 + offset), (6_000, 0.0)]
                   + [(step, k + offset) for k, step in enumerate(resets, 1)],
                   "reset/distill_loss_start": [(step, 0.1 * k) for k, step in enumerate(resets, 1)],
                   "reset/policy_std": [(step, 1 / k) for k, step in enumerate(resets, 1)]}
        key = {"variant": "P3O", "algo": "p3o", "env": "Hopper-v5", "seed": seed, "budget": "x",
               "total_timesteps": 600_000}
        curves += rp.run_curve(key, 600_000, 600_000, scalars, list(scalars))
    curves += rp.run_curve({**key, "variant": "PPO", "algo": "ppo"}, 600_000, 600_000,
                           {"charts/episodic_return": [(50_000, 1.0)]}, ["charts/episodic_return"])  # no resets
    table = rp.distill_over_run(curves, segments=3).splitlines()
    assert table[0].split(" | ")[3] == "points with a reset (each 1% of a run, all seeds)"
    # 0-200k: per seed the points (0, 6k] (epochs 1, 2), 96k and 198k; alpha-DKL and std only at the last two
    assert table[2:] == ["| P3O | Hopper-v5 | 0–200k | 6 | 2.17 | 0.15 | 0.75 |",
                         "| P3O | Hopper-v5 | 200k–400k | 4 | 4.5 | 0.35 | 0.292 |",
                         "| P3O | Hopper-v5 | 400k–600k | 4 | 6.5 | 0.55 | 0.183 |"]
    assert rp.distill_over_run([]) == ""


def test_unknown_env_id_is_refused_before_anything_is_planned(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rp.parse_args(["table1", "--envs", "Hopper-v5", "Nope-v1", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--envs: unknown env id 'Nope-v1'" in capsys.readouterr().err
    assert rp.parse_args(["table1", "--envs", "Hopper-v5", "cyclefriction/Hopper-v5", "--dry-run"]).envs


# ---- The cycle budget: one full reset cycle, one whole friction schedule ----

def test_cycle_budget_renews_every_neuron_once_and_fits_one_friction_schedule():
    from envs import friction_multiplier

    runs = by_name(plan("cycle", "cycle", seeds=(1, 2), envs=("HalfCheetah-v5", "cyclefriction/HalfCheetah-v5")))
    assert len(runs) == 24  # all five methods, and P3O with tau on the summed KL
    p3o = runs[("P3O", "HalfCheetah-v5", 1)]
    summed = runs[("P3O, summed KL", "HalfCheetah-v5", 1)]
    assert (summed.script, rp.ALGOS[summed.variant.algo].args) == ("p3o_continuous.py", ("--distill-kl-reduction", "sum"))
    assert summed.total == p3o.total
    assert summed.directory == Path("runs/reproduce/cycle/p3o-sum__HalfCheetah-v5__seed1")
    assert p3o.total == 5_000_000 == 100 * 50_000  # 1 / reset rate 0.01 resets of 50,000 steps
    assert p3o.directory == Path("runs/reproduce/cycle/p3o__HalfCheetah-v5__seed1")
    friction = runs[("PPO", "cyclefriction/HalfCheetah-v5", 2)]
    period = int(friction.args["--friction-period"])
    assert (friction.total, period) == (3_500_000, 500_000)
    assert [friction_multiplier(k * period, period) for k in range(friction.total // period)] == [4, 3, 2, 1, 2, 3, 4]
    assert plan("table6", "cycle", algos=["sac-cycle"])[0].total == 1_000_000 == 100 * 10_000


def test_returns_at_milestones_count_only_the_steps_a_run_reached():
    points = [(step, step / 1000) for step in range(50_000, 2_600_001, 50_000)]
    assert rp.returns_at(points, reached=2_600_000) == {"return_1M": 975.0, "return_2.5M": 2475.0}
    assert rp.returns_at(points, reached=900_000) == {}
    assert rp.window_mean(points, 0, 100_000) == 75.0 and rp.window_mean(points, 10, 20) is None


def test_stability_finds_a_collapse_and_counts_large_kl_updates():
    rise_then_fall = [(step, 3000.0 if step <= 1_500_000 else 1000.0) for step in range(50_000, 2_000_001, 50_000)]
    kls = [(step, kl) for step, kl in zip(range(8192, 10 * 8192, 8192), (0.05, 0.2, 0.5, 1.5, 0.09, 3.0, 0.1, 0.11, 2))]
    dkls = [(50_000, 0.2), (100_000, 0.3), (150_000, 2.5)]
    out = rp.stability(rise_then_fall, kls, dkls, reached=2_000_000)
    assert (out["best_window"], out["worst_window"], out["last_window"], out["collapsed"]) == (3000, 1000, 1000, 1)
    assert (out["updates"], out["kl_over_0.1"], out["kl_over_1"]) == (9, 6, 3)  # 0.1 itself is not above 0.1
    assert (out["dkl_median"], out["dkl_max"]) == (0.3, 2.5)
    steady = rp.stability([(s, 2000.0 + s / 1e6) for s, _ in rise_then_fall], [], [], reached=2_000_000)
    assert steady["collapsed"] == 0 and "dkl_median" not in steady and steady["updates"] == 0
    assert "best_window" not in rp.stability(rise_then_fall, [], [], reached=1_050_000)  # no whole window after 1M


def fake_long_run(run, reached, offset, every=50_000):
    """A hand-made run that logged return step / 1000 + offset (and an FAU) every `every` steps up to `reached`."""
    from torch.utils.tensorboard import SummaryWriter

    path = run.directory / f"{run.env.replace('/', '_')}__{run.variant.algo}__{run.seed}__1700000000"
    path.mkdir(parents=True)
    writer = SummaryWriter(str(path))
    for step in range(every, reached + 1, every):
        writer.add_scalar("charts/episodic_return", step / 1000 + offset, step)
        writer.add_scalar("plasticity/actor_fau", 1 - step / 1e7, step)
    writer.close()
    # whole rollouts of 2 x 256 steps stop short of the total: 5,000,000 -> 4,999,680
    torch.save({"script": run.script, "format": 1, "global_step": reached - reached % 512,
                "args": saved_args(run.script)},
               path / "checkpoint.pt")


def test_cycle_tables_from_hand_made_runs(tmp_path):
    envs = ("HalfCheetah-v5", "cyclefriction/HalfCheetah-v5")
    runs = by_name(plan("cycle", "cycle", seeds=(1, 2), envs=envs, algos=["ppo"], runs_dir=tmp_path / "runs"))
    fake_long_run(runs[("PPO", "HalfCheetah-v5", 1)], 5_000_000, 0)
    fake_long_run(runs[("PPO", "HalfCheetah-v5", 2)], 2_600_000, 100)  # unfinished: counts up to 2.5M
    fake_long_run(runs[("PPO", "cyclefriction/HalfCheetah-v5", 1)], 3_500_000, 0)
    # a P3O run reused from an earlier CSV, with a curve: its resets fill the distillation table
    earlier = tmp_path / "earlier" / "runs_cycle.csv"
    earlier.parent.mkdir()
    earlier.write_text("experiment,variant,algo,env,seed,budget,total_timesteps,status,final_return,commit\n"
                       "cycle,P3O,p3o,HalfCheetah-v5,1,cycle,5000000,done,6000,0ld0001\n")
    (earlier.parent / "curves_cycle.csv").write_text(
        "variant,algo,env,seed,budget,total_timesteps,step,charts/episodic_return,reset/distill_epochs\n"
        + "".join(f"P3O,p3o,HalfCheetah-v5,1,cycle,5000000,{50_000 * k},{k},{k % 2 * 10}\n" for k in range(2, 101)))
    assert rp.main(["cycle", "--budget", "cycle", "--seeds", "1", "2", "--algos", "ppo", "p3o", "--runs-dir",
                    str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--aggregate-only",
                    "--reuse", str(earlier)]) == 0
    out = tmp_path / "results" / "cycle"
    table = (out / "cycle_cycle.md").read_text()
    # at 1M: (950 + 1000) / 2 = 975 and 1075 -> 1,025 +- 6.3531 x 100; at 5M seed 1 alone; final: last 10 of
    # 100 episodes -> 4,775 (Cycle Friction: last 7 of 70 -> 3,350)
    assert "| HalfCheetah-v5 | PPO | 1,025 [390, 1,660] (n=2) | 2,525 [1,890, 3,160] (n=2) | 4,975 (n=1) | " \
           "4,775 (n=1) | 4,999,680, 2,599,936 |" in table
    assert "| cyclefriction/HalfCheetah-v5 | PPO | 975 (n=1) | 2,475 (n=1) | — | 3,350 (n=1) | 3,499,520, 0 |" \
        in table
    # every change inside the 3.5M steps: before (400k, 500k], after (500k, 600k], end of the phase (900k, 1M]
    assert "| cyclefriction/HalfCheetah-v5 | 500k | 4 → 3 | PPO | 100,000 | 475 (n=1) | 575 (n=1) | 975 (n=1) |" \
        in table
    assert ("| cyclefriction/HalfCheetah-v5 | 3M | 3 → 4 | PPO | 100,000 | 2,975 (n=1) | 3,075 (n=1) | 3,475 (n=1) |"
            in table)
    # per seed, windows of 100k from 1M: best (4.9M, 5M] = 4,975, worst (1M, 1.1M] = 1,075; no KL or reset logged
    assert "| HalfCheetah-v5 | PPO | 1 | 4,999,680 | 4,775 | 4,975 | 1,075 | 4,975 | no | 0 / 0 | 0 | – | – |" \
        in table
    # return table (PPO, P3O), changes, seed rows
    assert table.count("| cyclefriction/HalfCheetah-v5 | ") == 2 + 6 + 1 + 1
    # the reused P3O run's resets (10 epochs at odd hundredths, 0 at even ones from the second): 19 in the first
    # million steps, 20 in each later one
    assert "| P3O | HalfCheetah-v5 | 0–1M | 19 | 4.74 | – | – |" in table
    assert table.count("| P3O | HalfCheetah-v5 | 4M–5M | 20 | 5 | – | – |") == 1
    for png in ("curves_cycle.png", "actor_fau_cycle.png", "plasticity_cycle.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # the unfinished seed's curve as far as it got: spans of 50,000 steps, the last one holding step 2,599,936
    curves = rp.read_csv(out / "curves_cycle.csv")
    seed2 = [c for c in curves if c["env"] == "HalfCheetah-v5" and c["seed"] == 2]
    assert [c["step"] for c in seed2] == list(range(50_000, 2_600_001, 50_000))
    # one return logged per span, at its end: step / 1000 + 100
    assert [c["charts/episodic_return"] for c in seed2] == [c["step"] / 1000 + 100 for c in seed2]


def test_friction_experiment_tabulates_each_change_with_windows_inside_a_short_period(tmp_path, monkeypatch):
    """The friction experiment (not only cycle) gets the table around each change; at the reduced
    budget a period is 1M / 8 = 125,000 steps, so the window is a quarter of it and the three never overlap.
    Each run's logs are read once for both the table and the figures."""
    reads, read_scalars = [], rp.read_scalars
    monkeypatch.setattr(rp, "read_scalars", lambda path: reads.append(path) or read_scalars(path))
    runs = by_name(plan("friction", "reduced", seeds=(1,), envs=("cyclefriction/Hopper-v5",), algos=["ppo", "p3o"],
                        runs_dir=tmp_path / "runs"))
    ppo, p3o = runs[("PPO", "cyclefriction/Hopper-v5", 1)], runs[("P3O", "cyclefriction/Hopper-v5", 1)]
    assert ppo.args["--friction-period"] == "125000"
    fake_long_run(ppo, 1_000_000, 0, every=1_000)
    fake_long_run(p3o, 300_000, 10, every=1_000)  # unfinished: counts up to the changes it got past
    assert rp.main(["friction", "--budget", "reduced", "--seeds", "1", "--envs", "cyclefriction/Hopper-v5", "--algos",
                    "ppo", "p3o", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
                    "--aggregate-only"]) == 0
    table = (tmp_path / "results" / "friction" / "friction_reduced.md").read_text()
    # window 31,250: before (93,750, 125k] -> mean of 94..125 = 109.5; after (125k, 156,250] -> 141; end (218,750, 250k]
    assert "| cyclefriction/Hopper-v5 | 125k | 4 → 3 | PPO | 31,250 | 110 (n=1) | 141 (n=1) | 234 (n=1) |" in table
    assert "| cyclefriction/Hopper-v5 | 125k | 4 → 3 | P3O | 31,250 | 120 (n=1) | 151 (n=1) | 244 (n=1) |" in table
    # P3O ran to 300k: no end of the 3 -> 2 phase
    assert "| cyclefriction/Hopper-v5 | 250k | 3 → 2 | P3O | 31,250 | 244 (n=1) | 276 (n=1) | – |" in table
    assert "| cyclefriction/Hopper-v5 | 875k | 4 → 3 | PPO | 31,250 | 860 (n=1) | 891 (n=1) | 984 (n=1) |" in table
    assert table.count("| cyclefriction/Hopper-v5 | ") == 1 + 7 * 2 + 1  # return table, changes, every seed
    assert (tmp_path / "results" / "friction" / "curves_reduced.png").is_file()
    assert len(reads) == len(set(reads)) == 2  # two runs: each one's logs read once for the CSV, tables and figures


def test_reused_runs_fill_the_table_and_every_run_names_its_commit(tmp_path, capsys):
    """--reuse: a configuration with no run here is taken from an earlier runs CSV (with its commit) and is
    not started, a run here keeps its own; each run's commit comes from the file its launch wrote."""
    runs = by_name(plan("table1", "smoke", seeds=(1, 2), algos=["ppo", "p3o"], runs_dir=tmp_path / "runs"))
    for seed in (1, 2):
        p3o = runs[("P3O", "Hopper-v5", seed)]
        fake_run(p3o, 8192, returns=[0.0] * 18 + [100.0 * seed] * 2)
        rp.prepare(p3o, rp.State("partial"))  # a launch: it records the commit it runs
    ppo = runs[("PPO", "Hopper-v5", 2)]
    fake_run(ppo, 8192, returns=[0.0] * 18 + [500.0] * 2)
    (ppo.directory / rp.COMMITS_FILE).write_text("abc1234\nabc1234\ndef5678\n")  # launched, resumed twice
    earlier = tmp_path / "earlier" / "runs_smoke.csv"
    earlier.parent.mkdir()
    (earlier.parent / "curves_smoke.csv").write_text(  # the reused run's curve, and one of a run not reused
        "variant,algo,env,seed,budget,total_timesteps,step,charts/episodic_return\n"
        "PPO,ppo,Hopper-v5,1,smoke,8192,4096,250\nPPO,ppo,Hopper-v5,1,smoke,8192,8192,300\n"
        "PPO,ppo,Hopper-v5,3,smoke,8192,8192,9999\n")
    earlier.write_text("experiment,variant,algo,env,seed,budget,total_timesteps,status,final_return,commit\n"
                       "table1,PPO,ppo,Hopper-v5,1,smoke,8192,done,300,0ld0001\n"
                       "table1,PPO,ppo,Hopper-v5,2,smoke,8192,done,9999,0ld0001\n"  # run here: not taken
                       "table1,PPO,ppo,Hopper-v5,3,smoke,8192,done,9999,0ld0001\n"  # seed not asked for
                       "table1,PPO,ppo,Hopper-v5,1,reduced,1000000,done,9999,0ld0001\n")  # another budget
    common = ["table1", "--budget", "smoke", "--envs", "Hopper-v5", "--seeds", "1", "2", "--algos", "ppo", "p3o",
              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--aggregate-only"]
    assert rp.main(common) == 0
    table = (tmp_path / "results" / "table1" / "table1_smoke.md").read_text()
    assert "| Hopper-v5 | 500 (n=1) (paper 3,613) | 150 [-485, 785] (n=2) (paper 3,735) |" in table
    dry = [*common[:-1], "--dry-run", "--reuse", str(earlier)]
    capsys.readouterr()
    assert rp.main(dry) == 0
    out = capsys.readouterr().out
    assert "3 finished (skipped), 0 to resume, 0 to start, 1 reused (--reuse; not run)" in out
    assert "ppo_continuous.py" not in out  # PPO seed 1 is reused, not started
    assert rp.main([*common, "--reuse", str(earlier)]) == 0
    table = (tmp_path / "results" / "table1" / "table1_smoke.md").read_text()
    # PPO: 300 (reused) and 500 (run here)
    assert "| Hopper-v5 | 400 [-871, 1,671] (n=2) (paper 3,613) | 150 [-485, 785] (n=2) (paper 3,735) |" in table
    head = rp.source_commit()
    assert head == "unknown" or len(head.split("+")[0]) == 7
    assert (f"Runs by the commit they were launched from (runs per method): reused from "
            f"`{os.path.relpath(earlier, ROOT)}`, commit 0ld0001: PPO (1); commit abc1234 def5678: PPO (1); "
            f"commit {head}: P3O (2). Reused runs are drawn from the curves CSV beside the runs CSV they came from")\
        in table
    curves = rp.read_csv(tmp_path / "results" / "table1" / "curves_smoke.csv")
    ppo_curves = [(c["seed"], c["step"], c["charts/episodic_return"]) for c in curves if c["algo"] == "ppo"]
    assert ppo_curves[-2:] == [(1, 4096, 250), (1, 8192, 300)]  # reused, after the run here; seed 3 not asked for
    assert {seed for seed, _, _ in ppo_curves} == {1, 2} and ppo_curves[-3][2] == 500.0
    csv_text = (tmp_path / "results" / "table1" / "runs_smoke.csv").read_text()
    assert "\ntable1,PPO,ppo,Hopper-v5,1,smoke,8192,done," in csv_text  # counts stay whole numbers
    rows = {(r["algo"], r["seed"]): r for r in rp.read_csv(tmp_path / "results" / "table1" / "runs_smoke.csv")}
    reused = rows[("ppo", 1)]
    assert reused["reused_from"] == os.path.relpath(earlier, ROOT) and reused["commit"] == "0ld0001"
    assert rows[("ppo", 1)]["experiment"] == "table1" and "reused_from" not in rows[("ppo", 2)]
    assert rows[("p3o", 1)]["commit"] == head

    # a row the earlier CSV had itself reused keeps naming the CSV it was first reused from
    again = tmp_path / "again" / "runs_smoke.csv"
    again.parent.mkdir()
    rp.write_csv(again, [{**reused, "seed": 3}])
    new = {**reused, "seed": 3, "status": "new"}
    assert rp.reuse([new], rp.earlier_runs([again]))[0]["reused_from"] == os.path.relpath(earlier, ROOT)

    # a fresh start replaces what a stale launch recorded; a CSV that is not a runs CSV is refused in one line
    rp.prepare(runs[("PPO", "Hopper-v5", 1)], rp.State("new"))
    assert rp.run_commits(runs[("PPO", "Hopper-v5", 1)].directory) == [head]
    with pytest.raises(SystemExit, match=r"--reuse .*not a runs CSV"):
        rp.main([*common, "--reuse", str(tmp_path / "runs" / "smoke" / "ppo__Hopper-v5__seed2" / rp.COMMITS_FILE)])


def test_local_pool_split_fills_the_cores_and_gives_gpu_runs_one_thread(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    cpu = rp.parse_args(["table1", "--dry-run"])
    assert (cpu.workers, cpu.threads) == (16, 1)  # one single-thread run per core
    gpu = rp.parse_args(["table1", "--dry-run", "--cuda"])
    assert (gpu.workers, gpu.threads) == (8, 1)  # one core per run's env stepping, the rest for the driver
    assert (rp.parse_args(["table1", "--cuda", "--workers", "12"]).workers, rp.parse_args(
        ["table1", "--workers", "4"]).threads) == (12, 4)
