"""SAC with Sustainable Backup Propagation (SBP; docs/algorithms/sac_sbp.md), the paper's Appendix A.5 and Table 6.
CleanRL-style SAC (sac_continuous_action.py: twin Q networks with Polyak-averaged targets, a tanh-squashed Gaussian
actor with state-dependent log-std, automatic entropy tuning, delayed policy updates) plus SBP on the actor. Every
--reset-frequency environment steps:
  1. copy the actor to a frozen teacher;
  2. reset --reset-rate of the neurons of every hidden layer of the actor (input weights and bias re-drawn from the
     layer's initialiser, Adam moments kept unless --reset-adam, as in p3o_continuous.py): --reset cycle walks a
     pointer round the layer as p3o_continuous.py does; --reset redo takes the lowest ReDo scores (mean |activation| /
     layer mean) on a sample of the replay buffer and also zeroes the neurons' outgoing weights (as ReDo does);
  3. --inner-distill: with the reset neurons frozen, train the rest of the actor to match the teacher's pre-squash
     Gaussian with alpha*KL(teacher||student) + (1-alpha)*KL(student||teacher) on --distill-samples observations drawn
     from the replay buffer, until its mean is <= tau.
The critics are neither reset nor distilled. `--reset none` is plain SAC, so one file runs every curve of Fig. 23:

    python sac_sbp.py --env-id Hopper-v5 --reset none            # SAC
    python sac_sbp.py --env-id Hopper-v5 --reset cycle           # SAC + SBP (cycle + distillation)
    python sac_sbp.py --env-id Hopper-v5 --reset redo            # SAC + ReDo + distillation
    python sac_sbp.py --env-id Hopper-v5 --reset cycle --no-inner-distill

How it differs from CleanRL's sac_continuous_action.py: docs/algorithms/sac_sbp.md; metrics: docs/metrics.md;
--resume: docs/checkpoints.md."""

import copy
import dataclasses
import functools
import math
import os
import random
import signal
import sys
import time
import types
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
    cuda: bool = False  # run the networks and the replay buffer on a CUDA GPU; an error if none is present
    compile: bool = False
    """torch.compile the hot paths (action, critic, actor and distillation steps; docs/performance.md)"""
    cudagraphs: bool = False  # replay the hot paths as CUDA graphs (needs --cuda): with --compile, the fast GPU path
    threads: int = 0  # torch CPU threads; 0 means min(4, number of cores)
    run_dir: str = "runs"  # folder under which each run writes runs/<run name>/ (TensorBoard events, checkpoint)
    resume: Optional[str] = None  # a run directory to continue from its checkpoint and arguments (docs/checkpoints.md)
    checkpoint_every: int = 100_000  # checkpoint every this many env steps (and at the end, on Ctrl-C and SIGTERM)
    save_buffer: bool = True
    """keep the replay buffer in the checkpoint (1M Humanoid-v5 transitions: about 1.5 GB), so --resume continues
    exactly; without it a resumed run starts from an empty buffer, acts with its current policy and updates again
    once --learning-starts new transitions are in it (not the same run as an uninterrupted one)"""
    log_every: int = 1_000  # log losses every this many environment steps
    metrics_every: int = 5_000  # log plasticity metrics and print the progress line every this many environment steps
    dormant_threshold: float = 0.1  # a neuron is dormant when its ReDo score (mean |activation| / layer mean) <= this
    capture_video: bool = False  # record env 0's episodes to <run>/videos and TensorBoard; needs OpenGL (docs/watch.md)
    video_every: int = 100_000  # with --capture-video: record the first episode after every this many env steps
    track: bool = False  # also log to Weights & Biases; offline to ./wandb without a key or network (docs/watch.md)
    wandb_project_name: str = "sustainable-plasticity"  # the Weights & Biases project of --track
    wandb_entity: Optional[str] = None  # the Weights & Biases team or user of --track (default: your default entity)

    # Environment
    env_id: str = "Hopper-v5"  # MuJoCo id (Hopper-v5), 'dm_control/<domain>-<task>' or 'cyclefriction/<MuJoCo id>'
    num_envs: int = 1
    """number of parallel environments (CleanRL's SAC: 1); each vector step is followed by num_envs gradient updates,
    so there is one update per environment step"""
    async_envs: bool = False  # step the environments in worker processes (worth it with many cores)
    friction_period: int = 1_000_000  # Cycle Friction only: env steps between friction changes (4, 3, 2, 1, 2, 3, ...)

    # SAC (defaults: CleanRL's sac_continuous_action.py; buffer size: the paper's Table 6)
    total_timesteps: int = 1_000_000  # total environment steps of the run (over all envs)
    buffer_size: int = 1_000_000  # replay buffer capacity in transitions (the paper's Table 6: 1 million)
    gamma: float = 0.99  # discount factor (CleanRL)
    tau: float = 0.005  # Polyak coefficient of the target Q networks (CleanRL)
    batch_size: int = 256  # minibatch size of every update, sampled from the replay buffer (CleanRL)
    learning_starts: int = 5_000  # environment steps of uniformly random actions before the first update (CleanRL)
    policy_lr: float = 3e-4  # Adam learning rate of the actor (CleanRL)
    q_lr: float = 1e-3  # Adam learning rate of the Q networks and of the entropy temperature (CleanRL)
    policy_frequency: int = 2
    """every this many updates, do this many actor (and temperature) updates (CleanRL's delayed policy update, the
    same number of actor updates as critic updates)"""
    target_network_frequency: int = 1  # Polyak-update the target Q networks every this many updates (CleanRL)
    alpha: float = 0.2  # entropy coefficient when --no-autotune (CleanRL)
    autotune: bool = True  # tune the entropy coefficient towards the target entropy -action_dim (CleanRL)
    log_std_min: float = -5.0  # lower bound of the actor's log-std (CleanRL, from SpinUp / Denis Yarats)
    log_std_max: float = 2.0  # upper bound of the actor's log-std (CleanRL)

    # Networks (CleanRL's SAC: two hidden layers of 256, ReLU, PyTorch's default initialisation)
    hidden_dim: int = 256  # width of every hidden layer of actor and Q networks (CleanRL)
    hidden_layers: int = 2  # number of hidden layers of actor and Q networks (CleanRL)
    activation: Literal["relu", "tanh"] = "relu"  # hidden activation of actor and Q networks (CleanRL: relu)

    # SBP (the paper's Table 6; tau and the epoch cap as p3o_continuous.py)
    reset: Literal["none", "cycle", "redo"] = "cycle"
    """neuron reset of the actor: 'none' = plain SAC; 'cycle' = SBP's cycle reset; 'redo' = the lowest ReDo scores on
    a replay-buffer sample, outgoing weights zeroed"""
    inner_distill: bool = True  # after each reset, distil from the pre-reset actor (ignored with --reset none)
    reset_rate: float = 0.01
    """share of each hidden layer's neurons reset per reset (Table 6: 0.01); cycle: a cycle is ceil(1/rate) resets;
    redo: the bottom floor(rate x width) neurons by ReDo score"""
    reset_frequency: int = 10_000  # environment steps between resets (Table 6: 10,000); none before learning starts
    reset_range: float = 1.0  # cycle only: share of each hidden layer the cycle walks (1.0 = whole layer)
    redo_threshold: Optional[float] = None
    """redo only: the original ReDo rule instead of the bottom share: reset every neuron whose score is <= this
    (Sokar et al. use 0.025 to 0.1); off by default, as the paper"""
    reset_adam: bool = False
    """also zero the reset neurons' Adam moments (as ReDo's reference); off by default: under Adam's high step count,
    zeroed moments move the fresh weights 2-4x as far as the others in the next update (docs/algorithms/p3o.md)"""
    distill_alpha: float = 0.8  # alpha of alpha*KL(teacher||student) + (1-alpha)*KL(student||teacher) (Table 6: 0.8)
    distill_samples: int = 8_192  # replay observations for ReDo scores and distillation (Table 6: 8,192)
    distill_tau: float = 0.01  # distil until the mean double KL over the sample is <= tau
    distill_max_epochs: int = 200  # safety cap on distillation epochs per reset; a warning is printed when it is hit


