"""The report of one experiment: collection, tables and figures written to results/<experiment>/.

Outputs go to results/<experiment>/, file names carrying the budget (smoke, reduced, cycle, paper):
<experiment>_<budget>.md (tables in the paper's layout, ours beside the paper's numbers where
it has them, with the budget and seeds stated), runs_<budget>.csv (one row per run), and PNG
figures (the mean over seeds with its 95% t-interval shaded and every seed as a thin line, one panel per task),
drawn from curves_<budget>.csv (each run's curves, a point per hundredth of its steps), so a table and
its figures can be redrawn from results/ alone (--reuse of its runs CSV).
"""

from pathlib import Path

import evaluate

from .collect import (cached_scalars, curves_of, falls, reuse, reused_curves, run_curve, run_key, steps_label,
                      summarize, write_csv, write_curves)
from .figures import BAND, figures, metrics_grid
from .plan import has_checkpoint, steps_reached
from .registry import ALL_METRICS, BUDGETS, DISTILL_METRICS, budget_label
from .tables import distill_over_run, experiment_markdown, falls_table, friction_table


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
    over_run = distill_over_run(curves, segments=5 if experiment.kind == "cycle" else 6,  # the cycle's in 1M spans
                                every=1_000_000 if experiment.kind == "cycle" and steps[-1] > 5_000_000 else None) \
        if experiment.kind in ("distill", "cycle") else ""
    changes, marks = [], {}
    for r in (r for r in started if "--friction-period" in r.args):  # Cycle Friction, as far as each run got
        state, period = states[r.directory], int(r.args["--friction-period"])
        returns = cached_scalars(cache, state.run_path).get("charts/episodic_return", [])
        changes.append((r.variant.name, r.env, period, steps_reached(r, state), returns))
        marks[r.env] = range(period, r.total, period)  # dotted lines at the friction changes
    friction = friction_table(changes)
    cycle_steps = BUDGETS["cycle"]["ppo"]  # runs longer than one full cycle: a dotted line where it ends
    longer = {r.env for r in started if experiment.kind == "cycle" and r.total > cycle_steps}
    marks.update({env: (cycle_steps,) for env in longer if env not in marks})
    fell = falls_table(run_falls(started, states, cache)) if experiment.kind == "cycle" else ""
    (out_dir / f"{experiment.name}_{label}.md").write_text(
        experiment_markdown(experiment, rows, variants, envs, label, seeds, steps_note, over_run, friction, fell))
    unfinished = " (unfinished runs as far as they got)" if experiment.kind == "cycle" and partial else ""
    title = f"{experiment.name} [{label}]" + unfinished + (f", dotted: {steps_label(cycle_steps)} (one full reset "
                                                           "cycle)" if longer else "")
    written = figures(out_dir, label, title, curves, ("charts/episodic_return",) + tuple(experiment.metrics), marks)
    if experiment.kind == "cycle" and curves:
        written.append(metrics_grid(out_dir / f"plasticity_{label}.png", f"{title}: plasticity of the actor, {BAND}",
                                    curves, experiment.metrics))
    print(f"wrote {out_dir / f'{experiment.name}_{label}.md'}, {out_dir / f'runs_{label}.csv'}"
          + "".join(f", {w.name}" for w in written))
    return out_dir


def run_falls(runs, states, cache):
    """falls_table's rows: each run's falls (collect.falls, resets where it logged reset/seconds) and scalars."""
    out = []
    for r in runs:
        state = states[r.directory]
        s = cached_scalars(cache, state.run_path)
        found = falls(s.get("charts/episodic_return", []), s.get("losses/approx_kl", []), s.get("losses/clipfrac", []),
                      [step for step, _ in s.get("reset/seconds", [])], steps_reached(r, state))
        out.append((r.env, r.variant.name, r.seed, found, s))
    return out


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
