"""reproduce.py: one command per table and figure of the paper, run, resumed and aggregated.

    python reproduce.py list                                   # every experiment and what it runs
    python reproduce.py table1 --budget reduced --envs Hopper-v5 Walker2d-v5
    python reproduce.py table4 --budget reduced --envs Hopper-v5 --dry-run
    python reproduce.py table1 --budget paper --launcher slurm --slurm-partition gpu --slurm-gpus 1

Each run is a subprocess of an unmodified algorithm file (ppo_continuous.py, p3o_continuous.py,
ppo_cbp.py, ppo_redo.py, ppo_cycle.py, sac_sbp.py): the file a user reads is the file that
produced the number. Runs go to a local pool of --workers processes, or to a Slurm job array
through submitit (--launcher slurm). Every configuration has a deterministic directory

    runs/reproduce/<budget>/<algo>__<env>__seed<k>[__<option>=<value>...]/

passed to the file as --run-dir; the file writes its one timestamped run directory inside
(TensorBoard events, checkpoint.pt) and reproduce.py appends the file's output to stdout.log
beside it. A run whose checkpoint has reached the budget's steps is finished and skipped, one
with a checkpoint short of them is continued with --resume, one without a checkpoint is
started (again), or, where the same configuration finished at a shorter budget, extended: that run
copied into its directory and the copy resumed (docs/reproduce.md). The experiment is not part of the directory, so experiments that share a
configuration share its runs (table2, table4 and table5 reuse table1's P3O runs; the
ablations reuse its default runs). Re-running a command after a crash or Ctrl-C loses at most
the updates since the last checkpoint.

Outputs go to results/<experiment>/, file names carrying the budget (smoke, reduced, cycle, paper):
<experiment>_<budget>.md (tables in the paper's layout, ours beside the paper's numbers where
it has them, with the budget and seeds stated), runs_<budget>.csv (one row per run), and PNG
figures (the mean over seeds with its 95% t-interval shaded and every seed as a thin line, one panel per task),
drawn from curves_<budget>.csv (each run's curves, a point per hundredth of its steps), so a table and
its figures can be redrawn from results/ alone (--reuse of its runs CSV).

Definitions used in every table:
- final return of a run: the mean of the last 10% (at least one) of the episodic returns it
  logged (charts/episodic_return), in the order logged;
- a cell: mean [95% t-interval (std with ddof=1)] (n seeds) over the seeds whose runs finished;
- beside it every seed's value, the deterministic evaluation of each final checkpoint (evaluate.py,
  --eval-episodes), Welch's t-test of P3O against each method per task, and across tasks the IQM of
  normalised scores and P3O's probability of improvement with 95% stratified-bootstrap intervals (rliable);
- reset statistics (Table 4): from the checkpoint's per-neuron reset counts of the actor's
  hidden layers: total resets, average resets per neuron, share of neurons reset at least once;
- distillation cost (Tables 2 and 5): the checkpoint's cumulative distillation, PPO and
  recovery-training epochs; per-reset epochs = distillation epochs / resets.
"""

import argparse
import contextlib
import csv
import functools
import importlib
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import evaluate
import p3o_continuous
import ppo_cbp
import sac_sbp
from ppo_continuous import directory_problem

ROOT = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Algorithms: the file and the options that make the method (never the budget)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Algo:
    label: str
    script: str
    args: tuple = ()
    family: str = "ppo"  # "ppo" or "sac": which budget and smoke options apply


ALGOS = {
    "ppo": Algo("PPO", "ppo_continuous.py"),
    "cbp": Algo("PPO+CBP", "ppo_cbp.py"),
    "redo": Algo("PPO+ReDo", "ppo_redo.py"),
    "cycle": Algo("PPO+Cycle", "ppo_cycle.py"),
    "p3o": Algo("P3O", "p3o_continuous.py"),
    "p3o-sum": Algo("P3O, summed KL", "p3o_continuous.py", ("--distill-kl-reduction", "sum")),  # tau's other reading
    "p3o-rt": Algo("P3O recovery training", "p3o_continuous.py", ("--recovery", "train")),
    "p3o-none": Algo("cycle reset, no recovery", "p3o_continuous.py", ("--recovery", "none")),
    "cbp-inds": Algo("PPO+CBP+INDS", "ppo_cbp.py", ("--inner-distill",)),
    "redo-inds": Algo("PPO+ReDo+INDS", "ppo_redo.py", ("--inner-distill",)),
    "cycle-inds": Algo("PPO+Cycle+INDS", "ppo_cycle.py", ("--inner-distill",)),
    "sac": Algo("SAC", "sac_sbp.py", ("--reset", "none"), "sac"),
    "sac-cycle": Algo("SAC+Cycle+INDS (SBP)", "sac_sbp.py", ("--reset", "cycle", "--inner-distill"), "sac"),
    "sac-redo": Algo("SAC+ReDo+INDS", "sac_sbp.py", ("--reset", "redo", "--inner-distill"), "sac"),
}

# ---------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------
# paper: Table 3 gives "1.25e7 / 2e7" training steps without saying which task gets which. Its
# Table 4 (SBP 2,304 = 300 resets x 7.68 neurons averaged over six tasks) and Table 2 (PPO baseline
# 18,310 epochs = 15M steps on average) both fit four tasks at 12.5M and two at 20M; we give 20M to
# the two humanoids. The paper does not state SAC's length: we use 1M (sac_sbp.py's default).
PAPER_LONG_TASKS = ("Humanoid-v5", "HumanoidStandup-v5")
BUDGETS = {
    "smoke": {"ppo": 8192, "sac": 2000, "seeds": 1},
    "reduced": {"ppo": 1_000_000, "sac": 200_000, "seeds": 2},
    "paper": {"ppo": 12_500_000, "sac": 1_000_000, "seeds": 5},
    # one full reset cycle: 1 / reset rate 0.01 = 100 resets x 50,000 steps (PPO), x 10,000 steps (SAC)
    "cycle": {"ppo": 5_000_000, "sac": 1_000_000, "seeds": 2},
}
# ---------------------------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------------------------
MUJOCO = ("Hopper-v5", "HumanoidStandup-v5", "Walker2d-v5", "Ant-v5", "HalfCheetah-v5", "Humanoid-v5")
DMC = ("dm_control/hopper-hop", "dm_control/walker-walk", "dm_control/cheetah-run", "dm_control/humanoid-stand",
       "dm_control/quadruped-run", "dm_control/dog-run")
FRICTION = tuple(f"cyclefriction/{e}" for e in MUJOCO)
SAC_TASKS = ("Hopper-v5", "Walker2d-v5", "Ant-v5", "HalfCheetah-v5")
PPO_METRICS = ("plasticity/actor_weight_magnitude", "plasticity/actor_grad_norm")
# Per reset (P3O family): distillation epochs, the alpha-DKL just after the reset, the policy's std
DISTILL_METRICS = ("reset/distill_epochs", "reset/distill_loss_start", "reset/policy_std")
# the plasticity curves the literature reports: dormant ratio (ReDo), FAU (Ma et al. 2023), effective rank
# (srank, Kumar et al. 2021), weight magnitude and distance from the initial weights, the policy's entropy
PLASTICITY_METRICS = ("plasticity/actor_dormant_ratio", "plasticity/actor_fau", "plasticity/actor_effective_rank",
                      "plasticity/actor_weight_magnitude", "plasticity/actor_weight_distance",
                      "plasticity/policy_entropy")
ALL_METRICS = PLASTICITY_METRICS + ("plasticity/actor_grad_norm", "plasticity/actor_activation_norm",
                                    "plasticity/critic_dormant_ratio", "plasticity/critic_effective_rank") \
    + DISTILL_METRICS
MILESTONES = (1_000_000, 2_500_000, 5_000_000)  # the cycle experiment's columns: the return at these steps
WINDOW = 100_000  # return at step S: mean of the episodic returns logged in (S - 100,000, S]

# The paper's numbers (mean of 5 seeds at its budget), keyed by task name without version.
PAPER_TABLE1 = {
    "Hopper": {"ppo": 3613, "cbp": 3606, "redo": 3828, "cycle": 3280, "p3o": 3735},
    "HumanoidStandup": {"ppo": 144831, "cbp": 143763, "redo": 151254, "cycle": 154323, "p3o": 158361},
    "Walker2d": {"ppo": 5878, "cbp": 5028, "redo": 5594, "cycle": 5743, "p3o": 7402},
    "Ant": {"ppo": 3514, "cbp": 4860, "redo": 3995, "cycle": 3256, "p3o": 5683},
    "HalfCheetah": {"ppo": 4575, "cbp": 5458, "redo": 4962, "cycle": 4843, "p3o": 9065},
    "Humanoid": {"ppo": 972, "cbp": 3307, "redo": 2573, "cycle": 1578, "p3o": 7469},
}
PAPER_TABLE2 = {  # total distillation epochs, per-reset epochs, ratio to PPO epochs (18,310)
    "Hopper": (597.66, 2.39, 0.0327), "HumanoidStandup": (638.19, 2.55, 0.0349),
    "Walker2d": (1536.80, 6.14, 0.0840), "Ant": (7698.40, 30.79, 0.4204),
    "HalfCheetah": (2548.40, 10.19, 0.1392), "Humanoid": (6525.25, 26.10, 0.3564),
}
PAPER_TABLE5_RECOVERY = {"Hopper": 809.75, "HumanoidStandup": 2731.60, "Walker2d": 524.00, "Ant": 700.20,
                         "HalfCheetah": 253.20, "Humanoid": 485.25}
PAPER_TABLE4 = {"cbp": (44208.6, 57.6, 100.0), "redo": (1800.0, 2.3, 22.3), "p3o": (2304.0, 3.0, 100.0)}


@dataclass(frozen=True)
class Variant:
    algo: str
    overrides: tuple = ()  # ((option, value), ...) that differ from the file's defaults
    label: str = ""

    @property
    def name(self):
        return self.label or ALGOS[self.algo].label


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    variants: tuple
    envs: tuple = MUJOCO
    kind: str = "returns"  # returns | distill | recovery | resets | sbp | cycle
    metrics: tuple = ()
    paper_returns: dict = field(default_factory=dict)
    note: str = ""


def _sweep(algo, option, values, default, fmt):
    return tuple(Variant(algo, () if v == default else ((option, str(v)),), fmt(v) + (" (default)" if v == default
                                                                                     else "")) for v in values)


BASELINES = tuple(Variant(a) for a in ("ppo", "cbp", "redo", "cycle", "p3o"))
EXPERIMENTS = {e.name: e for e in [
    Experiment("table1", "Table 1 and Fig. 4-6: PPO and reset strategies on MuJoCo", BASELINES, MUJOCO,
               metrics=PPO_METRICS, paper_returns=PAPER_TABLE1),
    Experiment("dmc", "Fig. 9: reset strategies on DeepMind Control", BASELINES, DMC, metrics=PPO_METRICS,
               note="The paper gives curves only. Below the paper budget this project runs walker-walk, cheetah-run "
                    "and dog-run (--envs): the three whose PPO return rises within 150,000 steps "
                    "(results/dmc/task_choice.md)."),
    Experiment("friction", "Fig. 8: reset strategies on Cycle Friction", BASELINES, FRICTION, metrics=PPO_METRICS,
               note="The paper gives curves only. Friction x 4, 3, 2, 1, 2, ... changing every 1M steps at the "
                    "paper budget, every total/8 steps below it (so a shorter run still sees the cycle), every "
                    "total/7 at the cycle budget (one whole schedule 4, 3, 2, 1, 2, 3, 4)."),
    Experiment("cycle", "Across a full reset cycle: all five methods over 100 resets and one friction schedule",
               BASELINES + (Variant("p3o-sum"),), ("HalfCheetah-v5", "cyclefriction/HalfCheetah-v5"),
               kind="cycle", metrics=PLASTICITY_METRICS,
               note="Run it with --budget cycle: 5M steps (100 resets of P3O, every neuron renewed once) and, on "
                    "Cycle Friction, 3.5M steps with the friction changing every 500,000. 'P3O, summed KL' is P3O "
                    "with --distill-kl-reduction sum, tau's other reading (results/README.md, distillation cost)."),
    Experiment("table2", "Table 2: extra distillation epochs of P3O", (Variant("p3o"),), MUJOCO, kind="distill",
               metrics=DISTILL_METRICS),
    Experiment("table5", "Table 5 and Fig. 21: distillation vs recovery-training epochs",
               (Variant("p3o"), Variant("p3o-rt")), MUJOCO, kind="recovery"),
    Experiment("table4", "Table 4: reset statistics over the actor's hidden neurons",
               (Variant("cbp"), Variant("redo"), Variant("p3o", label="SBP (P3O)")), MUJOCO, kind="resets",
               metrics=("plasticity/actor_weight_magnitude",)),
    Experiment("table6", "Table 6 / Fig. 23-27: SAC with SBP", (Variant("sac"), Variant("sac-cycle"),
                                                                 Variant("sac-redo")), SAC_TASKS, kind="sbp",
               metrics=ALL_METRICS,
               note="The paper gives curves only (Fig. 23); Table 6 is SAC+SBP's configuration, sac_sbp.py's "
                    "defaults: reset frequency 10,000 steps, reset rate 0.01, alpha 0.8, replay buffer 1M, "
                    "distillation samples 8,192."),
    Experiment("fig1", "Fig. 1: PPO with 5 / 10 / 20 / 40 epochs per update",
               _sweep("ppo", "--update-epochs", (5, 10, 20, 40), 10, lambda v: f"{v} epochs"), MUJOCO,
               metrics=PPO_METRICS),
    Experiment("activation", "Ablation A.4.1 (Fig. 11-16): tanh vs ReLU",
               BASELINES + tuple(Variant(v.algo, (("--activation", "relu"),), v.name + " relu") for v in BASELINES),
               MUJOCO, metrics=ALL_METRICS),
    Experiment("alpha", "Ablation 5.3 (Fig. 10): distillation alpha of P3O",
               _sweep("p3o", "--distill-alpha", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), 0.4,
                      lambda v: f"alpha {v}"), MUJOCO),
    Experiment("reset-rate", "Ablation A.4.2 (Fig. 17): reset rate of P3O",
               _sweep("p3o", "--reset-rate", (0.01, 0.05, 0.1, 0.5, 1.0), 0.01, lambda v: f"rate {v}"), MUJOCO,
               note="The paper does not list its values; we sweep 0.01 (default) to 1.0 (whole network)."),
    Experiment("reset-frequency", "Ablation A.4.3 (Fig. 18): reset frequency of P3O",
               _sweep("p3o", "--reset-frequency", (20_000, 40_000, 50_000, 80_000, 100_000), 50_000,
                      lambda v: f"every {v:,}"), MUJOCO),
    Experiment("reset-range", "Ablation A.4.4 (Fig. 19-20): share of the layer the cycle walks",
               _sweep("p3o", "--reset-range", (0.2, 0.5, 0.8, 1.0), 1.0, lambda v: f"range {v}"), MUJOCO,
               metrics=PPO_METRICS),
    Experiment("recovery", "Ablation A.4.5 (Fig. 21): inner distillation vs recovery training",
               (Variant("p3o"), Variant("p3o-rt"), Variant("p3o-none")), MUJOCO, kind="recovery"),
    Experiment("inds", "Ablation A.4.5 (Fig. 22): baselines with inner distillation (INDS)",
               tuple(Variant(a) for a in ("cbp", "cbp-inds", "redo", "redo-inds", "cycle", "cycle-inds")), MUJOCO),
]}
ALIASES = {"sac": "table6"}
GROUPS = {"ablations": ("activation", "alpha", "reset-rate", "reset-frequency", "reset-range", "recovery", "inds")}