def layer_init(layer):
    """SAC keeps PyTorch's default Linear initialisation (as CleanRL's SAC); a reset re-draws from it."""
    return layer


# ReLU in place: it overwrites the Linear output while that is still in cache (about 4% faster on CPU)
ACTIVATIONS = {"tanh": nn.Tanh, "relu": functools.partial(nn.ReLU, inplace=True)}


def mlp(in_dim, out_dim, args):
    """hidden_layers x (Linear, activation), then a Linear head."""
    layers, dim = [], in_dim
    for _ in range(args.hidden_layers):
        layers += [layer_init(nn.Linear(dim, args.hidden_dim)), ACTIVATIONS[args.activation]()]
        dim = args.hidden_dim
    return nn.Sequential(*layers, layer_init(nn.Linear(dim, out_dim)))


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy. One MLP whose head gives the pre-squash mean and raw
    log-std (CleanRL's fc_mean and fc_logstd side by side); the log-std is bounded with tanh."""

    def __init__(self, obs_dim, act_dim, low, high, args):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, args)
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))
        self.log_std_min, self.log_std_max = args.log_std_min, args.log_std_max

    def forward(self, obs):
        """The pre-squash Gaussian: (mean, log-std)."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, obs):
        """Reparameterised action in the env's bounds and its log-probability (tanh-corrected)."""
        mean, log_std = self(obs)
        noise = torch.randn_like(mean)
        squashed = torch.tanh(mean + log_std.exp() * noise)
        log_prob = (-0.5 * noise.square() - log_std - LOG_SQRT_2PI
                    - torch.log(self.action_scale * (1 - squashed.square()) + 1e-6)).sum(-1)
        return squashed * self.action_scale + self.action_bias, log_prob


class TwinQ(nn.Module):
    """CleanRL's two soft Q networks (observation, action) -> value, two MLPs side by side.
    (One batched (2, in, out) ensemble was no faster on a 2-core CPU: its activations are twice
    the size and spill the 1 MB L2 cache; the cost is in memory traffic, not in op count.)"""

    def __init__(self, in_dim, args, num_q=2):
        super().__init__()
        self.members = nn.ModuleList(mlp(in_dim, 1, args) for _ in range(num_q))

    def forward(self, obs, action):
        """Q values of every member, shape (num_q, batch)."""
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self.members])


