"""The registry: the paper's experiments, their algorithms and tasks, the budgets, and the paper's own numbers.

Which runs make a table, and at what budget: EXPERIMENTS[name].variants (each an ALGOS entry, the file and the
options that make the method) times its envs times the budget's seeds, each run total_steps(budget, ...) steps
long. To add an experiment, add an Experiment to EXPERIMENTS; a new method is an Algo in ALGOS. The smoke budget's
settings (tiny networks, step-counted schedules / SMOKE_SCALE) are here too.
"""

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent  # the repository: the algorithm files, results/, runs/


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
LATE_MILESTONES = (10_000_000, 12_500_000, 15_000_000, 20_000_000)  # past one cycle: columns where a run got there
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
SCHEDULES = {  # each file's step-counted schedules, whose defaults smoke runs scale down
    "ppo_cycle.py": ("--reset-frequency",), "p3o_continuous.py": ("--reset-frequency",),
    "ppo_redo.py": ("--reset-frequency",), "ppo_cbp.py": ("--maturity-threshold",), "sac_sbp.py": ("--reset-frequency",),
}


def schedule_defaults(script):
    """{option: the file's default} of its step-counted schedules. The file is imported here, on first use, not with
    this module: it imports torch, which a Slurm job's process would otherwise load before it can take signals."""
    args = importlib.import_module(Path(script).stem).Args
    return {option: getattr(args, option[2:].replace("-", "_")) for option in SCHEDULES.get(script, ())}


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


def task_name(env_id):
    """'Hopper' for Hopper-v5 and cyclefriction/Hopper-v5, 'hopper-hop' for dm_control/hopper-hop."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


PAPER_FIGURES = {"fig7": "Fig. 7: P3O's distillation epochs per reset against its improvement over PPO",
                 "gradcorr": "Figs. 28-30: gradient correlation of the actor at the end of the run"}


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
