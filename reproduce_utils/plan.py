"""The run plan and its state: the configurations of an experiment, their directories, which are done, partial,
new or failed, the command that starts or resumes each, and the commit each launch ran.
"""

import functools
import importlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .registry import (ALGOS, BUDGETS, CYCLE_FRICTION_PERIODS, ROOT, SCHEDULES, SMOKE_ARGS, SMOKE_EXTRA,
                       Variant, budget_label, schedule_defaults, smoke_value, total_steps)


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


def run_options(variant, env, budget, total):
    """Budget options, then the method's overrides (scaled for smoke); returns (options, overrides used)."""
    algo = ALGOS[variant.algo]
    options = {}
    if budget == "smoke":
        options.update(SMOKE_ARGS[algo.family])
        options.update(SMOKE_EXTRA.get(algo.script, {}))
        for option, default in schedule_defaults(algo.script).items():
            options[option] = smoke_value(option, default)
    if env.startswith("cyclefriction/") and budget != "paper":
        periods = CYCLE_FRICTION_PERIODS if budget == "cycle" else 8
        options["--friction-period"] = str(max(1, total // periods))
    overrides = []
    for option, value in variant.overrides:
        if budget == "smoke" and option in SCHEDULES.get(algo.script, ()):
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
    source: tuple = None  # new: (budget label, State) of the shorter run it extends (shorter_run), if any


def run_state(run, extend=True):
    """done: the checkpoint reached the run's steps; partial: a checkpoint short of them (resume);
    new: no run directory, or one without a checkpoint (the run died before its first one), with the
    shorter run it will extend, if there is one (extend); failed: a checkpoint that cannot be read or that
    another algorithm file wrote."""
    subdirs = sorted(p for p in run.directory.iterdir() if p.is_dir()) if run.directory.is_dir() else []
    with_ckpt = [p for p in subdirs if has_checkpoint(p)]
    if len(with_ckpt) > 1:
        raise SystemExit(f"error: {run.directory} holds {len(with_ckpt)} runs with checkpoints "
                         f"({', '.join(p.name for p in with_ckpt)}); keep one and run again")
    if not with_ckpt:
        return State("new", subdirs[0] if subdirs else None, source=shorter_run(run) if extend else None)
    try:
        ckpt = read_checkpoint(with_ckpt[0], run.script)
    except ValueError as e:
        return State("failed", with_ckpt[0], error=str(e))
    step = int(ckpt["global_step"])
    done = step >= target_steps(run.total, ckpt.get("args", {}))
    return State("done" if done else "partial", with_ckpt[0], step, ckpt)


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
        state = run_state(candidate, extend=False)
        if state.status == "done" and (found is None or state.step > found[1].step):
            found = (label_dir.name, state)
    return found


def command(run, state, threads, cuda=False):
    """argv of the run: a fresh start, or --resume of its checkpoint (or of its copy of the shorter run it
    extends) with the budget's steps."""
    cmd = [sys.executable, run.script]
    if state.status == "partial" or state.source:
        run_path = run.directory / state.source[1].run_path.name if state.source else state.run_path
        cmd += ["--resume", str(run_path), "--total-timesteps", str(run.total)]
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
    run directory without a checkpoint out of the way; to extend a shorter run (state.source), copy it
    (checkpoints, TensorBoard events) into the run's directory, its commits first and EXTENDS_FILE naming
    it, so that --resume continues the copy and the shorter run, which its own tables and evaluations
    read, stays as it is."""
    run.directory.mkdir(parents=True, exist_ok=True)
    commits = run_commits(state.source[1].run_path.parent) if state.source else []
    with open(run.directory / COMMITS_FILE, "w" if state.status == "new" else "a") as f:
        f.write("".join(c + "\n" for c in commits + [source_commit()]))
    if state.status == "new":
        for stale in (p for p in run.directory.iterdir() if p.is_dir()):
            print(f"removing {stale}: it has no checkpoint (the run stopped before its first one)")
            shutil.rmtree(stale)
    if state.source:
        label, source = state.source
        shutil.copytree(source.run_path, run.directory / source.run_path.name)
        (run.directory / EXTENDS_FILE).write_text(f"{label}/{run.name} {source.step}\n")


EXTENDS_FILE = "extends.txt"  # in a configuration's directory: the shorter run it was copied from and continues


def extends_note(directory):
    """'cycle (5,000,000 steps)' for a run that extends the cycle budget's run; '' for any other."""
    path = Path(directory) / EXTENDS_FILE
    if not path.is_file():
        return ""
    source, step = path.read_text().split()
    return f"{source.split('/')[0]} ({int(step):,} steps)"


def steps_reached(run, state):
    """How far a run got: a finished one has reached its total (its whole rollouts may stop short of
    it), any other the step of its checkpoint."""
    return run.total if state.status == "done" else state.step
