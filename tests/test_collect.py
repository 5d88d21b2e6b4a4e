"""Collection from run directories (reproduce_utils/collect.py): final returns, orphans, windows, stability, reuse
and provenance."""

import os

import numpy as np
import pytest

import reproduce as rp
from reproduce_utils import collect, plan, stats, tables
from conftest import by_name, fake_run, plan_runs, ROOT


def test_final_return_interval_and_orphans():
    points = [(s, float(s)) for s in range(1, 21)]
    assert collect.final_return(points) == 19.5  # last 10% of 20 episodes: 19 and 20
    assert collect.final_return(points[:5]) == 5.0  # at least one episode
    assert np.isnan(collect.final_return([]))
    # 95% t-interval: 220 +- t(0.975, 1) x sd / sqrt(2) = 220 +- 12.7062 x 141.42 / 1.4142
    mean, low, high, n = stats.t_interval([120.0, 320.0, float("nan")])
    assert (mean, n) == (220.0, 2) and low == pytest.approx(220 - 1270.62, abs=0.01) and high == pytest.approx(
        220 + 1270.62, abs=0.01)
    assert tables.interval_text([120.0, 320.0]) == "220 [-1,051, 1,491] (n=2)"
    assert tables.interval_text([5.0]) == "5 (n=1)" and tables.interval_text([]) == "—"
    # a run resumed from a checkpoint at step 3 logs steps 4.. again: the first pass's 4, 5 are orphans
    logged = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (4, 4.0), (4, 4.5), (5, 5.0), (6, 6.0)]
    assert collect.drop_orphaned(logged) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (4, 4.5), (5, 5.0), (6, 6.0)]
    assert collect.method_statistics({"sbp": {"reset_counts": np.array([[0, 2], [1, 1]])}}) == {
        "neurons": 4, "total_resets": 4, "avg_resets_per_neuron": 1.0, "share_neurons_reset": 0.75}


def test_returns_at_milestones_count_only_the_steps_a_run_reached():
    points = [(step, step / 1000) for step in range(50_000, 2_600_001, 50_000)]
    assert collect.returns_at(points, reached=2_600_000) == {"return_1M": 975.0, "return_2.5M": 2475.0}
    assert collect.returns_at(points, reached=900_000) == {}
    assert collect.window_mean(points, 0, 100_000) == 75.0 and collect.window_mean(points, 10, 20) is None


def test_episode_lengths_give_the_last_and_the_first_longest_window():
    # 20 steps until 300k, 1,000 in (300k, 500k] and (600k, 700k], 500 between and after; reached 750k: 7 windows
    lengths = [(step, 1000.0 if 300_000 < step <= 500_000 or 600_000 < step <= 700_000 else
                20.0 if step <= 300_000 else 500.0) for step in range(10_000, 750_001, 10_000)]
    assert collect.episode_lengths(lengths, reached=750_000) == {"length_last": 1000.0, "length_best": 1000.0,
                                                                 "length_best_at": 400_000}
    assert collect.episode_lengths(lengths, reached=350_000) == {"length_last": 20.0, "length_best": 20.0,
                                                                 "length_best_at": 100_000}
    assert collect.episode_lengths(lengths, reached=90_000) == {} and collect.episode_lengths([], 750_000) == {}


def test_stability_finds_a_collapse_and_counts_large_kl_updates():
    rise_then_fall = [(step, 3000.0 if step <= 1_500_000 else 1000.0) for step in range(50_000, 2_000_001, 50_000)]
    kls = [(step, kl) for step, kl in zip(range(8192, 10 * 8192, 8192), (0.05, 0.2, 0.5, 1.5, 0.09, 3.0, 0.1, 0.11, 2))]
    dkls = [(50_000, 0.2), (100_000, 0.3), (150_000, 2.5)]
    out = collect.stability(rise_then_fall, kls, dkls, reached=2_000_000)
    assert (out["best_window"], out["worst_window"], out["last_window"], out["collapsed"]) == (3000, 1000, 1000, 1)
    assert (out["updates"], out["kl_over_0.1"], out["kl_over_1"]) == (9, 6, 3)  # 0.1 itself is not above 0.1
    assert (out["dkl_median"], out["dkl_max"]) == (0.3, 2.5)
    steady = collect.stability([(s, 2000.0 + s / 1e6) for s, _ in rise_then_fall], [], [], reached=2_000_000)
    assert steady["collapsed"] == 0 and "dkl_median" not in steady and steady["updates"] == 0
    assert "best_window" not in collect.stability(rise_then_fall, [], [], reached=1_050_000)  # no whole window after 1M


