"""p3o_continuous.py: alpha-DKL, cycle reset coverage, frozen neurons during distillation, end to end."""

import copy

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import p3o_continuous as p3o
from conftest import TINY, assert_rejected, load_checkpoint, read_scalars, run_script


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.4])
def test_alpha_dkl_equals_closed_form_kl_of_normals(alpha):
    g = torch.Generator().manual_seed(0)
    mean_t, mean_s = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    logstd_t, logstd_s = 0.5 * torch.randn(64, 3, generator=g), 0.5 * torch.randn(64, 3, generator=g)
    teacher, student = Normal(mean_t, logstd_t.exp()), Normal(mean_s, logstd_s.exp())
    expected = (alpha * kl_divergence(teacher, student).sum(-1)
                + (1 - alpha) * kl_divergence(student, teacher).sum(-1))
    torch.testing.assert_close(p3o.alpha_dkl(mean_t, logstd_t, mean_s, logstd_s, alpha), expected)
    assert torch.all(p3o.alpha_dkl(mean_t, logstd_t, mean_t, logstd_t, alpha).abs() < 1e-6)


@pytest.mark.parametrize("reset_rate, width", [(0.01, 256), (0.3, 256), (0.07, 100), (1.0, 64)])
def test_one_cycle_resets_every_neuron_exactly_once(reset_rate, width):
    counts = np.zeros(width, dtype=int)
    num_slices = int(np.ceil(1 / reset_rate - 1e-9))
    for k in range(num_slices):
        start, end = p3o.cycle_slice(k, reset_rate, width)
        assert end > start
        counts[start:end] += 1
    assert (counts == 1).all()


def make_agent(hidden_dim=256, obs_dim=6, act_dim=2, **kw):
    args = p3o.Args(hidden_dim=hidden_dim, **kw)
    agent = p3o.Agent(obs_dim, act_dim, args)
    return agent, args


def changed_rows(before, after):
    return set(torch.nonzero((before != after).any(dim=1)).flatten().tolist())


@pytest.mark.parametrize("reset_adam", [False, True])
def test_cycle_reset_walks_the_layer_and_zeroes_adam_moments_only_with_reset_adam(reset_adam):
    torch.manual_seed(0)
    agent, args = make_agent(reset_adam=reset_adam)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    agent.actor_mean(torch.randn(8, 6)).sum().backward()
    optimizer.step()  # non-zero moments everywhere
    moments = {key: {p: optimizer.state[p][key].clone() for p in agent.actor_mean.parameters()}
               for key in ("exp_avg", "exp_avg_sq")}
    layers = p3o.hidden_linears(agent.actor_mean)
    assert len(layers) == 3
    reset_times = np.zeros((3, 256), dtype=int)
    for k in range(100):
        before = [layer.weight.detach().clone() for layer in layers]
        frozen = p3o.cycle_reset(agent.actor_mean, optimizer, k, args)
        for i, (layer, rows) in enumerate(frozen):
            assert changed_rows(before[i], layer.weight.detach()) == set(rows.tolist())
            for key in ("exp_avg", "exp_avg_sq"):
                for param in (layer.weight, layer.bias):
                    now, start = optimizer.state[param][key], moments[key][param]
                    expected = torch.zeros_like(now[rows]) if reset_adam else start[rows]
                    assert torch.equal(now[rows], expected)
                    assert torch.count_nonzero(start[rows]) > 0  # so zeroed and kept differ
            reset_times[i, rows.numpy()] += 1
            if k == 0:  # the rows not reset keep their moments either way
                assert torch.equal(optimizer.state[layer.weight]["exp_avg_sq"][rows.max() + 1:],
                                   moments["exp_avg_sq"][layer.weight][rows.max() + 1:])
    assert (reset_times == 1).all()


