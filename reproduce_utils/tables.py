"""Tables: the markdown of an experiment (the paper's layouts beside ours, every seed, Welch's comparisons, the
cross-task IQM and probability of improvement, Cycle Friction's changes).

Definitions used in every table:
- final return of a run: the mean of the last 10% (at least one) of the episodic returns it
  logged (charts/episodic_return), in the order logged;
- a cell: mean [95% t-interval (std with ddof=1)] (n seeds) over the seeds whose runs finished;
- beside it every seed's value, the deterministic evaluation of each final checkpoint (evaluate.py,
  --eval-episodes), Welch's t-test of P3O against each method per task, and across tasks the IQM of
  normalised scores and P3O's probability of improvement with 95% stratified-bootstrap intervals (rliable);
- reset statistics (Table 4): from the checkpoint's per-neuron reset counts of the actor's
  hidden layers: total resets, average resets per neuron, share of neurons reset at least once;
- distillation cost (Tables 2 and 5): the checkpoint's cumulative distillation, PPO and
  recovery-training epochs; per-reset epochs = distillation epochs / resets.
"""

import math

import numpy as np

from .collect import (EVAL_SEED, FALL_MARK, FALL_SPAN, FALL_UPDATES, STABILITY_FROM, provenance, seed_values, select,
                      steps_label, window_mean)
from .registry import (DISTILL_METRICS, EXPERIMENTS, LATE_MILESTONES, MILESTONES, PAPER_TABLE1, PAPER_TABLE2,
                       PAPER_TABLE4, PAPER_TABLE5_RECOVERY, WINDOW, task_name)
from .stats import (BOOTSTRAP_REPS, BOOTSTRAP_SEED, improvement_intervals, iqm_intervals, normalisation,
                    normalised_scores, t_interval, welch_p)


def interval_text(values, fmt="{:,.0f}"):
    """'mean [low, high] (n=k)', the t-interval; 'mean (n=1)'; '—' for none."""
    mean, low, high, n = t_interval(values)
    if n == 0:
        return "—"
    return fmt.format(mean) + ("" if n == 1 else f" [{fmt.format(low)}, {fmt.format(high)}]") + f" (n={n})"


def cell(rows, key, fmt="{:,.0f}", paper=None, want=None, statuses=("done",)):
    """'mean [95% t-interval] (n=k)' of `key` over rows (finished runs, or those of `statuses`),
    '(paper X)' beside it when the paper has a number. want: unused (n is always stated)."""
    text = interval_text([r.get(key) for r in rows if r.get("status") in statuses], fmt)
    if paper is not None:
        text += f" (paper {fmt.format(paper)})"
    return text


def markdown_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def returns_table(rows, variants, envs, paper=None, want=None):
    """Rows: tasks; columns: variants; cells: final return mean [95% CI] (n) (paper X)."""
    body = []
    for env in envs:
        line = [env]
        for v in variants:
            ref = (paper or {}).get(task_name(env), {}).get(v.algo) if not v.overrides else None
            line.append(cell(select(rows, env=env, variant=v.name), "final_return", paper=ref, want=want))
        body.append(line)
    return markdown_table(["task"] + [v.name for v in variants], body)


def distill_table(rows, envs, want=None):
    """Table 2's layout: quantities as rows, tasks as columns (P3O runs)."""
    spec = [("Total distillation epochs", "distill_epochs", "{:,.1f}", 0),
            ("Per-reset epochs", "distill_per_reset", "{:,.2f}", 1),
            ("Epoch ratio (distillation / PPO epochs)", "distill_to_ppo", "{:.4f}", 2),
            ("PPO epochs", "ppo_epochs", "{:,.0f}", None), ("Resets", "resets", "{:,.0f}", None)]
    body = []
    for label, key, fmt, paper_index in spec:
        body.append([label] + [cell(select(rows, env=env, algo="p3o"), key, fmt, want=want, paper=(
            PAPER_TABLE2.get(task_name(env), (None,) * 3)[paper_index] if paper_index is not None else None))
            for env in envs])
    return markdown_table([""] + list(envs), body)


def sbp_table(rows, variants, envs, want=None):
    """Per reset method and task: resets, distillation epochs per reset, seconds spent in them."""
    body = []
    for v in variants:
        for env in envs:
            sel = select(rows, variant=v.name, env=env)
            if any(r.get("resets") for r in sel):  # methods that reset (not plain SAC)
                body.append([v.name, env, cell(sel, "resets", want=want), cell(sel, "distill_per_reset", "{:,.1f}",
                                                                               want=want),
                             cell(sel, "reset_seconds", want=want)])
    return markdown_table(["method", "task", "resets", "distillation epochs per reset",
                           "seconds in resets + distillation"], body)