# ---------------------------------------------------------------------------------------------
# Budget details: Cycle Friction's length, the smoke budget's scaling
# ---------------------------------------------------------------------------------------------
# cycle budget, Cycle Friction: one whole schedule 4, 3, 2, 1, 2, 3, 4 of 500,000-step periods
CYCLE_FRICTION_PERIODS = 7
CYCLE_FRICTION_PPO_STEPS = 3_500_000
SMOKE_SCALE = 50  # smoke: step-counted schedules (reset frequency, CBP maturity) are the paper's / 50
SMOKE_ARGS = {  # tiny networks and rollouts: a smoke run takes seconds; it checks plumbing, not learning
    "ppo": {"--num-envs": "2", "--num-steps": "256", "--minibatch-size": "128", "--hidden-dim": "32",
            "--metrics-every": "1"},
    "sac": {"--learning-starts": "500", "--batch-size": "64", "--hidden-dim": "32", "--buffer-size": "10000",
            "--distill-samples": "256", "--log-every": "100", "--metrics-every": "500"},
}
SMOKE_EXTRA = {  # ReDo resets floor(rate x width) neurons per layer: 0.01 x 32 is none; 0.0625 x 32 is 2
    "ppo_redo.py": {"--reset-rate": "0.0625"}, "sac_sbp.py": {"--reset-rate": "0.0625"},
}
SMOKE_ROLLOUT = 512  # 2 envs x 256 steps
SCHEDULE_DEFAULTS = {  # the files' defaults of step-counted schedules, scaled down in smoke runs
    "ppo_cycle.py": {"--reset-frequency": p3o_continuous.Args.reset_frequency},
    "p3o_continuous.py": {"--reset-frequency": p3o_continuous.Args.reset_frequency},
    "ppo_redo.py": {"--reset-frequency": p3o_continuous.Args.reset_frequency},
    "ppo_cbp.py": {"--maturity-threshold": ppo_cbp.Args.maturity_threshold},
    "sac_sbp.py": {"--reset-frequency": sac_sbp.Args.reset_frequency},
}


def total_steps(budget, family, env_id, override=None):
    """Environment steps of one run under a budget (or --total-timesteps when given)."""
    if override:
        return int(override)
    if budget == "paper" and family == "ppo" and env_id.split("/")[-1] in PAPER_LONG_TASKS:
        return 20_000_000
    if budget == "cycle" and family == "ppo" and env_id.startswith("cyclefriction/"):
        return CYCLE_FRICTION_PPO_STEPS
    return BUDGETS[budget][family]


def budget_label(budget, override=None):
    """The budget part of the run directories: a different length is a different run."""
    return f"{budget}-{int(override)}" if override else budget


def smoke_value(option, value):
    """A step-counted schedule scaled to the smoke budget (at least one smoke rollout)."""
    return str(max(SMOKE_ROLLOUT, int(float(value)) // SMOKE_SCALE)) if option == "--reset-frequency" \
        else str(max(1, int(float(value)) // SMOKE_SCALE))


# ---------------------------------------------------------------------------------------------
# Planning: configurations, their directories, their state, their commands
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    variant: Variant
    env: str
    seed: int
    total: int
    directory: Path  # the configuration's directory, passed as --run-dir
    args: dict  # option -> value (None for a flag), budget options first, overrides last

    @property
    def name(self):
        return self.directory.name

    @property
    def script(self):
        return ALGOS[self.variant.algo].script


def env_dirname(env_id):
    return env_id.replace("/", "_")


def task_name(env_id):
    """'Hopper' for Hopper-v5 and cyclefriction/Hopper-v5, 'hopper-hop' for dm_control/hopper-hop."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def run_options(variant, env, budget, total):
    """Budget options, then the method's overrides (scaled for smoke); returns (options, overrides used)."""
    algo = ALGOS[variant.algo]
    options = {}
    if budget == "smoke":
        options.update(SMOKE_ARGS[algo.family])
        options.update(SMOKE_EXTRA.get(algo.script, {}))
        for option, default in SCHEDULE_DEFAULTS.get(algo.script, {}).items():
            options[option] = smoke_value(option, default)
    if env.startswith("cyclefriction/") and budget != "paper":
        periods = CYCLE_FRICTION_PERIODS if budget == "cycle" else 8
        options["--friction-period"] = str(max(1, total // periods))
    overrides = []
    for option, value in variant.overrides:
        if budget == "smoke" and option in SCHEDULE_DEFAULTS.get(algo.script, {}):
            value = smoke_value(option, value)
        options[option] = value
        overrides.append((option, value))
    return options, overrides


def config_dirname(variant, env, seed, overrides):
    suffix = "".join(f"__{o.lstrip('-')}={v}" for o, v in overrides)
    return f"{variant.algo}__{env_dirname(env)}__seed{seed}{suffix}"


def plan(experiment, budget, seeds, envs, algos, runs_dir, total_override=None):
    """The runs of an experiment: [Run], and the variants skipped because their file is missing."""
    runs, missing = [], []
    label = budget_label(budget, total_override)
    for variant in experiment.variants:
        if algos and variant.algo not in algos:
            continue
        if not (ROOT / ALGOS[variant.algo].script).is_file():
            missing.append(variant)
            continue
        for env in envs:
            total = total_steps(budget, ALGOS[variant.algo].family, env, total_override)
            options, overrides = run_options(variant, env, budget, total)
            for seed in seeds:
                directory = Path(runs_dir) / label / config_dirname(variant, env, seed, overrides)
                runs.append(Run(variant, env, seed, total, directory, options))
    return runs, missing


CHECKPOINTS = ("checkpoint.pt", "checkpoint.prev.pt")  # a run's latest checkpoint and the one before it


def has_checkpoint(path):
    return any((Path(path) / name).is_file() for name in CHECKPOINTS)


def read_checkpoint(path, script):
    """A run's checkpoint as `script` (the algorithm file that should have written it) reads it to resume:
    the latest, or the one before it when that is missing or unreadable; memory-mapped (a SAC checkpoint
    with its replay buffer is not read whole). Raises ValueError with the file's one line when there is none
    to read, or it is another file's."""
    try:
        return importlib.import_module(Path(script).stem).load_checkpoint(str(path), mmap=True)
    except SystemExit as e:
        raise ValueError(str(e.code).removeprefix("error: ")) from None


def target_steps(total, ckpt_args):
    """The last step a run of `total` steps reaches: PPO runs whole rollouts of num_envs x num_steps."""
    batch = int(ckpt_args.get("num_envs", 1)) * int(ckpt_args.get("num_steps", 1))
    return total - total % batch if total >= batch else total


@dataclass
class State:
    status: str  # done | partial | new | failed
    run_path: Path = None  # the timestamped run directory, when one exists
    step: int = 0
    checkpoint: dict = None
    error: str = None  # failed: the one line saying why (an unreadable checkpoint, another file's)


def run_state(run):
    """done: the checkpoint reached the run's steps; partial: a checkpoint short of them (resume);
    new: no run directory, or one without a checkpoint (the run died before its first one); failed: a
    checkpoint that cannot be read or that another algorithm file wrote."""
    subdirs = sorted(p for p in run.directory.iterdir() if p.is_dir()) if run.directory.is_dir() else []
    with_ckpt = [p for p in subdirs if has_checkpoint(p)]
    if len(with_ckpt) > 1:
        raise SystemExit(f"error: {run.directory} holds {len(with_ckpt)} runs with checkpoints "
                         f"({', '.join(p.name for p in with_ckpt)}); keep one and run again")
    if not with_ckpt:
        return State("new", subdirs[0] if subdirs else None)
    try:
        ckpt = read_checkpoint(with_ckpt[0], run.script)
    except ValueError as e:
        return State("failed", with_ckpt[0], error=str(e))
    step = int(ckpt["global_step"])
    done = step >= target_steps(run.total, ckpt.get("args", {}))
    return State("done" if done else "partial", with_ckpt[0], step, ckpt)


def command(run, state, threads, cuda=False):
    """argv of the run: a fresh start, or --resume of its checkpoint with the budget's steps."""
    cmd = [sys.executable, run.script]
    if state.status == "partial":
        cmd += ["--resume", str(state.run_path), "--total-timesteps", str(run.total)]
    else:
        cmd += ["--env-id", run.env, "--seed", str(run.seed), "--total-timesteps", str(run.total),
                "--threads", str(threads), "--run-dir", str(run.directory),
                "--exp-name", run.variant.algo + "".join(f"_{o.lstrip('-')}-{v}" for o, v in run.variant.overrides)]
        cmd += list(ALGOS[run.variant.algo].args)
        for option, value in run.args.items():
            cmd += [option] if value is None else [option, value]
    if cuda:
        cmd.append("--cuda")
    return cmd


COMMITS_FILE = "commits.txt"  # in a configuration's directory: the code each launch of its run used


@functools.cache
def source_commit():
    """The repository's commit the runs are launched from ('abc1234'), with '+changes' when a tracked
    file differs from it; 'unknown' outside a git checkout."""
    def git(*args):
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short=7", "HEAD")
    if commit is None:
        return "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_commits(directory):
    """The commits a configuration's run was launched (and resumed) from, in order, each once."""
    path = Path(directory) / COMMITS_FILE
    return list(dict.fromkeys(path.read_text().split())) if path.is_file() else []


def prepare(run, state):
    """Before a launch: record the commit it runs (COMMITS_FILE); before a fresh start, move a stale
    run directory without a checkpoint out of the way."""
    run.directory.mkdir(parents=True, exist_ok=True)
    with open(run.directory / COMMITS_FILE, "w" if state.status == "new" else "a") as f:
        f.write(source_commit() + "\n")
    if state.status == "new":
        for stale in (p for p in run.directory.iterdir() if p.is_dir()):
            print(f"removing {stale}: it has no checkpoint (the run stopped before its first one)")
            shutil.rmtree(stale)


EXTENDS_FILE = "extends.txt"  # in a configuration's directory: the shorter run it was copied from and continues


def shorter_run(run):
    """The longest finished run of the same configuration (method, task, seed and options) at a shorter
    budget, in a sibling budget directory of the runs root (runs/reproduce/cycle/<name> for a paper run):
    (its budget label, its State), or None. Nothing in a run depends on its length but where it stops
    (constant learning rate, step-counted schedules), so continuing it to run.total is the longer run."""
    found, root = None, run.directory.parent.parent
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        budget, _, override = label_dir.name.partition("-")
        if label_dir == run.directory.parent or budget not in BUDGETS or (override and not override.isdigit()):
            continue
        total = total_steps(budget, ALGOS[run.variant.algo].family, run.env, override or None)
        if total >= run.total or run_options(run.variant, run.env, budget, total)[0] != run.args:
            continue
        candidate = Run(run.variant, run.env, run.seed, total, label_dir / run.directory.name, run.args)
        state = run_state(candidate) if candidate.directory.is_dir() else State("new")
        if state.status == "done" and (found is None or state.step > found[1].step):
            found = (label_dir.name, state)
    return found


def extended_state(run, source):
    """The State of a run that continues `source` (shorter_run's State): its copy in the run's directory."""
    return State("partial", run.directory / source.run_path.name, source.step, source.checkpoint)


def extend(run, label, source):
    """After prepare: copy the shorter run (checkpoints, TensorBoard events) into the run's directory, so that
    --resume continues the copy and the shorter run's own checkpoint, which its tables and evaluations read,
    stays as it is; its commits come first in the run's COMMITS_FILE."""
    shutil.copytree(source.run_path, run.directory / source.run_path.name)
    commits = run_commits(source.run_path.parent) + run_commits(run.directory)
    (run.directory / COMMITS_FILE).write_text("".join(c + "\n" for c in commits))
    (run.directory / EXTENDS_FILE).write_text(f"{label}/{run.name} {source.step}\n")


def extends_note(directory):
    """'cycle (5,000,000 steps)' for a run that extends the cycle budget's run; '' for any other."""
    path = Path(directory) / EXTENDS_FILE
    if not path.is_file():
        return ""
    source, step = path.read_text().split()
    return f"{source.split('/')[0]} ({int(step):,} steps)"


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------
PROGRESS_RE = re.compile(r"step\s+([\d,]+)\s*/\s*([\d,]+)(?:.*?SPS\s+([\d,]+))?(?:.*?ETA\s+([\d.]+)\s*min)?")


def parse_progress(text):
    """(step, total, sps, eta_min) of the last progress line of an algorithm file's output, or None."""
    for line in reversed(text.splitlines()):
        m = PROGRESS_RE.search(line)
        if m:
            num = lambda s: int(s.replace(",", "")) if s else None  # noqa: E731
            return num(m.group(1)), num(m.group(2)), num(m.group(3)), float(m.group(4)) if m.group(4) else None
    return None


def tail(path, size=4096):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def progress_line(done, total, failed, running, queued=0):
    """running: [(name, log path)]; queued: how many wait in a queue (Slurm)."""
    parts = [f"[{time.strftime('%H:%M:%S')}] {done}/{total} done" + (f", {failed} failed" if failed else "")
             + f", {len(running)} running" + (f", {queued} queued" if queued else "")]
    for name, log in running:
        p = parse_progress(tail(log))
        if p:
            step, total_steps_, sps, eta = p
            parts.append(f"{name} {step:,}/{total_steps_:,}" + (f" SPS {sps:,}" if sps is not None else "")
                         + (f" ETA {eta:.1f} min" if eta is not None else ""))
        else:
            parts.append(f"{name} starting")
    return " | ".join(parts)


def child_env(threads):
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_local(jobs, workers, threads, progress_every=30.0, poll=0.5):
    """Run [(run, argv)] in a pool of `workers` subprocesses, output appended to <config dir>/stdout.log.
    Ctrl-C or SIGTERM is passed on to the runs (each finishes its update and writes a checkpoint).
    Returns failures."""
    pending, running, failed, finished = list(jobs), {}, [], 0
    last_print = 0.0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the pool as Ctrl-C does
    try:
        while pending or running:
            while pending and len(running) < workers:
                run, argv = pending.pop(0)
                log = open(run.directory / "stdout.log", "a")
                log.write(f"\n$ {' '.join(argv)}\n")
                log.flush()
                proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=child_env(threads))
                running[proc] = (run, log)
            time.sleep(poll)
            for proc in [p for p in running if p.poll() is not None]:
                run, log = running.pop(proc)
                log.close()
                finished += 1
                if proc.returncode:
                    failed.append(run)
                    print(f"FAILED ({proc.returncode}) {run.name}; the end of {run.directory / 'stdout.log'}:\n"
                          + "\n".join(tail(run.directory / "stdout.log", 2000).splitlines()[-8:]), flush=True)
                last_print = 0.0
            if time.time() - last_print >= progress_every or not (pending or running):
                print(progress_line(finished - len(failed), len(jobs), len(failed),
                                    [(r.name, r.directory / "stdout.log") for r, _ in running.values()]), flush=True)
                last_print = time.time()
    except KeyboardInterrupt:
        print("\nCtrl-C/SIGTERM: asking the running runs to checkpoint and stop (a second one kills them)",
              flush=True)
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        try:
            for proc in running:
                proc.wait()
        except KeyboardInterrupt:
            for proc in running:
                proc.kill()
        raise SystemExit(130)
    return failed


def slurm_parameters(opts):
    """submitit parameters of the job array (slurm_* names are ignored by the local/debug executors)."""
    params = {"timeout_min": opts.slurm_time, "cpus_per_task": opts.slurm_cpus, "slurm_array_parallelism":
              opts.slurm_array_parallelism, "name": "reproduce"}
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition
    if opts.slurm_gpus:
        params["gpus_per_node"] = opts.slurm_gpus
    if opts.slurm_mem_gb:
        params["mem_gb"] = opts.slurm_mem_gb
    return params


class SlurmRun:
    """What one Slurm job of the array runs (in submitit's process on the node): `command` with its output appended
    to `log`, and Slurm's warning before the time limit passed on to it as the SIGTERM the algorithm files handle.

    submitit's sbatch script asks for SIGUSR2 90 s before the limit (--signal=USR2@90). Slurm sends it, like the
    SIGTERM of scancel and of the limit itself, to every process of the job step. The run ignores SIGUSR2 (by
    default it would kill it) and this process, in place of submitit's handler (which kills the run, or requeues
    the job to start it again from scratch), sends the run one SIGTERM once it trains (has printed a progress line):
    it finishes its update, writes its checkpoint and exits before the limit. A SIGTERM from Slurm reaches the run
    directly (scancel; the limit, if the run is still there); submitit's process ignores it and waits for the run.
    Returns how the run ended; raises when it exited with an error."""

    def __init__(self, command, log, env=None):
        self.command, self.log, self.env = list(command), str(log), env

    def __call__(self):
        warned, terminated = [], []
        signal.signal(signal.SIGUSR2, lambda signum, frame: warned.append(signum))
        signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(self.command)}\n")
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
            passed = False
            while proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)
                if warned and not passed and proc.poll() is None and self._training(start):
                    log.write("\nreproduce.py: SIGUSR2 from Slurm (its time limit is near): sending the run SIGTERM\n")
                    log.flush()
                    proc.send_signal(signal.SIGTERM)
                    passed = True
        if proc.returncode:
            raise RuntimeError(f"{Path(self.command[1]).name} exited with code {proc.returncode}")
        return ("stopped on Slurm's warning before its time limit" if passed else
                "stopped on SIGTERM from Slurm: scancel or its time limit" if terminated else "exited")

    def _training(self, start):
        with open(self.log, "rb") as f:
            f.seek(start)
            return parse_progress(f.read().decode(errors="replace")) is not None


def submit(jobs, opts, cluster=None):
    """Submit [(run, argv)] as one job array through submitit; cluster=None is Slurm (submitit's
    'debug' and 'local' run the same array here, for tests). Returns the submitit jobs."""
    import submitit

    executor = submitit.AutoExecutor(folder=opts.slurm_logs, cluster=cluster or "slurm")
    executor.update_parameters(**slurm_parameters(opts))
    env = child_env(opts.threads)
    with executor.batch():
        submitted = [executor.submit(SlurmRun(argv, (run.directory / "stdout.log").absolute(), env))
                     for run, argv in jobs]
    for (run, _), job in zip(jobs, submitted):
        (run.directory / "slurm_job").write_text(f"{job.job_id}\n")
    return submitted


SLURM_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING")
SLURM_ACTIVE = SLURM_QUEUED + ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING")


def slurm_states(job_ids):
    """{job id: state} of Slurm jobs ('123', array tasks '123_4') from squeue, which lists every job queued or
    running, and finished ones for a few minutes (MinJobAge): an id it does not list has ended. squeue, not sacct
    (what submitit asks): sacct answers only where an accounting database runs. None when squeue cannot answer."""
    ids = sorted({str(j).split("_")[0] for j in job_ids})
    if not ids:
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)],
                         capture_output=True, text=True)
    if out.returncode:
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split("|", 1) for line in out.stdout.split())