def test_reset_range_half_only_touches_first_half():
    torch.manual_seed(0)
    agent, args = make_agent(reset_range=0.5)
    optimizer = torch.optim.Adam(agent.parameters())
    layers = p3o.hidden_linears(agent.actor_mean)
    before = [layer.weight.detach().clone() for layer in layers]
    for k in range(250):  # two and a half cycles
        p3o.cycle_reset(agent.actor_mean, optimizer, k % 100, args)
    for b, layer in zip(before, layers):
        rows = changed_rows(b, layer.weight.detach())
        assert rows == set(range(128))


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_distillation_freezes_reset_rows_and_reaches_tau(compile):
    """On the eager reference and on the fast path's compiled minibatch step alike."""
    torch.manual_seed(0)
    agent, args = make_agent(hidden_dim=64, reset_rate=0.25, distill_tau=0.01, minibatch_size=128, compile=compile)
    obs = torch.randn(1024, 6)
    distiller = p3o.InnerDistillation(agent.actor_mean, agent.actor_logstd, obs, args)
    distiller.snapshot()
    distiller.teacher_logstd -= 0.2
    teacher, teacher_logstd = distiller.teacher_mean, distiller.teacher_logstd
    teacher_snapshot = copy.deepcopy(teacher.state_dict())
    optimizer = torch.optim.Adam(agent.parameters())
    frozen = p3o.cycle_reset(agent.actor_mean, optimizer, 1, args)
    before = copy.deepcopy(agent.actor_mean.state_dict())
    epochs, loss_start, loss_end = distiller(frozen)
    assert loss_start > args.distill_tau  # there was something to distil
    assert 1 <= epochs < args.distill_max_epochs and loss_end <= args.distill_tau
    for layer, rows in frozen:
        name = [n for n, m in agent.actor_mean.named_children() if m is layer][0]
        w_before, b_before = before[f"{name}.weight"], before[f"{name}.bias"]
        assert torch.equal(layer.weight[rows], w_before[rows])  # bit-identical
        assert torch.equal(layer.bias[rows], b_before[rows])
        others = torch.ones(layer.out_features, dtype=torch.bool)
        others[rows] = False
        assert not torch.equal(layer.weight[others], w_before[others])  # the rest did train
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, teacher_snapshot[name])
    with torch.no_grad():  # the stopping criterion holds on the whole buffer
        mean_s, mean_t = agent.actor_mean(obs), teacher(obs)
        loss = p3o.alpha_dkl(mean_t, teacher_logstd.expand_as(mean_t), mean_s,
                             agent.actor_logstd.expand_as(mean_s), args.distill_alpha).mean() / mean_s.shape[-1]
    assert loss <= args.distill_tau  # per action dimension: --distill-kl-reduction mean


@pytest.mark.parametrize("bad_args, message", [
    (["--distill-alpha", "1.5"], "--distill-alpha 1.5"),
    (["--distill-tau", "0"], "--distill-tau 0"),
    (["--reset-rate", "0"], "--reset-rate 0"),
    (["--reset-range", "1.2"], "--reset-range 1.2"),
    (["--reset-frequency", "100"], "--reset-frequency 100"),
])
def test_bad_sbp_arguments_fail_before_any_work(tmp_path, bad_args, message):
    assert_rejected("p3o_continuous.py", bad_args, message, tmp_path)


SBP = ("p3o_continuous.py", *TINY, "--reset-frequency", "512", "--reset-rate", "0.1")
RECOVERY = {mode: ("p3o_continuous.py", *TINY, "--reset-frequency", "512", "--recovery", mode, "--recovery-return",
                   "1e9", "--total-timesteps", "2048") for mode in ("train", "none")}
SHARED_RUNS = {"test_end_to_end_resets_log_and_resume_continues_the_cycle": [
                   (*SBP, "--total-timesteps", "3072"), (*SBP, "--total-timesteps", "1536")],
               "test_recovery_train_and_none_modes_run": list(RECOVERY.values())}


