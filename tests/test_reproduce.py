"""reproduce.py, the command: one smoke experiment end to end, argument checks and the pool's defaults."""

import os
import subprocess
import sys

import numpy as np
import pytest

import reproduce as rp
from reproduce_utils import collect, report
from conftest import by_name, load_checkpoint, only_run, plan_runs, read_scalars, ROOT, run_script


def test_table1_smoke_end_to_end_resumes_then_skips(tmp_path):
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    runs = by_name(plan_runs("table1", "smoke", envs=("InvertedPendulum-v5",), algos=["ppo", "p3o"], runs_dir=runs_dir))
    ppo = runs[("PPO", "InvertedPendulum-v5", 1)]
    # an interrupted run: the same configuration stopped at 4,096 of its 8,192 steps
    options = [x for o, v in ppo.args.items() for x in (o, v)]
    run_script("ppo_continuous.py", "--env-id", ppo.env, "--seed", 1, "--total-timesteps", 4096, "--threads", 1,
               "--exp-name", "ppo", *options, run_dir=ppo.directory)
    interrupted = only_run(ppo.directory)
    assert load_checkpoint(interrupted)["global_step"] == 4096

    cmd = [sys.executable, "reproduce.py", "table1", "--budget", "smoke", "--seeds", "1", "--envs",
           "InvertedPendulum-v5", "--algos", "ppo", "p3o", "--workers", "2", "--threads", "1",
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
    rows = collect.read_csv(results / "table1" / "runs_smoke.csv")
    assert [(r["algo"], r["status"], r["steps"]) for r in rows] == [("ppo", "done", 8192), ("p3o", "done", 8192)]
    ppo_final = next(r["final_return"] for r in rows if r["algo"] == "ppo")
    assert ppo_final == pytest.approx(collect.final_return(returns))
    # the final checkpoint's deterministic evaluation: 10 episodes, kept beside the run and in the row
    evaluation = collect.read_csv(interrupted / collect.EVAL_FILE)
    assert not (interrupted / "evaluation.csv").exists()  # evaluate.py's own file is the user's
    assert [e["seed"] for e in evaluation] == list(range(collect.EVAL_SEED, collect.EVAL_SEED + 10))
    ppo_row = next(r for r in rows if r["algo"] == "ppo")
    assert ppo_row["eval_return"] == pytest.approx(np.mean([e["return"] for e in evaluation]))
    assert ppo_row["eval_episodes"] == 10 and "| InvertedPendulum-v5 | PPO |" in table.split("## Every seed")[1]
    assert ppo_row["eval_length"] == pytest.approx(np.mean([e["length"] for e in evaluation]))  # does it stay up?
    length = ppo_row["eval_length"]  # one seed: its mean and its range
    assert f"| {length:,.0f} ({length:,.0f}–{length:,.0f}) |" in table.split("## Every seed")[1]
    # every run's curves in curves_smoke.csv, a point per hundredth of 8,192 steps up to the last
    curves = collect.read_csv(results / "table1" / "curves_smoke.csv")
    assert {(c["algo"], c["seed"]) for c in curves} == {("ppo", 1), ("p3o", 1)}
    assert max(c["step"] for c in curves if c["algo"] == "ppo") == 8192
    assert all("reset/distill_epochs" not in c for c in curves if c["algo"] == "ppo")
    assert any("reset/distill_epochs" in c for c in curves if c["algo"] == "p3o")
    # `metrics --paths`: the checkpoints say which file wrote each run; their names say ppo and p3o
    report.metrics_figures([ppo.directory, p3o_run], results / "metrics", "smoke")
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
    first = {(r["variant"], r["seed"]): r["gradcorr"] for r in collect.read_csv(values_csv)}
    assert set(first) == {("PPO", 1), ("P3O", 1)} and all(0 < x < 1 for x in first.values())
    values_csv.write_text("env,variant,seed,gradcorr\nInvertedPendulum-v5,PPO,1,9.0\n"
                          "InvertedPendulum-v5,P3O,2,0.5\nInvertedPendulum-v5,P3O,3,0.25\n")
    assert rp.main(["gradcorr", "--from", "table1", "--budget", "smoke", "--seeds", "1", "2", "--envs",
                    "InvertedPendulum-v5", "--runs-dir", str(runs_dir), "--results-dir", str(results)]) == 0
    again = {(r["variant"], r["seed"]): r["gradcorr"] for r in collect.read_csv(values_csv)}
    assert again == {**first, ("P3O", 2): 0.5}  # seed 3 is not asked for
    table = (results / "gradcorr" / "gradcorr_table1_smoke.md").read_text()
    assert "| InvertedPendulum-v5 | P3O | " in table and f"1: {first[('P3O', 1)]:.3f}; 2*: 0.500 |" in table
    assert "seeds marked * are kept from `gradcorr_table1_smoke.csv`" in table

    # run again: both finished, nothing is started, the logs are untouched
    logs = {r.directory: (r.directory / "stdout.log").read_text() for r in runs.values()}
    evaluated = (interrupted / collect.EVAL_FILE).stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 runs: 2 finished (skipped), 0 to resume, 0 to start" in again.stdout
    assert "running" not in again.stdout
    assert {d: (d / "stdout.log").read_text() for d in logs} == logs
    assert (interrupted / collect.EVAL_FILE).stat().st_mtime_ns == evaluated  # read, not evaluated again


def test_unknown_env_id_is_refused_before_anything_is_planned(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rp.parse_args(["table1", "--envs", "Hopper-v5", "Nope-v1", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--envs: unknown env id 'Nope-v1'" in capsys.readouterr().err
    assert rp.parse_args(["table1", "--envs", "Hopper-v5", "cyclefriction/Hopper-v5", "--dry-run"]).envs


def test_local_pool_split_fills_the_cores_and_gives_gpu_runs_one_thread(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    cpu = rp.parse_args(["table1", "--dry-run"])
    assert (cpu.workers, cpu.threads) == (16, 1)  # one single-thread run per core
    gpu = rp.parse_args(["table1", "--dry-run", "--cuda"])
    assert (gpu.workers, gpu.threads) == (8, 1)  # one core per run's env stepping, the rest for the driver
    assert (rp.parse_args(["table1", "--cuda", "--workers", "12"]).workers, rp.parse_args(
        ["table1", "--workers", "4"]).threads) == (12, 4)


def test_the_package_has_no_import_cycle_and_nothing_imports_it_back():
    """reproduce.py is the command alone; each module of its package says its one job, the modules import no
    cycle, and the training files, envs/, evaluate.py and benchmark.py import neither the package nor reproduce.py."""
    import ast

    modules = {p.stem: p for p in (ROOT / "reproduce_utils").glob("*.py") if p.stem != "__init__"}
    imports = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), name
        assert len(path.read_text().splitlines()) <= 600, name
        imports[name] = {n.module.split(".")[0] for n in ast.walk(tree)
                         if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
        assert imports[name] <= set(modules) - {name}, (name, imports[name])
    ordered = set()  # no cycle: each module can come after every module it imports
    while len(ordered) < len(modules):
        ready = {m for m in modules if m not in ordered and imports[m] <= ordered}
        assert ready, f"an import cycle among {sorted(set(modules) - ordered)}"
        ordered |= ready
    assert len((ROOT / "reproduce.py").read_text().splitlines()) < 250
    for path in [*ROOT.glob("*.py"), *(ROOT / "envs").rglob("*.py")]:
        if path.name != "reproduce.py":
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not {n for n in names if n.split(".")[0] in ("reproduce", "reproduce_utils")}, path.name
