"""The local launcher: a pool of subprocesses of the algorithm files, their progress lines, Ctrl-C and SIGTERM
passed on so that every run checkpoints.
"""

import os
import re
import signal
import subprocess
import time

from .registry import ROOT

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
