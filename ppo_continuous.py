"""PPO for continuous control on the paper's Table 3 (docs/algorithms/ppo.md: how it differs from CleanRL's), the
base every training file copies (`diff ppo_continuous.py p3o_continuous.py` is P3O): `python ppo_continuous.py --env-id
Hopper-v5 --seed 1`, or --help. Metrics: docs/metrics.md; --resume: docs/checkpoints.md."""

import copy
import dataclasses
import math
import os
import random
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

from envs import choose_gl_backend, get_env_state, log_video, make_env, set_env_state, validate_env_id


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment, part of the run name
    seed: int = 1  # seed of the experiment (torch, numpy, python and the envs)
    torch_deterministic: bool = True  # use deterministic torch algorithms, so one seed gives one result
    cuda: bool = False  # run the networks on a CUDA GPU; an error if none is present
    compile: bool = False  # torch.compile the hot paths (policy, update and distillation steps; docs/performance.md)
    cudagraphs: bool = False  # replay the hot paths as CUDA graphs (needs --cuda): with --compile, the fast GPU path
    threads: int = 0  # torch CPU threads; 0 means min(4, number of cores)
    run_dir: str = "runs"  # folder under which each run writes runs/<run name>/ (TensorBoard events, checkpoint)
    resume: Optional[str] = None  # a run directory to continue from its checkpoint and arguments (docs/checkpoints.md)
    checkpoint_every: int = 25  # write a checkpoint every this many updates (and at the end, on Ctrl-C and SIGTERM)
    metrics_every: int = 10  # log plasticity metrics every this many updates
    dormant_threshold: float = 0.1  # a neuron is dormant when its ReDo score (mean |activation| / layer mean) <= this
    capture_video: bool = False  # record env 0's episodes to <run>/videos and TensorBoard; needs OpenGL (docs/watch.md)
    video_every: int = 100_000  # with --capture-video: record the first episode after every this many env steps
    track: bool = False  # also log to Weights & Biases; offline to ./wandb without a key or network (docs/watch.md)
    wandb_project_name: str = "sustainable-plasticity"  # the Weights & Biases project of --track
    wandb_entity: Optional[str] = None  # the Weights & Biases team or user of --track (default: your default entity)

    # Environment
    env_id: str = "Hopper-v5"  # MuJoCo id (Hopper-v5), 'dm_control/<domain>-<task>' or 'cyclefriction/<MuJoCo id>'
    num_envs: int = 8  # number of parallel environments; the rollout is num_envs * num_steps
    async_envs: bool = False  # step the environments in worker processes (worth it with many cores)
    friction_period: int = 1_000_000  # Cycle Friction only: env steps between friction changes (4, 3, 2, 1, 2, 3, ...)

    # PPO (defaults: the paper's Table 3)
    total_timesteps: int = 12_500_000  # total environment steps of the run (over all envs)
    learning_rate: float = 3e-4  # Adam learning rate of actor and critic
    anneal_lr: bool = False  # anneal the learning rate linearly to 0 (the paper keeps it constant)
    num_steps: int = 1024  # steps per environment per rollout; 8 envs x 1024 = the paper's online buffer of 8192
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # lambda of generalised advantage estimation
    minibatch_size: int = 256  # minibatch size of the PPO update
    update_epochs: int = 10  # epochs over the rollout per update
    norm_adv: bool = True  # normalise advantages per minibatch
    clip_coef: float = 0.2  # PPO surrogate clipping coefficient
    clip_vloss: bool = True  # clip the value loss as CleanRL does
    ent_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # gradient-norm clipping
    target_kl: Optional[float] = None  # stop the epochs of an update early when approx KL exceeds this (off by default)

    # Networks (the paper's Table 3)
    hidden_dim: int = 256  # width of every hidden layer of actor and critic
    hidden_layers: int = 3  # number of hidden layers of actor and critic
    activation: Literal["tanh", "relu"] = "tanh"  # hidden activation of actor and critic


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(in_dim, out_dim, args, out_std):
    """hidden_layers x (Linear, activation), then a Linear head initialised with std out_std."""
    layers, dim = [], in_dim
    for _ in range(args.hidden_layers):
        layers += [layer_init(nn.Linear(dim, args.hidden_dim)), ACTIVATIONS[args.activation]()]
        dim = args.hidden_dim
    return nn.Sequential(*layers, layer_init(nn.Linear(dim, out_dim), std=out_std))


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Agent(nn.Module):
    """Separate actor (Gaussian, state-independent log-std) and critic MLPs."""

    def __init__(self, obs_dim, act_dim, args):
        super().__init__()
        self.critic = mlp(obs_dim, 1, args, out_std=1.0)
        self.actor_mean = mlp(obs_dim, act_dim, args, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(act_dim))

    def get_value(self, obs):
        return self.critic(obs).squeeze(-1)

    def act(self, obs):
        """Sample actions for a batch of observations: (actions, their log-probs, values)."""
        mean = self.actor_mean(obs)
        noise = torch.randn_like(mean)
        logprob = (-0.5 * noise.square() - self.actor_logstd - LOG_SQRT_2PI).sum(-1)
        return mean + self.actor_logstd.exp() * noise, logprob, self.get_value(obs)

    def evaluate(self, obs, action):
        """Log-prob and entropy of given actions, and values, for the PPO loss."""
        mean = self.actor_mean(obs)
        logstd = self.actor_logstd.expand_as(mean)
        logprob = (-0.5 * ((action - mean) / logstd.exp()).square() - logstd - LOG_SQRT_2PI).sum(-1)
        entropy = (logstd + 0.5 + LOG_SQRT_2PI).sum(-1)
        return logprob, entropy, self.critic(obs).squeeze(-1)


