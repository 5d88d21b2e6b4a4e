"""sac_sbp.py: replay buffer (final observations, wrap-around), ReDo/cycle reset + inner distillation,
argument validation, exact resume, learning, and an SBP run that logs its resets."""

import signal

import numpy as np
import pytest
import torch

import sac_sbp as sac
from conftest import (assert_rejected, first_and_last_returns, interrupt_run, load_checkpoint, only_run, read_scalars,
                      run_script)
from envs import make_env

# A tiny, fast SAC configuration for end-to-end runs.
TINY_SAC = ["--env-id", "Pendulum-v1", "--hidden-dim", "32", "--batch-size", "64", "--learning-starts", "300",
            "--threads", "1", "--log-every", "100", "--metrics-every", "300", "--distill-samples", "512",
            "--reset-rate", "0.1"]


def stored(rb):
    """Every transition in the buffer, oldest first: (row, env) index tensors and the transitions."""
    steps = (rb.pos - rb.size + torch.arange(rb.size)) % rb.rows
    row = steps.repeat_interleave(rb.num_envs)
    env = torch.arange(rb.num_envs).repeat(rb.size)
    return row, env, rb.transitions(row * rb.num_envs + env)


def fill_from_env(env_id, steps, num_envs=2, seed=0):
    """Step an env with random actions into a buffer; return the buffer and the log of every vector step."""
    envs, obs = make_env(env_id, num_envs, seed)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    rb = sac.ReplayBuffer(10_000, num_envs, obs_dim, act_dim, torch.device("cpu"))
    rb.start(obs)
    rng = np.random.default_rng(seed)
    log = []
    for _ in range(steps):
        action = rng.uniform(-1, 1, (num_envs, act_dim)).astype(np.float32)
        next_obs, reward, term, trunc, infos = envs.step(action)
        rb.add(action, next_obs, reward, term, trunc, infos.get("final_obs"))
        log.append((obs, action, reward, next_obs, term, trunc, infos.get("final_obs")))
        obs = next_obs
    envs.close()
    return rb, log


def check_against_log(rb, log, ended_by):
    """Every stored transition equals the logged one; those that ended the episode hold the true
    final observation; done is set exactly for terminations. Returns how many ended by `ended_by`."""
    row, env, (obs, action, reward, next_obs, done) = stored(rb)
    count = 0
    for j, (t, i) in enumerate(zip(row.tolist(), env.tolist())):
        o, a, r, no, term, trunc, final = log[t]
        np.testing.assert_array_equal(obs[j].numpy(), o[i])
        np.testing.assert_array_equal(action[j].numpy(), a[i])
        assert reward[j].item() == pytest.approx(float(r[i]))
        if term[i] or trunc[i]:
            np.testing.assert_array_equal(next_obs[j].numpy(), final[i])  # not the next episode's first obs
            assert not np.array_equal(final[i], no[i])
        else:
            np.testing.assert_array_equal(next_obs[j].numpy(), no[i])
        assert done[j].item() == float(term[i])
        count += int((term if ended_by == "termination" else trunc & ~term)[i])
    return count


def test_truncation_stores_true_final_obs_and_not_done():
    rb, log = fill_from_env("Pendulum-v1", 230)  # Pendulum truncates at 200 steps, never terminates
    assert check_against_log(rb, log, "truncation") == 2  # both envs truncated at step 200
    _, _, (_, _, _, _, done) = stored(rb)
    assert done.sum() == 0


def test_termination_stores_done_and_final_obs():
    rb, log = fill_from_env("InvertedPendulum-v5", 150)  # random actions topple it within a few dozen steps
    assert check_against_log(rb, log, "termination") >= 4
    _, _, (_, _, _, _, done) = stored(rb)
    assert 0 < done.sum() < len(done)