def wait_jobs(jobs, submitted, progress_every=60.0, poll=5.0):
    """Wait for the submitted runs, printing how many are done, running and queued. A Slurm job is over once it
    has written its result, or squeue shows it no longer queued or running (killed at its time limit or by scancel
    before it could). Then prints STOPPED for each run that ended short of its steps with a checkpoint (run the
    command again to resume it) and FAILED for each that exited with an error or without a checkpoint. Returns the
    runs that did not finish."""
    import submitit

    slurm = {j.job_id for j in submitted if isinstance(j, submitit.SlurmJob)}
    last_print, last_counts = 0.0, None
    while True:
        states = slurm_states(slurm) if slurm else {}  # None: squeue did not answer this time
        known = states or {}
        over = [j.paths.result_pickle.exists() or (states is not None and known.get(j.job_id) not in SLURM_ACTIVE
                                                    if j.job_id in slurm else j.done()) for j in submitted]
        waiting = [not o and known.get(j.job_id) in SLURM_QUEUED for j, o in zip(submitted, over)]
        running = [(run.name, run.directory / "stdout.log") for (run, _), o, w in zip(jobs, over, waiting)
                   if not o and not w]
        queued = sum(waiting)
        counts = (sum(over), queued, len(running))
        if counts != last_counts or time.time() - last_print >= progress_every or all(over):
            print(progress_line(sum(over), len(jobs), 0, running[:8], queued), flush=True)
            last_print, last_counts = time.time(), counts
        if all(over):
            break
        time.sleep(min(poll, progress_every))
    unfinished = []
    for (run, _), job in zip(jobs, submitted):
        how, error = None, None
        if job.paths.result_pickle.exists():
            try:
                how = job.result()
            except Exception as e:  # noqa: BLE001 - a failed run is reported, the others are aggregated
                error = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        elif job.job_id in slurm:  # killed before it could write its result
            how = f"Slurm job {job.job_id} {known.get(job.job_id, 'ended')}"
        state = run_state(run)
        if state.status == "done":
            continue
        unfinished.append(run)
        why = error or how or state.status
        if state.status == "partial" and error is None:
            print(f"STOPPED {run.name} at step {state.step:,} of {run.total:,} ({why}): its checkpoint is resumed "
                  f"when the command is run again", flush=True)
        else:
            print(f"FAILED {run.name} ({why}); the end of {run.directory / 'stdout.log'}:\n"
                  + "\n".join(tail(run.directory / "stdout.log", 2000).splitlines()[-8:]), flush=True)
    return unfinished


def slurm_pending(run):
    """True when this run was submitted to Slurm and squeue says it is still queued or running."""
    marker = run.directory / "slurm_job"
    if not marker.is_file() or not shutil.which("squeue"):
        return False
    job_id = marker.read_text().strip()
    states = slurm_states([job_id])
    if states is None:
        raise SystemExit(f"error: squeue cannot say whether Slurm job {job_id} of {run.name} still runs; "
                         "run the command again when it answers")
    return states.get(job_id) in SLURM_ACTIVE


# ---------------------------------------------------------------------------------------------
# Reading runs (TensorBoard events, checkpoints)
# ---------------------------------------------------------------------------------------------


def drop_orphaned(points):
    """Points (step, value) in the order logged. A resumed run logs again from its checkpoint's step,
    so the first attempt's points from there on are orphans: where the step goes back, drop the
    earlier points at that step or later (equal steps in order, e.g. two episodes ending in the
    same vector step, are kept)."""
    kept = []
    for step, value in points:
        if kept and step < kept[-1][0]:
            while kept and kept[-1][0] >= step:
                kept.pop()
        kept.append((step, value))
    return kept


def read_scalars(run_path):
    """{tag: [(step, value), ...]} from a run directory's TensorBoard event files, orphans dropped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_path), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: drop_orphaned([(e.step, e.value) for e in acc.Scalars(t)]) for t in acc.Tags()["scalars"]}


def cached_scalars(cache, run_path):
    """read_scalars of a run, read once per cache: a {run path: scalars} dict."""
    if run_path not in cache:
        cache[run_path] = read_scalars(run_path)
    return cache[run_path]


def final_return(points, last_share=0.1):
    """Mean of the last `last_share` (at least one) of the logged episodic returns; nan if none."""
    if not points:
        return float("nan")
    values = [v for _, v in points]
    k = max(1, math.ceil(len(values) * last_share))
    return float(np.mean(values[-k:]))


def steps_label(steps, _position=None):
    """Axis label of a step count: 0, 250k, 1.5M (plain numbers overlap on a 5-inch panel)."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(steps) >= size:
            return f"{steps / size:g}{suffix}"
    return f"{steps:g}"


def window_mean(points, lo, hi):
    """Mean of the values logged at steps in (lo, hi]; None if there are none."""
    values = [v for step, v in points if lo < step <= hi]
    return float(np.mean(values)) if values else None


def returns_at(points, reached, milestones=MILESTONES, window=WINDOW):
    """{"return_1M": ...}: the return at each milestone the run has reached (steps_reached; a partial
    run too), the mean of the episodic returns logged in the `window` steps up to it."""
    out = {f"return_{steps_label(m)}": window_mean(points, m - window, m) for m in milestones if reached >= m}
    return {k: v for k, v in out.items() if v is not None}


STABILITY_FROM = 1_000_000  # the per-seed stability columns look at the run after this step


def stability(returns, approx_kls, post_reset_dkls, reached, start=STABILITY_FROM, window=WINDOW):
    """Per run, how steady it was after `start`: the best, the worst and the last of the consecutive
    `window`-step windows (start, start + window], ... up to `reached` (mean episodic return in each),
    `collapsed` (1 when the last window is below half the best: the issue's definition of a collapse),
    the number of PPO updates after step 0 whose logged approx-KL exceeds 0.1 and 1, and the median
    and maximum of the alpha-DKL just after each reset (P3O: reset/distill_loss_start)."""
    out = {"updates": len(approx_kls), "kl_over_0.1": sum(v > 0.1 for _, v in approx_kls),
           "kl_over_1": sum(v > 1 for _, v in approx_kls)}
    if post_reset_dkls:
        out.update(dkl_median=float(np.median([v for _, v in post_reset_dkls])),
                   dkl_max=float(max(v for _, v in post_reset_dkls)))
    windows = [window_mean(returns, lo, lo + window) for lo in range(start, reached - window + 1, window)]
    windows = [w for w in windows if w is not None]
    if windows:
        out.update(best_window=max(windows), worst_window=min(windows), last_window=windows[-1],
                   collapsed=int(windows[-1] < max(windows) / 2))
    return out


METHOD_STATE_KEYS = ("sbp", "cycle", "redo", "cbp")


