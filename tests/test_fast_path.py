"""The fast path (--compile; --cudagraphs adds CUDA graphs on a GPU) against the eager reference, on
the CPU: a few compiled updates give the same losses and parameters as eager, for PPO, for P3O
with a cycle reset and inner distillation in between, and for SAC with one; and whole runs with
--compile train and checkpoint.

Tolerance: compiled kernels fuse and reorder float32 arithmetic, so results agree to rounding,
not bit for bit: every loss and parameter within rtol 1e-4 and atol 1e-5 of eager after the
steps below (observed differences are around 1e-6)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

import p3o_continuous as p3o
import ppo_continuous as ppo
import sac_sbp as sac
from conftest import TINY, load_checkpoint, read_scalars

TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def one_thread_eager_random():
    """One torch thread; compiled code draws its random numbers as eager does (by default inductor
    has a generator of its own), so SAC's sampled actions can be compared."""
    import torch._inductor.config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch._inductor.config.patch(fallback_random=True):
        yield
    torch.set_num_threads(threads)


def assert_same_parameters(eager_module, fast_module):
    for (name, eager), fast in zip(eager_module.named_parameters(), fast_module.parameters()):
        torch.testing.assert_close(fast, eager, **TOL, msg=name)


def ppo_pair(module, **kw):
    """Two identical agents with their optimizers and PPO steps on one random rollout: eager and compiled."""
    torch.manual_seed(0)
    args = module.Args(hidden_dim=32, minibatch_size=64, **kw)
    batch, obs_dim, act_dim = 256, 5, 2
    rollout = (torch.randn(batch, obs_dim), torch.randn(batch, act_dim), torch.randn(batch) - 2,
               torch.randn(batch), torch.randn(batch), torch.randn(batch))
    pairs = []
    for compile in (False, True):
        agent = module.Agent(obs_dim, act_dim, args) if not pairs else copy.deepcopy(pairs[0][0])
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
        networks = {"actor": agent.actor_mean, "critic": agent.critic}
        step = module.fast_path(module.make_ppo_step(agent, optimizer, networks, rollout, args),
                                dataclasses.replace(args, compile=compile))
        pairs.append((agent, optimizer, step))
    return args, rollout, pairs


def test_compiled_ppo_steps_match_eager():
    args, rollout, pairs = ppo_pair(ppo)
    for k in range(4):
        mb = torch.randperm(256)[:64]
        eager, fast = (step(mb) for _, _, step in pairs)
        torch.testing.assert_close(fast, eager, **TOL, msg=f"step {k}: losses, approx KL, clip fraction, norms")
    assert_same_parameters(pairs[0][0], pairs[1][0])
    untrained = ppo_pair(ppo)[2][0][0]  # the same seed, no step taken
    assert not torch.equal(pairs[0][0].critic[0].weight, untrained.critic[0].weight)  # the steps did train


def test_compiled_p3o_steps_reset_and_distillation_match_eager():
    args, rollout, pairs = ppo_pair(p3o, reset_rate=0.25, distill_tau=1e-9, distill_max_epochs=5)
    obs = rollout[0]
    distillers = [p3o.InnerDistillation(agent.actor_mean, agent.actor_logstd, obs,
                                        dataclasses.replace(args, compile=compile))
                  for (agent, _, _), compile in zip(pairs, (False, True))]
    for k in range(2):
        mb = torch.randperm(256)[:64]
        eager, fast = (step(mb) for _, _, step in pairs)
        torch.testing.assert_close(fast, eager, **TOL)
    results, frozen_rows = [], []
    for (agent, optimizer, _), distiller in zip(pairs, distillers):
        torch.manual_seed(1)  # the same fresh weights and minibatch order for both
        distiller.snapshot()
        frozen = p3o.cycle_reset(agent.actor_mean, optimizer, 1, args)
        frozen_rows.append([(layer.weight[rows].clone(), rows) for layer, rows in frozen])
        results.append(distiller(frozen))
        for (before, rows), (layer, _) in zip(frozen_rows[-1], frozen):
            assert torch.equal(layer.weight[rows], before)  # frozen rows bit-identical, compiled too
    (eager_epochs, *eager_losses), (fast_epochs, *fast_losses) = results
    assert eager_epochs == fast_epochs == 5
    np.testing.assert_allclose(fast_losses, eager_losses, rtol=1e-4, atol=1e-6)
    assert_same_parameters(pairs[0][0], pairs[1][0])
    for k in range(2):  # PPO steps after the distillation
        mb = torch.randperm(256)[:64]
        eager, fast = (step(mb) for _, _, step in pairs)
        torch.testing.assert_close(fast, eager, **TOL)
    assert_same_parameters(pairs[0][0], pairs[1][0])