@pytest.mark.parametrize("capacity, num_envs, steps, end_every", [(10, 1, 37, 7), (20, 2, 53, 3), (400, 2, 1000, 1)])
def test_buffer_wraps_without_losing_or_duplicating(capacity, num_envs, steps, end_every):
    """Synthetic observations [t, i]: after wrapping, the buffer holds exactly the last capacity
    transitions per env, once each, with the right next observations (also when every step ends an
    episode, which makes the aside store of final observations grow and wrap)."""
    rb = sac.ReplayBuffer(capacity * num_envs, num_envs, 2, 1, torch.device("cpu"))
    envs_ids = np.arange(num_envs)
    rb.start(np.stack([np.zeros(num_envs), envs_ids], 1))
    for t in range(1, steps + 1):
        ended = (t + envs_ids) % end_every == 0
        terminated, truncated = ended & (envs_ids == 0), ended & (envs_ids != 0)
        final = np.stack([np.full(num_envs, -t), envs_ids], 1)  # the true last obs of an ended episode
        next_obs = np.stack([np.full(num_envs, t), envs_ids], 1)
        rb.add(np.full((num_envs, 1), t - 1.0), next_obs, 1000.0 * t + envs_ids, terminated, truncated, final)
    assert rb.size == capacity
    row, env, (obs, action, reward, next_obs, done) = stored(rb)
    seen = sorted((int(o[0]), int(o[1])) for o in obs)
    assert seen == sorted((t, i) for t in range(steps - capacity, steps) for i in range(num_envs))  # no loss, no dup
    for o, a, r, no, d in zip(obs, action, reward, next_obs, done):
        t, i = int(o[0]), int(o[1])
        assert a.item() == t and r.item() == 1000.0 * (t + 1) + i
        ended = (t + 1 + i) % end_every == 0
        assert no.tolist() == ([-(t + 1), i] if ended else [t + 1, i])
        assert d.item() == float(ended and i == 0)
    # sampling draws only stored transitions, and all of them
    s_obs = rb.sample(20_000)[0]
    drawn = {(int(o[0]), int(o[1])) for o in s_obs}
    assert drawn == set(seen)


def test_buffer_memory_stores_each_observation_once():
    rb = sac.ReplayBuffer(100_000, 1, 348, 17, torch.device("cpu"))  # Humanoid-v5 sizes, 1/10 of 1M
    per_transition = rb.nbytes() / 100_000
    assert per_transition < 1.1 * 4 * (348 + 17 + 2) + 8 + 1  # obs once, not obs + next_obs (2 x 348 floats)


def make_actor(obs_dim=5, act_dim=2, **kw):
    args = sac.Args(hidden_dim=64, **kw)
    return sac.Actor(obs_dim, act_dim, -np.ones(act_dim), np.ones(act_dim), args), args


def trained_actor(obs, **kw):
    """An actor with non-trivial weights and Adam moments everywhere."""
    torch.manual_seed(0)
    actor, args = make_actor(**kw)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-2)
    for _ in range(20):
        mean, log_std = actor(obs[:256])
        optimizer.zero_grad()
        (mean.square().sum() + (log_std - 0.5 * obs[:256, :2]).square().sum()).backward()
        optimizer.step()
    return actor, optimizer, args


@pytest.mark.parametrize("reset, compile", [("cycle", False), ("redo", False), ("cycle", True)],
                         ids=["cycle", "redo", "cycle-compiled"])
def test_reset_then_distill_keeps_frozen_rows_and_reaches_tau(reset, compile):
    """On the eager reference and on the fast path's compiled minibatch step alike."""
    obs = torch.randn(2048, 5)
    actor, optimizer, args = trained_actor(obs, reset_rate=0.05, distill_samples=len(obs), compile=compile,
                                           reset_adam=True)
    distiller = sac.InnerDistillation(actor, args, obs_dim=5)
    distiller.snapshot()
    teacher = distiller.teacher
    if reset == "cycle":
        frozen = sac.cycle_reset(actor.net, optimizer, 3, args)
    else:
        frozen = sac.redo_reset(actor.net, sac.redo_select(sac.redo_scores(actor.net, obs), args), optimizer)
        linears = [m for m in actor.net if isinstance(m, torch.nn.Linear)]
        for i, (layer, rows) in enumerate(frozen):  # outgoing weights zeroed, with their Adam moments,
            keep = torch.ones(linears[i + 1].out_features, dtype=torch.bool)  # except into neurons reset next
            if i + 1 < len(frozen):
                keep[frozen[i + 1][1]] = False
            assert linears[i + 1].weight[keep][:, rows].abs().sum() == 0
            assert optimizer.state[linears[i + 1].weight]["exp_avg"][keep][:, rows].abs().sum() == 0
    for layer, rows in frozen:
        assert len(rows) == 3  # 5% of 64 neurons, per hidden layer
        assert optimizer.state[layer.weight]["exp_avg"][rows].abs().sum() == 0
        assert optimizer.state[layer.weight]["exp_avg_sq"][rows].abs().sum() == 0
    after_reset = [(layer.weight[rows].clone(), layer.bias[rows].clone()) for layer, rows in frozen]
    others_before = [layer.weight.detach().clone() for layer, _ in frozen]
    epochs, loss_start, loss_end = distiller(obs, frozen)
    for (layer, rows), (w, b), before in zip(frozen, after_reset, others_before):
        assert torch.equal(layer.weight[rows], w) and torch.equal(layer.bias[rows], b)  # bit-identical
        assert not torch.equal(layer.weight.detach(), before)  # the rest did train
    with torch.no_grad():
        mean_t, logstd_t = teacher(obs)
        mean_s, logstd_s = actor(obs)
        loss = sac.alpha_dkl(mean_t, logstd_t, mean_s, logstd_s, args.distill_alpha).mean().item()
    assert loss == pytest.approx(loss_end) and loss <= args.distill_tau
    assert epochs >= 1
    if reset == "cycle":  # a cycle reset changes the policy, so there was something to distil
        assert loss_start > args.distill_tau and epochs > 1
    print(reset, epochs, loss_start, loss_end)