def recovery_table(rows, envs, want=None):
    """Table 5's layout: distillation epochs of P3O and recovery epochs of P3O with --recovery train."""
    body = [["Distillation epochs (P3O)"] + [cell(select(rows, env=e, algo="p3o"), "distill_epochs", "{:,.1f}",
                                                  PAPER_TABLE2.get(task_name(e), (None,))[0], want) for e in envs],
            ["Recovery epochs (recovery training)"] + [cell(select(rows, env=e, algo="p3o-rt"), "recovery_epochs",
                                                            "{:,.1f}", PAPER_TABLE5_RECOVERY.get(task_name(e)), want)
                                                       for e in envs]]
    return markdown_table([""] + list(envs), body)


def resets_table(rows, variants, envs=None):
    """Table 4: per method, over all its finished runs (tasks x seeds): total resets, average resets
    per neuron, share of neurons reset (%). With envs, one row per method and task instead."""
    body = []
    for v in variants:
        for env in (envs or [None]):
            sel = select(rows, variant=v.name, **({"env": env} if env else {}))
            sel = [{**r, "share_pct": 100 * r["share_neurons_reset"]} if "share_neurons_reset" in r else r
                   for r in sel]
            paper = PAPER_TABLE4.get(v.algo, (None,) * 3) if env is None else (None,) * 3
            neurons = {int(r["neurons"]) for r in sel if r.get("status") == "done" and "neurons" in r}
            body.append(([v.name] if env is None else [v.name, env])
                        + [", ".join(map(str, sorted(neurons))) or "—",
                           cell(sel, "total_resets", "{:,.1f}", paper[0]),
                           cell(sel, "avg_resets_per_neuron", "{:,.2f}", paper[1]),
                           cell(sel, "share_pct", "{:.1f}", paper[2])])
    header = ["method"] + ([] if envs is None else ["task"]) + ["neurons", "total resets", "average resets",
                                                                "reset proportion (%)"]
    return markdown_table(header, body)


def cycle_table(rows, variants, envs, want=None):
    """Per task and method: the return at each milestone (unfinished runs count where they got past
    it; the milestones past 5M where a run got there), the final return (finished runs; the paper's Table 1
    beside it at the paper's budget) and how far the runs got."""
    milestones = MILESTONES + tuple(m for m in LATE_MILESTONES
                                    if any(r.get(f"return_{steps_label(m)}") is not None for r in rows))
    body = []
    for env in envs:
        for v in variants:
            sel = select(rows, env=env, variant=v.name)
            reached = ", ".join(f"{int(r.get('steps', 0)):,}" for r in sel)
            paper = None if v.overrides or "/" in env or not sel or any(r.get("budget") != "paper" for r in sel) \
                else PAPER_TABLE1.get(task_name(env), {}).get(v.algo)
            body.append([env, v.name] + [cell(sel, f"return_{steps_label(m)}", want=want,
                                              statuses=("done", "partial")) for m in milestones]
                        + [cell(sel, "final_return", paper=paper, want=want), reached])
    return markdown_table(["task", "method"] + [f"return at {steps_label(m)}" for m in milestones]
                          + ["final return", "steps reached (per seed)"], body)


def num(r, key, fmt="{:,.0f}"):
    """One run's value of `key` as a table cell; '–' where the row has none."""
    return "–" if r.get(key) is None else fmt.format(r[key])


def seed_table(rows, variants, envs):
    """Per task, method and seed: how steady the run was (stability) beside its final return."""
    body = []
    for env in envs:
        for v in variants:
            for r in sorted(select(rows, env=env, variant=v.name), key=lambda r: r["seed"]):
                if r.get("status") not in ("done", "partial"):
                    continue
                body.append([env, v.name, int(r["seed"]), f"{int(r.get('steps', 0)):,}", num(r, "final_return"),
                             num(r, "best_window"), num(r, "worst_window"), num(r, "last_window"),
                             {None: "–", 0: "no", 1: "yes"}[r.get("collapsed")],
                             f"{num(r, 'kl_over_0.1')} / {num(r, 'updates')}",
                             num(r, "kl_over_1"), num(r, "dkl_median", "{:.3f}"), num(r, "dkl_max", "{:.3f}")])
    w = steps_label(WINDOW)
    return markdown_table(["task", "method", "seed", "steps", "final return", f"best {w} after "
                           f"{steps_label(STABILITY_FROM)}", f"worst {w}", f"last {w}", "collapse",
                           "updates with approx-KL > 0.1", "> 1", "post-reset alpha-DKL median", "max"], body)


