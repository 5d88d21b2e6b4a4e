"""Collection from run directories: TensorBoard scalars (orphans of a resumed run dropped), final returns,
windows, stability, the checkpoints' method statistics, evaluations, the runs CSV and the curves CSV, reuse of
earlier runs CSVs and their provenance.
"""

import contextlib
import csv
import io
import math
import os
from pathlib import Path

import numpy as np

import evaluate
import p3o_continuous

from .plan import extends_note, run_commits, steps_reached
from .registry import LATE_MILESTONES, MILESTONES, ROOT, WINDOW, task_name


def drop_orphaned(points):
    """Points (step, value) in the order logged. A resumed run logs again from its checkpoint's step,
    so the first attempt's points from there on are orphans: where the step goes back, drop the
    earlier points at that step or later (equal steps in order, e.g. two episodes ending in the
    same vector step, are kept)."""
    kept = []
    for step, value in points:
        if kept and step < kept[-1][0]:
            while kept and kept[-1][0] >= step:
                kept.pop()
        kept.append((step, value))
    return kept


def read_scalars(run_path):
    """{tag: [(step, value), ...]} from a run directory's TensorBoard event files, orphans dropped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_path), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: drop_orphaned([(e.step, e.value) for e in acc.Scalars(t)]) for t in acc.Tags()["scalars"]}


def cached_scalars(cache, run_path):
    """read_scalars of a run, read once per cache: a {run path: scalars} dict."""
    if run_path not in cache:
        cache[run_path] = read_scalars(run_path)
    return cache[run_path]


def final_return(points, last_share=0.1):
    """Mean of the last `last_share` (at least one) of the logged episodic returns; nan if none."""
    if not points:
        return float("nan")
    values = [v for _, v in points]
    k = max(1, math.ceil(len(values) * last_share))
    return float(np.mean(values[-k:]))


def steps_label(steps, _position=None):
    """Axis label of a step count: 0, 250k, 1.5M (plain numbers overlap on a 5-inch panel)."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(steps) >= size:
            return f"{steps / size:g}{suffix}"
    return f"{steps:g}"


def window_mean(points, lo, hi):
    """Mean of the values logged at steps in (lo, hi]; None if there are none."""
    values = [v for step, v in points if lo < step <= hi]
    return float(np.mean(values)) if values else None


def returns_at(points, reached, milestones=MILESTONES + LATE_MILESTONES, window=WINDOW):
    """{"return_1M": ...}: the return at each milestone the run has reached (steps_reached; a partial
    run too), the mean of the episodic returns logged in the `window` steps up to it."""
    out = {f"return_{steps_label(m)}": window_mean(points, m - window, m) for m in milestones if reached >= m}
    return {k: v for k, v in out.items() if v is not None}


STABILITY_FROM = 1_000_000  # the per-seed stability columns look at the run after this step


def stability(returns, approx_kls, post_reset_dkls, reached, start=STABILITY_FROM, window=WINDOW):
    """Per run, how steady it was after `start`: the best, the worst and the last of the consecutive
    `window`-step windows (start, start + window], ... up to `reached` (mean episodic return in each),
    `collapsed` (1 when the last window is below half the best: the issue's definition of a collapse),
    the number of PPO updates after step 0 whose logged approx-KL exceeds 0.1 and 1, and the median
    and maximum of the alpha-DKL just after each reset (P3O: reset/distill_loss_start)."""
    out = {"updates": len(approx_kls), "kl_over_0.1": sum(v > 0.1 for _, v in approx_kls),
           "kl_over_1": sum(v > 1 for _, v in approx_kls)}
    if post_reset_dkls:
        out.update(dkl_median=float(np.median([v for _, v in post_reset_dkls])),
                   dkl_max=float(max(v for _, v in post_reset_dkls)))
    windows = [window_mean(returns, lo, lo + window) for lo in range(start, reached - window + 1, window)]
    windows = [w for w in windows if w is not None]
    if windows:
        out.update(best_window=max(windows), worst_window=min(windows), last_window=windows[-1],
                   collapsed=int(windows[-1] < max(windows) / 2))
    return out


def episode_lengths(lengths, reached, window=WINDOW):
    """Does an agent learn to stay up, and when: the mean length of the training episodes in consecutive `window`-step
    windows (0, window], ... up to `reached`; `length_last` (the last window's), `length_best` (the longest) and
    `length_best_at` (the end of the first window that long)."""
    windows = [(lo + window, window_mean(lengths, lo, lo + window)) for lo in range(0, reached - window + 1, window)]
    windows = [(end, value) for end, value in windows if value is not None]
    if not windows:
        return {}
    best_at, best = max(windows, key=lambda w: w[1])  # the first of equal windows
    return {"length_last": windows[-1][1], "length_best": best, "length_best_at": best_at}


