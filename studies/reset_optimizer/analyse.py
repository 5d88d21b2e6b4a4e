"""Tables of results/reset_optimizer/reset_optimizer.md from probe.py's outputs and long runs' logs.

    python studies/reset_optimizer/analyse.py handlings OUT_DIR [OUT_DIR ...]   # step 1: one per handling
    python studies/reset_optimizer/analyse.py kl RUN_DIR [RUN_DIR ...]           # step 2: approx-KL over runs

`handlings` reads each OUT_DIR's updates.csv (probe.py) and its run's TensorBoard events, and prints
one row per OUT_DIR: how far the first PPO update after a reset moved the reset rows against the
median row (per hidden layer of the actor, mean and range over the resets), the mean approx-KL and
clip fraction of the first and second update after a reset against the updates with no reset in
the two before them, the post-reset alpha-DKL and the return in the 100,000 steps after each reset.
`kl` prints, per run and 1M-step span, the median approx-KL, the share of updates above 0.1 and 1,
the clip fraction and the policy's std, and how the post-reset alpha-DKL follows the approx-KL of
the update just before the reset (Spearman rank correlation).
"""

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from reproduce_utils.collect import read_scalars, window_mean  # noqa: E402
from reproduce_utils.tables import markdown_table  # noqa: E402


def run_path(directory):
    """The run directory with the TensorBoard events under `directory` (itself or one level down)."""
    directory = Path(directory)
    found = sorted({p.parent for p in directory.rglob("events.out.tfevents.*")})
    if not found:
        sys.exit(f"error: no TensorBoard events under {directory}")
    return found[-1]


def label(directory):
    """'p3o_continuous seed 1' for a run directory; a probe.py output's name for its copy OUT_DIR/run."""
    parts = run_path(directory).name.split("__")
    if len(parts) >= 3 and Path(directory).name != "run":
        return f"{parts[1]} seed {parts[2]}"
    return Path(directory).parent.name if Path(directory).name == "run" else Path(directory).name


def spread(values, fmt="{:.2f}"):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    return f"{fmt.format(np.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def handlings(out_dirs):
    body = []
    for out in out_dirs:
        with open(Path(out) / "updates.csv") as f:
            updates = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        start = json.loads((Path(out) / "fork.json").read_text())["start_step"]  # the copy holds the run before it
        scalars = read_scalars(run_path(Path(out) / "run"))
        returns, dkl = [[(s, v) for s, v in scalars.get(tag, []) if s > start]
                        for tag in ("charts/episodic_return", "reset/distill_loss_start")]
        after = [window_mean(returns, s, s + 100_000) for s, _ in dkl if s + 100_000 <= max(x for x, _ in returns)]
        row = [Path(out).name, len(dkl)]
        row += [spread([u.get(f"move_ratio_layer{i}") for u in updates if u["since_reset"] == 1]) for i in range(3)]
        for key, fmt in (("approx_kl_mean", "{:.3f}"), ("clipfrac", "{:.3f}")):
            row += [spread([u[key] for u in updates if u["since_reset"] == k], fmt) for k in (1, 2)]
            row += [spread([u[key] for u in updates if u["since_reset"] >= 3], fmt)]
        row += [spread([v for _, v in dkl], "{:.3f}"), spread(after, "{:,.0f}"),
                f"{window_mean(returns, start, max(s for s, _ in returns)):,.0f}"]
        body.append(row)
    print(markdown_table(["handling", "resets", "move ratio layer 0", "layer 1", "layer 2",
                          "approx-KL 1st update after reset", "2nd", "updates without reset", "clip fraction 1st",
                          "2nd", "without reset", "post-reset alpha-DKL", "return in the 100k after a reset",
                          "return over the span"], body))


def spearman(x, y):
    """Spearman's rank correlation (no ties expected in float logs)."""
    if len(x) < 3:
        return float("nan")
    return float(np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1])


def kl(run_dirs, span=1_000_000):
    body, relation = [], []
    for directory in run_dirs:
        path = run_path(directory)
        sc = read_scalars(path)
        kls, clip = sc["losses/approx_kl"], dict(sc["losses/clipfrac"])
        entropy = sc.get("plasticity/policy_entropy", [])
        checkpoint = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)
        act_dim = len(checkpoint["agent"]["actor_logstd"])  # the std below: exp(mean log-std) from the entropy
        for lo in range(0, max(s for s, _ in kls), span):
            values = [v for s, v in kls if lo < s <= lo + span]
            clips = [clip[s] for s, _ in kls if lo < s <= lo + span and s in clip]
            ent = [v for s, v in entropy if lo < s <= lo + span]
            std = math.exp(np.mean(ent) / act_dim - 0.5 - 0.5 * math.log(2 * math.pi)) if ent else float("nan")
            body.append([label(directory),
                         f"{lo / 1e6:g}–{(lo + span) / 1e6:g}M", len(values), f"{np.median(values):.3f}",
                         f"{np.mean(np.array(values) > 0.1):.0%}", f"{np.mean(np.array(values) > 1):.0%}",
                         f"{np.mean(clips):.3f}", f"{std:.3f}"])
        dkl, stds = sc.get("reset/distill_loss_start", []), dict(sc.get("reset/policy_std", []))
        if dkl:
            before = dict(kls)
            triples = [(before[s], v, stds[s]) for s, v in dkl if s in before and s in stds]
            kl_before, dkl_after, std = (np.array(x) for x in zip(*triples))
            top = np.argsort(-dkl_after)[: max(1, len(triples) // 10)]
            relation.append([label(directory), len(triples),
                             f"{spearman(kl_before, dkl_after):.2f}", f"{spearman(std, dkl_after):.2f}",
                             f"{spearman(kl_before * std ** 2, dkl_after * std ** 2):.2f}",
                             f"{np.median(kl_before[top]):.3f}", f"{np.median(kl_before):.3f}"])
    print(markdown_table(["run", "steps", "updates", "median approx-KL", "> 0.1", "> 1", "clip fraction",
                          "policy std"], body))
    if relation:
        print()
        print(markdown_table(["run", "resets", "Spearman(approx-KL of the update before, post-reset alpha-DKL)",
                              "Spearman(policy std, alpha-DKL)", "Spearman of both KLs x std^2",
                              "median approx-KL before the 10% largest alpha-DKL", "before all resets"], relation))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("handlings", "kl"):
        sys.exit(__doc__)
    for d in sys.argv[2:]:
        if not os.path.isdir(d):
            sys.exit(f"error: {d} is not a directory")
    {"handlings": handlings, "kl": kl}[sys.argv[1]](sys.argv[2:])
