"""Tables (reproduce_utils/tables.py) from hand-made runs and CSV rows."""

import numpy as np
import torch

import reproduce as rp
from reproduce_utils import collect, registry, tables
from conftest import by_name, fake_long_run, fake_run, plan_runs, rows_of, saved_args


def test_tables_from_hand_made_runs(tmp_path):
    """Table 4, Table 2 and the return table from hand-made event files and checkpoints."""
    runs = by_name(plan_runs("table4", "smoke", seeds=(1, 2), runs_dir=tmp_path / "runs"))
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
    rows = collect.read_csv(tmp_path / "results" / "table4" / "runs_smoke.csv")
    assert sorted(r["final_return"] for r in rows) == [120.0] * 3 + [320.0] * 3
    assert {r["total_resets"] for r in rows if r["algo"] == "cbp"} == {288.0, 480.0}

    assert rp.main(["table2", *common]) == 0  # the same P3O runs, another table
    table2 = (tmp_path / "results" / "table2" / "table2_smoke.md").read_text()
    assert "| Total distillation epochs | 30.0 [30.0, 30.0] (n=2) (paper 597.7) |" in table2
    assert "| Per-reset epochs | 3.00 [3.00, 3.00] (n=2) (paper 2.39) |" in table2
    assert "| Epoch ratio (distillation / PPO epochs) | 0.1875 [0.1875, 0.1875] (n=2) (paper 0.0327) |" in table2


def test_sac_table_counts_resets_distillation_epochs_and_seconds(tmp_path):
    runs = by_name(plan_runs("table6", "smoke", seeds=(1, 2), runs_dir=tmp_path / "runs"))
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
    rows = collect.read_csv(csv_path)
    variants = [registry.Variant("ppo"), registry.Variant("p3o")]
    table = tables.returns_table(rows, variants, ["Hopper-v5", "Ant-v5"], registry.PAPER_TABLE1, want=2)
    assert "| Hopper-v5 | 2,000 [-10,706, 14,706] (n=2) (paper 3,613) | 2,500 (n=1) (paper 3,735) |" in table
    assert "| Ant-v5 | 800 [-471, 2,071] (n=2) (paper 3,514) | — (paper 5,683) |" in table


def test_every_seed_and_welch_readings():
    rows = rows_of({"PPO": [1000, 2000, 3000], "PPO+Cycle": [10000, 12000, 11000], "P3O": [10000, 11000, 12000]})
    seeds = tables.every_seed_table(rows, registry.BASELINES, ["HalfCheetah-v5"])
    assert "| HalfCheetah-v5 | PPO | 2,000 [-484, 4,484] (n=3) | — | 1: 1,000; 2: 2,000; 3: 3,000 |" in seeds
    compared = tables.comparison_table(rows, registry.BASELINES, ["HalfCheetah-v5"])
    # P3O - PPO: 9,000, t = 11.02 on 4 df -> p = 0.0004; P3O - Cycle: 0 -> p = 1
    # p < 0.05 on 3 seeds each is not a claim: the project's rule asks for 5 seeds per method
    assert ("| HalfCheetah-v5 | training return | P3O | PPO | 3 vs 3 | +9,000 | 0.000 | not separated (p < 0.05, "
            "under 5 seeds) |") in compared
    assert "| HalfCheetah-v5 | training return | P3O | PPO+Cycle | 3 vs 3 | +0 | 1.000 | not separated |" in compared
    assert "PPO+CBP" not in compared  # no runs
    rows = rows_of({"PPO": [1000, 2000, 3000, 1500, 2500], "P3O": [10000, 11000, 12000, 10500, 11500]})
    compared = tables.comparison_table(rows, registry.BASELINES, ["HalfCheetah-v5"])
    assert "| HalfCheetah-v5 | training return | P3O | PPO | 5 vs 5 | +9,000 | 0.000 | P3O ahead |" in compared