FALL_MARK, FALL_SPAN = 10_000, 20_000  # a fall's step: the first 10,000-step mark whose last 20,000 steps fell
FALL_UPDATES = 10  # the updates "just before" a fall whose approx-KL and clip fraction are reported


def falls(returns, approx_kls, clipfracs, reset_steps, reached, start=STABILITY_FROM, window=WINDOW):
    """The falls of a run after `start`. A fall is the first `window`-step window (lo, lo + window] whose mean
    episodic return is below half of the best earlier window's; it ends (recovery) at the first later window back
    at half of that best or more. Per fall: `window` (lo), `best` (before it), `value` (its window's mean), `step`
    (located finer: the first FALL_MARK multiple in (lo - window, lo + window] whose last FALL_SPAN steps' mean
    return is below half the best), `reset` (the last reset at or before that step; None: none), `kl` and
    `clipfrac` (medians of the FALL_UPDATES updates logged at or before it) and `recovered` (the end of the window
    that recovered; None: none up to `reached`)."""
    found, best, fall = [], None, None
    for lo in range(start, reached - window + 1, window):
        value = window_mean(returns, lo, lo + window)
        if value is None:
            continue
        if fall is None and best is not None and value < best / 2:
            spans = ((s, window_mean(returns, s - FALL_SPAN, s)) for s in range(lo - window + FALL_MARK,
                                                                                  lo + window + 1, FALL_MARK))
            step = next((s for s, m in spans if m is not None and m < best / 2), lo + window)
            kls, clips = ([v for s, v in points if s <= step][-FALL_UPDATES:] for points in (approx_kls, clipfracs))
            fall = {"window": lo, "best": best, "value": value, "step": step,
                    "reset": max((s for s in reset_steps if s <= step), default=None),
                    "kl": float(np.median(kls)) if kls else None,
                    "clipfrac": float(np.median(clips)) if clips else None, "recovered": None}
            found.append(fall)
        elif fall is not None and value >= fall["best"] / 2:
            fall["recovered"], fall = lo + window, None
        best = value if best is None else max(best, value)
    return found


METHOD_STATE_KEYS = ("sbp", "cycle", "redo", "cbp")


def method_statistics(ckpt):
    """Reset and epoch counts from a checkpoint's method state (p3o/sac: "sbp", ppo_cycle: "cycle",
    ppo_redo: "redo", ppo_cbp: "cbp" with per-network states, the actor's counted)."""
    state = next((ckpt[k] for k in METHOD_STATE_KEYS if isinstance(ckpt.get(k), dict)), None)
    if state is None:
        return {}
    counts_holder = state["actor"] if isinstance(state.get("actor"), dict) else state
    out = {}
    if counts_holder.get("reset_counts") is not None:  # Table 4 as the files log it, and the neurons counted
        counts = np.asarray(counts_holder["reset_counts"])
        out.update(p3o_continuous.reset_statistics(counts), neurons=int(counts.size))
    for key in ("resets", "distill_epochs", "ppo_epochs", "recovery_epochs", "reset_seconds"):
        if state.get(key) is not None:
            out[key] = float(state[key])
    if out.get("resets") and "distill_epochs" in out:
        out["distill_per_reset"] = out["distill_epochs"] / out["resets"]
    if out.get("ppo_epochs") and "distill_epochs" in out:
        out["distill_to_ppo"] = out["distill_epochs"] / out["ppo_epochs"]
    return out


CSV_FIELDS = ["experiment", "variant", "algo", "env", "seed", "budget", "total_timesteps", "status", "steps",
              "final_return", "eval_return", "eval_std", "eval_episodes", "episodes", "neurons", "total_resets",
              "avg_resets_per_neuron", "share_neurons_reset",
              "resets", "distill_epochs", "distill_per_reset", "ppo_epochs", "distill_to_ppo", "recovery_epochs",
              "reset_seconds", "run_dir", "commit", "reused_from"] + [
              f"return_{steps_label(m)}" for m in MILESTONES] + [
              "best_window", "worst_window", "last_window", "collapsed", "updates", "kl_over_0.1", "kl_over_1",
              "dkl_median", "dkl_max"]

EVAL_SEED = evaluate.Args.seed  # evaluation episode k is seeded EVAL_SEED + k (no training seed is that large)
EVAL_FILE = "evaluation_reproduce.csv"  # a finished run's evaluation for the tables, beside its checkpoint


