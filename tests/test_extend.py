"""reproduce.py extends a run that finished at a shorter budget instead of starting it again: a run of N/2
steps continued to N ends where a straight run of N steps ends, the shorter run's own checkpoint stays as it
was, and the tables say which run each extends."""

import dataclasses
import pickle

import numpy as np
import pytest
import torch

import reproduce as rp
from conftest import load_checkpoint, read_scalars

# smoke budget: 512-step rollouts, P3O resets every 1,000 steps (checked per rollout): 2 resets before the
# 2,048-step boundary and 2 after it, each followed by distillation
HALF, FULL = 2048, 4096
TIMING = ("charts/SPS", "reset/seconds")  # wall-clock values, the only scalars two identical runs may differ in
COMMON = ["--budget", "smoke", "--envs", "InvertedPendulum-v5", "--seeds", "1", "--algos", "ppo", "p3o",
          "--workers", "2", "--threads", "1", "--eval-episodes", "0"]


def reproduce(tmp_path, runs, total):
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
    reproduce(tmp_path, "extended", HALF)
    half = {algo: load_checkpoint(run_path(tmp_path, "extended", HALF, algo)) for algo in ("ppo", "p3o")}
    reproduce(tmp_path, "extended", FULL)
    reproduce(tmp_path, "straight", FULL)
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
    assert (config / rp.EXTENDS_FILE).read_text() == f"smoke-{HALF}/{shorter.parent.name} {HALF}\n"
    assert rp.run_commits(config) == rp.run_commits(shorter.parent)  # launched from one commit here
    rows = {r["algo"]: r for r in rp.read_csv(tmp_path / f"results_extended_{FULL}" / "table1" / f"runs_smoke-{FULL}.csv")}
    assert rows[algo]["extends"] == f"smoke-{HALF} ({HALF:,} steps)" and rows[algo]["status"] == "done"
    straight = rp.read_csv(tmp_path / f"results_straight_{FULL}" / "table1" / f"runs_smoke-{FULL}.csv")
    assert all("extends" not in r for r in straight)  # no column where no run extends one
    table = (tmp_path / f"results_extended_{FULL}" / "table1" / f"table1_smoke-{FULL}.md").read_text()
    label = rp.ALGOS[algo].label
    assert f"{label} InvertedPendulum seed 1 from smoke-{HALF} ({HALF:,} steps)" in table


def test_only_a_finished_shorter_run_of_the_same_options_is_extended(tmp_path):
    """A run is extended from the longest finished shorter run with the same options; an unfinished one, a
    longer one, or one with other options (Cycle Friction's period differs by budget) is not."""
    def one(budget, env="InvertedPendulum-v5", total=None):
        (run,), _ = rp.plan(rp.EXPERIMENTS["table1"], budget, [1], [env], ["ppo"], tmp_path, total)
        return run

    def fake(run, step):  # a checkpoint as the file writes it, reached `step`
        path = run.directory / "run"
        path.mkdir(parents=True)
        torch.save({"script": "ppo_continuous.py", "format": 1, "global_step": step,
                    "args": {**dataclasses.asdict(rp.importlib.import_module("ppo_continuous").Args()), "num_envs": 2,
                             "num_steps": 256, "total_timesteps": run.total}}, path / "checkpoint.pt")

    target = one("smoke", total=FULL)
    assert rp.shorter_run(target) is None
    fake(one("smoke", total=1024), 1024)
    fake(one("smoke", total=2048), 1536)  # unfinished: not a candidate
    fake(one("smoke", total=16384), 16384)  # longer: not a candidate
    label, state = rp.shorter_run(target)
    assert (label, state.step) == ("smoke-1024", 1024)
    fake(one("smoke", total=3072), 3072)
    assert rp.shorter_run(target)[0] == "smoke-3072"  # the longest finished one
    friction = "cyclefriction/InvertedPendulum-v5"
    fake(one("cycle", friction), rp.CYCLE_FRICTION_PPO_STEPS)  # --friction-period 500,000 at the cycle budget
    assert rp.shorter_run(one("paper", friction)) is None
    fake(one("cycle"), rp.BUDGETS["cycle"]["ppo"])  # the same options: the cycle run extends to the paper budget
    assert rp.shorter_run(one("paper"))[0] == "cycle"