class ReplayBuffer:
    """Preallocated replay buffer (on `device`) storing each observation once.

    Rows are env steps, one column per sub-env: row k holds [observation k | reward |
    terminated] where reward and terminated belong to the step that produced observation k,
    and actions[k] is the action taken at observation k. Transition k is therefore
    (obs[k], actions[k], reward[k+1], terminated[k+1], obs[k+1]), except that when the step
    ended the episode, row k+1 holds the next episode's first observation and the true final
    observation is kept aside (`final`, indexed by `end_id[k]`). A truncation stores
    terminated = 0, so the target bootstraps from Q(final observation); a termination stores 1.
    With capacity C transitions per sub-env there are C + 1 rows: the newest row is the current
    observation, whose action is not taken yet.
    """

    def __init__(self, capacity, num_envs, obs_dim, act_dim, device):
        self.rows = capacity // num_envs + 1  # rows per sub-env, one more than transitions
        self.num_envs, self.obs_dim, self.device = num_envs, obs_dim, device
        self.store = torch.zeros((self.rows, num_envs, obs_dim + 2), dtype=torch.float32, device=device)
        self.actions = torch.zeros((self.rows, num_envs, act_dim), dtype=torch.float32, device=device)
        self.end_id = torch.full((self.rows, num_envs), -1, dtype=torch.int64, device=device)
        self.final = torch.zeros((256, obs_dim), dtype=torch.float32, device=device)  # grows on demand
        self.end_id_host = np.full((self.rows, num_envs), -1, dtype=np.int64)
        self.pos = 0  # row of the current observation
        self.size = 0  # transitions per sub-env in the buffer
        self.next_end = 0  # id of the next episode end; ids [oldest_end, next_end) are live
        self.oldest_end = 0
        self._row = np.zeros((num_envs, obs_dim + 2), dtype=np.float32)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (self.store, self.actions, self.end_id, self.final))

    def start(self, obs):
        """Set the current observation (the first one of the run, or after a resume without buffer)."""
        self._row[:, :self.obs_dim] = obs
        self._row[:, self.obs_dim:] = 0
        self.store[self.pos].copy_(torch.from_numpy(self._row))

    def current_obs(self):
        """The current observation of every sub-env, (num_envs, obs_dim), on the device."""
        return self.store[self.pos, :, :self.obs_dim]

    def add(self, action, next_obs, reward, terminated, truncated, final_obs=None):
        """Store one vector step. action: a device tensor or numpy array (num_envs, act_dim);
        final_obs: infos["final_obs"] of a step where some sub-env ended (dense, row i valid
        where terminated[i] or truncated[i])."""
        k, nxt = self.pos, (self.pos + 1) % self.rows
        self.actions[k] = action if isinstance(action, torch.Tensor) else torch.from_numpy(action).to(self.device)
        ended = np.logical_or(terminated, truncated)
        if self.end_id_host[nxt].max() >= 0:  # row nxt (the oldest transition) is overwritten
            self.oldest_end = int(self.end_id_host[nxt].max()) + 1
        ids = np.full(self.num_envs, -1, dtype=np.int64)
        if ended.any():
            count = int(ended.sum())
            if self.next_end + count - self.oldest_end > len(self.final):
                self._grow_final(self.next_end + count - self.oldest_end)
            ids[ended] = np.arange(self.next_end, self.next_end + count)
            slots = torch.from_numpy(ids[ended] % len(self.final)).to(self.device)
            self.final[slots] = torch.from_numpy(np.asarray(final_obs, dtype=np.float32)[ended]).to(self.device)
            self.next_end += count
        if (ids != self.end_id_host[k]).any():
            self.end_id_host[k] = ids
            self.end_id[k] = torch.from_numpy(ids).to(self.device)
        self._row[:, :self.obs_dim] = next_obs
        self._row[:, self.obs_dim] = reward
        self._row[:, self.obs_dim + 1] = terminated
        self.store[nxt].copy_(torch.from_numpy(self._row))
        self.pos = nxt
        self.size = min(self.size + 1, self.rows - 1)

    def _grow_final(self, needed):
        size = max(2 * len(self.final), needed)
        live = torch.arange(self.oldest_end, self.next_end, device=self.device)
        grown = torch.zeros((size, self.obs_dim), dtype=torch.float32, device=self.device)
        grown[live % size] = self.final[live % len(self.final)]
        self.final = grown

    def _flat(self, draw):
        """Flat indices (row * num_envs + sub-env) of the stored transitions numbered draw, oldest
        first: the stored rows are contiguous modulo the ring, and so are their flat indices."""
        oldest = (self.pos - self.size) % self.rows
        return (draw + oldest * self.num_envs) % (self.rows * self.num_envs)

    def transitions(self, flat):
        """(obs, action, reward, next_obs, done) of the transitions at flat indices `flat`."""
        store = self.store.view(-1, self.obs_dim + 2)
        current, following = store[flat], store[(flat + self.num_envs) % len(store)]
        next_obs = following[:, :self.obs_dim]
        if self.next_end > self.oldest_end:  # some transition in the buffer ended an episode
            ends = self.end_id.view(-1)[flat]
            next_obs = torch.where((ends >= 0)[:, None], self.final[ends % len(self.final)], next_obs)
        return (current[:, :self.obs_dim], self.actions.view(-1, self.actions.shape[-1])[flat],
                following[:, self.obs_dim], next_obs, following[:, self.obs_dim + 1])

    def sample(self, n, generator=None):
        """n transitions drawn uniformly with replacement: one random draw, no host sync."""
        draw = torch.randint(self.size * self.num_envs, (n,), device=self.device, generator=generator)
        return self.transitions(self._flat(draw))

    def sample_obs(self, n):
        """n observations of stored transitions, without replacement when the buffer has n."""
        total = self.size * self.num_envs
        draw = (torch.randperm(total, device=self.device)[:n] if total >= n
                else torch.randint(total, (n,), device=self.device))
        return self.store.view(-1, self.obs_dim + 2)[self._flat(draw), :self.obs_dim]

    def state_dict(self):
        filled = self.rows if self.size == self.rows - 1 else self.size + 1  # rows written so far
        return {"store": self.store[:filled].cpu(), "actions": self.actions[:filled].cpu(),
                "end_id": self.end_id_host[:filled].copy(), "final": self.final.cpu(), "pos": self.pos,
                "size": self.size, "next_end": self.next_end, "oldest_end": self.oldest_end}

    def load_state_dict(self, state):
        filled = len(state["store"])
        self.store[:filled] = state["store"].to(self.device)
        self.actions[:filled] = state["actions"].to(self.device)
        self.end_id_host[:filled] = state["end_id"]
        self.end_id[:filled] = torch.from_numpy(state["end_id"]).to(self.device)
        self.final = state["final"].to(self.device)
        self.pos, self.size = state["pos"], state["size"]
        self.next_end, self.oldest_end = state["next_end"], state["oldest_end"]


