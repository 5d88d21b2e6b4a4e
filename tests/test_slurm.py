"""The Slurm launcher (reproduce_utils/slurm.py): the job array through submitit (against a real cluster:
test_slurm_cluster.py)."""

import os
import stat
from types import SimpleNamespace

from reproduce_utils import plan, slurm
from conftest import load_checkpoint, plan_runs


def slurm_opts(tmp_path, **kw):
    return SimpleNamespace(slurm_logs=str(tmp_path / "slurm"), slurm_time=90, slurm_cpus=3, slurm_partition="gpu",
                           slurm_gpus=1, slurm_mem_gb=16, slurm_array_parallelism=4, threads=1, **kw)


def test_slurm_job_array_script(tmp_path, monkeypatch):
    """With stand-ins for `sbatch` and `srun` on PATH (submitit looks for srun to tell it is on a
    cluster), submitit writes the real sbatch script of the array."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", f"cp \"$1\" {tmp_path / 'submitted.sh'}\necho 'Submitted batch job 4242'"),
                       ("srun", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = plan_runs("table1", "reduced", seeds=(1, 2, 3), algos=["p3o"], runs_dir=tmp_path / "runs")
    jobs = [(r, plan.command(r, plan.State("new"), 3, cuda=True)) for r in runs]
    for r in runs:
        r.directory.mkdir(parents=True)
    submitted = slurm.submit(jobs, slurm_opts(tmp_path))
    assert [j.job_id for j in submitted] == ["4242_0", "4242_1", "4242_2"]
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=3",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --time=90", "#SBATCH --mem=16GB", "#SBATCH --signal=USR2@90"):
        assert line in script, script
    # under 3 minutes Slurm's warning comes halfway, never while submitit's process still starts
    short = slurm_opts(tmp_path)
    short.slurm_time = 1
    assert slurm.slurm_parameters(short)["slurm_signal_delay_s"] == 30
    # each array task runs one command: the run's file, its --run-dir and seed, with --cuda
    for (run, argv), job in zip(jobs, submitted):
        fn = job.submission().function
        assert fn.command == argv and argv[1] == "p3o_continuous.py" and "--cuda" in argv
        assert argv[argv.index("--run-dir") + 1] == str(run.directory)
        assert (run.directory / "slurm_job").read_text().strip() == job.job_id


def test_slurm_launcher_runs_the_array_with_submitits_local_executor(tmp_path):
    runs = plan_runs("table1", "smoke", seeds=(1, 2), envs=("InvertedPendulum-v5",), algos=["ppo"],
                     runs_dir=tmp_path / "runs", total=1024)
    for r in runs:
        r.directory.mkdir(parents=True)
    jobs = [(r, plan.command(r, plan.State("new"), 1)) for r in runs]
    opts = slurm_opts(tmp_path)
    opts.slurm_gpus = 0
    submitted = slurm.submit(jobs, opts, cluster="local")
    assert len(submitted) == 2
    assert slurm.wait_jobs(jobs, submitted, progress_every=1) == []
    for r in runs:
        state = plan.run_state(r)
        assert (state.status, state.step) == ("done", 1024)
        assert load_checkpoint(state.run_path)["args"]["seed"] == r.seed
