"""reproduce.py --launcher slurm against a real one-node Slurm cluster: munged, slurmctld and slurmd started here
(as root, from Debian's slurm-wlm and munge packages), the job array end to end, runs stopped by a time limit and
by scancel, and the command run again resuming them exactly."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from reproduce_utils import collect, local, plan, registry
from conftest import ROOT, load_checkpoint, only_run, read_scalars

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "sinfo")
PACKAGES = "a real Slurm cluster needs root and Debian's slurm-wlm and munge: apt-get install slurm-wlm munge"
KILL_WAIT = 10  # seconds between Slurm's SIGTERM and its SIGKILL


def find(name):
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


MISSING = [n for n in DAEMONS + CLIENTS if not find(n)] + ([] if os.geteuid() == 0 else ["root"])
if MISSING and os.environ.get("CI") != "true":  # CI must run them
    pytest.skip(PACKAGES, allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(directory, host, cpus):
    """A one-node cluster: this host with its cores, one partition, no cgroups, no accounting database (reproduce.py
    watches jobs with squeue, not sacct), the time limit enforced to the second and KILL_WAIT s before SIGKILL."""
    d = Path(directory)
    return "\n".join([
        "ClusterName=pytest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={d / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none", "MailProg=/bin/true",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/builtin",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2", f"KillWait={KILL_WAIT}", "OverTimeLimit=0", "InactiveLimit=0",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName=pytest Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


@pytest.fixture(scope="module")
def slurm():
    """Start munged, slurmctld and slurmd (as root) on a configuration of their own in a temporary directory, wait
    until sinfo shows the node idle; yield the environment that points Slurm's commands at it (SLURM_CONF) and the
    start-up time; then cancel what is left, stop the three daemons and remove the directory."""
    if MISSING:
        pytest.fail(f"{PACKAGES} (missing: {', '.join(MISSING)})")
    directory = Path(tempfile.mkdtemp(prefix="slurm-"))
    directory.chmod(0o755)
    for sub in ("munge", "state", "spool"):
        (directory / sub).mkdir(mode=0o755)
    key = directory / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = directory / "slurm.conf"
    host = socket.gethostname().split(".")[0]
    conf.write_text(slurm_conf(directory, host, os.cpu_count()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = []
    start = time.monotonic()
    try:
        munge = directory / "munge"
        for cmd in ([find("munged"), "-F", "--force", f"--key-file={key}", f"--socket={munge / 'munge.socket'}",
                     f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'seed'}",
                     f"--log-file={munge / 'munged.log'}"],
                    [find("slurmctld"), "-D", "-i", "-f", str(conf)],
                    [find("slurmd"), "-D", "-N", host, "-f", str(conf)]):
            daemons.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True))
            if cmd[0].endswith("munged"):
                wait_for(lambda: (munge / "munge.socket").exists(), 10, "munged's socket", directory)
        wait_for(lambda: sinfo(env) == "idle", 60, "the node idle in sinfo", directory)
        startup = time.monotonic() - start
        print(f"Slurm cluster up in {startup:.1f} s (node {host}, {os.cpu_count()} CPUs, {directory})")
        yield {"env": env, "startup_s": startup, "directory": directory}
    finally:
        subprocess.run([find("scancel"), "--user", "root"], env=env, capture_output=True)
        deadline = time.monotonic() + KILL_WAIT + 20
        while squeue(env) and time.monotonic() < deadline:
            time.sleep(0.5)
        for proc in reversed(daemons):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def sinfo(env):
    out = subprocess.run([find("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=20)
    return out.stdout.strip()


def squeue(env):
    """The jobs queued or running, one 'id state' line each."""
    out = subprocess.run([find("squeue"), "-h", "-o", "%i %T"], env=env, capture_output=True, text=True, timeout=20)
    return out.stdout.strip()


def wait_for(condition, seconds, what, directory):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {log.name}:\n" + log.read_text()[-2000:]
                             for log in sorted(directory.rglob("*.log")))
            raise AssertionError(f"no {what} after {seconds} s\n{logs}")
        time.sleep(0.1)


# ---- reproduce.py through the real scheduler ----

def command(tmp_path, *args, launcher="slurm"):
    """reproduce.py table1 at the smoke budget: one PPO run on InvertedPendulum-v5, its job array on the cluster."""
    return [sys.executable, "reproduce.py", "table1", "--budget", "smoke", "--envs", "InvertedPendulum-v5", "--seeds",
            "1", "--algos", "ppo", "--launcher", launcher, "--slurm-cpus", "1", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--slurm-logs", str(tmp_path / "slurm"), "--progress-every",
            "2", "--wait", *args]


def run(cmd, slurm, timeout=240):
    proc = subprocess.run(cmd, cwd=ROOT, env=slurm["env"], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def the_run(tmp_path, total=None):
    runs, _ = plan.plan(registry.EXPERIMENTS["table1"], "smoke", [1], ["InvertedPendulum-v5"], ["ppo"],
                        tmp_path / "runs", total)
    return runs[0]


def launches(run_):
    """The output of each launch of the run, in order (reproduce.py heads each with `$ <command>`)."""
    return (run_.directory / "stdout.log").read_text().split("\n$ ")[1:]


def test_smoke_experiment_end_to_end_through_the_real_scheduler(slurm, tmp_path):
    code, out = run(command(tmp_path), slurm)
    assert code == 0, out
    assert "table1 [smoke]: 1 runs: 0 finished (skipped), 0 to resume, 1 to start" in out
    assert "submitted 1 runs as a Slurm job array (" in out and "1/1 done, 0 running" in out, out
    assert "sacct" not in out  # jobs are watched with squeue: this cluster has no accounting database
    table = (tmp_path / "results" / "table1" / "table1_smoke.md").read_text()
    assert "8,192 environment steps per run; seeds 1; 1/1 runs finished" in table
    rows = collect.read_csv(tmp_path / "results" / "table1" / "runs_smoke.csv")
    assert [(r["algo"], r["status"], r["steps"]) for r in rows] == [("ppo", "done", 8192)]
    assert load_checkpoint(only_run(the_run(tmp_path).directory))["global_step"] == 8192
    # a second seed: the finished run is skipped, only the new one is submitted
    code, out = run(command(tmp_path, "--seeds", "1", "2", "--dry-run"), slurm)
    assert code == 0 and "2 runs: 1 finished (skipped), 0 to resume, 1 to start" in out, out
    assert "# ppo__InvertedPendulum-v5__seed2 (new)" in out and "seed1 (" not in out


def test_time_limit_stops_the_run_with_a_checkpoint_and_the_same_command_resumes_it(slurm, tmp_path):
    """Slurm's warning (SIGUSR2, halfway through a 1-minute limit) reaches the run as one SIGTERM once it
    trains; it checkpoints and exits before the limit. Run again, the command resubmits it with --resume."""
    cmd = command(tmp_path, "--total-timesteps", "10000000", "--slurm-time", "1", "--eval-episodes", "0")
    run_ = the_run(tmp_path, 10_000_000)
    code, out = run(cmd, slurm)
    assert code == 1 and "1 runs did not finish: ppo__InvertedPendulum-v5__seed1" in out, out
    state = plan.run_state(run_)
    assert state.status == "partial" and 0 < state.step < 10_000_000
    assert (f"STOPPED ppo__InvertedPendulum-v5__seed1 at step {state.step:,} of 10,000,000 (stopped on Slurm's "
            "warning before its time limit)") in out, out
    first = state.run_path
    assert not list(first.glob("*.tmp")) and load_checkpoint(first)["global_step"] == state.step
    [launch] = launches(run_)
    assert launch.count("SIGUSR2 from Slurm") == 1 and launch.count("finishing this update") == 1, launch
    assert launch.index("SIGUSR2 from Slurm") < launch.index("SIGTERM: finishing this update")
    assert f"stopped at step {state.step:,}" in launch and "Traceback" not in launch
    submitit_log = "".join(p.read_text() for p in (tmp_path / "slurm").glob("*_log.*"))
    assert "Caught signal" not in submitit_log and "requeue" not in submitit_log  # submitit's handler is not used

    code, out = run(cmd, slurm)
    assert code == 1 and "1 runs: 0 finished (skipped), 1 to resume, 0 to start" in out, out
    again = plan.run_state(run_)
    assert again.run_path == first and again.step > state.step  # continued, not restarted
    assert f"STOPPED ppo__InvertedPendulum-v5__seed1 at step {again.step:,} of 10,000,000" in out
    resumed = launches(run_)[1]
    assert resumed.startswith(f"{sys.executable} ppo_continuous.py --resume {first}")
    first_update = next(line for line in resumed.splitlines() if line.startswith("step"))
    assert local.parse_progress(first_update)[0] == state.step + 512


def local_command(total):
    """The training file and arguments (bar --run-dir) that reproduce.py's local launcher runs for the_run."""
    argv = plan.command(the_run(Path("runs"), total), plan.State("new"), 1)[1:]
    i = argv.index("--run-dir")
    return argv[:i] + argv[i + 2:]


