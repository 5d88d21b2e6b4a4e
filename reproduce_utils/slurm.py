"""The Slurm launcher: one job array through submitit, Slurm's time-limit warning passed on to each run as the
SIGTERM the algorithm files handle, waiting for the jobs through squeue.
"""

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .local import child_env, parse_progress, progress_line, tail
from .plan import run_state
from .registry import ROOT


def slurm_parameters(opts):
    """submitit parameters of the job array (slurm_* names are ignored by the local/debug executors)."""
    params = {"timeout_min": opts.slurm_time, "cpus_per_task": opts.slurm_cpus, "slurm_array_parallelism":
              opts.slurm_array_parallelism, "name": "reproduce", "slurm_signal_delay_s": min(90, opts.slurm_time * 30)}
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

    The sbatch script asks for SIGUSR2 90 s before the limit, or halfway through a limit under 3 minutes: one due at
    once would arrive while submitit's process still starts, with no handler yet, and kill it. Slurm sends it, like the
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