def method_statistics(ckpt):
    """Reset and epoch counts from a checkpoint's method state (p3o/sac: "sbp", ppo_cycle: "cycle",
    ppo_redo: "redo", ppo_cbp: "cbp" with per-network states, the actor's counted)."""
    state = next((ckpt[k] for k in METHOD_STATE_KEYS if isinstance(ckpt.get(k), dict)), None)
    if state is None:
        return {}
    counts_holder = state["actor"] if isinstance(state.get("actor"), dict) else state
    out = {}
    if counts_holder.get("reset_counts") is not None:  # Table 4 as the files log it, and the neurons counted
        counts = np.asarray(counts_holder["reset_counts"])
        out.update(p3o_continuous.reset_statistics(counts), neurons=int(counts.size))
    for key in ("resets", "distill_epochs", "ppo_epochs", "recovery_epochs", "reset_seconds"):
        if state.get(key) is not None:
            out[key] = float(state[key])
    if out.get("resets") and "distill_epochs" in out:
        out["distill_per_reset"] = out["distill_epochs"] / out["resets"]
    if out.get("ppo_epochs") and "distill_epochs" in out:
        out["distill_to_ppo"] = out["distill_epochs"] / out["ppo_epochs"]
    return out


CSV_FIELDS = ["experiment", "variant", "algo", "env", "seed", "budget", "total_timesteps", "status", "steps",
              "final_return", "eval_return", "eval_std", "eval_episodes", "episodes", "neurons", "total_resets",
              "avg_resets_per_neuron", "share_neurons_reset",
              "resets", "distill_epochs", "distill_per_reset", "ppo_epochs", "distill_to_ppo", "recovery_epochs",
              "reset_seconds", "run_dir", "commit", "reused_from"] + [
              f"return_{steps_label(m)}" for m in MILESTONES] + [
              "best_window", "worst_window", "last_window", "collapsed", "updates", "kl_over_0.1", "kl_over_1",
              "dkl_median", "dkl_max"]


def steps_reached(run, state):
    """How far a run got: a finished one has reached its total (its whole rollouts may stop short of
    it), any other the step of its checkpoint."""
    return run.total if state.status == "done" else state.step


EVAL_SEED = evaluate.Args.seed  # evaluation episode k is seeded EVAL_SEED + k (no training seed is that large)
EVAL_FILE = "evaluation_reproduce.csv"  # a finished run's evaluation for the tables, beside its checkpoint


def evaluation(run_path, step, episodes):
    """(mean, std) of the returns of `episodes` deterministic episodes of a finished run's final checkpoint
    (evaluate.py: the policy's mean action, the run's observation statistics frozen, episode seeds from
    EVAL_SEED). Kept in <run>/EVAL_FILE (not evaluate.py's own evaluation.csv, which a user's evaluation with
    other episodes may hold) and read from there when it holds these episodes of this
    checkpoint (its global `step`, which the caller has read); (None, None) when episodes is 0."""
    if not episodes:
        return None, None
    path = Path(run_path) / EVAL_FILE
    rows = read_csv(path) if path.is_file() else []
    if [(r.get("global_step"), r.get("seed")) for r in rows] != [(step, EVAL_SEED + k) for k in range(episodes)]:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                rows = evaluate.evaluate_run(str(run_path), evaluate.Args(run_dirs=(str(run_path),),
                                                                          episodes=episodes), None)
        except (Exception, SystemExit) as e:  # a table is still written; the run's evaluation cells stay empty
            print(f"warning: evaluating {run_path} failed ({str(e).removeprefix('error: ') or type(e).__name__}); "
                  "its evaluation cells stay empty")
            return None, None
        evaluate.write_csv(path, rows)
    returns = np.array([float(r["return"]) for r in rows])
    return float(returns.mean()), float(returns.std())


def summarize(run, state, experiment_name, budget, cache, eval_episodes=0):
    """One CSV row: the run's configuration, its status, and (when finished) its final values and the
    evaluation of its final checkpoint (`eval_episodes` episodes). cache: cached_scalars' cache."""
    row = {"experiment": experiment_name, "variant": run.variant.name, "algo": run.variant.algo, "env": run.env,
           "seed": run.seed, "budget": budget, "total_timesteps": run.total,
           "status": f"failed: {state.error}" if state.error else state.status,
           "steps": state.step, "run_dir": os.path.relpath(state.run_path or run.directory, ROOT),
           "commit": " ".join(run_commits(run.directory)), "extends": extends_note(run.directory)}
    if state.status in ("done", "partial"):
        scalars = cached_scalars(cache, state.run_path)
        returns = scalars.get("charts/episodic_return", [])
        row.update(returns_at(returns, steps_reached(run, state)))
        row.update(stability(returns, scalars.get("losses/approx_kl", []), scalars.get("reset/distill_loss_start", []),
                             steps_reached(run, state)))
    if state.status == "done":
        row.update(final_return=final_return(returns), episodes=len(returns))
        row.update(method_statistics(state.checkpoint))
        row["eval_return"], row["eval_std"] = evaluation(state.run_path, state.step, eval_episodes)
        row["eval_episodes"] = eval_episodes or None
    return row


def write_csv(path, rows, fields=CSV_FIELDS):
    if fields is CSV_FIELDS and any(r.get("extends") for r in rows):  # the column only where a run extends one
        fields = CSV_FIELDS + ["extends"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


TEXT_FIELDS = ("experiment", "variant", "algo", "env", "status", "budget", "run_dir", "commit", "reused_from",
               "extends")


def number(text):
    """A CSV cell as an int, a float, or the text itself when it is neither."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path):
    """Rows of a runs CSV with numbers as written: whole numbers as ints, others as floats (empty cells
    dropped)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out = {}
            for k, v in row.items():
                if v == "":
                    continue
                out[k] = v if k in TEXT_FIELDS else number(v)
            rows.append(out)
    return rows


# ---------------------------------------------------------------------------------------------
# Aggregation (pure functions over CSV rows) and Markdown
# ---------------------------------------------------------------------------------------------


RUN_KEY_FIELDS = ("variant", "algo", "env", "seed", "budget", "total_timesteps")  # one configuration


def run_key(row):
    """What makes two rows the same configuration: method, task, seed and budget."""
    return tuple(row[k] for k in RUN_KEY_FIELDS)


def key_fields(run, budget):
    """A planned run's RUN_KEY_FIELDS values."""
    return {"variant": run.variant.name, "algo": run.variant.algo, "env": run.env, "seed": run.seed,
            "budget": budget, "total_timesteps": run.total}


def earlier_runs(paths):
    """--reuse: the finished runs of earlier runs CSVs by run_key, each row naming the CSV it came from
    (reused_from; for a row that CSV had reused itself, the CSV it was first reused from); the first CSV that
    has a configuration wins."""
    earlier = {}
    for path in paths:
        for row in read_csv(path):
            if row.get("status") == "done":
                earlier.setdefault(run_key(row), {**row, "reused_from": row.get("reused_from")  # a reuse of a reuse
                                                  or os.path.relpath(Path(path).resolve(), ROOT)})  # names the first
    return earlier


def reuse(rows, earlier):
    """Rows of runs that have not started here ('new') taken from earlier_runs where one finished the same
    configuration: the row keeps its numbers and commit and takes this experiment's name."""
    return [{**earlier[run_key(r)], "experiment": r["experiment"]}
            if r.get("status") == "new" and run_key(r) in earlier else r for r in rows]


CURVE_POINTS = 100  # points per run in curves_<budget>.csv: the mean of each hundredth of its steps


def run_curve(key, total, reached, scalars, tags):
    """A run's curves as rows of curves_<budget>.csv: for k = 1..CURVE_POINTS, at step k x total /
    CURVE_POINTS, the mean of each tag's values logged in the span (previous point, this one] (step 0
    counts in the first; blank where a span has none), up to the span holding `reached`. key: the run's
    RUN_KEY_FIELDS values."""
    edges = np.linspace(0, total, CURVE_POINTS + 1).round().astype(np.int64)
    columns = {}
    for tag in tags:
        points = scalars.get(tag, [])
        if points:
            steps, values = np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float)
            span = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, CURVE_POINTS - 1)
            counts = np.bincount(span, minlength=CURVE_POINTS)
            columns[tag] = np.bincount(span, values, CURVE_POINTS) / np.maximum(counts, 1)
            columns[tag][counts == 0] = np.nan
    rows = []
    for k in range(CURVE_POINTS):
        if edges[k] >= reached:
            break
        values = {tag: float(column[k]) for tag, column in columns.items() if np.isfinite(column[k])}
        if values:
            rows.append({**key, "step": int(edges[k + 1]), **values})
    return rows


def curves_of(runs, states, budget, cache, tags):
    """run_curve of each run that has a checkpoint (as far as it got)."""
    return [c for r in runs if states[r.directory].status in ("done", "partial")
            for c in run_curve(key_fields(r, budget), r.total,
                               steps_reached(r, states[r.directory]),
                               cached_scalars(cache, states[r.directory].run_path), tags)]


def write_curves(path, curves):
    tags = sorted({k for r in curves for k in r} - set(RUN_KEY_FIELDS) - {"step"})
    write_csv(path, curves, list(RUN_KEY_FIELDS) + ["step"] + tags)


def curves_path(runs_csv):
    """curves_<budget>.csv beside a runs_<budget>.csv (None for a CSV of another name)."""
    path = Path(runs_csv)
    return path.with_name("curves_" + path.name.removeprefix("runs_")) if path.name.startswith("runs_") else None


def reused_curves(rows):
    """The curve rows of reused runs, from the curves CSV beside the runs CSV each came from (none when
    that CSV predates curves files)."""
    wanted = {}
    for r in rows:
        if r.get("reused_from"):
            wanted.setdefault(curves_path(ROOT / r["reused_from"]), set()).add(run_key(r))
    return [c for path, keys in wanted.items() if path and path.is_file() for c in read_csv(path) if run_key(c) in keys]


def provenance(rows):
    """Which code made the runs in a table: per commit (and CSV a run was reused from), the methods and
    how many of their runs; '' when no run has started."""
    groups = {}
    for r in rows:
        if r.get("status") in ("done", "partial"):
            groups.setdefault((r.get("commit") or "not recorded", r.get("reused_from")), []).append(r["variant"])
    if not groups:
        return ""
    parts = [f"{'reused from `' + source + '`, ' if source else ''}commit {commit}: "
             + ", ".join(f"{v} ({variants.count(v)})" for v in dict.fromkeys(variants))
             for (commit, source), variants in groups.items()]
    text = "Runs by the commit they were launched from (runs per method): " + "; ".join(parts) + "."
    if any(source for _, source in groups):
        text += (" Reused runs are drawn from the curves CSV beside the runs CSV they came from, where it "
                 "exists.")
    extended = [f"{r['variant']} {task_name(r['env'])} seed {r['seed']} from {r['extends']}" for r in rows
                if r.get("extends") and r.get("status") in ("done", "partial")]
    if extended:
        text += (" Extended from a shorter budget's finished run (its checkpoint copied and resumed, its commits "
                 "listed first): " + "; ".join(extended) + ".")
    return text


# Normalised score of a task for the cross-task statistics, fixed before any result was read: MuJoCo
# (and its Cycle Friction variant) 0 at a uniformly random policy, 1 at the paper's PPO (Table 1); DMC
# return / 1000 (its returns lie in [0, 1000]). RANDOM_RETURN: mean return of 10 episodes of uniform random
# actions on the v5 task (episode seeds 0-9, action space seeded 0), random_return() below.
RANDOM_RETURN = {"Hopper": 31.1, "HumanoidStandup": 33013.6, "Walker2d": 5.7, "Ant": -23.6, "HalfCheetah": -225.9,
                 "Humanoid": 90.1}
CONFIDENCE = 0.95
BOOTSTRAP_REPS = 2000  # stratified-bootstrap resamples of the IQM and probability-of-improvement intervals
BOOTSTRAP_SEED = 0  # rliable draws from numpy's global generator: seeded, so a table is the same every time


def random_return(env_id, episodes=10):
    """Mean return of `episodes` episodes of uniform random actions (RANDOM_RETURN's measurement)."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(0)
    total = []
    for k in range(episodes):
        env.reset(seed=k)
        ret, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            ret, done = ret + float(reward), terminated or truncated
        total.append(ret)
    env.close()
    return float(np.mean(total))


def normalisation(env_id):
    """(score 0, score 1) of a task's returns, or None when it has no reference (see RANDOM_RETURN)."""
    if env_id.startswith("dm_control/"):
        return 0.0, 1000.0
    task = task_name(env_id)
    return (RANDOM_RETURN[task], PAPER_TABLE1[task]["ppo"]) if task in RANDOM_RETURN else None


def finite(values):
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def t_interval(values):
    """(mean, low, high, n): the 95% t-interval of the mean (std with ddof=1) of the finite values; low
    and high are nan for one value, everything nan (n=0) for none."""
    from scipy import stats

    vals = finite(values)
    if vals.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(vals.mean())
    if vals.size == 1:
        return mean, float("nan"), float("nan"), 1
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, vals.size - 1) * vals.std(ddof=1) / math.sqrt(vals.size))
    return mean, mean - half, mean + half, int(vals.size)


def welch_p(a, b):
    """Two-sided p-value of Welch's t-test (unequal variances) between two samples; nan below 2 values
    a side or when both are constant."""
    from scipy import stats

    a, b = finite(a), finite(b)
    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def interval_text(values, fmt="{:,.0f}"):
    """'mean [low, high] (n=k)', the t-interval; 'mean (n=1)'; '—' for none."""
    mean, low, high, n = t_interval(values)
    if n == 0:
        return "—"
    return fmt.format(mean) + ("" if n == 1 else f" [{fmt.format(low)}, {fmt.format(high)}]") + f" (n={n})"