def test_redo_resets_the_dormant_neurons():
    obs = torch.randn(2048, 5)
    torch.manual_seed(0)
    actor, args = make_actor(reset_rate=0.05)
    optimizer = torch.optim.Adam(actor.parameters())
    first = actor.net[0]
    with torch.no_grad():
        first.bias.fill_(0.5)
    assert sac.redo_scores(actor.net, obs)[0].min() > 0.2  # no first-layer neuron is dormant
    with torch.no_grad():  # now neurons 7 and 40 never fire, 12 barely
        first.weight[[7, 40]] = 0
        first.bias[[7, 40]] = -1.0
        first.weight[12] *= 1e-3
        first.bias[12] = 0
    rows_per_layer = sac.redo_select(sac.redo_scores(actor.net, obs), args)
    assert rows_per_layer[0].tolist() == [7, 40, 12]  # floor(5% of 64) = 3, lowest score first
    frozen = sac.redo_reset(actor.net, rows_per_layer, optimizer)
    assert frozen[0][1].tolist() == [7, 40, 12]


def test_log_prob_matches_torch_distributions():
    actor, _ = make_actor(act_dim=3)
    with torch.no_grad():
        actor.action_scale.fill_(2.0)
    obs = torch.randn(64, 5)
    torch.manual_seed(1)
    action, log_prob = actor.sample(obs)
    torch.manual_seed(1)
    mean, log_std = actor(obs)
    normal = torch.distributions.Normal(mean, log_std.exp())
    x = mean + log_std.exp() * torch.randn(64, 3)
    expected = (normal.log_prob(x) - torch.log(2.0 * (1 - torch.tanh(x).square()) + 1e-6)).sum(1)
    torch.testing.assert_close(action, 2.0 * torch.tanh(x))
    torch.testing.assert_close(log_prob, expected)
    assert (log_std >= -5).all() and (log_std <= 2).all()


@pytest.mark.parametrize("bad_args, messages", [
    (["--batch-size", "0", "--q-lr", "-1e-3", "--distill-alpha", "1.5", "--reset-rate", "0", "--buffer-size", "1000",
      "--env-id", "Hoper-v5"],  # every problem is reported at once
     ["--batch-size 0", "--q-lr -0.001", "--distill-alpha 1.5", "--reset-rate 0", "--learning-starts 5000",
      "Hopper-v5"]),
    (["--resume", "no/such/run"], ["no checkpoint.pt"]),
])
def test_bad_arguments_fail_before_any_work(tmp_path, bad_args, messages):
    assert_rejected("sac_sbp.py", bad_args, messages, tmp_path)


SBP = ("sac_sbp.py", *TINY_SAC, "--reset", "cycle", "--inner-distill", "--reset-frequency", "300")
NO_BUFFER = ("sac_sbp.py", *TINY_SAC, "--reset", "redo", "--reset-frequency", "400", "--no-save-buffer",
             "--total-timesteps", "600")
LEARN = ("sac_sbp.py", "--env-id", "Pendulum-v1", "--reset", "none", "--hidden-dim", "64", "--batch-size", "128",
         "--learning-starts", "500", "--total-timesteps", "7000", "--threads", "1")
