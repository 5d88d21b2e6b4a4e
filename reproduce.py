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

passed to the file as --run-dir; the file writes its one timestamped run directory inside (TensorBoard events,
checkpoint.pt) and reproduce.py appends the file's output to stdout.log beside it. A run whose checkpoint has
reached the budget's steps is finished and skipped, one with a checkpoint short of them is continued with
--resume, one without a checkpoint is started (again) or, where its configuration finished at a shorter budget,
extended: that run copied, the copy resumed (docs/reproduce.md). The experiment is not part of the directory, so
experiments that share a configuration share its runs (table2, table4 and table5 reuse table1's P3O runs; the
ablations reuse its default runs). Re-running a command after a crash or Ctrl-C loses at most the updates since
the last checkpoint.

The work is done by the package reproduce_utils/ (docs/reproduce.md maps it): this file parses the
arguments and dispatches.
"""

import argparse
import csv
import os
import sys
from pathlib import Path

from ppo_continuous import directory_problem
from reproduce_utils.collect import RUN_KEY_FIELDS, curves_of, earlier_runs, key_fields, read_csv, run_key
from reproduce_utils.figures import figures
from reproduce_utils.local import run_local
from reproduce_utils.paper_figures import fig7, gradcorr
from reproduce_utils.plan import command, plan, prepare, run_state
from reproduce_utils.registry import (ALGOS, ALIASES, ALL_METRICS, BUDGETS, EXPERIMENTS, GROUPS, PAPER_FIGURES, ROOT,
                                      budget_label, describe)
from reproduce_utils.report import aggregate, metrics_figures
from reproduce_utils.slurm import slurm_pending, submit, wait_jobs


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
            sys.exit(f"error: --reuse {path}: not a runs CSV written by reproduce.py (no {', '.join(missing)} columns)")
    if opts.envs:  # before anything is planned: an id that cannot exist would only fail in every run
        from envs import validate_env_id

        for env_id in opts.envs:
            try:
                validate_env_id(env_id)
            except ValueError as e:
                p.error(f"--envs: {e}")
    return opts


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
    counts = {s: sum(st.status == s for st in states.values()) for s in ("done", "partial", "new", "failed")}
    extend = sum(bool(st.source) for d, st in states.items() if d not in reused)
    print(f"{', '.join(names)} [{label}]: {len(unique)} runs: {counts['done']} finished (skipped), "
          f"{counts['partial']} to resume, {counts['new'] - len(reused) - extend} to start"
          + (f", {extend} to extend from a shorter budget's finished run" if extend else "")
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

    todo = [(r, states[d]) for d, r in unique.items() if states[d].status in ("partial", "new") and d not in reused]
    todo.sort(key=lambda rs: rs[1].status != "partial")  # started runs first: what was begun is finished first
    queued = {r.directory for r, _ in todo if slurm_pending(r)}
    if queued:
        print(f"{len(queued)} runs are still queued or running on Slurm; not starting them again")
        todo = [(r, s) for r, s in todo if r.directory not in queued]
    jobs = [(r, command(r, s, opts.threads, opts.cuda)) for r, s in todo]
    if opts.dry_run:
        for (r, s), (_, argv) in zip(todo, jobs):
            print(f"# {r.name} ({s.status}{f', at step {s.step:,}' if s.status == 'partial' else ''}"
                  + (f", extends {s.source[0]}/{r.name} at step {s.source[1].step:,})" if s.source else ")"))
            print(" ".join(argv[:1] + [os.path.relpath(ROOT / argv[1])] + argv[2:]))
        return 0

    failed = [r for d, r in unique.items() if states[d].status == "failed"]
    if jobs and not opts.aggregate_only:
        for r, s in todo:
            prepare(r, s)
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