def test_end_to_end_resets_log_and_resume_continues_the_cycle(tmp_path, shared_runs):
    full = shared_runs.path(*SBP, "--total-timesteps", "3072")
    tags = read_scalars(full)
    for key in ["reset/distill_epochs", "reset/distill_loss_start", "reset/distill_loss_end", "reset/pointer",
                "reset/total_distill_epochs", "reset/distill_to_ppo_epochs", "reset/total_resets",
                "reset/avg_resets_per_neuron", "reset/share_neurons_reset", "plasticity/actor_dormant_ratio"]:
        assert key in tags, key
    assert len(tags["reset/distill_epochs"]) == 6  # one reset per 512-step rollout
    assert [round(v, 3) for _, v in tags["reset/pointer"]] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    a = load_checkpoint(full)["sbp"]
    assert a["reset_index"] == 6 and a["resets"] == 6
    assert a["reset_counts"].sum() == 3 * p3o.cycle_slice(5, 0.1, 32)[1]  # 3 layers of 32, first 6 slices
    # stop after 3 rollouts, resume to 6: same cycle position and same network as uninterrupted
    split = shared_runs.copy(*SBP, "--total-timesteps", "1536", to=tmp_path / "split")
    assert load_checkpoint(split)["sbp"]["reset_index"] == 3
    run_script("p3o_continuous.py", "--resume", split, "--total-timesteps", "3072", run_dir=tmp_path / "x")
    b = load_checkpoint(split)
    assert b["sbp"]["reset_index"] == 6
    np.testing.assert_array_equal(a["reset_counts"], b["sbp"]["reset_counts"])
    for name, tensor in load_checkpoint(full)["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name


def test_recovery_train_and_none_modes_run(shared_runs):
    for mode in ("train", "none"):
        sbp = load_checkpoint(shared_runs.path(*RECOVERY[mode]))["sbp"]
        assert sbp["distill_epochs"] == 0
        if mode == "train":  # unreachable return: one reset, then every later update is recovery
            assert sbp["resets"] == 1 and sbp["recovering"] and sbp["recovery_epochs"] == 3 * 2
        else:
            assert sbp["resets"] == 4 and sbp["recovery_epochs"] == 0


def test_distillation_loss_reduction_learning_rate_and_reset_diagnostics():
    """--distill-kl-reduction mean is the summed alpha-DKL / action dimensions; --distill-lr sets the
    distillation's Adam; the diagnostics after a distillation describe the actor it started from, where
    silencing the reset neurons is what their zeroed outgoing weights would give."""
    torch.manual_seed(0)
    agent, args = make_agent(hidden_dim=16, act_dim=3, reset_rate=0.25, distill_lr=1e-3)
    obs = torch.randn(64, 6)
    distiller = p3o.InnerDistillation(agent.actor_mean, agent.actor_logstd, obs, args)
    assert args.distill_kl_reduction == "mean" and distiller.optimizer.param_groups[0]["lr"] == 1e-3
    with torch.no_grad():
        agent.actor_logstd -= 0.3
    distiller.snapshot()
    with torch.no_grad():
        agent.actor_logstd += 0.3  # the student's log-std differs from the teacher's
        distiller.target_mean.copy_(distiller.teacher_mean(obs) + 0.1)
        torch.testing.assert_close(distiller.loss_on(slice(None)), distiller.loss_on(slice(None), reduction="sum") / 3)
        frozen = p3o.cycle_reset(agent.actor_mean, torch.optim.Adam(agent.parameters()), 0, args)
        silenced = copy.deepcopy(agent.actor_mean)  # the actor after the reset, its reset neurons silent
        linears = [m for m in silenced if isinstance(m, torch.nn.Linear)]
        for i, (_, rows) in enumerate(frozen):
            linears[i + 1].weight[:, rows] = 0
        start_mean, start_logstd = copy.deepcopy(agent.actor_mean)(obs), agent.actor_logstd.detach().clone()
    epochs, loss_start, loss_end = distiller(frozen)
    diagnostics = p3o.distillation_diagnostics(distiller)
    with torch.no_grad():
        assert not torch.equal(agent.actor_mean(obs), start_mean)  # distillation moved the actor
        zero_outgoing = distiller.loss_on(slice(None), silenced(obs), start_logstd).item()
        std_part = distiller.loss_on(slice(None), distiller.target_mean).item()
    assert diagnostics["policy_std"] == pytest.approx(start_logstd.exp().mean().item())
    assert diagnostics["distill_kl_sum_start"] == pytest.approx(3 * loss_start)
    assert diagnostics["distill_loss_zero_outgoing"] == pytest.approx(zero_outgoing)
    assert diagnostics["distill_std_share_end"] == pytest.approx(std_part / loss_end)