# ---- SBP: cycle or ReDo reset and inner distillation ----
def cycle_slice(k, reset_rate, width):
    """Neurons [start, end) reset by the k-th reset of a cycle of ceil(1/reset_rate) resets. Boundaries are
    round(k * reset_rate * width) and the last slice ends at width, so one cycle resets every neuron exactly once even
    when reset_rate * width is not whole (256 * 0.01 = 2.56 gives slices of 2 or 3 neurons)."""
    num_slices = math.ceil(1 / reset_rate - 1e-9)
    end = width if k == num_slices - 1 else round((k + 1) * reset_rate * width)
    return round(k * reset_rate * width), end


def hidden_linears(net):
    """The Linear layers of an MLP whose outputs are hidden neurons (all but the head)."""
    return [m for m in net if isinstance(m, nn.Linear)][:-1]


KEEP_ADAM = types.SimpleNamespace(state={})  # an optimiser stand-in with no moments: they are left as they are


def reinit_neurons(layer, rows, optimizer):
    """Re-initialise the input weights and bias of neurons `rows` of `layer` with the layer's
    initialiser and zero their Adam moments in `optimizer` (KEEP_ADAM leaves them as they are)."""
    fresh = layer_init(nn.Linear(layer.in_features, layer.out_features)).to(layer.weight.device)
    with torch.no_grad():
        layer.weight[rows] = fresh.weight[rows]
        layer.bias[rows] = fresh.bias[rows]
    for param in (layer.weight, layer.bias):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0


def cycle_reset(actor_mean, optimizer, k, args):
    """Cycle reset of slice k of every hidden layer (their Adam moments zeroed only with --reset-adam);
    returns [(layer, reset rows)]."""
    frozen = []
    for layer in hidden_linears(actor_mean):
        start, end = cycle_slice(k, args.reset_rate, round(args.reset_range * layer.out_features))
        rows = torch.arange(start, end, device=layer.weight.device)
        reinit_neurons(layer, rows, optimizer if args.reset_adam else KEEP_ADAM)
        frozen.append((layer, rows))
    return frozen


@torch.no_grad()
def redo_scores(net, obs):
    """ReDo score of every hidden neuron of an MLP on `obs`, one tensor per hidden layer: the
    neuron's mean |activation| over the batch divided by the mean of that over its layer."""
    scores, h = [], obs
    for layer in net:
        h = layer(h)
        if not isinstance(layer, nn.Linear):
            mean_abs = h.abs().mean(0)
            scores.append(mean_abs / (mean_abs.mean() + 1e-9))
    return scores


def redo_select(scores, args):
    """Neurons to reset in each layer: the bottom floor(reset_rate x width) by score (ties: lower
    index first), or with --redo-threshold every neuron whose score is <= it."""
    if args.redo_threshold is not None:
        return [torch.nonzero(score <= args.redo_threshold).flatten() for score in scores]
    return [torch.argsort(score, stable=True)[:math.floor(args.reset_rate * len(score) + 1e-9)] for score in scores]


def zero_outgoing(next_layer, rows, optimizer):
    """Set the outgoing weights of neurons `rows` (their columns in the next Linear) to zero and
    zero their Adam moments: the neurons stop feeding the next layer until those weights regrow."""
    with torch.no_grad():
        next_layer.weight[:, rows] = 0
    state = optimizer.state.get(next_layer.weight, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][:, rows] = 0


def redo_reset(net, rows_per_layer, optimizer):
    """ReDo's reset of the selected neurons of every hidden layer: fresh input weights and bias,
    zero outgoing weights, Adam moments of both zeroed in `optimizer` (KEEP_ADAM: left as they are).
    Returns [(layer, reset rows)]."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    frozen = []
    for layer, next_layer, rows in zip(linears, linears[1:], rows_per_layer):
        reinit_neurons(layer, rows, optimizer)
        zero_outgoing(next_layer, rows, optimizer)
        frozen.append((layer, rows))
    return frozen


def gaussian_kl(mean_p, logstd_p, mean_q, logstd_q):
    """KL(p || q) of diagonal Gaussians in closed form, summed over action dimensions."""
    var_p, var_q = (2 * logstd_p).exp(), (2 * logstd_q).exp()
    return (logstd_q - logstd_p + (var_p + (mean_p - mean_q).square()) / (2 * var_q) - 0.5).sum(-1)


def alpha_dkl(mean_t, logstd_t, mean_s, logstd_s, alpha):
    """The paper's Eq. 4 per sample: alpha*KL(teacher||student) + (1-alpha)*KL(student||teacher)."""
    return (alpha * gaussian_kl(mean_t, logstd_t, mean_s, logstd_s)
            + (1 - alpha) * gaussian_kl(mean_s, logstd_s, mean_t, logstd_t))