def test_reused_runs_fill_the_table_and_every_run_names_its_commit(tmp_path, capsys):
    """--reuse: a configuration with no run here is taken from an earlier runs CSV (with its commit) and is
    not started, a run here keeps its own; each run's commit comes from the file its launch wrote."""
    runs = by_name(plan_runs("table1", "smoke", seeds=(1, 2), algos=["ppo", "p3o"], runs_dir=tmp_path / "runs"))
    for seed in (1, 2):
        p3o = runs[("P3O", "Hopper-v5", seed)]
        fake_run(p3o, 8192, returns=[0.0] * 18 + [100.0 * seed] * 2)
        plan.prepare(p3o, plan.State("partial"))  # a launch: it records the commit it runs
    ppo = runs[("PPO", "Hopper-v5", 2)]
    fake_run(ppo, 8192, returns=[0.0] * 18 + [500.0] * 2)
    (ppo.directory / plan.COMMITS_FILE).write_text("abc1234\nabc1234\ndef5678\n")  # launched, resumed twice
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
    head = plan.source_commit()
    assert head == "unknown" or len(head.split("+")[0]) == 7
    assert (f"Runs by the commit they were launched from (runs per method): reused from "
            f"`{os.path.relpath(earlier, ROOT)}`, commit 0ld0001: PPO (1); commit abc1234 def5678: PPO (1); "
            f"commit {head}: P3O (2). Reused runs are drawn from the curves CSV beside the runs CSV they came from")\
        in table
    curves = collect.read_csv(tmp_path / "results" / "table1" / "curves_smoke.csv")
    ppo_curves = [(c["seed"], c["step"], c["charts/episodic_return"]) for c in curves if c["algo"] == "ppo"]
    assert ppo_curves[-2:] == [(1, 4096, 250), (1, 8192, 300)]  # reused, after the run here; seed 3 not asked for
    assert {seed for seed, _, _ in ppo_curves} == {1, 2} and ppo_curves[-3][2] == 500.0
    csv_text = (tmp_path / "results" / "table1" / "runs_smoke.csv").read_text()
    assert "\ntable1,PPO,ppo,Hopper-v5,1,smoke,8192,done," in csv_text  # counts stay whole numbers
    rows = {(r["algo"], r["seed"]): r for r in collect.read_csv(tmp_path / "results" / "table1" / "runs_smoke.csv")}
    reused = rows[("ppo", 1)]
    assert reused["reused_from"] == os.path.relpath(earlier, ROOT) and reused["commit"] == "0ld0001"
    assert rows[("ppo", 1)]["experiment"] == "table1" and "reused_from" not in rows[("ppo", 2)]
    assert rows[("p3o", 1)]["commit"] == head

    # a row the earlier CSV had itself reused keeps naming the CSV it was first reused from
    again = tmp_path / "again" / "runs_smoke.csv"
    again.parent.mkdir()
    collect.write_csv(again, [{**reused, "seed": 3}])
    new = {**reused, "seed": 3, "status": "new"}
    assert collect.reuse([new], collect.earlier_runs([again]))[0]["reused_from"] == os.path.relpath(earlier, ROOT)

    # a fresh start replaces what a stale launch recorded; a CSV that is not a runs CSV is refused in one line
    plan.prepare(runs[("PPO", "Hopper-v5", 1)], plan.State("new"))
    assert plan.run_commits(runs[("PPO", "Hopper-v5", 1)].directory) == [head]
    with pytest.raises(SystemExit, match=r"--reuse .*not a runs CSV"):
        rp.main([*common, "--reuse", str(tmp_path / "runs" / "smoke" / "ppo__Hopper-v5__seed2" / plan.COMMITS_FILE)])