def test_compiled_sac_updates_with_reset_and_distillation_match_eager():
    torch.manual_seed(0)
    args = sac.Args(hidden_dim=32, reset_rate=0.25, distill_samples=256, batch_size=64, distill_max_epochs=3)
    obs_dim, act_dim, batch = 5, 2, 64
    sampled = [(torch.randn(batch, obs_dim), torch.rand(batch, act_dim) * 2 - 1, torch.randn(batch),
                torch.randn(batch, obs_dim), (torch.rand(batch) < 0.1).float()) for _ in range(3)]
    initial = (sac.Actor(obs_dim, act_dim, -np.ones(act_dim), np.ones(act_dim), args),
               sac.TwinQ(obs_dim + act_dim, args))
    nets, outputs = [], []
    for compile in (False, True):
        fast_args = dataclasses.replace(args, compile=compile)
        actor, qf = copy.deepcopy(initial)
        qf_target = copy.deepcopy(qf).requires_grad_(False)
        log_alpha = torch.zeros(1, requires_grad=True)
        q_optimizer = torch.optim.Adam(qf.parameters(), lr=1e-3)
        actor_optimizer = torch.optim.Adam([{"params": list(actor.parameters())}, {"params": [log_alpha]}], lr=1e-3)
        _, critic_update, actor_update = sac.make_sac_updates(actor, qf, qf_target, q_optimizer, actor_optimizer,
                                                              log_alpha, fast_args)
        critic_step, actor_step = sac.fast_path(critic_update, fast_args), sac.fast_path(actor_update, fast_args)
        distiller = sac.InnerDistillation(actor, fast_args, obs_dim)
        out = []
        torch.manual_seed(2)  # the same actor samples and minibatch orders for both
        for k, batch_k in enumerate(sampled):
            out += [critic_step(*batch_k), actor_step(batch_k[0])]
            if k == 1:
                distiller.snapshot()
                frozen = sac.cycle_reset(actor.net, actor_optimizer, 2, args)
                epochs, loss_start, loss_end = distiller(torch.randn(256, obs_dim), frozen)
                out.append(torch.tensor([epochs, loss_start, loss_end]))
        nets.append((actor, qf, log_alpha))
        outputs.append(out)
    for k, (eager, fast) in enumerate(zip(*outputs)):
        torch.testing.assert_close(fast, eager, **TOL, msg=lambda m: f"output {k}: {m}")
    for eager, fast in zip(nets[0][:2], nets[1][:2]):
        assert_same_parameters(eager, fast)
    torch.testing.assert_close(nets[1][2], nets[0][2], **TOL)


COMPILED = {  # SAC: a tiny configuration with a cycle reset and distillation
    "p3o_continuous.py": [*TINY, "--total-timesteps", "1024", "--reset-frequency", "512", "--reset-rate", "0.25"],
    "ppo_cbp.py": [*TINY, "--total-timesteps", "1024", "--inner-distill", "--maturity-threshold", "10",
                   "--replacement-rate", "0.01"],
    "sac_sbp.py": ["--env-id", "Pendulum-v1", "--hidden-dim", "32", "--batch-size", "64", "--learning-starts", "300",
                   "--threads", "1", "--total-timesteps", "900", "--reset-frequency", "400", "--reset-rate", "0.25",
                   "--distill-samples", "256", "--log-every", "100", "--metrics-every", "300"]}
SHARED_RUNS = {"test_runs_with_compile_train_reset_and_checkpoint": [
    (script, *args, "--compile") for script, args in COMPILED.items()]}


@pytest.mark.parametrize("script", COMPILED)
def test_runs_with_compile_train_reset_and_checkpoint(script, shared_runs):
    run = shared_runs.path(script, *COMPILED[script], "--compile")
    scalars = read_scalars(run)
    assert load_checkpoint(run)["args"]["compile"] is True
    assert "reset/distill_epochs" in scalars and all(np.isfinite(v) for _, v in scalars["reset/distill_epochs"])
    assert any(tag.endswith("grad_norm") for tag in scalars)