SHARED_RUNS = {"test_cycle_distill_run_resets_logs_and_resumes_exactly": [
                   (*SBP, "--total-timesteps", "1500"), (*SBP, "--total-timesteps", "1000")],
               "test_resume_without_buffer_refills_before_updating": [NO_BUFFER],
               "test_sac_learns_pendulum": [LEARN]}


def test_cycle_distill_run_resets_logs_and_resumes_exactly(tmp_path, shared_runs):
    full = shared_runs.path(*SBP, "--total-timesteps", "1500")
    tags = read_scalars(full)
    for key in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/qf1_loss",
                "losses/qf2_loss", "losses/qf_loss", "losses/qf1_values", "losses/actor_loss", "losses/alpha",
                "losses/alpha_loss", "plasticity/actor_dormant_ratio", "plasticity/critic_dormant_ratio",
                "plasticity/critic2_dormant_ratio", "plasticity/actor_grad_norm", "plasticity/critic_weight_magnitude",
                "plasticity/actor_activation_norm", "plasticity/critic2_fau", "plasticity/actor_effective_rank",
                "plasticity/critic_weight_distance", "plasticity/policy_entropy", "reset/pointer",
                "reset/distill_epochs",
                "reset/distill_loss_start", "reset/distill_loss_end", "reset/total_resets",
                "reset/share_neurons_reset", "reset/seconds"]:
        assert key in tags, key
    # a reset every 300 steps once learning has started (at 300 transitions)
    assert [step for step, _ in tags["reset/distill_epochs"]] == [300, 600, 900, 1200, 1500]
    assert all(v <= 0.01 + 1e-6 for _, v in tags["reset/distill_loss_end"])
    assert tags["reset/distill_loss_start"][0][1] > 0.01  # the first reset did change the policy
    # 5 cycle slices of 10% of 32 neurons (3, 3, 4, 3, 3 neurons) in each of the 2 hidden layers
    assert tags["reset/total_resets"][-1][1] == 2 * sac.cycle_slice(4, 0.1, 32)[1] == 32
    assert [v for _, v in tags["reset/pointer"]] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    ckpt = load_checkpoint(full)
    assert ckpt["sbp"]["resets"] == 5 and ckpt["global_step"] == 1500
    # interrupted at 1000 steps, then resumed to 1500: the same run
    split = shared_runs.copy(*SBP, "--total-timesteps", "1000", to=tmp_path / "split")
    proc = run_script("sac_sbp.py", "--resume", split, "--total-timesteps", "1500", run_dir=tmp_path / "x")
    assert "resumed" in proc.stdout and not (tmp_path / "x").exists()
    resumed = load_checkpoint(split)
    for part in ("actor", "qf", "qf_target"):
        for name, tensor in ckpt[part].items():
            assert torch.equal(tensor, resumed[part][name]), (part, name)
    assert torch.equal(ckpt["log_alpha"], resumed["log_alpha"])


def test_resume_without_buffer_refills_before_updating(tmp_path, shared_runs):
    run = shared_runs.copy(*NO_BUFFER, to=tmp_path / "run")
    assert load_checkpoint(run)["replay_buffer"] is None
    proc = run_script("sac_sbp.py", "--resume", run, "--total-timesteps", "1200", run_dir=tmp_path / "x")
    assert "without a replay buffer" in proc.stdout
    ckpt = load_checkpoint(run)
    assert ckpt["global_step"] == 1200 and ckpt["sbp"]["resets"] == 2  # at 400, and at 1200 once refilled
    assert [v for _, v in read_scalars(run)["reset/neurons_reset"]] == [6, 6]  # floor(10% of 32) x 2 layers


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_writes_a_checkpoint(tmp_path, sig):
    code, out = interrupt_run("sac_sbp.py", *TINY_SAC, "--total-timesteps", "1000000", "--checkpoint-every", "1000000",
                              run_dir=tmp_path, when=lambda line: line.startswith("step") and "600/" in line, sig=sig)
    assert code == 0 and "--resume" in out and sig.name in out, out
    ckpt = load_checkpoint(only_run(tmp_path))
    assert 600 <= ckpt["global_step"] < 1_000_000 and ckpt["replay_buffer"]["size"] == ckpt["global_step"]


def test_sac_learns_pendulum(shared_runs):
    first, last = first_and_last_returns(shared_runs.path(*LEARN).parent, 4)
    assert last > -500 and last > first + 400, (first, last)
