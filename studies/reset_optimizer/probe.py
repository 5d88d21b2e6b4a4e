"""What a reset does to Adam and to the next PPO updates: the measurement behind
results/reset_optimizer/reset_optimizer.md (docs/algorithms/p3o.md, item 7).

Continues a p3o_continuous.py run from a copy of its checkpoint for --steps environment steps,
with the reset's treatment of the reset rows' Adam state replaced by one of:
  zero      the moments zeroed, the optimiser's step count kept (bias correction about 1)
  keep      the moments left as they were (the old neuron's)
  row-step  the moments zeroed and bias correction restarted for those rows only: a per-row
            step count, as Continual Backprop's AdamGnT keeps one per element
and writes, per PPO update, the mean and max approx-KL and the clip fraction over its minibatch
steps, how many updates ago the last reset was, and for each hidden layer of the actor how far the
update moved the rows reset just before it: the mean L2 distance (weights and bias) of the reset
rows divided by the median of the other rows. Resets are recorded with their post-reset alpha-DKL.

    python studies/reset_optimizer/probe.py RUN_DIR --handling keep --steps 300000 --out OUT_DIR
    python studies/reset_optimizer/probe.py RUN_DIR --handling zero --set target_kl=0.1 --out OUT_DIR

RUN_DIR is a run directory of p3o_continuous.py (its checkpoint.pt); it is copied to OUT_DIR/run
and never written. --set overrides a saved argument of the copy (the file refuses a method
argument that differs on --resume). The file itself is not changed: this script patches its
reinit_neurons and wraps its PPO step for the one process it runs.
"""

import argparse
import ast
import csv
import json
import math
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import p3o_continuous as p3o  # noqa: E402


