"""The local launcher (reproduce_utils/local.py): progress lines, and SIGTERM passed on to the runs."""

import signal
import subprocess
import sys
import time

from reproduce_utils import local
from conftest import load_checkpoint, only_run, plan_runs, ROOT


def test_progress_is_parsed_from_the_files_output():
    text = ("run runs/x | Hopper-v5\nstep     204,800/1,000,000 | update 25/122 | SPS 1,650 | return   512.3 | "
            "ETA    8.0 min\nwriting checkpoint\n")
    assert local.parse_progress(text) == (204_800, 1_000_000, 1_650, 8.0)
    assert local.parse_progress("starting\n") is None


def test_sigterm_to_the_pool_checkpoints_the_running_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "reproduce.py", "table1", "--budget", "smoke", "--total-timesteps", "1000000", "--seeds",
           "1", "--envs", "InvertedPendulum-v5", "--algos", "ppo", "--workers", "1", "--threads", "1",
           "--runs-dir", str(runs_dir), "--results-dir", str(tmp_path / "results")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = next(iter(plan_runs("table1", envs=("InvertedPendulum-v5",), algos=["ppo"], runs_dir=runs_dir,
                              total=1_000_000))).directory / "stdout.log"
    deadline = time.time() + 120
    while not (log.is_file() and "\nstep" in log.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "SIGTERM" in out, out
    assert "SIGINT: finishing this update" in log.read_text()  # the pool passed it on as Ctrl-C
    assert 0 < load_checkpoint(only_run(log.parent))["global_step"] < 1_000_000
