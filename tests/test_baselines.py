"""The reset baselines ppo_cycle.py, ppo_redo.py, ppo_cbp.py: each is ppo_continuous.py plus its method."""

import ast
import difflib
import inspect

import numpy as np
import pytest
import torch
import torch.nn as nn

import p3o_continuous as p3o
import ppo_cbp as cbp
import ppo_cycle as cycle
import ppo_redo as redo
from conftest import ROOT, TINY, load_checkpoint, read_scalars, run_script

BASELINES = {"ppo_cycle.py": cycle, "ppo_redo.py": redo, "ppo_cbp.py": cbp}
# the end-to-end runs: 2048 steps straight, and 1024 to resume (run_full_and_resumed); Cycle with inner distillation
# beside P3O
CYCLE = ("ppo_cycle.py", *TINY, "--reset-frequency", "512", "--reset-rate", "0.25")
REDO = ("ppo_redo.py", *TINY, "--reset-frequency", "512", "--reset-rate", "0.1", "--inner-distill")
CBP = ("ppo_cbp.py", *TINY, "--maturity-threshold", "5", "--replacement-rate", "0.05", "--cbp-critic",
       "--inner-distill")
AS_P3O = (*TINY, "--total-timesteps", "2048", "--reset-frequency", "512", "--reset-rate", "0.25")
SHARED_RUNS = {
    **{test: [(*run, "--total-timesteps", total) for total in ("2048", "1024")] for test, run in (
        ("test_cycle_end_to_end_resets_one_full_cycle_and_resumes_exactly", CYCLE),
        ("test_redo_end_to_end_with_inner_distillation_resumes_exactly", REDO),
        ("test_cbp_end_to_end_with_critic_and_distillation_resumes_exactly", CBP))},
    "test_cycle_with_inner_distillation_is_p3o": [("ppo_cycle.py", *AS_P3O, "--inner-distill"),
                                                  ("p3o_continuous.py", *AS_P3O)]}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """In-process tests on one thread: on a busy machine torch's default threads slow them 100-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- The files are copies: the base file's lines unchanged, copied functions verbatim ----
@pytest.mark.parametrize("script", [*BASELINES, "p3o_continuous.py"])
def test_diff_with_base_only_adds_the_method(script):
    base = (ROOT / "ppo_continuous.py").read_text()
    docstring_end = ast.parse(base).body[0].end_lineno  # the module docstring may differ
    lines = (ROOT / script).read_text().splitlines()
    matcher = difflib.SequenceMatcher(None, base.splitlines(), lines, autojunk=False)
    changed = [(tag, i1 + 1) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
               if tag in ("replace", "delete") and i2 > docstring_end]
    assert changed == [], f"{script} changes lines of ppo_continuous.py (tag, base line): {changed}"


@pytest.mark.parametrize("module", BASELINES.values(), ids=BASELINES)
def test_functions_shared_with_p3o_are_verbatim_copies(module):
    names = ["cycle_slice", "hidden_linears", "reinit_neurons", "cycle_reset", "gaussian_kl", "alpha_dkl",
             "InnerDistillation", "reset_statistics", "effective_rank", "active_fraction", "plasticity_metrics"]
    copied = [name for name in names if hasattr(module, name)]
    assert {"reinit_neurons", "InnerDistillation", "reset_statistics"} <= set(copied)
    for name in copied:
        assert inspect.getsource(getattr(module, name)) == inspect.getsource(getattr(p3o, name)), name
    if module is cbp:
        assert inspect.getsource(cbp.zero_outgoing) == inspect.getsource(redo.zero_outgoing)


@pytest.mark.parametrize("module, overrides, message", [
    (cycle, {"reset_rate": 0.0}, "--reset-rate 0.0"),
    (cycle, {"reset_frequency": 100}, "--reset-frequency 100"),
    (redo, {"hidden_dim": 32}, "below one neuron"),
    (redo, {"redo_threshold": -0.5}, "--redo-threshold -0.5"),
    (redo, {"distill_tau": 0.0}, "--distill-tau 0.0"),
    (cbp, {"replacement_rate": 0.0}, "--replacement-rate 0.0"),
    (cbp, {"decay_rate": 1.0}, "--decay-rate 1.0"),
    (cbp, {"maturity_threshold": -1}, "--maturity-threshold -1"),
    (cbp, {"cbp_period": 0}, "--cbp-period 0"),
])
def test_bad_method_arguments_are_rejected(module, overrides, message):
    with pytest.raises(SystemExit) as error:
        module.validate_args(module.Args(**overrides))
    assert message in str(error.value)
    module.validate_args(module.Args())  # the defaults pass


def run_full_and_resumed(shared_runs, run, tmp_path, total=2048):
    """Run `total` steps straight, and half then --resume to `total`: the agents must be identical. run: the file
    and its arguments."""
    script = run[0]
    full = shared_runs.path(*run, "--total-timesteps", total)
    split = shared_runs.copy(*run, "--total-timesteps", total // 2, to=tmp_path / "split")
    proc = run_script(script, "--resume", split, "--total-timesteps", total, run_dir=tmp_path / "unused")
    assert "resumed" in proc.stdout
    a, b = load_checkpoint(full), load_checkpoint(split)
    assert a["global_step"] == b["global_step"] == total
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    return full, a, b


TABLE4_KEYS = ["reset/total_resets", "reset/avg_resets_per_neuron", "reset/share_neurons_reset", "reset/seconds"]


# ---- Cycle ----
@pytest.mark.parametrize("width, rate", [(256, 0.01), (10, 0.3)])
def test_cycle_reset_covers_every_neuron_exactly_once_per_cycle(width, rate):
    args = cycle.Args(hidden_dim=width, reset_rate=rate, reset_adam=True)
    agent = cycle.Agent(5, 2, args)
    optimizer = torch.optim.Adam(agent.parameters())
    agent.actor_mean(torch.randn(8, 5)).sum().backward()
    optimizer.step()
    layers = cycle.hidden_linears(agent.actor_mean)
    counts = np.zeros((len(layers), width), dtype=int)
    num_resets = int(np.ceil(1 / rate - 1e-9))
    for k in range(num_resets):
        before = [layer.weight.detach().clone() for layer in layers]
        for i, (layer, rows) in enumerate(cycle.cycle_reset(agent.actor_mean, optimizer, k, args)):
            changed = torch.nonzero((layer.weight != before[i]).any(1)).flatten()
            assert torch.equal(changed, rows), (k, i)  # exactly the returned rows were re-initialised
            assert optimizer.state[layer.weight]["exp_avg"][rows].abs().sum() == 0
            counts[i, rows.numpy()] += 1
    assert (counts == 1).all()


def test_cycle_end_to_end_resets_one_full_cycle_and_resumes_exactly(tmp_path, shared_runs):
    # 4 resets of 25% (one per 512-step update) = one cycle over every neuron of the 3 x 32 actor
    full, a, b = run_full_and_resumed(shared_runs, CYCLE, tmp_path)
    tags = read_scalars(full)
    for key in TABLE4_KEYS + ["reset/pointer", "plasticity/actor_dormant_ratio"]:
        assert key in tags, key
    assert [v for _, v in tags["reset/pointer"]] == [0.0, 0.25, 0.5, 0.75]
    assert tags["reset/total_resets"][-1][1] == 96 and tags["reset/share_neurons_reset"][-1][1] == 1.0
    assert (a["cycle"]["reset_counts"] == 1).all()
    np.testing.assert_array_equal(a["cycle"]["reset_counts"], b["cycle"]["reset_counts"])
    assert a["cycle"]["reset_index"] == b["cycle"]["reset_index"] == 0
    assert "reset/distill_epochs" not in tags


def test_cycle_with_inner_distillation_is_p3o(shared_runs):
    cycle_run = shared_runs.path("ppo_cycle.py", *AS_P3O, "--inner-distill")
    a, b = load_checkpoint(cycle_run), load_checkpoint(shared_runs.path("p3o_continuous.py", *AS_P3O))
    assert a["cycle"]["distill_epochs"] == b["sbp"]["distill_epochs"] > 0
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    assert "reset/distill_epochs" in read_scalars(cycle_run)


# ---- ReDo ----
def hand_built_layer(weights):
    """One hidden ReLU layer on a scalar input: neuron i outputs relu(weights[i] * x)."""
    net = nn.Sequential(nn.Linear(1, len(weights)), nn.ReLU(), nn.Linear(len(weights), 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.as_tensor(weights, dtype=torch.float32)[:, None])
        net[0].bias.zero_()
    return net


def test_redo_selects_the_bottom_share_by_score():
    rng = np.random.default_rng(0)
    w = rng.permutation(np.linspace(0.01, 2.0, 200))
    net = hand_built_layer(w)
    obs = torch.tensor([[1.0], [3.0]])  # mean |h_i| = 2 w_i, so score_i = w_i / mean(w)
    (scores,) = redo.redo_scores(net, obs)
    np.testing.assert_allclose(scores.numpy(), w / w.mean(), rtol=1e-5)
    (rows,) = redo.redo_select([scores], redo.Args(reset_rate=0.01))  # 1% of 200 = 2
    assert set(rows.tolist()) == set(np.argsort(w)[:2])
    (rows,) = redo.redo_select([scores], redo.Args(reset_rate=0.015))  # floor(3.0) = 3
    assert set(rows.tolist()) == set(np.argsort(w)[:3])
    assert len(redo.redo_select([torch.rand(256)], redo.Args())[0]) == 2  # the paper's 256 x 0.01 -> 2
    expected = set(np.flatnonzero(w / w.mean() <= 0.1))  # the original threshold rule
    assert len(expected) == 10
    (rows,) = redo.redo_select([scores], redo.Args(redo_threshold=0.1))
    assert set(rows.tolist()) == expected


def test_redo_reset_zeroes_outgoing_weights_and_changes_output_only_through_them():
    torch.manual_seed(0)
    args = redo.Args(hidden_layers=1, hidden_dim=50)
    net = redo.mlp(4, 3, args, out_std=1.0)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(16, 4)).square().sum().backward()
    optimizer.step()
    rows = torch.tensor([3, 17])
    w_in, b_in, w_out, b_out = (p.detach().clone() for p in net.parameters())
    moments = {k: optimizer.state[p]["exp_avg"].clone() for k, p in zip("ab", (net[0].weight, net[2].weight))}
    x = torch.randn(32, 4)  # inputs other than those scored
    with torch.no_grad():
        y_before = net(x)
        contribution = torch.tanh(x @ w_in[rows].T + b_in[rows]) @ w_out[:, rows].T
    redo.redo_reset(net, [rows], optimizer)
    others = torch.ones(50, dtype=torch.bool)
    others[rows] = False
    assert (net[2].weight[:, rows] == 0).all()
    assert torch.equal(net[2].weight[:, others], w_out[:, others]) and torch.equal(net[2].bias, b_out)
    assert not torch.equal(net[0].weight[rows], w_in[rows]) and (net[0].bias[rows] == 0).all()
    assert torch.equal(net[0].weight[others], w_in[others])
    with torch.no_grad():
        torch.testing.assert_close(net(x), y_before - contribution, atol=1e-6, rtol=1e-5)
    state_in, state_out = optimizer.state[net[0].weight], optimizer.state[net[2].weight]
    assert (state_in["exp_avg"][rows] == 0).all() and (state_in["exp_avg_sq"][rows] == 0).all()
    assert (state_out["exp_avg"][:, rows] == 0).all() and (state_out["exp_avg_sq"][:, rows] == 0).all()
    assert torch.equal(state_in["exp_avg"][others], moments["a"][others])
    assert torch.equal(state_out["exp_avg"][:, others], moments["b"][:, others])


def test_redo_end_to_end_with_inner_distillation_resumes_exactly(tmp_path, shared_runs):
    # floor(0.1 x 32) = 3 neurons per layer, 9 per reset, 4 resets (one per 512-step update)
    full, a, b = run_full_and_resumed(shared_runs, REDO, tmp_path)
    tags = read_scalars(full)
    for key in TABLE4_KEYS + ["reset/neurons_reset", "reset/distill_epochs", "reset/distill_to_ppo_epochs"]:
        assert key in tags, key
    assert [v for _, v in tags["reset/neurons_reset"]] == [9.0] * 4
    assert tags["reset/total_resets"][-1][1] == 36 == a["redo"]["reset_counts"].sum()
    np.testing.assert_array_equal(a["redo"]["reset_counts"], b["redo"]["reset_counts"])
    assert a["redo"]["distill_epochs"] == b["redo"]["distill_epochs"] >= 4


# ---- CBP ----
def cbp_net(widths, in_dim=3):
    layers, dim = [], in_dim
    for width in widths:
        layers += [cbp.layer_init(nn.Linear(dim, width)), nn.Tanh()]
        dim = width
    return nn.Sequential(*layers, cbp.layer_init(nn.Linear(dim, 2)))


def test_cbp_utility_follows_the_formula():
    net = cbp_net([3], in_dim=2)
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -0.5]]))  # mean |W_next[:, i]| = 2, 1, .5
    args = cbp.Args(hidden_layers=1, hidden_dim=3, decay_rate=0.9, maturity_threshold=100)
    state = cbp.cbp_state(args, "cpu")
    h1 = torch.tensor([[0.5, -1.0, 0.2], [-0.5, 0.5, 0.4]])  # mean |h| = .5, .75, .3; mean h = 0, -.25, .3
    h2 = torch.tensor([[0.1, 0.0, -0.8], [0.3, 0.2, 0.0]])  # mean |h| = .2, .1, .4
    assert cbp.cbp_test(net, [h1], state, args) == []  # nothing mature
    u1 = 0.1 * torch.tensor([2 * 0.5, 1 * 0.75, 0.5 * 0.3])
    torch.testing.assert_close(state["util"][0], u1)
    torch.testing.assert_close(state["mean_act"][0], 0.1 * torch.tensor([0.0, -0.25, 0.3]))
    cbp.cbp_test(net, [h2], state, args)
    torch.testing.assert_close(state["util"][0], 0.9 * u1 + 0.1 * torch.tensor([2 * 0.2, 1 * 0.1, 0.5 * 0.4]))
    assert state["ages"][0].tolist() == [2, 2, 2]
    # the choice uses the bias-corrected utility util / (1 - d^age): unit 1 is young, so its small raw
    # utility (0.018 after decay) corrects to 0.18, above unit 0's 0.045 after 100 steps
    args = cbp.Args(hidden_layers=1, hidden_dim=3, decay_rate=0.9, maturity_threshold=0, replacement_rate=1 / 3)
    state = cbp.cbp_state(args, "cpu")
    state["util"][0] = torch.tensor([0.05, 0.02, 0.5])
    state["ages"][0] = torch.tensor([99, 0, 99])
    (replace,) = cbp.cbp_test(net, [torch.zeros(2, 3)], state, args)
    assert replace[0] == 0 and replace[1].tolist() == [0]


@pytest.mark.parametrize("reset_adam", [False, True])
def test_cbp_generate_bias_absorbs_the_mean_contribution(reset_adam):
    torch.manual_seed(0)
    net = cbp_net([4], in_dim=2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(8, 2)).square().sum().backward()
    optimizer.step()
    args = cbp.Args(hidden_layers=1, hidden_dim=4, decay_rate=0.9, reset_adam=reset_adam)
    state = cbp.cbp_state(args, "cpu")
    x0, x1 = torch.randn(1, 2), torch.randn(5, 2)
    with torch.no_grad():
        h0, h1 = torch.tanh(net[0](x0))[0], torch.tanh(net[0](x1))
        y0, y1 = net(x0), net(x1)
    state["ages"][0] = 50
    state["mean_act"][0] = h0 * (1 - 0.9 ** 50)  # bias-corrected running mean = h(x0)
    state["util"][0] = 1.0
    w_out = net[2].weight.detach().clone()
    moments = optimizer.state[net[2].weight]["exp_avg"].clone()
    (replaced,) = cbp.cbp_generate(net, [(0, torch.tensor([1]))], state, optimizer, args)
    assert replaced[0] is net[0] and replaced[1].tolist() == [1]
    assert (net[2].weight[:, 1] == 0).all() and net[0].bias[1] == 0
    with torch.no_grad():
        torch.testing.assert_close(net(x0), y0, atol=1e-6, rtol=1e-5)  # at the mean input, nothing changes
        torch.testing.assert_close(net(x1), y1 - (h1[:, 1:2] - h0[1]) * w_out[:, 1], atol=1e-6, rtol=1e-5)
    assert state["ages"][0].tolist() == [50, 0, 50, 50]
    assert state["util"][0, 1] == 0 and state["mean_act"][0, 1] == 0
    assert state["reset_counts"][0].tolist() == [0, 1, 0, 0]
    zeroed = (optimizer.state[net[2].weight]["exp_avg"][:, 1] == 0).all()
    assert zeroed == reset_adam
    assert reset_adam or torch.equal(optimizer.state[net[2].weight]["exp_avg"], moments)


def test_cbp_never_replaces_immature_units():
    torch.manual_seed(0)
    maturity = 20
    net = cbp_net([8, 8])
    optimizer = torch.optim.Adam(net.parameters())
    args = cbp.Args(hidden_layers=2, hidden_dim=8, maturity_threshold=maturity, replacement_rate=0.5)
    state = cbp.cbp_state(args, "cpu")
    state["ages"] = torch.randint(0, maturity + 5, (2, 8))
    replacements, immature_would_win = 0, False
    for _ in range(300):
        features = [torch.tanh(torch.randn(16, 8)) for _ in range(2)]
        ages_before = state["ages"].clone()
        replace = cbp.cbp_test(net, features, state, args)
        for i, rows in replace:
            assert (ages_before[i, rows] + 1 > maturity).all()
            immature = state["ages"][i] <= maturity
            utility = state["util"][i] / (1 - args.decay_rate ** state["ages"][i])
            # replaced units restart with zero outgoing weights, so young units often have the lowest utility
            immature_would_win |= bool(immature.any() and utility[immature].min() < utility[rows].max())
            replacements += len(rows)
        cbp.cbp_generate(net, replace, state, optimizer, args)
    assert replacements > 20 and immature_would_win
    assert state["reset_counts"].sum() == replacements


@pytest.mark.parametrize("rate, width, period, accumulate, expected, tolerance", [
    (0.1, 10, 1, False, 1.0, 0),      # 1 unit per step, exactly
    (0.25, 8, 1, False, 2.0, 0),      # 2 units per step, exactly
    (0.25, 8, 10, False, 0.2, 0),     # Table 3's literal reading: 2 units every 10th step
    (0.05, 10, 1, True, 0.5, 0),      # 0.5 carried over: one unit every other step, exactly
    (0.03, 10, 1, True, 0.3, 1),      # 0.3 carried over: float rounding of the carry may shift one unit
    # 0.5 drawn: a Binomial(2000, 0.5) count per layer, sd 22.4; 5 sd (a false failure ~6e-7 a seed)
    (0.05, 10, 1, False, 0.5, 112),
])
def test_cbp_replacement_count_matches_rate_x_steps_x_eligible(rate, width, period, accumulate, expected,
                                                               tolerance):
    torch.manual_seed(0)
    steps = 2000
    net = cbp_net([width, width])
    optimizer = torch.optim.Adam(net.parameters())
    # maturity 0: every unit is eligible at every step (a replaced unit is one step old at the next)
    args = cbp.Args(hidden_layers=2, hidden_dim=width, maturity_threshold=0, replacement_rate=rate,
                    cbp_period=period, cbp_accumulate=accumulate)
    state = cbp.cbp_state(args, "cpu")
    features = [torch.tanh(torch.randn(16, width)) for _ in range(2)]
    for _ in range(steps):
        cbp.cbp_generate(net, cbp.cbp_test(net, features, state, args), state, optimizer, args)
    for layer_counts in state["reset_counts"]:
        assert abs(layer_counts.sum() - expected * steps) <= tolerance, layer_counts.sum()
    assert state["steps"] == steps and state["ages"].max() == steps  # ages move every step, whatever the period


def test_cbp_end_to_end_with_critic_and_distillation_resumes_exactly(tmp_path, shared_runs):
    # 2 epochs x 4 minibatches = 8 optimiser steps per update: units mature after 5 steps
    full, a, b = run_full_and_resumed(shared_runs, CBP, tmp_path)
    tags = read_scalars(full)
    for key in TABLE4_KEYS + ["reset/neurons_reset", "reset/mature_share", "reset/critic_total_resets",
                              "reset/distill_epochs"]:
        assert key in tags, key
    assert tags["reset/total_resets"][-1][1] == a["cbp"]["actor"]["reset_counts"].sum() > 0
    assert a["cbp"]["critic"]["reset_counts"].sum() > 0
    assert sum(v for _, v in tags["reset/neurons_reset"]) == a["cbp"]["actor"]["reset_counts"].sum()
    for name in ("actor", "critic"):
        for key in ("util", "mean_act", "ages"):
            assert torch.equal(a["cbp"][name][key], b["cbp"][name][key]), (name, key)
        assert a["cbp"][name]["steps"] == b["cbp"][name]["steps"] == 4 * 8


PLUMBING = ["validate_args", "RULES", "out_of_bounds", "run_errors", "directory_problem", "describe",
            "CHECKPOINT_FORMAT", "RESUME_MAY_CHANGE", "save", "save_checkpoint", "restore", "load_checkpoint",
            "resumed_args", "GracefulInterrupt",
            "fast_path", "SRANK_DELTA", "ACTIVE_SLOPE", "effective_rank", "active_fraction", "plasticity_metrics"]


@pytest.mark.parametrize("script", ["ppo_continuous.py", *BASELINES, "p3o_continuous.py", "sac_sbp.py"])
def test_the_method_and_the_loop_come_before_the_run_plumbing(script):
    source = (ROOT / script).read_text()
    lines = {getattr(node, "name", None) or getattr(node.targets[0], "id", None): node.lineno
             for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign))}
    above_main = [name for name in PLUMBING if lines[name] < lines["main"]]
    assert above_main == [], f"{script} defines run plumbing above main: {above_main}"
    if script == "p3o_continuous.py":  # a reader reaches P3O's training loop early (CleanRL's PPO: line 200)
        loop = next(i for i, line in enumerate(source.splitlines(), 1) if "for iteration in range(" in line)
        assert loop < 420, loop
