"""Shared helpers: run an algorithm file as a user would, and read its TensorBoard scalars; the runs the tests
share (shared_runs); plan the runs of an experiment of reproduce.py and make hand-made runs and CSV rows for its
tests."""

import contextlib
import dataclasses
import hashlib
import importlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reproduce_utils import plan, registry  # noqa: E402 (from the repository, on the path above)

# A tiny, fast configuration for end-to-end runs: 2 envs x 256 steps = 512-step rollouts.
TINY = ["--env-id", "InvertedPendulum-v5", "--num-envs", "2", "--num-steps", "256", "--minibatch-size", "128",
        "--update-epochs", "2", "--hidden-dim", "32", "--threads", "1", "--metrics-every", "1"]


def run_script(script, *args, run_dir, check=True, timeout=300, env=None):
    """Run `python <script> args --run-dir run_dir` (run_dir None: no --run-dir) from the repository root
    (with `env` as the whole environment, if given)."""
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    cmd += [] if run_dir is None else ["--run-dir", str(run_dir)]
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_process(script, *args):
    """Run `python <script> args` from the repository root inside this process: the file as __main__, with its
    argv, output and exit code, without the seconds a new interpreter spends importing torch. For commands that
    stop on their arguments; the interpreter's own start is tested through run_script."""
    argv, out, err = [str(ROOT / script), *map(str, args)], io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = argv
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:  # as the interpreter ends on it: a message is printed to stderr, exit code 1
        if isinstance(e.code, str):
            print(e.code, file=err)
        code = 1 if isinstance(e.code, str) else e.code
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())


def assert_rejected(script, args, messages, tmp_path, process=False):
    """The script exits non-zero before any work, naming every message, and leaves no run directory; its result.
    In this process, or as a new one (process=True)."""
    args = [*args, "--run-dir", tmp_path / "runs"]
    proc = run_script(script, *args, run_dir=None, check=False) if process else run_in_process(script, *args)
    assert proc.returncode != 0
    for message in [messages] if isinstance(messages, str) else messages:
        assert message in proc.stderr, (message, proc.stderr)
    assert not (tmp_path / "runs").exists()
    return proc


def episodic_returns(run_dir):
    """The logged episodic returns of the one run under run_dir, in order."""
    return [v for _, v in read_scalars(only_run(run_dir))["charts/episodic_return"]]


def first_and_last_returns(run_dir, n):
    """Mean episodic return of the first n and of the last n episodes of the one run under run_dir."""
    returns = episodic_returns(run_dir)
    assert len(returns) >= 2 * n, f"only {len(returns)} episodes, need {2 * n}"
    return float(np.mean(returns[:n])), float(np.mean(returns[-n:]))