def friction_table(curves, window=WINDOW):
    """Cycle Friction: for each friction change inside the runs and each method, the mean return of
    the episodes logged in the window before the change, in the window after it, and in the last
    window of the new phase (just before the next change); the window is `window` steps, or a quarter
    of the friction period when that is shorter, so the three never overlap. Cells: mean [95% t-interval] (n) over
    the seeds that got that far. curves: [(method label, env, friction period, steps reached, points)]."""
    from envs import friction_multiplier

    groups = {}
    for label, env, period, reached, points in curves:
        groups.setdefault((env, period), {}).setdefault(label, []).append((reached, points))
    body = []
    for (env, period), methods in groups.items():
        last = max(reached for seeds in methods.values() for reached, _ in seeds)
        w = min(window, period // 4)
        for change in range(period, last, period):
            for label, seeds in methods.items():
                def span(lo, hi):
                    means = [m for m in (window_mean(points, lo, hi) for reached, points in seeds if reached >= hi)
                             if m is not None]
                    return "–" if not means else interval_text(means)
                body.append([env, steps_label(change), f"{friction_multiplier(change - 1, period)} → "
                             f"{friction_multiplier(change, period)}", label, f"{w:,}", span(change - w, change),
                             span(change, change + w), span(change + period - w, change + period)])
    return markdown_table(["task", "change at", "friction", "method", "window (steps)", "return before",
                           "after", "end of the phase"], body) if body else ""


def length_table(rows, variants, envs):
    """Per run of a task whose episodes can end early (their lengths differ): the mean length of its training episodes
    in the last and in the longest 100k window (collect.episode_lengths), and of its evaluation's episodes."""
    body = []
    for env in envs:
        sel = [r for v in variants for r in sorted(select(rows, env=env, variant=v.name), key=lambda r: r["seed"])
               if r.get("length_best") is not None]
        if len({r[k] for r in sel for k in ("length_last", "length_best")}) > 1:
            body += [[env, r["variant"], r["seed"], f"{int(r.get('steps', 0)):,}", num(r, "length_last"),
                      f"{num(r, 'length_best')} (at {int(r['length_best_at']):,})", num(r, "eval_length")]
                     for r in sel]
    return markdown_table(["task", "method", "seed", "steps", f"training episode length: last {steps_label(WINDOW)}",
                           f"longest {steps_label(WINDOW)} (window end)", "evaluation episode length"],
                          body) if body else ""


def falls_table(run_falls):
    """Each fall (collect.falls) of each run: run_falls is [(task, method, seed, falls, scalars)], scalars the run's
    {tag: points}, whose median approx-KL and clip fraction stand beside those just before the fall."""
    def median(points):
        return f"{np.median([v for _, v in points]):.3g}" if points else "–"

    body = []
    for env, method, seed, found, scalars in run_falls:
        for f in found:
            body.append([env, method, seed, f"{steps_label(f['window'])}–{steps_label(f['window'] + WINDOW)}",
                         f"{f['best']:,.0f} → {f['value']:,.0f}", f"{f['step']:,}",
                         "–" if f["reset"] is None else f"{f['step'] - f['reset']:,} (at {f['reset']:,})",
                         "–" if f["kl"] is None else f"{f['kl']:.3g} ({median(scalars.get('losses/approx_kl', []))})",
                         "–" if f["clipfrac"] is None else
                         f"{f['clipfrac']:.3g} ({median(scalars.get('losses/clipfrac', []))})",
                         "no" if f["recovered"] is None else f"at {f['recovered']:,}"])
    return markdown_table(["task", "method", "seed", "window of the fall", "return: best before → the window",
                           "step of the fall", "steps since the last reset (at)",
                           "approx-KL before it (run median)", "clip fraction before it (run median)",
                           "recovered"], body) if body else ""


def reproduce_command(name, budget, seeds, envs, variants):
    """The command line that reproduces a table (with the selection that produced it)."""
    cmd = f"python reproduce.py {name} --budget {budget.split('-')[0]}"
    if "-" in budget:
        cmd += f" --total-timesteps {budget.split('-')[1]}"
    cmd += " --seeds " + " ".join(map(str, seeds))
    if tuple(envs) != EXPERIMENTS[name].envs:
        cmd += " --envs " + " ".join(envs)
    algos = list(dict.fromkeys(v.algo for v in variants))
    if algos != list(dict.fromkeys(v.algo for v in EXPERIMENTS[name].variants)):
        cmd += " --algos " + " ".join(algos)
    return cmd


def distill_over_run(curves, segments=6, every=None):
    """Table 2 over the run instead of its mean: per method and task, in `segments` equal spans of
    steps, the points of curves_<budget>.csv that hold a reset (a point: one hundredth of a run, the
    mean over its resets; counted over all seeds) and their mean distillation epochs, alpha-DKL just after
    the reset and policy std. Built from curve rows, so runs reused from an earlier CSV count as much as
    runs made here. every: spans of these many steps instead (the last may end past the run's end)."""
    tags = DISTILL_METRICS
    body = []
    for label, env in dict.fromkeys((c["variant"], c["env"]) for c in curves if tags[0] in c):
        points = [c for c in curves if (c["variant"], c["env"]) == (label, env) and tags[0] in c]
        last = max(c["step"] for c in points)  # the spans end at a round number of steps: 3M, not the last point
        unit = segments * 10 ** max(0, math.floor(math.log10(last)) - 2)
        edges = np.linspace(0, math.ceil(last / unit) * unit, segments + 1) if every is None else \
            np.arange(0, math.ceil(last / every) * every + 1, every)
        for lo, hi in zip(edges, edges[1:]):
            span = [c for c in points if lo < c["step"] <= hi]
            body.append([label, env, f"{steps_label(lo)}–{steps_label(hi)}", str(len(span))]
                        + [f"{np.mean(v):.3g}" if v else "–" for v in ([c[t] for c in span if t in c] for t in tags)])
    return markdown_table(["method", "task", "steps", "points with a reset (each 1% of a run, all seeds)",
                           "distillation epochs per reset", "alpha-DKL after the reset", "policy std"], body) \
        if body else ""


# the two returns every claim names
COMPARED = (("final_return", "training return"), ("eval_return", "evaluation return"))
REFERENCE_ALGOS = ("p3o", "p3o-sum", "sac-cycle")  # compared with every other method: P3O (either KL), SAC+SBP


def every_seed_table(rows, variants, envs):
    """Per task and method: training and evaluation return as 95% t-intervals, and every seed's values; the
    evaluation's mean episode length over the seeds (and their range) where the rows hold it."""
    body, lengths = [], any(r.get("eval_length") for r in rows)
    for env in envs:
        for v in variants:
            sel = select(rows, env=env, variant=v.name)
            train, test = seed_values(sel, "final_return"), seed_values(sel, "eval_return")
            if not train:
                continue
            per_seed = "; ".join(f"{seed}: {train[seed]:,.0f}" + (f" / {test[seed]:,.0f}" if seed in test else "")
                                 for seed in sorted(train))
            length = list(seed_values(sel, "eval_length").values())
            body.append([env, v.name, interval_text(train.values()), interval_text(test.values()), per_seed]
                        + ([f"{np.mean(length):,.0f} ({min(length):,.0f}–{max(length):,.0f})" if length else "–"]
                           if lengths else []))
    return markdown_table(["task", "method", "training return", "evaluation return", "seed: training / evaluation"]
                          + (["evaluation episode length (seeds' range)"] if lengths else []), body) if body else ""


CLAIM_SEEDS = 5  # the fewest seeds per method on which a Welch p < 0.05 reads as one method ahead


def reference_variant(variants):
    return next((v for v in variants if v.algo in REFERENCE_ALGOS and not v.overrides), None)


def comparison_table(rows, variants, envs, compared=COMPARED, fmt="{:+,.0f}"):
    """Per task and compared (key, name) pair (default: training and evaluation return): each variant of the
    reference method (P3O, and P3O with another option such as the summed KL) against each other method, the
    difference of the means, Welch's two-sided p and the reading (not separated when p >= 0.05, or when
    either method has fewer than CLAIM_SEEDS seeds)."""
    refs = [v for v in variants if v.algo in REFERENCE_ALGOS]
    pairs = [(r, v) for i, r in enumerate(refs) for v in variants if v != r and v not in refs[:i]]
    body = []
    for env in envs:
        for key, name in compared:
            for ref, v in pairs:
                a = seed_values(select(rows, env=env, variant=ref.name), key)
                b = seed_values(select(rows, env=env, variant=v.name), key)
                if len(a) < 2 or len(b) < 2:
                    continue
                p, diff = welch_p(list(a.values()), list(b.values())), np.mean(list(a.values())) - np.mean(
                    list(b.values()))
                if not p < 0.05:
                    reading = "not separated"
                elif min(len(a), len(b)) < CLAIM_SEEDS:
                    reading = f"not separated (p < 0.05, under {CLAIM_SEEDS} seeds)"
                else:
                    reading = f"{ref.name} {'ahead' if diff > 0 else 'behind'}"
                body.append([env, name, ref.name, v.name, f"{len(a)} vs {len(b)}", fmt.format(diff),
                             "–" if math.isnan(p) else f"{p:.3f}", reading])
    return markdown_table(["task", "measure", "method", "against", "seeds", "difference of means", "Welch p",
                           "reading"], body) if body else ""


def aggregate_table(rows, variants, envs, key):
    """Across tasks (Agarwal et al. 2021, with rliable): per method the IQM of the normalised scores with
    a 95% stratified-bootstrap interval, and the probability that the reference method (P3O) improves on
    each other one, with its interval. The bootstrap is seeded (BOOTSTRAP_SEED) afresh for each method and
    each pair, so an interval depends only on its own runs, not on which other methods have finished."""
    scores, tasks = normalised_scores(rows, variants, envs, key)
    if not scores:
        return ""
    iqm = iqm_intervals(scores)
    body = [[name, f"{m.shape[0]} x {m.shape[1]}", f"{iqm[name][0][0]:.3f} [{iqm[name][1][0, 0]:.3f}, "
             f"{iqm[name][1][1, 0]:.3f}]", ""] for name, m in scores.items()]
    ref = reference_variant(variants)
    pairs = {v.name: (scores[ref.name], scores[v.name]) for v in variants
             if ref and v != ref and ref.name in scores and v.name in scores}
    if pairs:
        poi = improvement_intervals(pairs)
        for line in body:
            if line[0] in poi:
                low, high = np.ravel(poi[line[0]][1])
                line[3] = f"{float(poi[line[0]][0]):.2f} [{low:.2f}, {high:.2f}]"
    references = "; ".join(f"{e}: {normalisation(e)[0]:,.1f} → 0, {normalisation(e)[1]:,.0f} → 1" for e in tasks)
    return (f"Normalised score per task ({references}): MuJoCo 0 at a uniformly random policy and 1 at the "
            "paper's PPO (Table 1), DeepMind Control return / 1000; fixed before any result was read. "
            f"{BOOTSTRAP_REPS:,} stratified-bootstrap resamples, numpy seeded {BOOTSTRAP_SEED} for each method and "
            "pair.\n\n"
            + markdown_table(["method", "runs x tasks", "IQM [95% CI]",
                              f"P({ref.name if ref else 'reference'} > method) [95% CI]"], body))


def statistics_markdown(rows, variants, envs):
    """The sections every table gets: every seed, the reference method against the others (Welch), and
    the cross-task IQM and probability of improvement, on the training and the evaluation return."""
    out = []
    seeds = every_seed_table(rows, variants, envs)
    if seeds:
        out += ["## Every seed", "", "Training return: mean of the last 10% of a run's logged episodic returns "
                "(sampled actions). Evaluation return: mean of 10 deterministic episodes of its final checkpoint "
                f"(evaluate.py: the policy's mean action, episode seeds {EVAL_SEED:,} on). Cells: mean [95% "
                "t-interval] (n seeds).", "", seeds, ""]
    compared = comparison_table(rows, variants, envs)
    if compared:
        out += ["## Against each method (Welch's t-test)", "", "Two-sided Welch's t-test (unequal variances) on "
                f"the seeds' returns; p >= 0.05, or fewer than {CLAIM_SEEDS} seeds on either side, reads \"not "
                "separated\", never a win.", "", compared, ""]
    for key, name in COMPARED:
        table = aggregate_table(rows, variants, envs, key)
        if table:
            out += [f"## Across tasks: IQM and probability of improvement ({name})", "", table, ""]
    return out


def experiment_markdown(experiment, rows, variants, envs, budget, seeds, steps_note, over_run="", friction="",
                        fell=""):
    want = len(seeds)
    done = len(select(rows, status="done"))
    out = [f"# {experiment.title}", "",
           f"Budget **{budget}**: {steps_note}; seeds {', '.join(map(str, seeds))}; {done}/{len(rows)} runs "
           f"finished. Produced by `{reproduce_command(experiment.name, budget, seeds, envs, variants)}`.", "",
           "Final return of a run: mean of the last 10% of its logged episodic returns. Cells: mean over seeds "
           "[95% t-interval, std with ddof 1] (n seeds); (paper X): the paper's mean of 5 seeds at "
           "12.5M-20M steps, which a shorter budget is not expected to reach.", ""]
    made_by = provenance(rows)
    if made_by:
        out += [made_by, ""]
    if experiment.note:
        out += [experiment.note, ""]
    if experiment.kind in ("distill", "recovery", "resets") and not budget.startswith("paper"):
        out += ["Reset and epoch counts grow with the number of steps: P3O resets every 50,000 steps (1,000 in "
                "smoke runs) and a cycle of 100 resets renews every neuron once, so the paper's 12.5M-20M steps "
                "make 250-400 resets but the reduced budget's 1M make 20, a fifth of a cycle. Compare per-reset "
                "values and ratios with the paper's, not totals.", ""]
    if experiment.kind == "distill":
        out += ["## Distillation epochs (paper Table 2; paper's PPO baseline: 18,310 epochs)", "",
                distill_table(rows, envs, want), ""]
        if over_run:
            out += ["## Distillation over the run", "", over_run, ""]
    elif experiment.kind == "recovery":
        out += ["## Distillation vs recovery-training epochs (paper Table 5)", "", recovery_table(rows, envs, want),
                ""]
    elif experiment.kind == "cycle":
        out += ["## Return across the cycle", "", f"Return at step S: mean of the episodic returns logged in "
                f"(S - {WINDOW:,}, S]; runs not finished count at the steps they passed.", "",
                cycle_table(rows, variants, envs, want), "", "## Per seed", "",
                f"Windows: consecutive {WINDOW:,}-step windows from {STABILITY_FROM:,} (mean episodic return in "
                f"each). Collapse: the last window below half of the best. Approx-KL: the value logged per update "
                "(the last minibatch's, as CleanRL logs it). Post-reset alpha-DKL: P3O's reset/distill_loss_start.",
                "", seed_table(rows, variants, envs), ""]
        lengths = length_table(rows, variants, envs)
        if lengths:
            out += ["## Episode length: does an agent stay up?", "", f"Mean length of a run's training episodes "
                    f"(sampled actions) in consecutive {WINDOW:,}-step windows from the start, and of its evaluation "
                    "episodes (deterministic). Where an episode ends when the agent falls (Humanoid-v5: the torso "
                    "leaves 1-2 m), only an agent that stays up lasts the whole episode (1,000 steps). Tasks whose "
                    "every episode lasts the same are left out.", "", lengths, ""]
        if fell:
            out += ["## Falls", "", f"Every fall of a run after {STABILITY_FROM:,}: a {WINDOW:,}-step window below "
                    "half of the best window before it (the run recovers at the first later window back at half of "
                    f"that best). Its step: the first {FALL_MARK:,}-step mark whose last {FALL_SPAN:,} steps' mean "
                    f"return is below half the best. Approx-KL and clip fraction: medians of the {FALL_UPDATES} "
                    "updates logged up to that step, the run's medians beside them. Only runs whose event files are "
                    "on this machine.", "", fell, ""]
        if over_run:
            out += ["## P3O's distillation over the run", "", over_run, ""]
    elif experiment.kind == "sbp":
        out += ["## Resets and inner distillation", "", sbp_table(rows, variants, envs, want), ""]
    elif experiment.kind == "resets":
        out += ["## Reset statistics of the actor's hidden neurons (paper Table 4: 768 neurons, mean over six "
                "tasks)", "", resets_table(rows, variants), "", "Per task:", "",
                resets_table(rows, variants, envs), ""]
    if experiment.kind != "cycle":  # the cycle table has its final returns
        out += ["## Final return", "", returns_table(rows, variants, envs, experiment.paper_returns, want), ""]
    out += statistics_markdown(rows, variants, envs)
    if friction:
        out += ["## Cycle Friction: return around each friction change", "", "Per change and method: the mean "
                "episodic return in the window before the change, the window after it, and the last window of "
                f"the new phase (window: {WINDOW:,} steps or a quarter of the friction period when that is "
                "shorter); mean [95% t-interval] (n) over the seeds that got that far.", "", friction, ""]
    missing = [r for r in rows if r.get("status") != "done"]
    if missing:
        out += ["Not finished (not in the cells): " + ", ".join(f"{r['variant']} {r['env']} seed {r['seed']} "
                                                               f"({r['status']})" for r in missing), ""]
    return "\n".join(out)