def cell(rows, key, fmt="{:,.0f}", paper=None, want=None, statuses=("done",)):
    """'mean [95% t-interval] (n=k)' of `key` over rows (finished runs, or those of `statuses`),
    '(paper X)' beside it when the paper has a number. want: unused (n is always stated)."""
    text = interval_text([r.get(key) for r in rows if r.get("status") in statuses], fmt)
    if paper is not None:
        text += f" (paper {fmt.format(paper)})"
    return text


def select(rows, **conditions):
    return [r for r in rows if all(r.get(k) == v for k, v in conditions.items())]


def markdown_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def returns_table(rows, variants, envs, paper=None, want=None):
    """Rows: tasks; columns: variants; cells: final return mean [95% CI] (n) (paper X)."""
    body = []
    for env in envs:
        line = [env]
        for v in variants:
            ref = (paper or {}).get(task_name(env), {}).get(v.algo) if not v.overrides else None
            line.append(cell(select(rows, env=env, variant=v.name), "final_return", paper=ref, want=want))
        body.append(line)
    return markdown_table(["task"] + [v.name for v in variants], body)


def distill_table(rows, envs, want=None):
    """Table 2's layout: quantities as rows, tasks as columns (P3O runs)."""
    spec = [("Total distillation epochs", "distill_epochs", "{:,.1f}", 0),
            ("Per-reset epochs", "distill_per_reset", "{:,.2f}", 1),
            ("Epoch ratio (distillation / PPO epochs)", "distill_to_ppo", "{:.4f}", 2),
            ("PPO epochs", "ppo_epochs", "{:,.0f}", None), ("Resets", "resets", "{:,.0f}", None)]
    body = []
    for label, key, fmt, paper_index in spec:
        body.append([label] + [cell(select(rows, env=env, algo="p3o"), key, fmt, want=want, paper=(
            PAPER_TABLE2.get(task_name(env), (None,) * 3)[paper_index] if paper_index is not None else None))
            for env in envs])
    return markdown_table([""] + list(envs), body)


def sbp_table(rows, variants, envs, want=None):
    """Per reset method and task: resets, distillation epochs per reset, seconds spent in them."""
    body = []
    for v in variants:
        for env in envs:
            sel = select(rows, variant=v.name, env=env)
            if any(r.get("resets") for r in sel):  # methods that reset (not plain SAC)
                body.append([v.name, env, cell(sel, "resets", want=want), cell(sel, "distill_per_reset", "{:,.1f}",
                                                                               want=want),
                             cell(sel, "reset_seconds", want=want)])
    return markdown_table(["method", "task", "resets", "distillation epochs per reset",
                           "seconds in resets + distillation"], body)


def recovery_table(rows, envs, want=None):
    """Table 5's layout: distillation epochs of P3O and recovery epochs of P3O with --recovery train."""
    body = [["Distillation epochs (P3O)"] + [cell(select(rows, env=e, algo="p3o"), "distill_epochs", "{:,.1f}",
                                                  PAPER_TABLE2.get(task_name(e), (None,))[0], want) for e in envs],
            ["Recovery epochs (recovery training)"] + [cell(select(rows, env=e, algo="p3o-rt"), "recovery_epochs",
                                                            "{:,.1f}", PAPER_TABLE5_RECOVERY.get(task_name(e)), want)
                                                       for e in envs]]
    return markdown_table([""] + list(envs), body)


def resets_table(rows, variants, envs=None):
    """Table 4: per method, over all its finished runs (tasks x seeds): total resets, average resets
    per neuron, share of neurons reset (%). With envs, one row per method and task instead."""
    body = []
    for v in variants:
        for env in (envs or [None]):
            sel = select(rows, variant=v.name, **({"env": env} if env else {}))
            sel = [{**r, "share_pct": 100 * r["share_neurons_reset"]} if "share_neurons_reset" in r else r
                   for r in sel]
            paper = PAPER_TABLE4.get(v.algo, (None,) * 3) if env is None else (None,) * 3
            neurons = {int(r["neurons"]) for r in sel if r.get("status") == "done" and "neurons" in r}
            body.append(([v.name] if env is None else [v.name, env])
                        + [", ".join(map(str, sorted(neurons))) or "—",
                           cell(sel, "total_resets", "{:,.1f}", paper[0]),
                           cell(sel, "avg_resets_per_neuron", "{:,.2f}", paper[1]),
                           cell(sel, "share_pct", "{:.1f}", paper[2])])
    header = ["method"] + ([] if envs is None else ["task"]) + ["neurons", "total resets", "average resets",
                                                                "reset proportion (%)"]
    return markdown_table(header, body)


def cycle_table(rows, variants, envs, want=None):
    """Per task and method: the return at each milestone (unfinished runs count where they got past
    it), the final return (finished runs) and how far the runs got."""
    body = []
    for env in envs:
        for v in variants:
            sel = select(rows, env=env, variant=v.name)
            reached = ", ".join(f"{int(r.get('steps', 0)):,}" for r in sel)
            body.append([env, v.name] + [cell(sel, f"return_{steps_label(m)}", want=want,
                                              statuses=("done", "partial")) for m in MILESTONES]
                        + [cell(sel, "final_return", want=want), reached])
    return markdown_table(["task", "method"] + [f"return at {steps_label(m)}" for m in MILESTONES]
                          + ["final return", "steps reached (per seed)"], body)


def seed_table(rows, variants, envs):
    """Per task, method and seed: how steady the run was (stability) beside its final return."""
    def num(r, key, fmt="{:,.0f}"):
        return "–" if r.get(key) is None else fmt.format(r[key])

    body = []
    for env in envs:
        for v in variants:
            for r in sorted(select(rows, env=env, variant=v.name), key=lambda r: r["seed"]):
                if r.get("status") not in ("done", "partial"):
                    continue
                body.append([env, v.name, int(r["seed"]), f"{int(r.get('steps', 0)):,}", num(r, "final_return"),
                             num(r, "best_window"), num(r, "worst_window"), num(r, "last_window"),
                             {None: "–", 0: "no", 1: "yes"}[r.get("collapsed")],
                             f"{num(r, 'kl_over_0.1')} / {num(r, 'updates')}",
                             num(r, "kl_over_1"), num(r, "dkl_median", "{:.3f}"), num(r, "dkl_max", "{:.3f}")])
    w = steps_label(WINDOW)
    return markdown_table(["task", "method", "seed", "steps", "final return", f"best {w} after "
                           f"{steps_label(STABILITY_FROM)}", f"worst {w}", f"last {w}", "collapse",
                           "updates with approx-KL > 0.1", "> 1", "post-reset alpha-DKL median", "max"], body)