def row_step_correction(optimizer, counts):
    """A post-step hook: for parameters in `counts` (a per-row step count, inf = untracked), replace
    the step Adam just made on tracked rows by the step with the rows' own bias correction."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]

    def hook(opt, args, kwargs):
        with torch.no_grad():
            for param, count in counts.items():
                state = opt.state[param]
                t = float(state["step"])
                count += 1
                tracked = count < t
                if not tracked.any():
                    continue
                k = count[tracked].view(-1, *[1] * (param.dim() - 1))
                m, v = state["exp_avg"][tracked], state["exp_avg_sq"][tracked]
                applied = group["lr"] / (1 - beta1 ** t) * m / (v.sqrt() / math.sqrt(1 - beta2 ** t) + group["eps"])
                wanted = group["lr"] / (1 - beta1 ** k) * m / ((v / (1 - beta2 ** k)).sqrt() + group["eps"])
                param[tracked] += applied - wanted
    return hook


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a p3o_continuous.py run directory with checkpoint.pt")
    p.add_argument("--handling", choices=["zero", "keep", "row-step"], required=True)
    p.add_argument("--steps", type=int, default=300_000, help="environment steps to continue (default 300,000)")
    p.add_argument("--out", required=True, help="output directory (the run copy and updates.csv, resets.csv)")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="override saved arguments")
    p.add_argument("--threads", type=int, default=1)
    cli = p.parse_args()
    if not os.path.isfile(os.path.join(cli.run_dir, "checkpoint.pt")):
        sys.exit(f"error: {cli.run_dir} has no checkpoint.pt")
    if cli.steps <= 0:
        sys.exit(f"error: --steps {cli.steps} must be > 0")
    run = os.path.join(cli.out, "run")
    if os.path.exists(cli.out):
        sys.exit(f"error: --out {cli.out} exists; give a new directory")
    shutil.copytree(cli.run_dir, run)
    checkpoint = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=False)
    for item in cli.set:
        name, value = item.split("=", 1)
        if name not in checkpoint["args"]:
            sys.exit(f"error: --set {item}: the run has no argument {name}")
        checkpoint["args"][name] = ast.literal_eval(value) if value not in ("None",) else None
    torch.save(checkpoint, os.path.join(run, "checkpoint.pt"))
    start = checkpoint["global_step"]
    counts, original = {}, {"reinit": p3o.reinit_neurons, "make_step": p3o.make_ppo_step, "fast_path": p3o.fast_path}
    log = {"reset_rows": [], "since_reset": 99, "updates": [], "in_update": False}

    def end_of_update():
        """Called after an update (at the next reset or rollout, whichever comes first): one row of updates.csv."""
        if not log["in_update"]:
            return
        log["in_update"], log["since_reset"] = False, log["since_reset"] + 1
        s = torch.stack(log["stats"])
        row = {"update": len(log["updates"]) + 1, "since_reset": log["since_reset"], "minibatch_steps": len(s),
               "approx_kl_mean": s[:, 0].mean().item(), "approx_kl_max": s[:, 0].max().item(),
               "clipfrac": s[:, 1].mean().item()}
        reset = {id(m): r for m, r in log["reset_rows"]}
        for i, (m, w0) in enumerate(zip(log["layers"], log["before"])):
            moved = (torch.cat([m.weight, m.bias[:, None]], 1).detach() - w0).norm(dim=1)
            rows = reset.get(id(m))
            if rows is not None and log["since_reset"] == 1:
                others = torch.ones(len(moved), dtype=torch.bool)
                others[rows] = False
                row[f"move_ratio_layer{i}"] = (moved[rows].mean() / moved[others].median()).item()
        log["updates"].append(row)

    def reinit(layer, rows, _optimizer):
        end_of_update()
        optimizer = log["optimizer"]  # the PPO optimiser, whatever the run's --reset-adam passes
        if cli.handling == "keep":
            original["reinit"](layer, rows, p3o.KEEP_ADAM)
        else:
            original["reinit"](layer, rows, optimizer)
        if cli.handling == "row-step":
            for param in (layer.weight, layer.bias):
                count = counts.setdefault(param, torch.full((param.shape[0],), math.inf))
                count[rows] = 0
        if not log["reset_rows"] or log["since_reset"] > 0:
            log["reset_rows"], log["since_reset"] = [], 0
        log["reset_rows"].append((layer, rows.clone()))

    def make_step(agent, optimizer, networks, rollout, a):
        log["optimizer"], log["layers"] = optimizer, p3o.hidden_linears(agent.actor_mean)
        if cli.handling == "row-step":
            optimizer.register_step_post_hook(row_step_correction(optimizer, counts))
        step = original["make_step"](agent, optimizer, networks, rollout, a)

        def wrapped(mb):
            if not log["in_update"]:
                log["in_update"], log["stats"] = True, []
                log["before"] = [torch.cat([m.weight, m.bias[:, None]], 1).detach().clone() for m in log["layers"]]
            out = step(mb)
            log["stats"].append(torch.stack([out["approx_kl"], out["clipfrac"]]))
            return out
        return wrapped

    def fast_path(fn, a):
        inner = original["fast_path"](fn, a)
        if getattr(fn, "__name__", "") != "act":
            return inner

        def act(*inputs):  # a rollout step: the update before it has ended
            end_of_update()
            return inner(*inputs)
        return act

    p3o.reinit_neurons, p3o.make_ppo_step, p3o.fast_path = reinit, make_step, fast_path
    sys.argv = ["p3o_continuous.py", "--resume", run, "--total-timesteps", str(start + cli.steps),
                "--threads", str(cli.threads), "--checkpoint-every", "1000000"]
    p3o.main()
    end_of_update()
    fields = sorted({k for r in log["updates"] for k in r}, key=lambda k: (k not in log["updates"][0], k))
    with open(os.path.join(cli.out, "updates.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(log["updates"])
    with open(os.path.join(cli.out, "fork.json"), "w") as f:
        json.dump({"start_step": start, "handling": cli.handling, "set": cli.set}, f)
    print(f"wrote {cli.out}/updates.csv ({len(log['updates'])} updates from step {start:,})")


if __name__ == "__main__":
    main()