def evaluation(run_path, step, episodes):
    """(mean return, its std, mean episode length) of `episodes` deterministic episodes of a finished run's final
    checkpoint (evaluate.py: the policy's mean action, the run's observation statistics frozen, episode seeds from
    EVAL_SEED). Kept in <run>/EVAL_FILE (not evaluate.py's own evaluation.csv, which a user's evaluation with
    other episodes may hold) and read from there when it holds these episodes of this
    checkpoint (its global `step`, which the caller has read); Nones when episodes is 0."""
    if not episodes:
        return None, None, None
    path = Path(run_path) / EVAL_FILE
    rows = read_csv(path) if path.is_file() else []
    if [(r.get("global_step"), r.get("seed")) for r in rows] != [(step, EVAL_SEED + k) for k in range(episodes)]:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                rows = evaluate.evaluate_run(str(run_path), evaluate.Args(run_dirs=(str(run_path),),
                                                                          episodes=episodes), None)
        except (Exception, SystemExit) as e:  # a table is still written; the run's evaluation cells stay empty
            print(f"warning: evaluating {run_path} failed ({str(e).removeprefix('error: ') or type(e).__name__}); "
                  "its evaluation cells stay empty")
            return None, None, None
        evaluate.write_csv(path, rows)
    returns = np.array([float(r["return"]) for r in rows])
    return float(returns.mean()), float(returns.std()), float(np.mean([float(r["length"]) for r in rows]))


def summarize(run, state, experiment_name, budget, cache, eval_episodes=0):
    """One CSV row: the run's configuration, its status, and (when finished) its final values and the
    evaluation of its final checkpoint (`eval_episodes` episodes). cache: cached_scalars' cache."""
    row = {"experiment": experiment_name, "variant": run.variant.name, "algo": run.variant.algo, "env": run.env,
           "seed": run.seed, "budget": budget, "total_timesteps": run.total,
           "status": f"failed: {state.error}" if state.error else state.status,
           "steps": state.step, "run_dir": os.path.relpath(state.run_path or run.directory, ROOT),
           "commit": " ".join(run_commits(run.directory)), "extends": extends_note(run.directory)}
    if state.status in ("done", "partial"):
        scalars = cached_scalars(cache, state.run_path)
        returns = scalars.get("charts/episodic_return", [])
        reached = steps_reached(run, state)
        row.update(returns_at(returns, reached))
        row.update(stability(returns, scalars.get("losses/approx_kl", []), scalars.get("reset/distill_loss_start", []),
                             reached))
        row.update(episode_lengths(scalars.get("charts/episodic_length", []), reached))
    if state.status == "done":
        row.update(final_return=final_return(returns), episodes=len(returns))
        row.update(method_statistics(state.checkpoint))
        row["eval_return"], row["eval_std"], row["eval_length"] = evaluation(state.run_path, state.step, eval_episodes)
        row["eval_episodes"] = eval_episodes or None
    return row


# columns only where a row has one: older CSVs regenerate unchanged
OPTIONAL_FIELDS = ("eval_length", "extends") + tuple(f"return_{steps_label(m)}" for m in LATE_MILESTONES) + (
    "length_last", "length_best", "length_best_at")