def test_every_variant_of_p3o_is_compared_with_each_method_once():
    # P3O with the summed KL (issue: does the reading of tau decide P3O against Cycle?) gets its own rows
    variants = registry.BASELINES + (registry.Variant("p3o-sum"),)
    summed = variants[-1].name
    rows = rows_of({"PPO+Cycle": [1000, 2000, 3000, 1500, 2500], "P3O": [1000, 2000, 3000, 1500, 2500]})
    rows += [{"variant": summed, "algo": "p3o-sum", "env": "HalfCheetah-v5", "seed": seed, "status": "done",
              "final_return": value} for seed, value in enumerate([10000, 11000, 12000, 10500, 11500], 1)]
    compared = tables.comparison_table(rows, variants, ["HalfCheetah-v5"])
    assert "| HalfCheetah-v5 | training return | P3O | PPO+Cycle | 5 vs 5 | +0 | 1.000 | not separated |" in compared
    assert (f"| HalfCheetah-v5 | training return | {summed} | PPO+Cycle | 5 vs 5 | +9,000 | 0.000 | {summed} ahead |"
            in compared)
    assert f"| P3O | {summed} | 5 vs 5 | -9,000 | 0.000 | P3O behind |" in compared
    assert f"| {summed} | P3O |" not in compared  # each pair once
    assert len(compared.splitlines()) == 2 + 3  # header, rule and the three pairs with runs


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
        curves += collect.run_curve(key, 600_000, 600_000, scalars, list(scalars))
    curves += collect.run_curve({**key, "variant": "PPO", "algo": "ppo"}, 600_000, 600_000,
                                {"charts/episodic_return": [(50_000, 1.0)]}, ["charts/episodic_return"])  # no resets
    table = tables.distill_over_run(curves, segments=3).splitlines()
    assert table[0].split(" | ")[3] == "points with a reset (each 1% of a run, all seeds)"
    # 0-200k: per seed the points (0, 6k] (epochs 1, 2), 96k and 198k; alpha-DKL and std only at the last two
    assert table[2:] == ["| P3O | Hopper-v5 | 0–200k | 6 | 2.17 | 0.15 | 0.75 |",
                         "| P3O | Hopper-v5 | 200k–400k | 4 | 4.5 | 0.35 | 0.292 |",
                         "| P3O | Hopper-v5 | 400k–600k | 4 | 6.5 | 0.55 | 0.183 |"]
    # in spans of 250,000 steps (the cycle experiment's 1M spans past one cycle), the last past the runs' end
    # (a second task, the same points: each task gets its own spans)
    table = tables.distill_over_run(curves + [{**c, "env": "Walker2d-v5"} for c in curves], every=250_000).splitlines()
    assert [row.replace("Walker2d-v5", "Hopper-v5") for row in table[5:]] == table[2:5]
    assert table[2:5] == ["| P3O | Hopper-v5 | 0–250k | 6 | 2.17 | 0.15 | 0.75 |",
                         "| P3O | Hopper-v5 | 250k–500k | 6 | 5 | 0.4 | 0.261 |",
                         "| P3O | Hopper-v5 | 500k–750k | 2 | 7 | 0.6 | 0.167 |"]
    assert tables.distill_over_run([]) == ""


