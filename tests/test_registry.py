"""The registry (reproduce_utils/registry.py): the budgets' steps for the paper's experiments."""

from pathlib import Path

from reproduce_utils import registry
from conftest import by_name, plan_runs


def test_cycle_budget_renews_every_neuron_once_and_fits_one_friction_schedule():
    from envs import friction_multiplier

    runs = by_name(plan_runs("cycle", "cycle", seeds=(1, 2), envs=("HalfCheetah-v5", "cyclefriction/HalfCheetah-v5")))
    assert len(runs) == 24  # all five methods, and P3O with tau on the summed KL
    p3o = runs[("P3O", "HalfCheetah-v5", 1)]
    summed = runs[("P3O, summed KL", "HalfCheetah-v5", 1)]
    assert (summed.script, registry.ALGOS[summed.variant.algo].args) == ("p3o_continuous.py",
                                                                         ("--distill-kl-reduction", "sum"))
    assert summed.total == p3o.total
    assert summed.directory == Path("runs/reproduce/cycle/p3o-sum__HalfCheetah-v5__seed1")
    assert p3o.total == 5_000_000 == 100 * 50_000  # 1 / reset rate 0.01 resets of 50,000 steps
    assert p3o.directory == Path("runs/reproduce/cycle/p3o__HalfCheetah-v5__seed1")
    friction = runs[("PPO", "cyclefriction/HalfCheetah-v5", 2)]
    period = int(friction.args["--friction-period"])
    assert (friction.total, period) == (3_500_000, 500_000)
    assert [friction_multiplier(k * period, period) for k in range(friction.total // period)] == [4, 3, 2, 1, 2, 3, 4]
    assert plan_runs("table6", "cycle", algos=["sac-cycle"])[0].total == 1_000_000 == 100 * 10_000