class InnerDistillation:
    """Inner distillation of the actor into its pre-reset self (pre-squash mean and state-dependent
    log-std).

    snapshot() copies the actor into the teacher just before a reset; calling the object after the
    reset with `sample` (--distill-samples observations) distils the teacher into the actor on them
    with the alpha-DKL, in minibatches of --batch-size, epoch after epoch (at least one) until the
    mean loss over the sample is <= tau or the epoch cap is hit. The `frozen` rows (the reset
    neurons) get zero gradient, and Adam starts each distillation with zero moments (a fresh Adam),
    so a zero-gradient entry moves by exactly 0 and they stay bit-identical. Built once per run:
    the teacher, the sample, the targets, the gradient masks and Adam's state are updated in place,
    as a CUDA graph of the minibatch step would need; the step is compiled on the fast path, not yet
    recorded."""

    def __init__(self, actor, args, obs_dim):
        self.actor, self.args = actor, args
        self.teacher = copy.deepcopy(actor).requires_grad_(False)
        device = actor.action_scale.device
        self.obs = torch.zeros((args.distill_samples, obs_dim), device=device)
        self.target_mean, self.target_logstd = (t.detach() for t in self.teacher(self.obs))
        self.optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr)
        self.keep = {layer: torch.ones(layer.out_features, device=device) for layer in hidden_linears(actor.net)}
        # compiled with --compile, but not recorded as a CUDA graph: on torch 2.11 (H100) its recording
        # failed (cudaErrorStreamCaptureInvalidated) where the PPO and SAC steps' did not
        self.step = fast_path(self.minibatch_step, dataclasses.replace(args, cudagraphs=False))

    def snapshot(self):
        with torch.no_grad():
            for teacher, actor in zip(self.teacher.parameters(), self.actor.parameters()):
                teacher.copy_(actor)

    def loss_on(self, idx):
        mean, logstd = self.actor(self.obs[idx])
        return alpha_dkl(self.target_mean[idx], self.target_logstd[idx], mean, logstd, self.args.distill_alpha).mean()

    def minibatch_step(self, idx):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_on(idx)
        loss.backward()
        for layer, keep in self.keep.items():  # frozen rows: zero gradient
            layer.weight.grad.mul_(keep[:, None])
            layer.bias.grad.mul_(keep)
        self.optimizer.step()
        return loss.detach()

    def __call__(self, sample, frozen):
        """Distil on `sample` after a reset of `frozen` ([(layer, rows)]); returns (epochs, loss
        before, loss after)."""
        args = self.args
        with torch.no_grad():
            self.obs.copy_(sample)
            for keep in self.keep.values():
                keep.fill_(1)
            for layer, rows in frozen:
                self.keep[layer][rows] = 0
            for state in self.optimizer.state.values():  # zero moments and step count: a fresh Adam
                for value in state.values():
                    value.zero_()
            target_mean, target_logstd = self.teacher(self.obs)
            self.target_mean.copy_(target_mean)
            self.target_logstd.copy_(target_logstd)
            loss_start = loss = self.loss_on(slice(None)).item()
        epochs = 0
        while epochs == 0 or (loss > args.distill_tau and epochs < args.distill_max_epochs):
            permutation = torch.randperm(len(self.obs), device=self.obs.device)
            for start in range(0, len(self.obs), args.batch_size):
                self.step(permutation[start:start + args.batch_size])
            epochs += 1
            with torch.no_grad():
                loss = self.loss_on(slice(None)).item()
        if loss > args.distill_tau:
            print(f"warning: distillation hit --distill-max-epochs {args.distill_max_epochs} "
                  f"with loss {loss:.4f} > tau {args.distill_tau}")
        return epochs, loss_start, loss


def reset_statistics(reset_counts):
    """The paper's Table 4 over the reset network's hidden neurons."""
    return {"total_resets": int(reset_counts.sum()), "avg_resets_per_neuron": float(reset_counts.mean()),
            "share_neurons_reset": float((reset_counts > 0).mean())}


