"""ppo_continuous.py: GAE, dormant ratio, argument validation, end to end, resume, learning."""

import copy
import inspect
import signal

import numpy as np
import pytest
import torch
import torch.nn as nn

import ppo_continuous as ppo
from conftest import (TINY, assert_rejected, first_and_last_returns, interrupt_run, load_checkpoint, only_run,
                      read_scalars, run_script)


def test_gae_hand_computed_with_truncation_and_termination():
    gamma, lam = 0.5, 0.5
    values = np.array([[0.5], [1.0], [1.5]], dtype=np.float32)
    next_value = np.array([2.0], dtype=np.float32)
    dones = np.array([[0.0], [1.0], [0.0]], dtype=np.float32)  # the episode ends at step 1
    # truncation at step 1: the rollout adds gamma * V(final obs) = 0.5 * 4 to its reward
    truncated = np.array([[1.0], [2.0 + gamma * 4.0], [3.0]], dtype=np.float32)
    adv, ret = ppo.compute_gae(truncated, values, dones, next_value, gamma, lam)
    # t=2: 3 + .5*2 - 1.5 = 2.5; t=1: 4 - 1 = 3 (no look past the end); t=0: 1 + .5*1 - .5 + .25*3 = 1.75
    np.testing.assert_allclose(adv[:, 0], [1.75, 3.0, 2.5])
    np.testing.assert_allclose(ret[:, 0], [2.25, 4.0, 4.0])
    # termination at step 1: no bootstrap, the return is cut
    terminated = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    adv, _ = ppo.compute_gae(terminated, values, dones, next_value, gamma, lam)
    np.testing.assert_allclose(adv[:, 0], [1.25, 1.0, 2.5])


def test_gae_without_dones_is_discounted_td_sum():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    next_value = rng.normal(size=3).astype(np.float32)
    adv, _ = ppo.compute_gae(rewards, values, np.zeros((6, 3), np.float32), next_value, 0.9, 1.0)
    # lambda = 1: advantage = discounted return to the bootstrap minus V
    discounts = 0.9 ** np.arange(6)
    expected = (rewards * discounts[:, None]).sum(0) + 0.9**6 * next_value - values[0]
    np.testing.assert_allclose(adv[0], expected, rtol=1e-5)


def test_dormant_ratio_on_hand_built_layer():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.01, 0.0], [-1.0, 0.0]]))
        net[0].bias.zero_()
    obs = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    # mean |h| per neuron: 1.5, 1.5, 0.015, 0 -> scores 1.99, 1.99, 0.0199, 0
    assert ppo.plasticity_metrics(net, obs, 0.1, net)["dormant_ratio"] == 0.5
    assert ppo.plasticity_metrics(net, obs, 0.01, net)["dormant_ratio"] == 0.25
    metrics = ppo.plasticity_metrics(net, obs, 0.1, net)
    assert metrics["weight_magnitude/layer0"] == pytest.approx((1 + 1 + 0.01 + 1) / 8)
    assert metrics["activation_norm"] == pytest.approx(np.mean([np.linalg.norm([1, 1, .01, 0]),
                                                                np.linalg.norm([2, 2, .02, 0])]), rel=1e-5)
    # h = [1, 1, .01, 0] and [2, 2, .02, 0]: 6 of 8 (input, neuron) pairs pass gradient; the rows are parallel
    assert metrics["fau"] == metrics["fau/layer0"] == 0.75
    assert metrics["effective_rank"] == metrics["effective_rank/layer0"] == 1
    assert metrics["weight_distance"] == 0.0


