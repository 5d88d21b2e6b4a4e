"""The paper's Fig. 7 and Figs. 28-30 (reproduce_utils/paper_figures.py)."""

import pytest
import torch

import reproduce as rp
from reproduce_utils import collect, paper_figures, stats
from conftest import rows_of


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
    matrix = paper_figures.gradient_correlation(actor, log_std, obs, actions)
    assert torch.allclose(matrix, expected, atol=1e-6)
    assert paper_figures.off_diagonal_mean_abs(matrix) == pytest.approx(6 / 12)  # three |1| pairs of six, both ways


def test_fig7_points_are_each_p3o_run_against_the_mean_of_ppo(tmp_path):
    lo, hi = stats.normalisation("HalfCheetah-v5")
    rows = rows_of({"PPO": [1000.0, 3000.0], "P3O": [2000.0 + (hi - lo), 2000.0]})
    rows[2]["distill_per_reset"], rows[3]["distill_per_reset"] = 12.0, 3.0
    rows += rows_of({"P3O": [500.0]}, env="Hopper-v5")  # no PPO run on Hopper: no point
    assert paper_figures.fig7_points(rows) == [("HalfCheetah-v5", 1, 12.0, pytest.approx(1.0)),
                                               ("HalfCheetah-v5", 2, 3.0, 0.0)]
    # the command: from results/<experiment>/runs_<budget>.csv alone
    out = tmp_path / "results"
    with pytest.raises(SystemExit, match="runs_cycle.csv does not exist"):
        rp.main(["fig7", "--from", "cycle", "--budget", "cycle", "--results-dir", str(out)])
    (out / "cycle").mkdir(parents=True)
    collect.write_csv(out / "cycle" / "runs_cycle.csv", rows)
    assert rp.main(["fig7", "--from", "cycle", "--budget", "cycle", "--results-dir", str(out)]) == 0
    assert "| HalfCheetah-v5 | 1 | 12.00 | +1.000 |" in (out / "fig7" / "fig7_cycle_cycle.md").read_text()
    assert (out / "fig7" / "fig7_cycle_cycle.png").read_bytes()[:4] == b"\x89PNG"