def interrupt_run(script, *args, run_dir, when=lambda line: line.startswith("step"), sig=signal.SIGINT, times=1):
    """Start a run, send it `sig` (SIGINT: Ctrl-C) `times` times at once when `when` is true of an output line;
    return (exit code, the rest of its output)."""
    cmd = [sys.executable, str(ROOT / script), *map(str, args), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if when(line):
            break
    time.sleep(0.5)
    for _ in range(times):
        proc.send_signal(sig)
    out = proc.stdout.read()
    return proc.wait(timeout=120), out


def only_run(run_dir):
    """The one run directory a single run created under run_dir."""
    runs = [p for p in Path(run_dir).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def read_scalars(run_path):
    """{tag: [(step, value), ...]} from a run directory's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_path), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_checkpoint(run_path):
    import torch

    return torch.load(Path(run_path) / "checkpoint.pt", weights_only=False)


# The test files that take longest, first (the rest keep their order): with pytest.ini's one file per xdist worker,
# the workers then end together, rather than one running the Slurm cluster's file alone at the end.
SLOW_FILES = ("test_slurm_cluster.py", "test_benchmark.py", "test_baselines.py", "test_studies.py",
              "test_videos_and_tracking.py", "test_reproduce.py", "test_plan.py", "test_ppo.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: SLOW_FILES.index(item.path.name) if item.path.name in SLOW_FILES else len(SLOW_FILES))


@pytest.fixture
def tiny():
    return list(TINY)


class SharedRuns:
    """Training runs that tests only read, or copy before they resume them: each configuration (file and
    arguments) trains once per session, as run_script runs it, in a background pool. Under pytest-xdist the
    workers share one directory: the first to claim a configuration trains it, the others wait for it."""

    def __init__(self, directory, threads):
        self.directory, self.queued = Path(directory), {}
        self.pool = ThreadPoolExecutor(max_workers=threads)

    def start(self, script, *args):
        """Queue the run for the pool (once per worker); (its directory, its future)."""
        key = (script, *map(str, args))
        if key not in self.queued:
            run_dir = self.directory / hashlib.sha1(repr(key).encode()).hexdigest()[:12]
            self.queued[key] = run_dir, self.pool.submit(self.train_unless_claimed, script, args, run_dir)
        return self.queued[key]

    @staticmethod
    def train_unless_claimed(script, args, run_dir):
        """Train the run into run_dir unless a worker claimed it already (mkdir is atomic); run_dir.done then
        names its error, or nothing once it finished."""
        try:
            run_dir.with_suffix(".claim").mkdir()
        except FileExistsError:
            return
        error = ""
        try:
            run_script(script, *args, run_dir=run_dir, timeout=600)
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            run_dir.with_suffix(".tmp").write_text(error)
            run_dir.with_suffix(".tmp").rename(run_dir.with_suffix(".done"))

    def path(self, script, *args):
        """The one run directory of the finished run (for reading only): trained here and now if it still waits in
        the pool's queue, else waited for (in this worker's pool or another worker's)."""
        run_dir, future = self.start(script, *args)
        if future.cancel():
            self.train_unless_claimed(script, args, run_dir)
        else:
            future.result()
        deadline = time.monotonic() + 900
        while not (done := run_dir.with_suffix(".done")).exists():
            assert time.monotonic() < deadline, f"shared run {script} {args} did not finish in 900 s"
            time.sleep(0.2)
        assert not done.read_text(), f"shared run {script} {' '.join(map(str, args))} failed: {done.read_text()}"
        return only_run(run_dir)

    def copy(self, script, *args, to):
        """A copy of the finished run under the new directory `to`: its one run directory, to change as one's own."""
        shutil.copytree(self.path(script, *args).parent, to)
        return only_run(to)


@pytest.fixture(scope="session", autouse=True)
def shared_runs(request, tmp_path_factory):
    """The session's SharedRuns. A test module names the runs its tests share in SHARED_RUNS, {the name of a test
    or of a fixture: [(file, *arguments)]}; those of every test selected start at the session's first test, so
    they train while the tests before theirs run. Each of n xdist workers trains on cpu_count / n threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    base = tmp_path_factory.getbasetemp()
    directory = base.parent / "shared_runs" if os.environ.get("PYTEST_XDIST_WORKER") else base / "shared_runs"
    directory.mkdir(exist_ok=True)
    runs = SharedRuns(directory, max(1, (os.cpu_count() or 1) // workers))
    for item in request.session.items:
        wanted = getattr(item.module, "SHARED_RUNS", {})
        for name in (item.originalname, *item.fixturenames):
            for run in wanted.get(name, ()):
                runs.start(*run)
    yield runs
    runs.pool.shutdown()


# ---- reproduce.py: planned runs, hand-made runs and CSV rows ----

PPO_SMOKE_ARGS = {"num_envs": 2, "num_steps": 256}


def saved_args(script, args=None):
    """A checkpoint's arguments as `script` writes them (every field of its Args): its defaults, the smoke
    rollout shape and `args`."""
    defaults = dataclasses.asdict(importlib.import_module(Path(script).stem).Args())
    return {**defaults, **{k: v for k, v in {**PPO_SMOKE_ARGS, **(args or {})}.items() if k in defaults}}


def plan_runs(name, budget="smoke", seeds=(1,), envs=("Hopper-v5",), algos=None, runs_dir="runs/reproduce", total=None):
    runs, missing = plan.plan(registry.EXPERIMENTS[name], budget, list(seeds), list(envs), algos, runs_dir, total)
    assert not missing, missing
    return runs


def by_name(runs):
    return {(r.variant.name, r.env, r.seed): r for r in runs}


def fake_run(run, global_step, state=None, returns=(), args=None):
    """A hand-made finished (or partial) run inside a configuration's directory: one TensorBoard
    event file of episodic returns and a checkpoint with `global_step` and a method state."""
    from torch.utils.tensorboard import SummaryWriter

    path = run.directory / f"{run.env.replace('/', '_')}__{run.variant.algo}__{run.seed}__1700000000"
    path.mkdir(parents=True)
    writer = SummaryWriter(str(path))
    for i, value in enumerate(returns):
        writer.add_scalar("charts/episodic_return", value, 100 * (i + 1))
        writer.add_scalar("plasticity/actor_weight_magnitude", 0.1 + 0.001 * i, 100 * (i + 1))
    writer.close()
    torch.save({"script": run.script, "format": 1, "global_step": global_step,
                "args": saved_args(run.script, args), **(state or {})}, path / "checkpoint.pt")
    return path


def fake_long_run(run, reached, offset, every=50_000):
    """A hand-made run that logged return step / 1000 + offset (and an FAU) every `every` steps up to `reached`."""
    from torch.utils.tensorboard import SummaryWriter

    path = run.directory / f"{run.env.replace('/', '_')}__{run.variant.algo}__{run.seed}__1700000000"
    path.mkdir(parents=True)
    writer = SummaryWriter(str(path))
    for step in range(every, reached + 1, every):
        writer.add_scalar("charts/episodic_return", step / 1000 + offset, step)
        writer.add_scalar("plasticity/actor_fau", 1 - step / 1e7, step)
    writer.close()
    # whole rollouts of 2 x 256 steps stop short of the total: 5,000,000 -> 4,999,680
    torch.save({"script": run.script, "format": 1, "global_step": reached - reached % 512,
                "args": saved_args(run.script)},
               path / "checkpoint.pt")


def rows_of(returns, env="HalfCheetah-v5", key="final_return"):
    """Finished CSV rows: {method label: [return of seed 1, seed 2, ...]}."""
    algos = {v.name: v.algo for v in registry.BASELINES}
    return [{"variant": name, "algo": algos[name], "env": env, "seed": seed, "status": "done", key: value}
            for name, values in returns.items() for seed, value in enumerate(values, 1)]