def compute_gae(rewards, values, dones, next_value, gamma, gae_lambda):
    """Generalised advantage estimation over a rollout of shape (T, N): (advantages, returns). dones[t] is 1 where the
    episode ended at step t (termination or truncation; a truncated step's reward already holds gamma * V(final
    observation), so its value past the time limit is kept); next_value is V of the observation after the last step."""
    advantages = np.zeros_like(rewards)
    last = np.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        not_done = 1.0 - dones[t]
        value_next = next_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * value_next * not_done - values[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    return advantages, advantages + values


def make_ppo_step(agent, optimizer, networks, rollout, args):
    """The PPO minibatch step on the rollout tensors (refilled in place every update): ppo_step(mb) takes the loss on
    rows mb, backward, clips gradients, steps Adam; it returns the losses, approx KL, clip fraction and the raw
    (pre-clip) gradient norm of each of `networks`, by name."""
    b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values = rollout

    def ppo_step(mb):
        newlogprob, entropy, newvalue = agent.evaluate(b_obs[mb], b_actions[mb])
        logratio = newlogprob - b_logprobs[mb]
        ratio = logratio.exp()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
        mb_advantages = b_advantages[mb]
        if args.norm_adv:
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
        pg_loss = torch.max(-mb_advantages * ratio,
                            -mb_advantages * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
        if args.clip_vloss:
            v_clipped = b_values[mb] + (newvalue - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
            v_loss = 0.5 * torch.max((newvalue - b_returns[mb]).square(),
                                     (v_clipped - b_returns[mb]).square()).mean()
        else:
            v_loss = 0.5 * (newvalue - b_returns[mb]).square().mean()
        entropy_loss = entropy.mean()
        loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms = [nn.utils.get_total_norm([p.grad for p in net.parameters()]) for net in networks.values()]
        nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()
        return {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), "entropy": entropy_loss.detach(),
                "approx_kl": approx_kl, "clipfrac": clipfrac,
                **{f"{name}_grad_norm": norm for name, norm in zip(networks, grad_norms)}}

    return ppo_step


def main():
    args, checkpoint, run_dir, device, writer = start_run()
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    start_step = checkpoint["global_step"] if checkpoint else 0
    envs, next_obs = make_env(args.env_id, args.num_envs, args.seed, normalize=True, gamma=args.gamma,
                              async_envs=args.async_envs, friction_period=args.friction_period,
                              start_step=start_step, video_every=args.video_every,
                              video_dir=os.path.join(run_dir, "videos") if args.capture_video else None)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, act_dim, args).to(device)
    networks = {"actor": agent.actor_mean, "critic": agent.critic}  # whose plasticity metrics are logged
    initial_networks = copy.deepcopy(networks)  # step 0's weights; on --resume too (same seed, same init)
    # CUDA graphs need Adam's step count on the device and a learning rate they read, not bake in
    lr = torch.tensor(args.learning_rate, device=device) if args.cudagraphs else args.learning_rate
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5, capturable=args.cudagraphs)

    saved = {"agent": agent, "optimizer": optimizer}  # in a checkpoint, beside the loop's progress
    global_step, first_iteration, recent_returns = 0, 1, deque(maxlen=20)
    if checkpoint:
        restore(checkpoint, saved, envs, args.cuda)
        next_obs, global_step, first_iteration = (checkpoint["next_obs"], checkpoint["global_step"],
                                                  checkpoint["iteration"] + 1)
        recent_returns.extend(checkpoint["recent_returns"])
        print(f"resumed {run_dir} at step {global_step:,} (update {first_iteration - 1})")

    print(f"run {run_dir} | {args.env_id} | device {device} | {num_iterations} updates of {batch_size} steps")

    # Rollout storage: numpy on the host, copied once per update into the device tensors below
    obs_buf, actions_buf = (np.zeros((args.num_steps, args.num_envs, d), dtype=np.float32) for d in (obs_dim, act_dim))
    logprobs_buf, values_buf, rewards_buf, dones_buf = np.zeros((4, args.num_steps, args.num_envs), dtype=np.float32)
    # allocated once: the graphs read them in place
    b_obs, b_actions = (torch.zeros((batch_size, dim), device=device) for dim in (obs_dim, act_dim))
    b_logprobs, b_advantages, b_returns, b_values = torch.zeros((4, batch_size), device=device)

    rollout = (b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)
    policy_step = fast_path(agent.act, args)
    update_step = fast_path(make_ppo_step(agent, optimizer, networks, rollout, args), args)

    interrupt = GracefulInterrupt()
    start_time, steps_at_start = time.time(), global_step
    for iteration in range(first_iteration, num_iterations + 1):
        if args.anneal_lr:
            lr_now = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)
            group = optimizer.param_groups[0]
            group["lr"] = group["lr"].fill_(lr_now) if torch.is_tensor(group["lr"]) else lr_now

        # ---- Rollout: one batched forward pass per vector step ----
        for step in range(args.num_steps):
            obs_buf[step] = next_obs
            with torch.inference_mode():
                action, logprob, value = (x.cpu().numpy() for x in policy_step(torch.from_numpy(next_obs).to(device)))
            actions_buf[step], logprobs_buf[step], values_buf[step] = action, logprob, value
            next_obs, reward, terminations, truncations, infos = envs.step(action)
            global_step += args.num_envs
            rewards_buf[step] = reward
            dones_buf[step] = terminations | truncations
            truncated_only = np.flatnonzero(truncations & ~terminations)
            if truncated_only.size:  # time limit: bootstrap from V(true final observation)
                with torch.inference_mode():
                    final_obs = torch.from_numpy(infos["final_obs"][truncated_only]).to(device)
                    rewards_buf[step, truncated_only] += args.gamma * agent.get_value(final_obs).cpu().numpy()
            if "_episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    recent_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
            if "video" in infos:  # --capture-video: env 0's episode that just ended
                log_video(writer, "videos/env0", infos["video"], global_step)

        with torch.inference_mode():
            next_value = agent.get_value(torch.from_numpy(next_obs).to(device)).cpu().numpy()
        advantages, returns = compute_gae(rewards_buf, values_buf, dones_buf, next_value, args.gamma,
                                          args.gae_lambda)

        # ---- PPO update ----
        for target, source in ((b_obs, obs_buf), (b_actions, actions_buf), (b_logprobs, logprobs_buf),
                               (b_advantages, advantages), (b_returns, returns), (b_values, values_buf)):
            target.copy_(torch.from_numpy(source).view(target.shape))
        stats = []  # each minibatch step's, read on the host once per update
        for epoch in range(args.update_epochs):
            permutation = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, args.minibatch_size):
                stats.append(update_step(permutation[start:start + args.minibatch_size]))
            if args.target_kl is not None and stats[-1]["approx_kl"].item() > args.target_kl:
                break
        last = stats[-1]  # the last minibatch's; its gradient norms (raw, pre-clip) for plasticity/

        # ---- NaN guard: stop before anything non-finite reaches a checkpoint ----
        losses = {name: last[name] for name in ("policy_loss", "value_loss", "entropy")}
        bad = [f"loss {k}" for k, v in losses.items() if not torch.isfinite(v)]
        bad += [f"parameter {k}" for k, p in agent.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            sys.exit(f"error: non-finite values at update {iteration} (step {global_step:,}) in: {', '.join(bad)}. "
                     f"The last good checkpoint is in {run_dir}; resume it with a smaller --learning-rate.")

        # ---- Logging ----
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        sps = int((global_step - steps_at_start) / (time.time() - start_time))
        for tag, value in {"charts/learning_rate": float(optimizer.param_groups[0]["lr"]), "charts/SPS": sps,
                           **{f"losses/{name}": value.item() for name, value in losses.items()},
                           "losses/approx_kl": last["approx_kl"].item(),
                           "losses/clipfrac": torch.stack([s["clipfrac"] for s in stats]).mean().item(),
                           "losses/explained_variance": np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
                           }.items():
            writer.add_scalar(tag, value, global_step)
        if iteration % args.metrics_every == 0 or iteration == num_iterations:
            for net_name, net in networks.items():
                metrics = plasticity_metrics(net, b_obs[:2048], args.dormant_threshold, initial_networks[net_name])
                for key, value in {**metrics, "grad_norm": last[f"{net_name}_grad_norm"].item()}.items():
                    writer.add_scalar(f"plasticity/{net_name}_{key}", value, global_step)
            policy_entropy = (agent.actor_logstd + 0.5 + LOG_SQRT_2PI).sum()  # the Gaussian's, any state
            writer.add_scalar("plasticity/policy_entropy", policy_entropy.item(), global_step)
        mean_return = np.mean(recent_returns) if recent_returns else float("nan")
        eta = (args.total_timesteps - global_step) / max(sps, 1)
        print(f"step {global_step:>11,}/{args.total_timesteps:,} | update {iteration}/{num_iterations} | "
              f"SPS {sps:,} | return {mean_return:9.1f} | ETA {eta / 60:6.1f} min", flush=True)

        if iteration % args.checkpoint_every == 0 or iteration == num_iterations or interrupt.requested:
            progress = {"global_step": global_step, "iteration": iteration, "next_obs": next_obs,
                        "recent_returns": list(recent_returns)}
            save(run_dir, args, envs, saved, **progress)
        if interrupt.requested:
            print(f"stopped at step {global_step:,}; continue with: python {os.path.basename(__file__)} "
                  f"--resume {run_dir}")
            break

    envs.close()
    writer.close()  # with --track, W&B finishes the run at exit


# ---- Run plumbing, not the method; the same in every training file (validate_args apart from its own arguments):
# ---- validation, checkpoint and resume, interrupt, the fast path (--compile, --cudagraphs), plasticity metrics


def validate_args(args: Args) -> None:
    """Check every argument before any env, network or directory is made; exit 2 with all problems."""
    batch = args.num_envs * args.num_steps  # one rollout; the checks against it wait for valid counts
    counts_ok = args.num_envs >= 1 and args.num_steps >= 1
    fits = counts_ok and args.total_timesteps >= batch
    errors = out_of_bounds(args, [
        (">= 1", ("num_envs", "num_steps", "update_epochs", "hidden_dim", "hidden_layers")),
        ("> 0", ("learning_rate", "clip_coef", "max_grad_norm", "target_kl")),
        (">= 0", ("ent_coef", "vf_coef")),
        ("in [0, 1]", ("gae_lambda",)),
        ("in (0, 1]", ("gamma",)),
    ]) + [message for ok, message in [
        (not counts_ok or args.total_timesteps >= batch, f"--total-timesteps {args.total_timesteps} must be at "
                                                         f"least one rollout (--num-envs x --num-steps = {batch})"),
        (not fits or 1 <= args.minibatch_size <= batch and batch % args.minibatch_size == 0,
         f"--minibatch-size {args.minibatch_size} must divide the rollout --num-envs x --num-steps = {batch}"),
    ] if not ok] + run_errors(args)
    if errors:
        sys.exit("error: " + "\nerror: ".join(errors))


def start_run():
    """Checked arguments (with --resume, the run's own), seeds, threads, determinism, the run directory and its
    TensorBoard writer (and W&B): (args, the checkpoint to resume or None, run dir, device, writer)."""
    args = tyro.cli(Args)
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    args = resumed_args(args, checkpoint["args"]) if checkpoint else args
    validate_args(args)
    run_dir = args.resume or os.path.join(
        args.run_dir, f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.cuda and args.torch_deterministic:  # cuBLAS needs this for deterministic matmuls
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(args.threads or min(4, os.cpu_count() or 1))
    os.makedirs(run_dir, exist_ok=True)
    if args.track:  # before the SummaryWriter, so that W&B syncs its event files (as CleanRL)
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=os.path.basename(run_dir), save_code=True, mode=wandb_mode())
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
        f"|{k}|{v}|" for k, v in vars(args).items()))
    return args, checkpoint, run_dir, torch.device("cuda" if args.cuda else "cpu"), writer