def orthogonal_features(singular_values, rows=64, cols=16, seed=0):
    """A (rows, cols) matrix with exactly the given singular values."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(singular_values), generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, len(singular_values), generator=g))
    return u @ torch.diag(torch.tensor(singular_values)) @ v.T


@pytest.mark.parametrize("singular_values, srank", [
    ([1.0], 1), ([1.0, 1.0, 1.0], 3), ([5.0, 4.0, 3.0, 2.0, 1.0], 5),
    ([1.0, 1.0, 0.005], 2),  # the third holds 0.25% of the sum: under delta = 1%, not counted
    ([1.0] * 10 + [0.01] * 5, 10),  # 0.05 of 10.05 = 0.5%: dropped
    ([1.0] * 10 + [0.1] * 5, 14),  # 0.5 of 10.5 = 4.8%: all but the last 0.1 are needed
])
def test_effective_rank_of_a_matrix_with_known_singular_values(singular_values, srank):
    assert ppo.effective_rank(orthogonal_features(singular_values)) == srank
    assert ppo.effective_rank(torch.zeros(8, 4)) == 0


def test_fau_of_known_activation_patterns():
    relu_out = torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 2.0, 0.5]])
    assert ppo.active_fraction(relu_out, nn.ReLU()) == 0.5  # 4 of 8 positive
    # tanh: slope 1 - h^2 is 1, 0.75, 0.0020, 0.0020, 0.0199, 0.19: the two beyond |h| = 0.995 are saturated
    tanh_out = torch.tensor([[0.0, 0.5, 0.999], [-0.999, 0.99, -0.9]])
    assert ppo.active_fraction(tanh_out, nn.Tanh()) == pytest.approx(4 / 6)
    # through a network: a tanh layer driven into saturation by large weights has FAU 0
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    with torch.no_grad():
        net[0].weight.fill_(100.0)
        net[0].bias.zero_()
    assert ppo.plasticity_metrics(net, torch.ones(4, 3), 0.1, net)["fau"] == 0.0


def test_weight_distance_from_the_initial_copy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    initial = copy.deepcopy(net)
    with torch.no_grad():
        net[0].weight[1, 2] += 3.0
        net[2].bias[0] -= 4.0
    metrics = ppo.plasticity_metrics(net, torch.randn(5, 3), 0.1, initial)
    assert metrics["weight_distance/layer0"] == pytest.approx(3.0)
    assert metrics["weight_distance/layer1"] == 0.0  # a bias is not a weight matrix
    assert metrics["weight_distance"] == pytest.approx(5.0)  # all parameters: sqrt(3^2 + 4^2)


def test_plasticity_functions_of_sac_are_verbatim_copies():
    import sac_sbp

    for name in ("effective_rank", "active_fraction", "plasticity_metrics"):
        assert inspect.getsource(getattr(sac_sbp, name)) == inspect.getsource(getattr(ppo, name)), name
    assert (sac_sbp.SRANK_DELTA, sac_sbp.ACTIVE_SLOPE) == (ppo.SRANK_DELTA, ppo.ACTIVE_SLOPE)


def test_log_prob_matches_torch_normal():
    args = ppo.Args(hidden_dim=16)
    agent = ppo.Agent(5, 3, args)
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([-0.5, 0.0, 0.3]))
    obs, actions = torch.randn(7, 5), torch.randn(7, 3)
    logprob, entropy, _ = agent.evaluate(obs, actions)
    dist = torch.distributions.Normal(agent.actor_mean(obs), agent.actor_logstd.exp())
    torch.testing.assert_close(logprob, dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))
    torch.manual_seed(0)
    action, logprob, value = agent.act(obs)
    torch.testing.assert_close(logprob, dist.log_prob(action).sum(-1))
    torch.testing.assert_close(value, agent.get_value(obs))


@pytest.mark.parametrize("bad_args, message", [
    (["--minibatch-size", "300"], "--minibatch-size 300"),
    (["--learning-rate", "-1e-3"], "--learning-rate -0.001"),
    (["--gamma", "1.5"], "--gamma 1.5"),
    (["--env-id", "Hoper-v5"], "Hopper-v5"),
    (["--env-id", "dm_control/hopper-fly"], "hopper-hop"),
    (["--friction-period", "0"], "--friction-period 0"),
    (["--resume", "no/such/run"], "no checkpoint.pt"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, bad_args, message):
    assert_rejected("ppo_continuous.py", bad_args, message, tmp_path)


FULL = ("ppo_continuous.py", *TINY, "--total-timesteps", "2048")
SPLIT = ("ppo_continuous.py", *TINY, "--total-timesteps", "1024")  # also test_evaluate's and test_videos' PPO run
LEARN = ("ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--num-envs", "4", "--num-steps", "512",
         "--minibatch-size", "256", "--hidden-dim", "64", "--total-timesteps", "40960", "--threads", "1")
SHARED_RUNS = {"test_short_run_logs_keys_checkpoints_and_resumes_exactly": [FULL, SPLIT],
               "test_ppo_learns_inverted_pendulum": [LEARN]}


def test_short_run_logs_keys_checkpoints_and_resumes_exactly(tmp_path, shared_runs):
    # uninterrupted: 4 updates
    full = shared_runs.path(*FULL)
    tags = read_scalars(full)
    for key in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/value_loss",
                "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
                "losses/explained_variance", "plasticity/actor_dormant_ratio", "plasticity/critic_dormant_ratio",
                "plasticity/actor_weight_magnitude", "plasticity/actor_grad_norm",
                "plasticity/critic_activation_norm", "plasticity/actor_fau", "plasticity/critic_effective_rank",
                "plasticity/actor_weight_distance", "plasticity/policy_entropy"]:
        assert key in tags, key
    assert load_checkpoint(full)["global_step"] == 2048
    # interrupted after 2 updates, then resumed to 4
    split = shared_runs.copy(*SPLIT, to=tmp_path / "split")
    proc = run_script("ppo_continuous.py", "--resume", split, "--total-timesteps", "2048", run_dir=tmp_path / "x")
    assert "resumed" in proc.stdout and not (tmp_path / "x").exists()
    a, b = load_checkpoint(full), load_checkpoint(split)
    assert b["global_step"] == 2048 and b["iteration"] == 4
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    np.testing.assert_array_equal(a["next_obs"], b["next_obs"])
    # the resumed run measures the distance from the same initial weights (rebuilt from the seed)
    distance = "plasticity/actor_weight_distance"
    assert read_scalars(split)[distance][-1] == tags[distance][-1] and tags[distance][-1][1] > 0


@pytest.mark.parametrize("sig,times", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)])
def test_ctrl_c_or_sigterm_writes_a_checkpoint(tmp_path, tiny, sig, times):
    # twice at once: what Slurm sends a job's processes at its time limit; one request, not "stop at once"
    code, out = interrupt_run("ppo_continuous.py", *tiny, "--total-timesteps", "1000000",
                              "--checkpoint-every", "100000", run_dir=tmp_path, sig=sig, times=times)
    assert code == 0 and "--resume" in out and sig.name in out and "Traceback" not in out, out
    ckpt = load_checkpoint(only_run(tmp_path))
    assert 0 < ckpt["global_step"] < 1_000_000


def test_ppo_learns_inverted_pendulum(shared_runs):
    first, last = first_and_last_returns(shared_runs.path(*LEARN).parent, 20)
    assert last > 5 * first and last > 100, (first, last)