def test_optional_columns_are_written_only_where_a_row_has_them(tmp_path):
    path, row = tmp_path / "runs_smoke.csv", {"experiment": "table1", "seed": 1, "status": "done", "eval_return": 10.0}
    collect.write_csv(path, [row])
    assert path.read_text().splitlines()[0] == ",".join(collect.CSV_FIELDS)  # as the CSVs written before them
    collect.write_csv(path, [row, {**row, "seed": 2, "eval_length": 87.5}])
    assert path.read_text().splitlines()[0] == ",".join(collect.CSV_FIELDS + ["eval_length"])
    assert [r.get("eval_length") for r in collect.read_csv(path)] == [None, 87.5]


def episodes(spans):
    """Episodic returns every 1,000 steps over [(from, to, value)] spans."""
    return [(s, float(v)) for lo, hi, v in spans for s in range(lo + 1000, hi + 1, 1000)]


def test_falls_locate_the_step_the_reset_before_the_kl_and_the_recovery():
    # 1,000 until 2,030,000, then 200 (a fall), 900 again from 2.5M; resets every 50,000 steps, updates every 8,192
    returns = episodes([(0, 2_030_000, 1000), (2_030_000, 2_500_000, 200), (2_500_000, 3_000_000, 900)])
    kls = [(s, 0.02 if s < 2_000_000 else 0.5) for s in range(8192, 3_000_000, 8192)]
    clips = [(s, 0.1 if s < 2_000_000 else 0.3) for s in range(8192, 3_000_000, 8192)]
    resets = list(range(50_000, 3_000_000, 50_000))
    (fall,) = collect.falls(returns, kls, clips, resets, 3_000_000)
    # the window (2.0M, 2.1M] averages 440, below half of 1,000; the first 10,000 mark whose last 20,000 steps
    # average below 500 is 2,050,000; of the 10 updates up to it, 6 logged KL 0.5 and clip fraction 0.3
    assert (fall["window"], fall["best"], fall["value"]) == (2_000_000, 1000, 440)
    assert (fall["step"], fall["reset"], fall["kl"], fall["clipfrac"]) == (2_050_000, 2_050_000, 0.5, 0.3)
    assert fall["recovered"] == 2_600_000  # (2.5M, 2.6M] is back at 900
    assert collect.falls(returns[:2_400], kls, clips, resets, 2_400_000)[0]["recovered"] is None  # not yet
    assert collect.falls(returns, [], [], [], 3_000_000)[0]["reset"] is None  # PPO: no reset, no KL logged
    # a run that only climbs, or has one high episode, never falls; nor does anything before 1M
    assert collect.falls(episodes([(0, 1_500_000, 100), (1_500_000, 3_000_000, 1000)]), [], [], [], 3_000_000) == []
    assert collect.falls(episodes([(0, 900_000, 5000), (900_000, 3_000_000, 100)]), [], [], [], 3_000_000) == []
    # two falls, each with its own recovery
    twice = episodes([(0, 1_500_000, 1000), (1_500_000, 1_700_000, 100), (1_700_000, 2_000_000, 1000),
                      (2_000_000, 2_300_000, 100), (2_300_000, 2_500_000, 1000)])
    assert [(f["window"], f["recovered"]) for f in collect.falls(twice, [], [], [], 2_500_000)] == [
        (1_500_000, 1_800_000), (2_000_000, 2_400_000)]
    row = tables.falls_table([("Humanoid-v5", "P3O", 3, [fall], {"losses/approx_kl": kls, "losses/clipfrac": clips})])
    assert row.splitlines()[2] == ("| Humanoid-v5 | P3O | 3 | 2M–2.1M | 1,000 → 440 | 2,050,000 | 0 (at 2,050,000) | "
                                   "0.5 (0.02) | 0.3 (0.1) | at 2,600,000 |")
    assert tables.falls_table([("Humanoid-v5", "PPO", 1, [], {})]) == ""