RULES = {">= 1": lambda v: v >= 1, "> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0,
         "in [0, 1]": lambda v: 0 <= v <= 1, "in (0, 1]": lambda v: 0 < v <= 1}


def out_of_bounds(args, bounds):
    """A one-line message per argument outside its bound; bounds: [(a rule of RULES, argument names)]. None (an
    unset Optional) passes, NaN fails every rule."""
    return [f"--{name.replace('_', '-')} {getattr(args, name)} must be {rule}" for rule, names in bounds
            for name in names if getattr(args, name) is not None and not RULES[rule](getattr(args, name))]


def run_errors(args):
    """The problems of the arguments every training file has: seed, periods, run directory, device, video, W&B, env."""
    run_dir_flag, run_dir = ("--resume", args.resume) if args.resume else ("--run-dir", args.run_dir)
    errors = out_of_bounds(args, [(">= 1", ("checkpoint_every", "metrics_every", "video_every")),
                                  (">= 0", ("threads",)), ("> 0", ("friction_period",)),
                                  ("in [0, 1]", ("dormant_threshold",))])
    errors += [message for ok, message in [
        (0 <= args.seed < 2**31, f"--seed {args.seed} must be in [0, 2**31)"),
        (directory_problem(run_dir) is None, f"{run_dir_flag} {run_dir}: {directory_problem(run_dir)}"),
        (not args.cuda or torch.cuda.is_available(), "--cuda was given but torch sees no CUDA GPU "
         "(torch.cuda.is_available() is False); install a CUDA build of torch or drop --cuda"),
        (args.cuda or not args.cudagraphs, "--cudagraphs needs --cuda (CUDA graphs run on a CUDA GPU only)"),
    ] if not ok]
    if args.capture_video:  # an OpenGL backend, chosen before MuJoCo or dm_control is imported (validate_env_id)
        try:
            choose_gl_backend("--capture-video")
        except ValueError as e:
            errors.append(str(e))
    if args.track:
        try:
            import wandb  # noqa: F401
        except ImportError as e:
            errors.append(f"--track needs wandb, which cannot be imported ({describe(e)}): pip install wandb")
    try:
        validate_env_id(args.env_id)
    except ValueError as e:
        errors.append(f"--env-id: {e}")
    return errors


