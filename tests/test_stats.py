"""Statistics (reproduce_utils/stats.py): Welch's test, normalisation, IQM and probability of improvement."""

import numpy as np
import pytest

from reproduce_utils import registry, stats, tables
from conftest import rows_of


def test_welch_p_matches_the_textbook_value():
    # R: t.test(1:5, c(2, 4, 6, 8, 10)) -> t = -1.8974, df = 5.882, p-value = 0.1075
    assert stats.welch_p([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(0.1075, abs=5e-4)
    assert np.isnan(stats.welch_p([1.0], [2.0, 3.0])) and np.isnan(stats.welch_p([1.0, 1.0], [2.0, 2.0]))


def test_iqm_and_probability_of_improvement_on_known_scores():
    lo, hi = stats.normalisation("HalfCheetah-v5")
    assert (lo, hi) == (stats.RANDOM_RETURN["HalfCheetah"], 4575)
    assert stats.normalisation("dm_control/dog-run") == (0, 1000)
    assert stats.normalisation("cyclefriction/Hopper-v5") == (stats.RANDOM_RETURN["Hopper"], 3613)
    # PPO: normalised scores 0..7 (IQM = mean of the middle half 2, 3, 4, 5 = 3.5); P3O: 10 in every run
    rows = rows_of({"PPO": [lo + k * (hi - lo) for k in range(8)], "P3O": [lo + 10 * (hi - lo)] * 8})
    table = tables.aggregate_table(rows, registry.BASELINES, ["HalfCheetah-v5"], "final_return")
    assert "| P3O | 8 x 1 | 10.000 [10.000, 10.000] |  |" in table
    assert "| PPO | 8 x 1 | 3.500 [" in table and "| 1.00 [1.00, 1.00] |" in table  # P3O above every PPO run
    assert tables.aggregate_table(rows, registry.BASELINES, ["HalfCheetah-v5"],
                                  "final_return") == table  # seeded bootstrap
    # each method's interval is drawn from the seed on its own: another method's runs do not move it
    spread = rows_of({"PPO": [lo + k ** 1.5 * (hi - lo) for k in range(8)],  # off a lattice: a drawn interval
                      "P3O": [lo + k ** 1.5 * (hi - lo) for k in range(5, 13)]})  # moves with its draws
    alone = tables.aggregate_table([r for r in spread if r["variant"] == "P3O"], registry.BASELINES,
                                   ["HalfCheetah-v5"], "final_return")
    both = tables.aggregate_table(spread, registry.BASELINES, ["HalfCheetah-v5"], "final_return")
    p3o_line = next(line for line in alone.splitlines() if line.startswith("| P3O |"))
    assert p3o_line.startswith("| P3O | 8 x 1 | 24.943 [") and p3o_line.rstrip(" |") in both
    # a method is scored over the seeds it finished on every task: seed 2 of P3O is missing on Hopper
    two = rows_of({"P3O": [hi, hi]}) + rows_of({"P3O": [3613]}, env="Hopper-v5")
    scores, tasks = stats.normalised_scores(two, registry.BASELINES, ["HalfCheetah-v5", "Hopper-v5"], "final_return")
    assert tasks == ["HalfCheetah-v5", "Hopper-v5"] and scores["P3O"].tolist() == [[1.0, 1.0]]


def test_random_policy_references_are_what_random_return_measures():
    for task in ("Hopper", "HalfCheetah"):
        assert stats.random_return(f"{task}-v5") == pytest.approx(stats.RANDOM_RETURN[task], abs=0.05)