def make_sac_updates(actor, qf, qf_target, q_optimizer, actor_optimizer, log_alpha, args):
    """SAC's update steps: temperature() (the entropy coefficient alpha), critic_update(obs,
    actions, rewards, next_obs, dones) on a sampled batch, actor_update(obs)."""
    fixed_alpha = torch.tensor(args.alpha, device=log_alpha.device)
    target_entropy = -float(actor.action_scale.numel())
    actor_params = list(actor.parameters()) + ([log_alpha] if args.autotune else [])

    def temperature():
        return log_alpha.exp().detach() if args.autotune else fixed_alpha

    def critic_update(obs, actions, rewards, next_obs_b, dones):
        """The critic update on a sampled batch. Returns the mean Q of each Q network, their MSE losses and
        the raw gradient norm of each, by name."""
        with torch.no_grad():
            next_actions, next_log_pi = actor.sample(next_obs_b)
            min_q_next = qf_target(next_obs_b, next_actions).amin(0) - temperature() * next_log_pi
            target_q = rewards + (1 - dones) * args.gamma * min_q_next
        q_values = qf(obs, actions)
        q_losses = (q_values - target_q).square().mean(1)  # both Q networks' MSE
        q_optimizer.zero_grad(set_to_none=True)
        q_losses.sum().backward()
        grad_norms = [nn.utils.get_total_norm([p.grad for p in q.parameters()]) for q in qf.members]
        q_optimizer.step()
        q_means, q_losses = q_values.detach().mean(1), q_losses.detach()
        return {"qf1_values": q_means[0], "qf2_values": q_means[1], "qf1_loss": q_losses[0], "qf2_loss": q_losses[1],
                "critic_grad_norm": grad_norms[0], "critic2_grad_norm": grad_norms[1]}

    def actor_update(obs):
        """One actor and temperature update on the sampled observations. Returns the actor loss, the
        temperature loss and the actor's raw gradient norm, by name."""
        pi, log_pi = actor.sample(obs)
        actor_loss = (temperature() * log_pi - qf(obs, pi).amin(0)).mean()
        # temperature loss on the same sample (the SAC authors' and SB3's order; CleanRL draws a
        # second sample after the actor step)
        alpha_loss = (-log_alpha.exp() * (log_pi.detach() + target_entropy)).mean()
        loss = actor_loss + alpha_loss if args.autotune else actor_loss
        actor_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=actor_params)  # no gradients for the Q networks' weights: not needed
        grad_norm = nn.utils.get_total_norm([p.grad for p in actor.parameters()])
        actor_optimizer.step()
        return {"actor_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(), "actor_grad_norm": grad_norm}

    return temperature, critic_update, actor_update


def main():
    args, checkpoint, run_dir, device, writer = start_run()
    start_step = checkpoint["global_step"] if checkpoint else 0
    envs, next_obs = make_env(args.env_id, args.num_envs, args.seed, normalize=False, gamma=args.gamma,
                              async_envs=args.async_envs, friction_period=args.friction_period,
                              start_step=start_step, video_every=args.video_every,
                              video_dir=os.path.join(run_dir, "videos") if args.capture_video else None)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    low, high = envs.single_action_space.low, envs.single_action_space.high
    actor = Actor(obs_dim, act_dim, low, high, args).to(device)
    qf = TwinQ(obs_dim + act_dim, args).to(device)
    qf_target = copy.deepcopy(qf).requires_grad_(False)
    # step 0's weights, for plasticity/*_weight_distance; on --resume too (same seed, same init)
    initial_networks = {"actor": copy.deepcopy(actor.net), "critic": copy.deepcopy(qf.members[0]),
                        "critic2": copy.deepcopy(qf.members[1])}
    q_params, target_params = list(qf.parameters()), list(qf_target.parameters())
    # one fused kernel per step; CUDA graphs take the capturable (multi-tensor) Adam instead
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.q_lr, fused=not args.cudagraphs,
                                   capturable=args.cudagraphs)
    # the temperature (log alpha, learning rate --q-lr) shares the actor's optimizer and backward pass:
    # Adam is per parameter, so this is the same as CleanRL's separate optimizers, with one step less
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    actor_optimizer = torch.optim.Adam([{"params": list(actor.parameters())}]
                                       + ([{"params": [log_alpha], "lr": args.q_lr}] if args.autotune else []),
                                       lr=args.policy_lr, fused=not args.cudagraphs, capturable=args.cudagraphs)
    rb = ReplayBuffer(args.buffer_size, args.num_envs, obs_dim, act_dim, device)

    saved = {"actor": actor, "qf": qf, "qf_target": qf_target, "actor_optimizer": actor_optimizer,
             "q_optimizer": q_optimizer}  # in a checkpoint, beside the loop's progress
    global_step, updates, recent_returns = 0, 0, deque(maxlen=20)
    sbp = {"reset_index": 0, "next_reset": args.reset_frequency, "resets": 0, "distill_epochs": 0,
           "reset_seconds": 0.0, "reset_counts": np.zeros((args.hidden_layers, args.hidden_dim), dtype=np.int64)}
    if checkpoint:
        restore(checkpoint, saved, envs, args.cuda)
        with torch.no_grad():
            log_alpha.copy_(checkpoint["log_alpha"])
        next_obs, global_step, updates = checkpoint["next_obs"], checkpoint["global_step"], checkpoint["updates"]
        recent_returns.extend(checkpoint["recent_returns"])
        sbp = checkpoint["sbp"]
        if checkpoint["replay_buffer"] is not None:
            rb.load_state_dict(checkpoint["replay_buffer"])
        else:
            rb.start(next_obs)
            print(f"resuming without a replay buffer: updates continue after {args.learning_starts:,} new steps")
        print(f"resumed {run_dir} at step {global_step:,} (update {updates:,})")
    else:
        rb.start(next_obs)
    temperature, critic_update, actor_update = make_sac_updates(actor, qf, qf_target, q_optimizer, actor_optimizer,
                                                                log_alpha, args)

    sbp_name = args.reset + (" + inner distillation" if args.reset != "none" and args.inner_distill else "")
    print(f"run {run_dir} | {args.env_id} | device {device} | reset {sbp_name} | "
          f"replay buffer {rb.nbytes() / 2**30:.2f} GiB for {args.buffer_size:,} transitions")

    policy_step = fast_path(lambda obs: actor.sample(obs)[0], args)
    critic_step, actor_step = fast_path(critic_update, args), fast_path(actor_update, args)
    distiller = InnerDistillation(actor, args, obs_dim) if args.reset != "none" and args.inner_distill else None

    def sac_update():
        """One critic update; every policy_frequency-th, that many actor and temperature updates."""
        nonlocal updates
        updates += 1
        batch = rb.sample(args.batch_size)
        out = critic_step(*batch)
        if updates % args.policy_frequency == 0:  # CleanRL's delayed update, compensated
            for _ in range(args.policy_frequency):
                out.update(actor_step(batch[0]))
        if updates % args.target_network_frequency == 0:
            with torch.no_grad():
                torch._foreach_lerp_(target_params, q_params, args.tau)  # Polyak: target += tau (q - target)
        return out

    interrupt = GracefulInterrupt()
    start_time, steps_at_start = time.time(), global_step
    learn_start = None  # (wall time, step, CPU time) after this process's first three updates
    last = {}

    def crossed(every):
        return global_step // every != (global_step - args.num_envs) // every

    while global_step < args.total_timesteps:
        # ---- Act: random actions before --learning-starts, then the policy ----
        if global_step < args.learning_starts:
            action = np.random.uniform(low, high, (args.num_envs, act_dim)).astype(np.float32)
            env_action = action
        else:
            with torch.inference_mode():
                action = policy_step(rb.current_obs())
            env_action = action.cpu().numpy()
        next_obs, reward, terminations, truncations, infos = envs.step(env_action)
        rb.add(action, next_obs, reward, terminations, truncations, infos.get("final_obs"))
        global_step += args.num_envs
        if "_episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                recent_returns.append(float(infos["episode"]["r"][i]))
                writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
        if "video" in infos:  # --capture-video: env 0's episode that just ended
            log_video(writer, "videos/env0", infos["video"], global_step)

        # ---- Learn: one update per environment step ----
        learning = rb.size * args.num_envs >= max(args.learning_starts, 1)
        if learning:
            for _ in range(args.num_envs):
                last.update(sac_update())
            if updates >= 3:  # timed from here on: the fast path compiles and records in the first three updates
                learn_start = learn_start or (time.time(), global_step, time.process_time())

        finished = global_step >= args.total_timesteps
        # ---- Logging and NaN guard: stop before anything non-finite reaches a checkpoint ----
        if learning and (crossed(args.log_every) or crossed(args.checkpoint_every) or finished
                         or interrupt.requested):
            losses = {name: last[name] for name in ("qf1_values", "qf2_values", "qf1_loss", "qf2_loss", "actor_loss")
                      + ("alpha_loss",) * args.autotune if name in last}  # the actor's after its first update
            losses["qf_loss"] = torch.stack([last["qf1_loss"], last["qf2_loss"]]).mean()
            bad = [f"loss {k}" for k, v in losses.items() if not torch.isfinite(v)]
            for net_name, net in (("actor", actor), ("qf", qf)):
                bad += [f"{net_name} parameter {k}" for k, p in net.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                sys.exit(f"error: non-finite values at step {global_step:,} in: {', '.join(bad)}. The last good "
                         f"checkpoint is in {run_dir}; resume it with a smaller --q-lr / --policy-lr.")
            for name, value in losses.items():
                writer.add_scalar(f"losses/{name}", value.item(), global_step)
            writer.add_scalar("losses/alpha", temperature().item(), global_step)
            sps = int((global_step - steps_at_start) / (time.time() - start_time))
            writer.add_scalar("charts/SPS", sps, global_step)
        if learning and (crossed(args.metrics_every) or finished):
            # a generator of its own, so that logging metrics leaves the run's random stream alone
            generator = torch.Generator(device).manual_seed(args.seed + global_step)
            obs_sample, action_sample = rb.sample(2048, generator)[:2]
            critic_input = torch.cat([obs_sample, action_sample], dim=1)
            # the raw gradient norm of each network's last update (SAC clips nothing)
            for net_name, net, sample in (("actor", actor.net, obs_sample), ("critic", qf.members[0], critic_input),
                                          ("critic2", qf.members[1], critic_input)):
                metrics = plasticity_metrics(net, sample, args.dormant_threshold, initial_networks[net_name])
                if f"{net_name}_grad_norm" in last:
                    metrics["grad_norm"] = last[f"{net_name}_grad_norm"].item()
                for key, value in metrics.items():
                    writer.add_scalar(f"plasticity/{net_name}_{key}", value, global_step)
            with torch.no_grad():  # of the pre-squash Gaussian, averaged over the sampled states
                policy_entropy = (actor(obs_sample)[1] + 0.5 + LOG_SQRT_2PI).sum(-1).mean()
            writer.add_scalar("plasticity/policy_entropy", policy_entropy.item(), global_step)
        if crossed(args.metrics_every) or finished:
            sps = int((global_step - steps_at_start) / (time.time() - start_time))
            mean_return = np.mean(recent_returns) if recent_returns else float("nan")
            eta = (args.total_timesteps - global_step) / max(sps, 1)
            print(f"step {global_step:>11,}/{args.total_timesteps:,} | SPS {sps:,} | "
                  f"return {mean_return:9.1f} | ETA {eta / 60:6.1f} min", flush=True)

        # ---- SBP: every reset_frequency env steps, reset (cycle or ReDo) + inner distillation ----
        if args.reset != "none" and global_step >= sbp["next_reset"]:
            sbp["next_reset"] += args.reset_frequency * math.ceil((global_step + 1 - sbp["next_reset"])
                                                                  / args.reset_frequency)
            if learning:
                reset_start = time.time()
                sample = rb.sample_obs(args.distill_samples)
                if distiller:
                    distiller.snapshot()  # the teacher: the actor before the reset
                if args.reset == "cycle":
                    frozen = cycle_reset(actor.net, actor_optimizer, sbp["reset_index"], args)
                    writer.add_scalar("reset/pointer", sbp["reset_index"] * args.reset_rate, global_step)
                    sbp["reset_index"] = (sbp["reset_index"] + 1) % math.ceil(1 / args.reset_rate - 1e-9)
                else:
                    frozen = redo_reset(actor.net, redo_select(redo_scores(actor.net, sample), args),
                                        actor_optimizer if args.reset_adam else KEEP_ADAM)
                for i, (layer, rows) in enumerate(frozen):
                    sbp["reset_counts"][i, rows.cpu().numpy()] += 1
                writer.add_scalar("reset/neurons_reset", sum(len(rows) for _, rows in frozen), global_step)
                sbp["resets"] += 1
                # distil only after a reset of some neuron (a small layer's cycle slice or the threshold
                # rule may select none)
                if args.inner_distill and any(len(rows) for _, rows in frozen):
                    epochs, loss_start, loss_end = distiller(sample, frozen)
                    sbp["distill_epochs"] += epochs
                    writer.add_scalar("reset/distill_epochs", epochs, global_step)
                    writer.add_scalar("reset/distill_loss_start", loss_start, global_step)
                    writer.add_scalar("reset/distill_loss_end", loss_end, global_step)
                sbp["reset_seconds"] += time.time() - reset_start
                writer.add_scalar("reset/resets", sbp["resets"], global_step)
                writer.add_scalar("reset/total_distill_epochs", sbp["distill_epochs"], global_step)
                writer.add_scalar("reset/seconds", sbp["reset_seconds"], global_step)
                for key, value in reset_statistics(sbp["reset_counts"]).items():
                    writer.add_scalar(f"reset/{key}", value, global_step)

        if crossed(args.checkpoint_every) or finished or interrupt.requested:
            save(run_dir, args, envs, saved, global_step=global_step, updates=updates, next_obs=next_obs,
                 log_alpha=log_alpha.detach().cpu(), recent_returns=list(recent_returns), sbp=sbp,
                 replay_buffer=rb.state_dict() if args.save_buffer else None)
        if interrupt.requested:
            print(f"stopped at step {global_step:,}; continue with: python {os.path.basename(__file__)} "
                  f"--resume {run_dir}")
            break

    if learn_start and global_step > learn_start[1]:
        steps = global_step - learn_start[1]
        print(f"learning phase: {steps / (time.time() - learn_start[0]):.1f} steps/s "
              f"({steps / (time.process_time() - learn_start[2]):.1f} per second of this process's CPU time)")
    envs.close()
    writer.close()  # with --track, W&B finishes the run at exit


# ---- Run plumbing, not the method; the same in every training file (validate_args apart from its own arguments):
# ---- validation, checkpoint and resume, interrupt, the fast path (--compile, --cudagraphs), plasticity metrics



def validate_args(args: Args) -> None:
    """Check every argument before any env, network or directory is made; exit 2 with all problems."""
    errors = out_of_bounds(args, [
        (">= 1", ("num_envs", "batch_size", "policy_frequency", "target_network_frequency", "hidden_dim",
                  "hidden_layers", "reset_frequency", "distill_samples", "distill_max_epochs", "log_every")),
        ("> 0", ("policy_lr", "q_lr", "distill_tau")),
        (">= 0", ("learning_starts", "alpha", "redo_threshold")),
        ("in [0, 1]", ("distill_alpha",)),
        ("in (0, 1]", ("gamma", "tau", "reset_rate", "reset_range")),
    ]) + [message for ok, message in [
        (args.total_timesteps >= args.num_envs, f"--total-timesteps {args.total_timesteps} must be at least "
                                                f"one vector step (--num-envs {args.num_envs})"),
        (args.buffer_size >= 2 * args.num_envs, f"--buffer-size {args.buffer_size} must be >= 2 x --num-envs"),
        (args.buffer_size < 2 * args.num_envs or args.buffer_size >= args.learning_starts,
         f"--buffer-size {args.buffer_size} must be >= --learning-starts {args.learning_starts}, or learning never "
         "starts"),
        (args.log_std_min < args.log_std_max,
         f"--log-std-min {args.log_std_min} must be < --log-std-max {args.log_std_max}"),
        (args.reset != "redo" or not (0 < args.reset_rate <= 1 and args.hidden_dim >= 1)
         or args.redo_threshold is not None or math.floor(args.reset_rate * args.hidden_dim + 1e-9) >= 1,
         f"--reset-rate {args.reset_rate} x --hidden-dim {args.hidden_dim} is below one neuron: no neuron would "
         f"ever be reset; raise --reset-rate to at least {1 / max(args.hidden_dim, 1):.4g} or use --redo-threshold"),
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