def directory_problem(path):
    """Why a run cannot write in the directory `path` (made when missing); None when it can."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def wandb_mode():
    """W&B's mode for --track: WANDB_MODE if set; else online when W&B has an API key (WANDB_API_KEY or `wandb
    login`'s ~/.netrc) and its server answers within 3 s, else offline to ./wandb: never waits on a network."""
    import netrc
    import socket

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    try:  # the network is asked only when there is a key to use it with
        if os.environ.get("WANDB_API_KEY") or netrc.netrc().authenticators("api.wandb.ai"):
            socket.create_connection(("api.wandb.ai", 443), timeout=3).close()
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    print("--track: no W&B API key (wandb login) or no answer from its server; logging offline to ./wandb "
          "(upload later with `wandb sync`; WANDB_MODE chooses)")
    return "offline"


def describe(error):
    """An exception in a few words for a one-line message: its type and first sentence."""
    return f"{type(error).__name__}: {' '.join(str(error).split()).split('. ')[0]}"


CHECKPOINT_FORMAT = 1  # the checkpoint's layout; bump it when that changes, so an older run is refused in one line
# Arguments that may differ from the run's on --resume (none changes the method): the value given replaces the saved
# one; any other given must equal the run's. --cuda is always this command's: the device belongs to the machine.
RESUME_MAY_CHANGE = ("total_timesteps", "cuda", "threads", "async_envs", "checkpoint_every", "save_buffer", "log_every",
                     "metrics_every", "compile", "cudagraphs", "resume", "run_dir", "capture_video", "video_every",
                     "track", "wandb_project_name", "wandb_entity")


def save(run_dir, args, envs, objects, **progress):
    """Write the run's checkpoint: the state_dict() of `objects` by name, the loop's `progress`, env and RNG states."""
    save_checkpoint(os.path.join(run_dir, "checkpoint.pt"), {
        "script": os.path.basename(__file__), "format": CHECKPOINT_FORMAT, "args": dataclasses.asdict(args),
        **progress, **{name: obj.state_dict() for name, obj in objects.items()}, "env_state": get_env_state(envs),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if args.cuda else None}})


def save_checkpoint(path, state):
    """Write path + ".tmp", check that it reads back, keep the checkpoint before it as checkpoint.prev.pt,
    then rename: a crash, a kill or a full disk at any point leaves a readable checkpoint to resume."""
    tmp = path + ".tmp"
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        torch.load(tmp, map_location="cpu", weights_only=False, mmap=True)  # fails unless written whole
    except Exception as e:  # a full disk, a lost mount: stop, the last checkpoint is intact
        if os.path.exists(tmp):
            os.remove(tmp)
        sys.exit(f"error: could not write the checkpoint {tmp} ({describe(e)}); "
                 f"the last one, {path}, is intact: free space and continue with --resume {os.path.dirname(path)}")
    if os.path.exists(path):
        os.replace(path, path[: -len(".pt")] + ".prev.pt")
    os.replace(tmp, path)


def restore(checkpoint, objects, envs, cuda):
    """Load what `save` wrote into `objects`, the envs and the random generators (the caller reads the progress)."""
    for name, obj in objects.items():
        obj.load_state_dict(checkpoint[name])
    set_env_state(envs, checkpoint["env_state"])
    random.setstate(checkpoint["rng"]["python"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if cuda and checkpoint["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


def load_checkpoint(run_dir, mmap=False):
    """The run's checkpoint.pt, or (with a warning) checkpoint.prev.pt when that is missing or unreadable; exits in one
    line when neither reads or it is another file's, format's or version's. mmap: memory-map its tensors."""
    script, latest, problem = os.path.basename(__file__), os.path.join(run_dir, "checkpoint.pt"), None
    for path in (latest, os.path.join(run_dir, "checkpoint.prev.pt")):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        except FileNotFoundError:
            continue
        except Exception as e:  # truncated (a full disk, a copy cut short), not a torch file: try the one before
            problem = problem or f"{path} is unreadable, truncated or not a checkpoint ({describe(e)})"
            continue
        header = checkpoint if isinstance(checkpoint, dict) else {}
        other = sorted({f.name for f in dataclasses.fields(Args)} ^ set(header.get("args", ())))
        refusal = next((why for wrong, why in [
            ("script" not in header or "format" not in header, f"is not a checkpoint of {script}: it names no file"),
            (header.get("script") != script, f"was written by {header.get('script')}, not {script}"),
            (header.get("format") != CHECKPOINT_FORMAT,
             f"has checkpoint format {header.get('format')}, this {script} reads format {CHECKPOINT_FORMAT}"),
            (other, f"is from a version of {script} with other arguments "
                    f"({', '.join('--' + n.replace('_', '-') for n in other)})"),
        ] if wrong), None)
        if refusal:
            how = (f"python {header['script']} --resume {run_dir}" if header.get("script", script) != script
                   else "the version that wrote it, or start a new run")
            sys.exit(f"error: {path} {refusal}; resume it with {how}")
        if path != latest:
            print(f"warning: {problem or f'{latest} is missing'}; resuming from the checkpoint before it, {path}")
        return checkpoint
    sys.exit(f"error: {problem}, and there is no readable checkpoint before it; start a new run" if problem
             else f"error: --resume {run_dir}: no checkpoint.pt in that directory")


def resumed_args(args, saved, argv=None):
    """The run's saved arguments with the command line (argv; None: sys.argv) over them through tyro's default=,
    --cuda this command's. Exits naming both values when it changes an argument outside RESUME_MAY_CHANGE."""
    run = Args(**saved)
    given = tyro.cli(Args, default=run, args=argv)
    differ = [f"--{f.name.replace('_', '-')} {getattr(given, f.name)} (the run has {getattr(run, f.name)})"
              for f in dataclasses.fields(Args) if f.name not in RESUME_MAY_CHANGE
              and getattr(given, f.name) != getattr(run, f.name)]
    if differ:
        may_change = ", ".join(f"--{n.replace('_', '-')}" for n in RESUME_MAY_CHANGE
                               if hasattr(run, n) and n not in ("resume", "run_dir"))
        sys.exit(f"error: --resume {args.resume}: cannot change {', '.join(differ)} on resume; only {may_change} "
                 "may change: leave the others out, or start a new run without --resume")
    return dataclasses.replace(given, cuda=args.cuda)


class GracefulInterrupt:
    """First Ctrl-C or SIGTERM (`kill`, a scheduler's time limit): finish the current update, checkpoint, exit.
    Again, a second or more later: stop at once (Slurm's time limit sends SIGTERM twice at once: one request)."""

    def __init__(self):
        self.requested = 0.0  # time.monotonic() of the first request; 0: none
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested and time.monotonic() - self.requested > 1.0:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = time.monotonic()
            print(f"\n{signal.Signals(signum).name}: finishing this update, then writing a checkpoint "
                  "(send it again to stop at once)", flush=True)


def fast_path(fn, args):
    """fn (tensors in; a tensor, or a tuple or dict of them, out) as --compile and --cudagraphs ask: fn itself without
    them (eager is the reference) or when fn.keep_eager (CBP's PPO step, read through forward hooks). --cudagraphs:
    each call copies its inputs into the graph's own; the first two run fn on a side stream (warm-up, compilation),
    the third records it, later ones replay it and return a copy of its outputs. A graph works on the addresses that
    parameters, Adam moments and buffers had when recorded: all are updated in place (resets too), never reassigned."""
    if getattr(fn, "keep_eager", False):
        return fn
    if args.compile:
        fn = torch.compile(fn)
    if not args.cudagraphs:
        return fn
    graph, static_inputs, static_output, warmup_calls = torch.cuda.CUDAGraph(), [], [], [2]

    def replay(*inputs):
        if not static_inputs:
            static_inputs.extend(torch.empty_like(x, memory_format=torch.contiguous_format) for x in inputs)
        for static, x in zip(static_inputs, inputs):
            static.copy_(x)
        if warmup_calls[0]:  # on the graph's own input tensors, so that the recording compiles nothing new
            warmup_calls[0] -= 1
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                output = fn(*static_inputs)
            torch.cuda.current_stream().wait_stream(stream)
            return output
        if not static_output:
            with torch.cuda.graph(graph):
                static_output.append(fn(*static_inputs))
        graph.replay()
        return torch.utils._pytree.tree_map(torch.clone, static_output[0])

    return replay


SRANK_DELTA = 0.01  # effective rank: the singular values that hold 1 - delta of their sum (Kumar et al. 2021)
ACTIVE_SLOPE = 0.01  # FAU: a neuron is active on an input where its activation's slope there exceeds this


def effective_rank(features, delta=SRANK_DELTA):
    """srank_delta (Kumar et al. 2021) of (batch, neurons) features: the fewest singular values holding 1 - delta."""
    singular = torch.linalg.svdvals(features)
    if singular.sum() <= 0:
        return 0
    return int((singular.cumsum(0) < (1 - delta) * singular.sum()).sum()) + 1


def active_fraction(h, activation):
    """FAU: share of (input, neuron) pairs of hidden output h with slope > ACTIVE_SLOPE (ReLU h > 0; tanh 1 - h^2)."""
    slope = (h > 0).float() if isinstance(activation, nn.ReLU) else 1 - h.square()
    return (slope > ACTIVE_SLOPE).float().mean().item()


@torch.no_grad()
def plasticity_metrics(net, obs, dormant_threshold, initial):
    """Plasticity metrics of an MLP (Sequential of Linear and activation layers) on a batch (docs/metrics.md): per
    hidden layer and overall, ReDo dormant ratio, activation norm (mean L2), FAU, effective rank (overall: the last
    hidden layer's); per Linear layer and overall, weight magnitude (mean |w|) and L2 distance from `initial`."""
    out, h, dormant, neurons, act_norms, hidden, active = {}, obs, 0, 0, [], 0, 0.0
    for layer in net:
        h = layer(h)
        if not isinstance(layer, nn.Linear):
            mean_abs = h.abs().mean(0)
            score = mean_abs / (mean_abs.mean() + 1e-9)
            layer_dormant = int((score <= dormant_threshold).sum())
            out[f"dormant_ratio/layer{hidden}"] = layer_dormant / h.shape[1]
            out[f"fau/layer{hidden}"] = active_fraction(h, layer)
            out[f"effective_rank/layer{hidden}"] = out["effective_rank"] = effective_rank(h)
            act_norms.append(h.norm(dim=1).mean().item())
            active += out[f"fau/layer{hidden}"] * h.shape[1]
            dormant, neurons, hidden = dormant + layer_dormant, neurons + h.shape[1], hidden + 1
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, (m, m0) in enumerate(zip(linears, [m for m in initial if isinstance(m, nn.Linear)])):
        out[f"weight_magnitude/layer{i}"] = m.weight.abs().mean().item()
        out[f"weight_distance/layer{i}"] = (m.weight - m0.weight).norm().item()
    params = list(net.parameters())
    out["dormant_ratio"], out["fau"] = dormant / neurons, active / neurons
    out["activation_norm"] = sum(act_norms) / len(act_norms)
    out["weight_magnitude"] = (sum(p.abs().sum() for p in params) / sum(p.numel() for p in params)).item()
    out["weight_distance"] = sum((p - p0).square().sum() for p, p0 in zip(params, initial.parameters())).sqrt().item()
    return out


if __name__ == "__main__":
    main()