def write_csv(path, rows, fields=CSV_FIELDS):
    if fields is CSV_FIELDS:
        fields = CSV_FIELDS + [f for f in OPTIONAL_FIELDS if any(r.get(f) for r in rows)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


TEXT_FIELDS = ("experiment", "variant", "algo", "env", "status", "budget", "run_dir", "commit", "reused_from",
               "extends")


def number(text):
    """A CSV cell as an int, a float, or the text itself when it is neither."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path):
    """Rows of a runs CSV with numbers as written: whole numbers as ints, others as floats (empty cells
    dropped)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out = {}
            for k, v in row.items():
                if v == "":
                    continue
                out[k] = v if k in TEXT_FIELDS else number(v)
            rows.append(out)
    return rows


RUN_KEY_FIELDS = ("variant", "algo", "env", "seed", "budget", "total_timesteps")  # one configuration


def run_key(row):
    """What makes two rows the same configuration: method, task, seed and budget."""
    return tuple(row[k] for k in RUN_KEY_FIELDS)


def key_fields(run, budget):
    """A planned run's RUN_KEY_FIELDS values."""
    return {"variant": run.variant.name, "algo": run.variant.algo, "env": run.env, "seed": run.seed,
            "budget": budget, "total_timesteps": run.total}


def earlier_runs(paths):
    """--reuse: the finished runs of earlier runs CSVs by run_key, each row naming the CSV it came from
    (reused_from; for a row that CSV had reused itself, the CSV it was first reused from); the first CSV that
    has a configuration wins."""
    earlier = {}
    for path in paths:
        for row in read_csv(path):
            if row.get("status") == "done":
                earlier.setdefault(run_key(row), {**row, "reused_from": row.get("reused_from")  # a reuse of a reuse
                                                  or os.path.relpath(Path(path).resolve(), ROOT)})  # names the first
    return earlier


def reuse(rows, earlier):
    """Rows of runs that have not started here ('new') taken from earlier_runs where one finished the same
    configuration: the row keeps its numbers and commit and takes this experiment's name."""
    return [{**earlier[run_key(r)], "experiment": r["experiment"]}
            if r.get("status") == "new" and run_key(r) in earlier else r for r in rows]


CURVE_POINTS = 100  # points per run in curves_<budget>.csv: the mean of each hundredth of its steps


def run_curve(key, total, reached, scalars, tags):
    """A run's curves as rows of curves_<budget>.csv: for k = 1..CURVE_POINTS, at step k x total /
    CURVE_POINTS, the mean of each tag's values logged in the span (previous point, this one] (step 0
    counts in the first; blank where a span has none), up to the span holding `reached`. key: the run's
    RUN_KEY_FIELDS values."""
    edges = np.linspace(0, total, CURVE_POINTS + 1).round().astype(np.int64)
    columns = {}
    for tag in tags:
        points = scalars.get(tag, [])
        if points:
            steps, values = np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float)
            span = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, CURVE_POINTS - 1)
            counts = np.bincount(span, minlength=CURVE_POINTS)
            columns[tag] = np.bincount(span, values, CURVE_POINTS) / np.maximum(counts, 1)
            columns[tag][counts == 0] = np.nan
    rows = []
    for k in range(CURVE_POINTS):
        if edges[k] >= reached:
            break
        values = {tag: float(column[k]) for tag, column in columns.items() if np.isfinite(column[k])}
        if values:
            rows.append({**key, "step": int(edges[k + 1]), **values})
    return rows


def curves_of(runs, states, budget, cache, tags):
    """run_curve of each run that has a checkpoint (as far as it got)."""
    return [c for r in runs if states[r.directory].status in ("done", "partial")
            for c in run_curve(key_fields(r, budget), r.total,
                               steps_reached(r, states[r.directory]),
                               cached_scalars(cache, states[r.directory].run_path), tags)]


def write_curves(path, curves):
    tags = sorted({k for r in curves for k in r} - set(RUN_KEY_FIELDS) - {"step"})
    write_csv(path, curves, list(RUN_KEY_FIELDS) + ["step"] + tags)


def curves_path(runs_csv):
    """curves_<budget>.csv beside a runs_<budget>.csv (None for a CSV of another name)."""
    path = Path(runs_csv)
    return path.with_name("curves_" + path.name.removeprefix("runs_")) if path.name.startswith("runs_") else None


def reused_curves(rows):
    """The curve rows of reused runs, from the curves CSV beside the runs CSV each came from (none when
    that CSV predates curves files)."""
    wanted = {}
    for r in rows:
        if r.get("reused_from"):
            wanted.setdefault(curves_path(ROOT / r["reused_from"]), set()).add(run_key(r))
    return [c for path, keys in wanted.items() if path and path.is_file() for c in read_csv(path) if run_key(c) in keys]


def provenance(rows):
    """Which code made the runs in a table: per commit (and CSV a run was reused from), the methods and
    how many of their runs; '' when no run has started."""
    groups = {}
    for r in rows:
        if r.get("status") in ("done", "partial"):
            groups.setdefault((r.get("commit") or "not recorded", r.get("reused_from")), []).append(r["variant"])
    if not groups:
        return ""
    parts = [f"{'reused from `' + source + '`, ' if source else ''}commit {commit}: "
             + ", ".join(f"{v} ({variants.count(v)})" for v in dict.fromkeys(variants))
             for (commit, source), variants in groups.items()]
    text = "Runs by the commit they were launched from (runs per method): " + "; ".join(parts) + "."
    if any(source for _, source in groups):
        text += (" Reused runs are drawn from the curves CSV beside the runs CSV they came from, where it "
                 "exists.")
    extended = [f"{r['variant']} {task_name(r['env'])} seed {r['seed']} from {r['extends']}" for r in rows
                if r.get("extends") and r.get("status") in ("done", "partial")]
    if extended:
        text += (" Extended from a shorter budget's finished run (its checkpoint copied and resumed, its commits "
                 "listed first): " + "; ".join(extended) + ".")
    return text


def select(rows, **conditions):
    return [r for r in rows if all(r.get(k) == v for k, v in conditions.items())]


def seed_values(rows, key):
    """{seed: value} of the finished rows that have `key`."""
    return {r["seed"]: r[key] for r in rows if r.get("status") == "done" and r.get(key) is not None}