def test_cycle_tables_from_hand_made_runs(tmp_path):
    envs = ("HalfCheetah-v5", "cyclefriction/HalfCheetah-v5")
    runs = by_name(plan_runs("cycle", "cycle", seeds=(1, 2), envs=envs, algos=["ppo"], runs_dir=tmp_path / "runs"))
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
    assert "Episode length" not in table  # no lengths logged
    # no run passed 5M: no later milestone in the table or the CSV, and no paper number below the paper's budget
    assert "return at 10M" not in table and "paper" not in table.split("## Return across the cycle")[1].split("##")[0]
    assert "return_10M" not in (out / "runs_cycle.csv").read_text()
    for png in ("curves_cycle.png", "actor_fau_cycle.png", "plasticity_cycle.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # the unfinished seed's curve as far as it got: spans of 50,000 steps, the last one holding step 2,599,936
    curves = collect.read_csv(out / "curves_cycle.csv")
    seed2 = [c for c in curves if c["env"] == "HalfCheetah-v5" and c["seed"] == 2]
    assert [c["step"] for c in seed2] == list(range(50_000, 2_600_001, 50_000))
    # one return logged per span, at its end: step / 1000 + 100
    assert [c["charts/episodic_return"] for c in seed2] == [c["step"] / 1000 + 100 for c in seed2]


def test_cycle_experiment_past_one_cycle_tabulates_falls_and_distillation_by_million(tmp_path, monkeypatch):
    """At the paper budget (Humanoid-v5: 20M) the cycle experiment lists every fall of a run with its reset, KL
    and recovery, splits P3O's distillation into 1M spans, marks 5M (one full cycle) on the curves, adds the
    milestones past 5M that a run reached and puts the paper's Table 1 beside the final return."""
    from torch.utils.tensorboard import SummaryWriter

    marks = []
    monkeypatch.setattr("reproduce_utils.report.figures", lambda *a: marks.append(a[5]) or [])
    monkeypatch.setattr("reproduce_utils.report.metrics_grid", lambda path, *a: path)  # no plasticity logged here
    runs = by_name(plan_runs("cycle", "paper", envs=("Humanoid-v5",), algos=["ppo", "p3o"], runs_dir=tmp_path / "runs"))
    fake_long_run(runs[("PPO", "Humanoid-v5", 1)], 20_000_000, 0, every=100_000)  # finished: return step / 1000
    run = runs[("P3O", "Humanoid-v5", 1)]
    path = run.directory / "Humanoid-v5__p3o__1__1700000000"
    writer = SummaryWriter(str(path))
    for step in range(10_000, 12_000_001, 10_000):  # 600 until 6M, 100 after: a fall that does not recover
        writer.add_scalar("charts/episodic_return", 600 if step <= 6_000_000 else 100, step)
        writer.add_scalar("losses/approx_kl", 2.0 if 5_950_000 < step <= 6_500_000 else 0.5, step)
        # episodes of 200 steps, of the whole 1,000 from 3M (it stays up), of 100 after the fall
        writer.add_scalar("charts/episodic_length", 200 if step <= 3_000_000 else 1000 if step <= 6_000_000 else 100,
                          step)
        if step % 50_000 == 0:  # a reset every 50,000 steps, 10 distillation epochs each until 3M, 30 after
            writer.add_scalar("reset/seconds", 1.0, step)
            writer.add_scalar("reset/distill_epochs", 10 if step <= 3_000_000 else 30, step)
    writer.close()
    torch.save({"script": run.script, "format": 1, "global_step": 12_000_000, "args": saved_args(run.script)},
               path / "checkpoint.pt")
    assert rp.main(["cycle", "--budget", "paper", "--seeds", "1", "--envs", "Humanoid-v5", "--algos", "ppo", "p3o",
                    "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
                    "--aggregate-only"]) == 0
    table = (tmp_path / "results" / "cycle" / "cycle_paper.md").read_text()
    # the first 10,000 mark whose last 20,000 steps are below 300 is 6,020,000: 20,000 steps after a reset
    assert ("| Humanoid-v5 | P3O | 1 | 6M–6.1M | 600 → 100 | 6,020,000 | 20,000 (at 6,000,000) | 2 (0.5) | – | no |"
            in table)
    # 1M spans up to the 12M reached, each of 5 curve points (a hundredth of 20M each)
    assert "| P3O | Humanoid-v5 | 2M–3M | 5 | 10 | – | – |" in table
    assert "| P3O | Humanoid-v5 | 11M–12M | 5 | 30 | – | – |" in table
    assert marks == [{"Humanoid-v5": (5_000_000,)}]
    # the returns at the milestones each run passed (P3O stopped at 12M); PPO's final return: the last 20 of 200
    assert ("| task | method | return at 1M | return at 2.5M | return at 5M | return at 10M | return at 12.5M | "
            "return at 15M | return at 20M | final return | steps reached (per seed) |") in table
    assert ("| Humanoid-v5 | PPO | 1,000 (n=1) | 2,500 (n=1) | 5,000 (n=1) | 10,000 (n=1) | 12,500 (n=1) | "
            "15,000 (n=1) | 20,000 (n=1) | 19,050 (n=1) (paper 972) | 19,999,744 |") in table
    assert ("| Humanoid-v5 | P3O | 600 (n=1) | 600 (n=1) | 600 (n=1) | 100 (n=1) | — | — | — | — (paper 7,469) | "
            "12,000,000 |") in table
    header = (tmp_path / "results" / "cycle" / "runs_paper.csv").read_text().splitlines()[0]
    assert header.endswith(",return_10M,return_12.5M,return_15M,return_20M,length_last,length_best,length_best_at")
    # the episode lengths of the run that logged them (PPO's hand-made run logged none)
    assert "| Humanoid-v5 | P3O | 1 | 12,000,000 | 100 | 1,000 (at 3,100,000) | – |" in table
    assert "| PPO |" not in table.split("## Episode length: does an agent stay up?")[1].split("##")[0]


def test_friction_experiment_tabulates_each_change_with_windows_inside_a_short_period(tmp_path, monkeypatch):
    """The friction experiment (not only cycle) gets the table around each change; at the reduced
    budget a period is 1M / 8 = 125,000 steps, so the window is a quarter of it and the three never overlap.
    Each run's logs are read once for both the table and the figures."""
    reads, read_scalars = [], collect.read_scalars
    monkeypatch.setattr(collect, "read_scalars", lambda path: reads.append(path) or read_scalars(path))
    runs = by_name(plan_runs("friction", "reduced", seeds=(1,), envs=("cyclefriction/Hopper-v5",),
                             algos=["ppo", "p3o"], runs_dir=tmp_path / "runs"))
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


def test_length_table_leaves_out_tasks_whose_episodes_all_last_the_same():
    rows = [{"variant": "PPO", "env": env, "seed": seed, "steps": 5_000_000, "length_last": last, "length_best": best,
             "length_best_at": 300_000, "eval_length": 1000.0 if env == "HalfCheetah-v5" else None}
            for env, seed, last, best in (("HalfCheetah-v5", 1, 1000.0, 1000.0), ("HalfCheetah-v5", 2, 1000.0, 1000.0),
                                          ("Humanoid-v5", 1, 150.0, 210.4), ("Humanoid-v5", 2, 1000.0, 1000.0))]
    table = tables.length_table(rows, registry.BASELINES, ["HalfCheetah-v5", "Humanoid-v5"])
    assert "HalfCheetah-v5" not in table
    assert "| Humanoid-v5 | PPO | 1 | 5,000,000 | 150 | 210 (at 300,000) | – |" in table
    assert "| Humanoid-v5 | PPO | 2 | 5,000,000 | 1,000 | 1,000 (at 300,000) | – |" in table
    assert tables.length_table(rows[:2], registry.BASELINES, ["HalfCheetah-v5"]) == ""
