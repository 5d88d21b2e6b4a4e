"""Figures (reproduce_utils/figures.py): every seed drawn, the band the t-interval."""

import pytest

from reproduce_utils import figures, stats


def test_figure_panels_keep_every_seed_and_the_band_is_the_t_interval():
    curves = [{"variant": "PPO", "env": "Hopper-v5", "seed": seed, "step": step, "charts/episodic_return": value}
              for seed, values in {1: (10.0, 20.0), 2: (30.0, 40.0), 3: (50.0,)}.items()
              for step, value in zip((100, 200), values)]
    panels = figures.tag_panels(curves, "charts/episodic_return")
    assert panels == {"Hopper-v5": {"PPO": [{100: 10.0, 200: 20.0}, {100: 30.0, 200: 40.0}, {100: 50.0}]}}
    steps, mean, low, high = figures.series_band(panels["Hopper-v5"]["PPO"])
    assert steps == [100, 200] and mean.tolist() == [30.0, 30.0]
    assert (low[0], high[0]) == pytest.approx(stats.t_interval([10.0, 30.0, 50.0])[1:3])  # three seeds at 100
    assert (low[1], high[1]) == pytest.approx(stats.t_interval([20.0, 40.0])[1:3])  # the third stopped before 200