def friction_table(curves, window=WINDOW):
    """Cycle Friction: for each friction change inside the runs and each method, the mean return of
    the episodes logged in the window before the change, in the window after it, and in the last
    window of the new phase (just before the next change); the window is `window` steps, or a quarter
    of the friction period when that is shorter, so the three never overlap. Cells: mean [95% t-interval] (n) over
    the seeds that got that far. curves: [(method label, env, friction period, steps reached, points)]."""
    from envs import friction_multiplier

    groups = {}
    for label, env, period, reached, points in curves:
        groups.setdefault((env, period), {}).setdefault(label, []).append((reached, points))
    body = []
    for (env, period), methods in groups.items():
        last = max(reached for seeds in methods.values() for reached, _ in seeds)
        w = min(window, period // 4)
        for change in range(period, last, period):
            for label, seeds in methods.items():
                def span(lo, hi):
                    means = [m for m in (window_mean(points, lo, hi) for reached, points in seeds if reached >= hi)
                             if m is not None]
                    return "–" if not means else interval_text(means)
                body.append([env, steps_label(change), f"{friction_multiplier(change - 1, period)} → "
                             f"{friction_multiplier(change, period)}", label, f"{w:,}", span(change - w, change),
                             span(change, change + w), span(change + period - w, change + period)])
    return markdown_table(["task", "change at", "friction", "method", "window (steps)", "return before",
                           "after", "end of the phase"], body) if body else ""


def reproduce_command(name, budget, seeds, envs, variants):
    """The command line that reproduces a table (with the selection that produced it)."""
    cmd = f"python reproduce.py {name} --budget {budget.split('-')[0]}"
    if "-" in budget:
        cmd += f" --total-timesteps {budget.split('-')[1]}"
    cmd += " --seeds " + " ".join(map(str, seeds))
    if tuple(envs) != EXPERIMENTS[name].envs:
        cmd += " --envs " + " ".join(envs)
    algos = list(dict.fromkeys(v.algo for v in variants))
    if algos != list(dict.fromkeys(v.algo for v in EXPERIMENTS[name].variants)):
        cmd += " --algos " + " ".join(algos)
    return cmd


def distill_over_run(curves, segments=6):
    """Table 2 over the run instead of its mean: per method and task, in `segments` equal spans of
    steps, the points of curves_<budget>.csv that hold a reset (a point: one hundredth of a run, the
    mean over its resets; counted over all seeds) and their mean distillation epochs, alpha-DKL just after
    the reset and policy std. Built from curve rows, so runs reused from an earlier CSV count as much as
    runs made here."""
    tags = DISTILL_METRICS
    body = []
    for label, env in dict.fromkeys((c["variant"], c["env"]) for c in curves if tags[0] in c):
        points = [c for c in curves if (c["variant"], c["env"]) == (label, env) and tags[0] in c]
        last = max(c["step"] for c in points)  # the spans end at a round number of steps: 3M, not the last point
        unit = segments * 10 ** max(0, math.floor(math.log10(last)) - 2)
        edges = np.linspace(0, math.ceil(last / unit) * unit, segments + 1)
        for lo, hi in zip(edges, edges[1:]):
            span = [c for c in points if lo < c["step"] <= hi]
            body.append([label, env, f"{steps_label(lo)}–{steps_label(hi)}", str(len(span))]
                        + [f"{np.mean(v):.3g}" if v else "–" for v in ([c[t] for c in span if t in c] for t in tags)])
    return markdown_table(["method", "task", "steps", "points with a reset (each 1% of a run, all seeds)",
                           "distillation epochs per reset", "alpha-DKL after the reset", "policy std"], body) \
        if body else ""


# the two returns every claim names
COMPARED = (("final_return", "training return"), ("eval_return", "evaluation return"))
REFERENCE_ALGOS = ("p3o", "p3o-sum", "sac-cycle")  # compared with every other method: P3O (either KL), SAC+SBP


def seed_values(rows, key):
    """{seed: value} of the finished rows that have `key`."""
    return {r["seed"]: r[key] for r in rows if r.get("status") == "done" and r.get(key) is not None}


def every_seed_table(rows, variants, envs):
    """Per task and method: training and evaluation return as 95% t-intervals, and every seed's values."""
    body = []
    for env in envs:
        for v in variants:
            sel = select(rows, env=env, variant=v.name)
            train, test = seed_values(sel, "final_return"), seed_values(sel, "eval_return")
            if not train:
                continue
            per_seed = "; ".join(f"{seed}: {train[seed]:,.0f}" + (f" / {test[seed]:,.0f}" if seed in test else "")
                                 for seed in sorted(train))
            body.append([env, v.name, interval_text(train.values()), interval_text(test.values()), per_seed])
    return markdown_table(["task", "method", "training return", "evaluation return",
                           "seed: training / evaluation"], body) if body else ""


CLAIM_SEEDS = 5  # the fewest seeds per method on which a Welch p < 0.05 reads as one method ahead


def reference_variant(variants):
    return next((v for v in variants if v.algo in REFERENCE_ALGOS and not v.overrides), None)


def comparison_table(rows, variants, envs, compared=COMPARED, fmt="{:+,.0f}"):
    """Per task and compared (key, name) pair (default: training and evaluation return): each variant of the
    reference method (P3O, and P3O with another option such as the summed KL) against each other method, the
    difference of the means, Welch's two-sided p and the reading (not separated when p >= 0.05, or when
    either method has fewer than CLAIM_SEEDS seeds)."""
    refs = [v for v in variants if v.algo in REFERENCE_ALGOS]
    pairs = [(r, v) for i, r in enumerate(refs) for v in variants if v != r and v not in refs[:i]]
    body = []
    for env in envs:
        for key, name in compared:
            for ref, v in pairs:
                a = seed_values(select(rows, env=env, variant=ref.name), key)
                b = seed_values(select(rows, env=env, variant=v.name), key)
                if len(a) < 2 or len(b) < 2:
                    continue
                p, diff = welch_p(list(a.values()), list(b.values())), np.mean(list(a.values())) - np.mean(
                    list(b.values()))
                if not p < 0.05:
                    reading = "not separated"
                elif min(len(a), len(b)) < CLAIM_SEEDS:
                    reading = f"not separated (p < 0.05, under {CLAIM_SEEDS} seeds)"
                else:
                    reading = f"{ref.name} {'ahead' if diff > 0 else 'behind'}"
                body.append([env, name, ref.name, v.name, f"{len(a)} vs {len(b)}", fmt.format(diff),
                             "–" if math.isnan(p) else f"{p:.3f}", reading])
    return markdown_table(["task", "measure", "method", "against", "seeds", "difference of means", "Welch p",
                           "reading"], body) if body else ""


def normalised_scores(rows, variants, envs, key):
    """{method: array (runs x tasks)} of normalised scores over the tasks that have a reference
    (normalisation), per method the seeds finished on every one of them; and those tasks."""
    tasks = [e for e in envs if normalisation(e)]
    references = [normalisation(e) for e in tasks]
    scores = {}
    for v in variants:
        per_task = [seed_values(select(rows, env=e, variant=v.name), key) for e in tasks]
        seeds = sorted(set.intersection(*(set(d) for d in per_task))) if per_task else []
        if seeds:
            scores[v.name] = np.array([[(d[s] - lo) / (hi - lo) for d, (lo, hi) in zip(per_task, references)]
                                       for s in seeds])
    return scores, tasks


def aggregate_table(rows, variants, envs, key):
    """Across tasks (Agarwal et al. 2021, with rliable): per method the IQM of the normalised scores with
    a 95% stratified-bootstrap interval, and the probability that the reference method (P3O) improves on
    each other one, with its interval. The bootstrap is seeded (BOOTSTRAP_SEED) afresh for each method and
    each pair, so an interval depends only on its own runs, not on which other methods have finished."""
    from rliable import library as rly
    from rliable import metrics

    scores, tasks = normalised_scores(rows, variants, envs, key)
    if not scores:
        return ""

    def bootstrap(groups, statistic):  # {name: (estimate, interval)}, each group drawn from the seed on its own
        out = {}
        for name, group in groups.items():
            np.random.seed(BOOTSTRAP_SEED)
            point, interval = rly.get_interval_estimates({name: group}, statistic, reps=BOOTSTRAP_REPS,
                                                         confidence_interval_size=CONFIDENCE)
            out[name] = point[name], interval[name]
        return out

    iqm = bootstrap(scores, lambda x: np.array([metrics.aggregate_iqm(x)]))
    body = [[name, f"{m.shape[0]} x {m.shape[1]}", f"{iqm[name][0][0]:.3f} [{iqm[name][1][0, 0]:.3f}, "
             f"{iqm[name][1][1, 0]:.3f}]", ""] for name, m in scores.items()]
    ref = reference_variant(variants)
    pairs = {v.name: (scores[ref.name], scores[v.name]) for v in variants
             if ref and v != ref and ref.name in scores and v.name in scores}
    if pairs:
        poi = bootstrap(pairs, metrics.probability_of_improvement)
        for line in body:
            if line[0] in poi:
                low, high = np.ravel(poi[line[0]][1])
                line[3] = f"{float(poi[line[0]][0]):.2f} [{low:.2f}, {high:.2f}]"
    references = "; ".join(f"{e}: {normalisation(e)[0]:,.1f} → 0, {normalisation(e)[1]:,.0f} → 1" for e in tasks)
    return (f"Normalised score per task ({references}): MuJoCo 0 at a uniformly random policy and 1 at the "
            "paper's PPO (Table 1), DeepMind Control return / 1000; fixed before any result was read. "
            f"{BOOTSTRAP_REPS:,} stratified-bootstrap resamples, numpy seeded {BOOTSTRAP_SEED} for each method and "
            "pair.\n\n"
            + markdown_table(["method", "runs x tasks", "IQM [95% CI]",
                              f"P({ref.name if ref else 'reference'} > method) [95% CI]"], body))


def statistics_markdown(rows, variants, envs):
    """The sections every table gets: every seed, the reference method against the others (Welch), and
    the cross-task IQM and probability of improvement, on the training and the evaluation return."""
    out = []
    seeds = every_seed_table(rows, variants, envs)
    if seeds:
        out += ["## Every seed", "", "Training return: mean of the last 10% of a run's logged episodic returns "
                "(sampled actions). Evaluation return: mean of 10 deterministic episodes of its final checkpoint "
                f"(evaluate.py: the policy's mean action, episode seeds {EVAL_SEED:,} on). Cells: mean [95% "
                "t-interval] (n seeds).", "", seeds, ""]
    compared = comparison_table(rows, variants, envs)
    if compared:
        out += ["## Against each method (Welch's t-test)", "", "Two-sided Welch's t-test (unequal variances) on "
                f"the seeds' returns; p >= 0.05, or fewer than {CLAIM_SEEDS} seeds on either side, reads \"not "
                "separated\", never a win.", "", compared, ""]
    for key, name in COMPARED:
        table = aggregate_table(rows, variants, envs, key)
        if table:
            out += [f"## Across tasks: IQM and probability of improvement ({name})", "", table, ""]
    return out


def experiment_markdown(experiment, rows, variants, envs, budget, seeds, steps_note, over_run="", friction=""):
    want = len(seeds)
    done = len(select(rows, status="done"))
    out = [f"# {experiment.title}", "",
           f"Budget **{budget}**: {steps_note}; seeds {', '.join(map(str, seeds))}; {done}/{len(rows)} runs "
           f"finished. Produced by `{reproduce_command(experiment.name, budget, seeds, envs, variants)}`.", "",
           "Final return of a run: mean of the last 10% of its logged episodic returns. Cells: mean over seeds "
           "[95% t-interval, std with ddof 1] (n seeds); (paper X): the paper's mean of 5 seeds at "
           "12.5M-20M steps, which a shorter budget is not expected to reach.", ""]
    made_by = provenance(rows)
    if made_by:
        out += [made_by, ""]
    if experiment.note:
        out += [experiment.note, ""]
    if experiment.kind in ("distill", "recovery", "resets") and not budget.startswith("paper"):
        out += ["Reset and epoch counts grow with the number of steps: P3O resets every 50,000 steps (1,000 in "
                "smoke runs) and a cycle of 100 resets renews every neuron once, so the paper's 12.5M-20M steps "
                "make 250-400 resets but the reduced budget's 1M make 20, a fifth of a cycle. Compare per-reset "
                "values and ratios with the paper's, not totals.", ""]
    if experiment.kind == "distill":
        out += ["## Distillation epochs (paper Table 2; paper's PPO baseline: 18,310 epochs)", "",
                distill_table(rows, envs, want), ""]
        if over_run:
            out += ["## Distillation over the run", "", over_run, ""]
    elif experiment.kind == "recovery":
        out += ["## Distillation vs recovery-training epochs (paper Table 5)", "", recovery_table(rows, envs, want),
                ""]
    elif experiment.kind == "cycle":
        out += ["## Return across the cycle", "", f"Return at step S: mean of the episodic returns logged in "
                f"(S - {WINDOW:,}, S]; runs not finished count at the steps they passed.", "",
                cycle_table(rows, variants, envs, want), "", "## Per seed", "",
                f"Windows: consecutive {WINDOW:,}-step windows from {STABILITY_FROM:,} (mean episodic return in "
                f"each). Collapse: the last window below half of the best. Approx-KL: the value logged per update "
                "(the last minibatch's, as CleanRL logs it). Post-reset alpha-DKL: P3O's reset/distill_loss_start.",
                "", seed_table(rows, variants, envs), ""]
        if over_run:
            out += ["## P3O's distillation over the run", "", over_run, ""]
    elif experiment.kind == "sbp":
        out += ["## Resets and inner distillation", "", sbp_table(rows, variants, envs, want), ""]
    elif experiment.kind == "resets":
        out += ["## Reset statistics of the actor's hidden neurons (paper Table 4: 768 neurons, mean over six "
                "tasks)", "", resets_table(rows, variants), "", "Per task:", "",
                resets_table(rows, variants, envs), ""]
    if experiment.kind != "cycle":  # the cycle table has its final returns
        out += ["## Final return", "", returns_table(rows, variants, envs, experiment.paper_returns, want), ""]
    out += statistics_markdown(rows, variants, envs)
    if friction:
        out += ["## Cycle Friction: return around each friction change", "", "Per change and method: the mean "
                "episodic return in the window before the change, the window after it, and the last window of "
                f"the new phase (window: {WINDOW:,} steps or a quarter of the friction period when that is "
                "shorter); mean [95% t-interval] (n) over the seeds that got that far.", "", friction, ""]
    missing = [r for r in rows if r.get("status") != "done"]
    if missing:
        out += ["Not finished (not in the cells): " + ", ".join(f"{r['variant']} {r['env']} seed {r['seed']} "
                                                               f"({r['status']})" for r in missing), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def series_band(series):
    """Per step over the seeds' series [{step: value}]: (steps, mean, 95% t-interval low, high); the
    interval is nan where fewer than two seeds have a value."""
    steps = sorted({step for one in series for step in one})
    stats = [t_interval([one.get(step) for one in series]) for step in steps]
    return steps, *(np.array([st[i] for st in stats]) for i in range(3))


def plot_panels(path, title, ylabel, panels, cols=3, marks=None):
    """panels: {panel title: {label: [{step: value} of each seed]}}; one panel per title (`cols` to a row),
    per label a line of the mean over its seeds with a shaded 95% t-interval, and each seed as a thin line; the
    y axis spans the seeds' values (the band may leave it); marks: {panel title: steps to draw a dotted line at}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(panels)
    cols = min(cols, len(names))
    rows = math.ceil(len(names) / cols)
    labels = list(dict.fromkeys(label for name in names for label in panels[name]))
    ncol = max(1, min(len(labels), 2 * cols))
    legend_height = 0.25 * math.ceil(len(labels) / ncol) + 0.2
    height = 3.4 * rows + 0.7 + legend_height
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, height), squeeze=False)
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    styles = {label: "-" if i < 10 else "--" for i, label in enumerate(labels)}
    for ax, name in zip(axes.flat, names):
        seeds = {label: [one for one in runs if one] for label, runs in panels[name].items()}
        if not any(seeds.values()):
            ax.set_title(f"{name} (no data)")
            continue
        values = [v for series in seeds.values() for one in series for v in one.values() if np.isfinite(v)]
        for label, series in seeds.items():
            if not series:
                continue
            for one in series:
                ax.plot(list(one), list(one.values()), styles[label], color=colours[label], linewidth=0.6, alpha=0.45)
            steps, mean, low, high = series_band(series)
            ax.plot(steps, mean, styles[label], color=colours[label], linewidth=1.8)
            ax.fill_between(steps, low, high, alpha=0.2, color=colours[label], linewidth=0)
        if values and max(values) > min(values):  # the seeds set the scale: a 2-seed interval can be 10x wider
            margin = 0.08 * (max(values) - min(values))
            ax.set_ylim(min(values) - margin, max(values) + margin)
        for step in (marks or {}).get(name, ()):
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel("environment steps")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(steps_label))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles = [matplotlib.lines.Line2D([], [], color=colours[lb], linestyle=styles[lb]) for lb in labels]
    counts = {lb: sorted({len([o for o in panels[n].get(lb, []) if o]) for n in names} - {0}) for lb in labels}
    legend = [f"{lb} (n={'/'.join(map(str, counts[lb]))})" for lb in labels]
    drawn = fig.legend(handles, legend, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 13)), fontsize=10)  # narrow figures: wrapped
    legend_drawn = drawn.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi + 0.05  # inches, measured
    fig.tight_layout(rect=(0, legend_drawn / height, 1, 1))  # tight_layout makes room for the suptitle itself
    fig.savefig(path, dpi=100)
    plt.close(fig)


BAND = "mean over seeds with its 95% t-interval; thin lines: each seed"


def tag_panels(curves, tag, by_tag=False):
    """{panel: {variant: [{step: value} per seed]}} of one tag from curve rows (curves_<budget>.csv): a
    panel per task, or per task and tag (by_tag)."""
    panels = {}
    for r in curves:
        if r.get(tag) is None:
            continue
        panel = f"{r['env']}: {tag.split('/')[-1]}" if by_tag else r["env"]
        seeds = panels.setdefault(panel, {}).setdefault(r["variant"], {})
        seeds.setdefault(r["seed"], {})[r["step"]] = r[tag]
    return {p: {v: list(s.values()) for v, s in methods.items()} for p, methods in panels.items()}


def figures(out_dir, stem, title, curves, tags, marks=None):
    """One PNG per tag from curve rows (curves_<budget>.csv), every seed drawn; returns their paths."""
    written = []
    for tag in tags:
        panels = tag_panels(curves, tag)
        if not panels:
            continue
        name = "curves" if tag == "charts/episodic_return" else tag.split("/")[-1]
        file = out_dir / f"{name}_{stem}.png"
        plot_panels(file, f"{title}: {tag.split('/')[-1]}, {BAND}", "episodic return" if name == "curves" else name,
                    panels, marks=marks)
        written.append(file)
    return written


def metrics_grid(path, title, curves, tags):
    """One PNG of the plasticity curves: a panel per task and metric (a task's metrics in rows of
    three), a line per method, from curve rows."""
    panels = {}
    for tag in tags:
        panels.update(tag_panels(curves, tag, by_tag=True))
    order = [f"{env}: {t.split('/')[-1]}" for env in dict.fromkeys(r["env"] for r in curves) for t in tags]
    plot_panels(path, title, "", {p: panels[p] for p in order if p in panels})
    return path


# ---------------------------------------------------------------------------------------------
# The paper's Fig. 7 and Figs. 28-30 on finished runs (reproduce.py fig7 / gradcorr --from EXPERIMENT)
# ---------------------------------------------------------------------------------------------
PAPER_FIGURES = {"fig7": "Fig. 7: P3O's distillation epochs per reset against its improvement over PPO",
                 "gradcorr": "Figs. 28-30: gradient correlation of the actor at the end of the run"}
GRADCORR_ALGOS = ("ppo", "redo", "cycle", "p3o")  # the paper's PPO, ReDo and P3O, and the cycle reset beside P3O
GRADCORR_SAMPLES = 256  # states per run (the matrix is samples x samples)
GRADCORR_SEED = 2_000_000  # seeds the states' episodes and the sampled actions (no training seed is that large)


def fig7_points(rows):
    """Per finished P3O run of a task that also has finished PPO runs: (task, seed, distillation epochs
    per reset, improvement), the improvement being its final return minus the mean final return of the
    task's PPO runs, in normalised-score units (normalisation), so tasks share one axis."""
    points = []
    for env in dict.fromkeys(r["env"] for r in rows):
        ppo = list(seed_values(select(rows, env=env, algo="ppo"), "final_return").values())
        scale = normalisation(env)
        for r in select(rows, env=env, algo="p3o", status="done"):
            if ppo and scale and r.get("distill_per_reset") is not None:
                points.append((env, r["seed"], r["distill_per_reset"],
                               (r["final_return"] - np.mean(ppo)) / (scale[1] - scale[0])))
    return points


def fig7(rows, out_dir, stem, source_csv):
    """Fig. 7 from a runs CSV: the points' table, Spearman's rank correlation over the runs, a scatter."""
    from scipy import stats

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = fig7_points(rows)
    if not points:
        raise SystemExit(f"error: {source_csv} has no finished P3O run beside finished PPO runs of its task")
    x, y = np.array([p[2] for p in points]), np.array([p[3] for p in points])
    rho, p = stats.spearmanr(x, y) if len(points) > 2 else (float("nan"), float("nan"))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, env in enumerate(dict.fromkeys(p[0] for p in points)):
        sel = [q for q in points if q[0] == env]
        ax.scatter([q[2] for q in sel], [q[3] for q in sel], color=f"C{i}", label=f"{env} (n={len(sel)})")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("P3O distillation epochs per reset")
    ax.set_ylabel("final return - PPO mean (normalised score)")
    ax.set_title(f"Fig. 7: Spearman rho {rho:.2f} (p {p:.3f}) over {len(points)} runs", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / f"fig7_{stem}.png", dpi=100)
    plt.close(fig)
    body = [[env, seed, f"{epochs:.2f}", f"{gain:+.3f}"] for env, seed, epochs, gain in points]
    (out_dir / f"fig7_{stem}.md").write_text("\n".join([
        f"# {PAPER_FIGURES['fig7']}", "", f"From `{source_csv}` (its runs and their commits are named there).", "",
        "One point per finished P3O run: its distillation epochs per reset (checkpoint) against its final return "
        "minus the mean final return of the task's PPO runs, in normalised-score units (0 at a random policy, 1 "
        "at the paper's PPO; DMC return / 1000). The paper plots one point per task and does not say how it "
        "measured the improvement.", "",
        markdown_table(["task", "seed", "distillation epochs per reset", "improvement over PPO"], body), "",
        f"Spearman's rank correlation over the {len(points)} runs: rho = {rho:.2f}, two-sided p = {p:.3f}"
        + (" (not separated from no correlation)." if not p < 0.05 else "."), ""]))
    return [out_dir / f"fig7_{stem}.md", out_dir / f"fig7_{stem}.png"]


def gradient_correlation(actor_mean, logstd, obs, actions):
    """The normalised gradient covariance over samples of Lyle et al. (2023), for a Gaussian policy:
    C[i, j] = cos(g_i, g_j), g_i the gradient of log pi(a_i | s_i) with respect to every actor parameter
    (the mean network's and the log-std). 1 on the diagonal; 0 between samples whose gradients are
    orthogonal (no interference), -1 between samples whose updates undo each other."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in actor_mean.named_parameters()}

    def log_prob(p, log_std, s, a):
        mean = functional_call(actor_mean, p, (s[None],))[0]
        return (-0.5 * ((a - mean) / log_std.exp()).square() - log_std).sum()

    g, g_std = vmap(grad(log_prob, argnums=(0, 1)), in_dims=(None, None, 0, 0))(params, logstd.detach(), obs, actions)
    flat = torch.cat([v.reshape(len(obs), -1) for v in g.values()] + [g_std], dim=1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (unit @ unit.T).detach()


def run_gradient_correlation(run_path, samples=GRADCORR_SAMPLES, seed=GRADCORR_SEED):
    """gradient_correlation of a PPO-family run's final actor over `samples` states of its own deterministic
    policy (episodes seeded `seed` on, observations normalised with its statistics, frozen), with actions
    sampled from the policy (torch generator seeded `seed`)."""
    import envs as envs_package

    module, ckpt = evaluate.load_run(str(run_path))
    if "agent" not in ckpt:
        raise SystemExit(f"error: {run_path}: gradient correlation is defined here for the PPO family only")
    run_args = module.Args(**ckpt["args"])
    stats = {k: ckpt["env_state"]["wrapper"][k] for k in ("obs_mean", "obs_var", "obs_count")}
    vec, obs = envs_package.make_env(run_args.env_id, 1, seed, normalize=True, gamma=run_args.gamma,
                                     friction_period=run_args.friction_period, frozen_obs_stats=stats)
    agent = module.Agent(obs.shape[1], vec.single_action_space.shape[0], run_args)
    agent.load_state_dict(ckpt["agent"])
    states = []
    with torch.no_grad():
        while len(states) < samples:
            states.append(torch.as_tensor(obs[0], dtype=torch.float32))
            obs = vec.step(agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32)).numpy())[0]
        states = torch.stack(states)
        mean = agent.actor_mean(states)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
        actions = mean + agent.actor_logstd.exp() * noise
    vec.close()
    return gradient_correlation(agent.actor_mean, agent.actor_logstd, states, actions)


def off_diagonal_mean_abs(matrix):
    """Mean |C[i, j]| over i != j: the summary of a correlation matrix (0: samples do not interfere)."""
    n = matrix.shape[0]
    return float((matrix.abs().sum() - matrix.diagonal().abs().sum()) / (n * n - n))


def gradcorr(runs, states, out_dir, stem, source):
    """Figs. 28-30: per task, a panel per method (its lowest finished seed's matrix), and per method and
    task the mean |off-diagonal| correlation of every finished seed, with Welch's p of P3O against each.
    Every seed's value also goes to gradcorr_<stem>.csv; a seed there with no finished run here (its
    checkpoint gone) is kept in the table, marked *, so runs made in different places add up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.variant.algo in GRADCORR_ALGOS and states[r.directory].status == "done"]
    if not done:
        raise SystemExit(f"error: {source} has no finished run of {', '.join(GRADCORR_ALGOS)} in this runs directory")
    matrices = {(r.env, r.variant.name, r.seed): run_gradient_correlation(states[r.directory].run_path) for r in done}
    envs, methods = list(dict.fromkeys(r.env for r in done)), list(dict.fromkeys(r.variant.name for r in done))
    fig, axes = plt.subplots(len(envs), len(methods), figsize=(3.2 * len(methods), 3.2 * len(envs) + 0.6),
                             squeeze=False)
    for row, env in enumerate(envs):
        for col, method in enumerate(methods):
            ax, seeds = axes[row][col], sorted(s for e, m, s in matrices if (e, m) == (env, method))
            ax.set_xticks([])
            ax.set_yticks([])
            if seeds:
                image = ax.imshow(matrices[(env, method, seeds[0])].numpy(), cmap="RdBu", vmin=-1, vmax=1)
                ax.set_title(f"{env}\n{method} seed {seeds[0]}", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    fig.suptitle(f"{PAPER_FIGURES['gradcorr']} ({GRADCORR_SAMPLES} states; red -1, blue +1)", fontsize=9)
    fig.savefig(out_dir / f"gradcorr_{stem}.png", dpi=100)
    plt.close(fig)
    values, kept = {}, set()  # (task, method) -> {seed: mean |off-diagonal|}; kept: from the earlier CSV
    planned = {(r.env, r.variant.name, r.seed) for r in runs}
    csv_path = out_dir / f"gradcorr_{stem}.csv"
    for row in read_csv(csv_path) if csv_path.exists() else []:
        key = (row["env"], row["variant"], row["seed"])
        if key in planned and key not in matrices:
            values.setdefault(key[:2], {})[key[2]] = row["gradcorr"]
            kept.add(key)
    for (e, m, seed), c in matrices.items():
        values.setdefault((e, m), {})[seed] = off_diagonal_mean_abs(c)
    variants = [v for v in dict.fromkeys(r.variant for r in runs) if any(m == v.name for _, m in values)]
    envs = [e for e in dict.fromkeys(r.env for r in runs) if any(t == e for t, _ in values)]
    rows = [{"env": e, "variant": m, "seed": seed, "status": "done", "gradcorr": x}
            for (e, m), by_seed in values.items() for seed, x in sorted(by_seed.items())]
    write_csv(csv_path, rows, ("env", "variant", "seed", "gradcorr"))
    body = [[e, v.name, interval_text(values[(e, v.name)].values(), "{:.3f}"),
             "; ".join(f"{seed}{'*' * ((e, v.name, seed) in kept)}: {x:.3f}"
                       for seed, x in sorted(values[(e, v.name)].items()))]
            for e in envs for v in variants if (e, v.name) in values]
    compared = comparison_table(rows, variants, envs, [("gradcorr", "gradient correlation")], "{:+.3f}")
    (out_dir / f"gradcorr_{stem}.md").write_text("\n".join([
        f"# {PAPER_FIGURES['gradcorr']}", "", f"Finished runs of `{source}` in this runs directory"
        + (f"; seeds marked * are kept from `{csv_path.name}`, computed where their checkpoints were (the matrices "
           "drawn are this directory's runs only)." if kept else "."), "",
        "The paper does not define its matrix. Ours is the normalised gradient covariance over samples of Lyle et "
        "al. (2023): C[i, j] = cos(g_i, g_j), g_i the gradient of log pi(a_i | s_i) with respect to every actor "
        f"parameter, over {GRADCORR_SAMPLES} states of the run's own deterministic policy (episode seeds "
        f"{GRADCORR_SEED:,} on, observations normalised with its statistics) and actions sampled from its "
        "policy. Summary: the mean |C[i, j]| over i != j (0: the samples' updates do not interfere).", "",
        markdown_table(["task", "method", "mean abs off-diagonal correlation", "seed: value"], body), "",
        *(["P3O against each method (Welch's two-sided p):", "", compared, ""] if compared else [])]))
    return [out_dir / f"gradcorr_{stem}.md", out_dir / f"gradcorr_{stem}.png"]


# ---------------------------------------------------------------------------------------------
# Aggregation of one experiment
# ---------------------------------------------------------------------------------------------


def aggregate(experiment, runs, states, opts, earlier):
    """Write results/<experiment>/<experiment>_<budget>.md, runs_<budget>.csv and the figures. earlier: the
    --reuse CSVs' finished runs (earlier_runs), read once before anything ran or was written."""
    label = budget_label(opts.budget, opts.total_timesteps)
    out_dir = Path(opts.results_dir) / experiment.name
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = {}  # each run's scalars, read once for the CSV, the tables and the figures
    rows = reuse([summarize(r, states[r.directory], experiment.name, label, cache, opts.eval_episodes) for r in runs],
                 earlier)
    write_csv(out_dir / f"runs_{label}.csv", rows)
    started = [r for r in runs if states[r.directory].status in ("done", "partial")]
    tags = ("charts/episodic_return",) + tuple(dict.fromkeys(experiment.metrics + DISTILL_METRICS))
    curves = curves_of(runs, states, label, cache, tags) + reused_curves(rows)
    write_curves(out_dir / f"curves_{label}.csv", curves)
    variants = list(dict.fromkeys(r.variant for r in runs))
    envs = list(dict.fromkeys(r.env for r in runs))
    seeds = sorted({r.seed for r in runs})
    steps = sorted({r.total for r in runs})
    steps_note = " / ".join(f"{s:,}" for s in steps) + " environment steps per run"
    partial = {run_key(row) for r, row in zip(runs, rows) if states[r.directory].status == "partial"}
    if experiment.kind != "cycle":  # finished runs only; the cycle experiment's long runs as far as they got
        curves = [c for c in curves if run_key(c) not in partial]
    over_run = distill_over_run(curves, segments=5 if experiment.kind == "cycle" else 6) \
        if experiment.kind in ("distill", "cycle") else ""
    changes, marks = [], {}
    for r in (r for r in started if "--friction-period" in r.args):  # Cycle Friction, as far as each run got
        state, period = states[r.directory], int(r.args["--friction-period"])
        returns = cached_scalars(cache, state.run_path).get("charts/episodic_return", [])
        changes.append((r.variant.name, r.env, period, steps_reached(r, state), returns))
        marks[r.env] = range(period, r.total, period)  # dotted lines at the friction changes
    friction = friction_table(changes)
    (out_dir / f"{experiment.name}_{label}.md").write_text(
        experiment_markdown(experiment, rows, variants, envs, label, seeds, steps_note, over_run, friction))
    unfinished = " (unfinished runs as far as they got)" if experiment.kind == "cycle" and partial else ""
    title = f"{experiment.name} [{label}]" + unfinished
    written = figures(out_dir, label, title, curves, ("charts/episodic_return",) + tuple(experiment.metrics), marks)
    if experiment.kind == "cycle" and curves:
        written.append(metrics_grid(out_dir / f"plasticity_{label}.png", f"{title}: plasticity of the actor, {BAND}",
                                    curves, experiment.metrics))
    print(f"wrote {out_dir / f'{experiment.name}_{label}.md'}, {out_dir / f'runs_{label}.csv'}"
          + "".join(f", {w.name}" for w in written))
    return out_dir


def metrics_figures(paths, out_dir, stem, tags=ALL_METRICS):
    """The `metrics` command on arbitrary run directories: group by the run's exp_name and env."""
    finished, curves, cache = [], [], {}
    for p in map(Path, paths):
        run_path = p if has_checkpoint(p) else next(
            (d for d in sorted(p.iterdir()) if has_checkpoint(d)), None) if p.is_dir() else None
        if run_path is None:
            print(f"skipping {p}: no run with a checkpoint there")
            continue
        try:  # with the loader of the file that wrote it, which its checkpoint names (any --exp-name)
            args = evaluate.load_run(run_path, mmap=True)[1].get("args", {})
        except SystemExit as e:
            print(f"skipping {p}: {str(e.code).removeprefix('error: ')}")
            continue
        finished.append((args.get("exp_name", p.name), args.get("env_id", "?"), run_path))
        steps = int(args.get("total_timesteps", 0)) or 1
        key = {"variant": finished[-1][0], "algo": "", "env": finished[-1][1], "seed": args.get("seed", 0),
               "budget": stem, "total_timesteps": steps}
        curves += run_curve(key, steps, steps, cached_scalars(cache, run_path), tags)
    out_dir.mkdir(parents=True, exist_ok=True)
    over_run = distill_over_run(curves)
    if over_run:
        (out_dir / f"distillation_{stem}.md").write_text(
            "# Distillation over the run\n\nMeans over each span's resets. Runs: "
            + ", ".join(f"{label} {env} ({path.name})" for label, env, path in finished) + "\n\n" + over_run + "\n")
    return figures(out_dir, stem, "Plasticity metrics", curves, tags)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    names = sorted(EXPERIMENTS) + sorted(ALIASES) + sorted(GROUPS) + ["metrics", *PAPER_FIGURES, "list"]
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog="Experiments: " + ", ".join(names) + ". `reproduce.py list` describes them.")
    p.add_argument("experiment", choices=names, help="what to reproduce (see `list`)")
    p.add_argument("--budget", choices=list(BUDGETS), default="reduced",
                   help="smoke: seconds per run, plumbing only (tiny networks, 8,192 PPO / 2,000 SAC steps, 1 seed);\n"
                        "reduced: 1M PPO / 200k SAC steps, 2 seeds, the paper's hyperparameters;\n"
                        "paper: 12.5M (20M on Humanoid, HumanoidStandup) PPO / 1M SAC steps, 5 seeds;\n"
                        "cycle: one full reset cycle (100 resets): 5M PPO / 1M SAC steps, 2 seeds; Cycle Friction\n"
                        "  PPO runs 3.5M steps, friction changing every 500,000 (one schedule 4,3,2,1,2,3,4)")
    p.add_argument("--total-timesteps", type=int, help="override the budget's steps per run (own directories)")
    p.add_argument("--seeds", type=int, nargs="+", help="seed numbers (default: 1..the budget's seed count)")
    p.add_argument("--envs", nargs="+", help="tasks (default: the experiment's)")
    p.add_argument("--algos", nargs="+", choices=sorted(ALGOS), help="only these algorithms of the experiment")
    p.add_argument("--workers", type=int, help="local runs at once (default: one per core; cores/2 with --cuda).\n"
                   "Measured on 2 cores (PPO HalfCheetah-v5): 2 runs x 1 thread train 1.7x the summed steps/s of\n"
                   "1 run x 2 threads (docs/reproduce.md)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores / workers, at least 1; with\n"
                   "--cuda 1: the networks run on the GPU, and each run's process steps its envs on one core)")
    p.add_argument("--cuda", action="store_true", help="pass --cuda to every run")
    p.add_argument("--dry-run", action="store_true", help="print what would run and the commands, run nothing")
    p.add_argument("--aggregate-only", action="store_true", help="run nothing; write tables/figures from what exists")
    p.add_argument("--runs-dir", default="runs/reproduce", help="root of the run directories")
    p.add_argument("--results-dir", default="results", help="root of the tables and figures")
    p.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="deterministic evaluation episodes of each finished run's final checkpoint (evaluate.py),\n"
                        "tabulated beside the training return; 0: none (default 10)")
    p.add_argument("--reuse", nargs="+", default=[], metavar="CSV",
                   help="earlier runs_<budget>.csv files: a configuration with no run here is filled from a\n"
                        "finished run of it there (same method, task, seed and budget), named as reused")
    p.add_argument("--from", dest="source", default="table1",
                   help="metrics, fig7, gradcorr: the experiment whose runs to use (default table1); fig7 reads\n"
                        "only its results/<experiment>/runs_<budget>.csv, gradcorr its finished runs' checkpoints (and\n"
                        "keeps, marked *, the seeds of results/gradcorr/gradcorr_<experiment>_<budget>.csv that have none here)")
    p.add_argument("--paths", nargs="+", help="metrics: plot these run directories instead")
    s = p.add_argument_group("Slurm (--launcher slurm, through submitit)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    s.add_argument("--slurm-partition", help="partition")
    s.add_argument("--slurm-time", type=int, default=24 * 60, help="minutes per run (default 1440); a run "
                   "cut by the limit is resumed from its checkpoint when the command is run again")
    s.add_argument("--slurm-cpus", type=int, default=4, help="CPUs per run (default 4; also the runs' torch threads)")
    s.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per run (> 0 adds --cuda)")
    s.add_argument("--slurm-mem-gb", type=int, help="memory per run")
    s.add_argument("--slurm-array-parallelism", type=int, default=64, help="array tasks running at once")
    s.add_argument("--slurm-logs", default="runs/reproduce/slurm", help="submitit's folder (job logs)")
    s.add_argument("--wait", action="store_true", help="wait for the jobs, then write the tables")
    opts = p.parse_args(argv)
    opts.experiment = ALIASES.get(opts.experiment, opts.experiment)
    if opts.launcher == "slurm":
        opts.threads = opts.threads or opts.slurm_cpus
        opts.cuda = opts.cuda or opts.slurm_gpus > 0
    # CPU: one single-thread run per core trains faster in sum than fewer runs with more threads (--help).
    # A GPU box: every run's networks share the GPU, so a run needs one core for its env stepping and Python,
    # and the other half of the cores is left to the CUDA driver's threads and the system (not yet measured)
    opts.workers = (max(1, cores // 2) if opts.cuda else cores) if opts.workers is None else opts.workers
    opts.threads = opts.threads or (1 if opts.cuda else max(1, cores // max(1, opts.workers)))
    opts.seeds = opts.seeds or list(range(1, BUDGETS[opts.budget]["seeds"] + 1))
    if opts.workers < 1 or opts.threads < 1:
        p.error("--workers and --threads must be >= 1")
    if opts.eval_episodes < 0:
        p.error(f"--eval-episodes {opts.eval_episodes}: must be >= 0 (0: no evaluation)")
    bad_seeds = [str(s) for s in opts.seeds if not 0 <= s < 2**31]
    if bad_seeds:
        sys.exit(f"error: --seeds {' '.join(bad_seeds)}: a seed must be in [0, 2**31)")
    for flag, path in (("--runs-dir", opts.runs_dir), ("--results-dir", opts.results_dir)):
        if opts.experiment != "list" and directory_problem(path):
            sys.exit(f"error: {flag} {path}: {directory_problem(path)}")
    for path in opts.reuse:
        try:
            with open(path, newline="") as f:
                columns = set(next(csv.reader(f), []))
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f"error: --reuse {path}: cannot be read ({type(e).__name__})")
        missing = [c for c in RUN_KEY_FIELDS + ("status",) if c not in columns]
        if missing:
            sys.exit(f"error: --reuse {path}: not a runs CSV written by reproduce.py (no {', '.join(missing)} "
                     "columns)")
    if opts.envs:  # before anything is planned: an id that cannot exist would only fail in every run
        from envs import validate_env_id

        for env_id in opts.envs:
            try:
                validate_env_id(env_id)
            except ValueError as e:
                p.error(f"--envs: {e}")
    return opts


def describe():
    lines = []
    for name, e in EXPERIMENTS.items():
        alias = [a for a, t in ALIASES.items() if t == name]
        lines.append(f"{name}{' (' + ', '.join(alias) + ')' if alias else ''}: {e.title}")
        lines.append("    variants: " + "; ".join(f"{v.name} = {ALGOS[v.algo].script}"
                                                  + "".join(f" {a}" for a in ALGOS[v.algo].args)
                                                  + "".join(f" {o} {x}" for o, x in v.overrides)
                                                  for v in e.variants))
        lines.append("    tasks: " + ", ".join(e.envs))
    for g, members in GROUPS.items():
        lines.append(f"{g}: all of {', '.join(members)}")
    for name, title in PAPER_FIGURES.items():
        lines.append(f"{name}: {title}, of the finished runs of --from EXPERIMENT")
    lines.append("metrics: plasticity figures (dormant ratio, FAU, effective rank, weight magnitude and distance from "
                 "the initial weights, policy entropy, gradient and activation norms) of the finished runs of --from "
                 "EXPERIMENT (default table1), or of --paths DIR...")
    return "\n".join(lines)


def main(argv=None):
    opts = parse_args(argv)
    if opts.experiment == "list":
        print(describe())
        return 0
    label = budget_label(opts.budget, opts.total_timesteps)
    if opts.experiment == "metrics" and opts.paths:
        metrics_figures(opts.paths, Path(opts.results_dir) / "metrics" / "paths", label)
        return 0
    source = opts.source if opts.experiment in ("metrics", *PAPER_FIGURES) else opts.experiment
    if opts.experiment == "fig7":  # from the results alone
        runs_csv = Path(opts.results_dir) / ALIASES.get(source, source) / f"runs_{label}.csv"
        if not runs_csv.is_file():
            raise SystemExit(f"error: {runs_csv} does not exist: aggregate `{source}` at --budget {opts.budget} first")
        out_dir = Path(opts.results_dir) / "fig7"
        out_dir.mkdir(parents=True, exist_ok=True)
        for w in fig7(read_csv(runs_csv), out_dir, f"{source}_{label}", runs_csv):
            print(f"wrote {w}")
        return 0
    names = GROUPS.get(source, (ALIASES.get(source, source),))
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"error: unknown experiment {name!r}; one of {', '.join(EXPERIMENTS)}")

    plans = {}
    for name in names:
        experiment = EXPERIMENTS[name]
        runs, missing = plan(experiment, opts.budget, opts.seeds, opts.envs or experiment.envs, opts.algos,
                             opts.runs_dir, opts.total_timesteps)
        for v in missing:
            print(f"{name}: skipping {v.name}: {ALGOS[v.algo].script} is not in this repository")
        plans[name] = runs
    unique = {r.directory: r for runs in plans.values() for r in runs}
    if not unique:
        raise SystemExit("error: nothing to run (every algorithm file of this selection is missing, or the "
                         "--algos filter left no variant)")
    states = {d: run_state(r) for d, r in unique.items()}
    earlier = earlier_runs(opts.reuse)
    reused = {d for d, r in unique.items() if states[d].status == "new" and run_key(key_fields(r, label)) in earlier}
    extends = {d: shorter_run(r) for d, r in unique.items() if states[d].status == "new" and d not in reused}
    extends = {d: found for d, found in extends.items() if found}  # {directory: (label, State)}
    counts = {s: sum(st.status == s for st in states.values()) for s in ("done", "partial", "new", "failed")}
    print(f"{', '.join(names)} [{label}]: {len(unique)} runs: {counts['done']} finished (skipped), "
          f"{counts['partial']} to resume, {counts['new'] - len(reused) - len(extends)} to start"
          + (f", {len(extends)} to extend from a shorter budget's finished run" if extends else "")
          + (f", {len(reused)} reused (--reuse; not run)" if reused else "")
          + (f", {counts['failed']} failed (not run)" if counts["failed"] else ""))
    for d, st in states.items():
        if st.status == "failed":
            print(f"FAILED {unique[d].name}: {st.error}")

    if opts.experiment == "gradcorr":
        out_dir = Path(opts.results_dir) / "gradcorr"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            for w in gradcorr(plans[name], states, out_dir, f"{name}_{label}", f"reproduce.py {name} --budget {label}"):
                print(f"wrote {w}")
        return 0
    if opts.experiment == "metrics":
        for name in names:
            done = [r for r in plans[name] if states[r.directory].status == "done"]
            out_dir = Path(opts.results_dir) / "metrics" / name
            out_dir.mkdir(parents=True, exist_ok=True)
            curves = curves_of(done, states, label, {}, ALL_METRICS)
            for w in figures(out_dir, label, f"{name} [{label}]", curves, ALL_METRICS):
                print(f"wrote {w}")
        return 0

    todo = [(r, extended_state(r, extends[d][1]) if d in extends else states[d]) for d, r in unique.items()
            if states[d].status in ("partial", "new") and d not in reused]
    queued = {r.directory for r, _ in todo if slurm_pending(r)}
    if queued:
        print(f"{len(queued)} runs are still queued or running on Slurm; not starting them again")
        todo = [(r, s) for r, s in todo if r.directory not in queued]
    jobs = [(r, command(r, s, opts.threads, opts.cuda)) for r, s in todo]
    if opts.dry_run:
        for (r, s), (_, argv) in zip(todo, jobs):
            print(f"# {r.name} ({s.status}{f', at step {s.step:,}' if s.status == 'partial' else ''}"
                  + (f", extends {extends[r.directory][0]}/{r.name}" if r.directory in extends else "") + ")")
            print(" ".join(argv[:1] + [os.path.relpath(ROOT / argv[1])] + argv[2:]))
        return 0

    failed = [r for d, r in unique.items() if states[d].status == "failed"]
    if jobs and not opts.aggregate_only:
        for r, s in todo:
            prepare(r, states[r.directory])
            if r.directory in extends:
                extend(r, *extends[r.directory])
        if opts.launcher == "local":
            print(f"running {len(jobs)} runs, {opts.workers} at a time, {opts.threads} torch threads each; "
                  f"output in <run dir>/stdout.log", flush=True)
            failed += run_local(jobs, opts.workers, opts.threads, opts.progress_every)
        else:
            submitted = submit(jobs, opts)
            print(f"submitted {len(submitted)} runs as a Slurm job array ({submitted[0].job_id.split('_')[0]}); "
                  f"logs in {opts.slurm_logs}")
            if not opts.wait:
                print("when they have finished, run the same command again (or with --aggregate-only) to write "
                      "the tables and figures")
                return 0
            failed += wait_jobs(jobs, submitted, opts.progress_every)
        for d in {r.directory for r, _ in todo}:
            states[d] = run_state(unique[d])

    for name in names:
        aggregate(EXPERIMENTS[name], plans[name], states, opts, earlier)
    if failed:
        listed = ", ".join(r.name for r in failed)
        print(f"{len(failed)} runs failed: {listed}; see the FAILED lines above and their stdout.log. Run the command "
              "again to retry them." if opts.launcher == "local" else f"{len(failed)} runs did not finish: {listed}; "
              "see the FAILED and STOPPED lines above. Run the same command again to retry or resume them.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