SCANCEL_TOTAL = 16_384
# the same configuration uninterrupted, as the local launcher runs it: trained in the background meanwhile
SHARED_RUNS = {"test_scancel_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one":
               [local_command(SCANCEL_TOTAL)]}


def test_scancel_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(slurm, tmp_path, shared_runs):
    total = SCANCEL_TOTAL
    cmd = command(tmp_path, "--total-timesteps", str(total), "--eval-episodes", "0")
    run_ = the_run(tmp_path, total)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=slurm["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log = run_.directory / "stdout.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "\nstep" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", (run_.directory / "slurm_job").read_text().strip()], env=slurm["env"], check=True)
    out = proc.communicate(timeout=120)[0]
    state = plan.run_state(run_)
    assert proc.returncode == 1 and state.status == "partial" and 0 < state.step < total, out
    assert f"at step {state.step:,} of 16,384 (stopped on SIGTERM from Slurm: scancel or its time limit)" in out
    [launch] = launches(run_)
    assert launch.count("SIGTERM: finishing this update") == 1 and "Traceback" not in launch, launch
    assert "SIGUSR2" not in launch and not list(state.run_path.glob("*.tmp"))

    code, out = run(cmd, slurm)
    assert code == 0 and "1 to resume" in out, out
    assert only_run(run_.directory) == state.run_path and plan.run_state(run_).step == total
    reference = shared_runs.path(*local_command(total))
    resumed, uninterrupted = load_checkpoint(state.run_path), load_checkpoint(reference)
    assert resumed["global_step"] == uninterrupted["global_step"] == total
    for name, tensor in uninterrupted["agent"].items():
        assert torch.equal(resumed["agent"][name], tensor), name
    returns = [read_scalars(p)["charts/episodic_return"] for p in (state.run_path, reference)]
    assert returns[0] == returns[1] and any(step > state.step for step, _ in returns[0])
