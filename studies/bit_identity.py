"""Are two versions of the training files the same computation? Runs each file's frozen short runs in two
repository trees and compares every TensorBoard scalar (bar wall-clock ones) and every number of the final
checkpoint (bar the run's arguments, which hold its directory), bit for bit.

    git worktree add ../before <commit>
    python studies/bit_identity.py ../before . --out ../bit_identity_runs

Two runs per file: straight through, and stopped halfway and continued with --resume (exact resume); the runs of
both trees go side by side, --jobs at once. Exits 1 naming the first difference of each file that has one.
"""

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TINY, only_run, read_scalars  # noqa: E402
from test_sac import TINY_SAC  # noqa: E402

PPO = [*TINY, "--checkpoint-every", "1"]
# each file's frozen run: (arguments, total steps); a reset every update where the method has one
FROZEN = {
    "ppo_continuous.py": (PPO, 2048),
    "p3o_continuous.py": ([*PPO, "--reset-frequency", "512", "--reset-rate", "0.1"], 2048),
    "ppo_cycle.py": ([*PPO, "--reset-frequency", "512", "--reset-rate", "0.25"], 2048),
    "ppo_redo.py": ([*PPO, "--reset-frequency", "512", "--reset-rate", "0.1"], 2048),
    "ppo_cbp.py": ([*PPO, "--maturity-threshold", "5", "--replacement-rate", "0.05", "--cbp-critic"], 2048),
    "sac_sbp.py": ([*TINY_SAC, "--reset-frequency", "400", "--checkpoint-every", "200"], 1200),
}
CLOCK_TAGS = ("charts/SPS", "seconds")  # scalars and checkpoint entries that measure wall-clock time


def run(tree, script, args, run_dir, total, resume_from=None):
    python = [sys.executable, str(Path(tree) / script)]
    if resume_from is None:
        cmd = [*python, *args, "--total-timesteps", str(total), "--run-dir", str(run_dir)]
    else:
        cmd = [*python, "--resume", str(only_run(resume_from)), "--total-timesteps", str(total)]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "disable"})
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")


def numbers(value, prefix=""):
    """Every tensor, array and number inside a checkpoint, by its path of keys."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from numbers(v, f"{prefix}/{i}")
    elif isinstance(value, torch.Tensor) or hasattr(value, "dtype"):
        yield prefix, torch.as_tensor(value)
    elif isinstance(value, (int, float, bool)):
        yield prefix, value


def fingerprint(run_dir):
    """(scalars, checkpoint numbers) of the one run under run_dir."""
    path = only_run(run_dir)
    scalars = {t: v for t, v in read_scalars(path).items() if not any(c in t for c in CLOCK_TAGS)}
    state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)
    state.pop("args")
    return scalars, {k: v for k, v in numbers(state) if not any(c in k for c in CLOCK_TAGS)}


def first_difference(a, b):
    (scalars_a, state_a), (scalars_b, state_b) = a, b
    if scalars_a.keys() != scalars_b.keys():
        return f"scalar tags differ: {sorted(scalars_a.keys() ^ scalars_b.keys())[:5]}"
    for tag in scalars_a:
        if repr(scalars_a[tag]) != repr(scalars_b[tag]):  # NaN equals NaN
            return f"scalar {tag} differs"
    if state_a.keys() != state_b.keys():
        return f"checkpoint entries differ: {sorted(state_a.keys() ^ state_b.keys())[:5]}"
    for key in state_a:
        x, y = state_a[key], state_b[key]
        if (x.shape != y.shape or not torch.equal(x, y)) if torch.is_tensor(x) and torch.is_tensor(y) else x != y:
            return f"checkpoint {key} differs"
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="a repository tree (e.g. a git worktree of the earlier commit)")
    p.add_argument("after", help="the other tree")
    p.add_argument("--out", required=True, help="where the runs go (a new directory)")
    p.add_argument("--files", nargs="+", default=list(FROZEN), choices=list(FROZEN), help="training files to check")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (default: one per core)")
    opts = p.parse_args()
    if opts.jobs < 1:
        p.error(f"--jobs {opts.jobs}: must be at least 1")
    out, problems = Path(opts.out), []
    sides = {"before": opts.before, "after": opts.after}
    base = {(script, side): out / script[:-3] / side for script in opts.files for side in sides}

    def straight(script, side):
        args, total = FROZEN[script]
        run(sides[side], script, args, base[script, side] / "straight", total)

    def resumed(script, side):  # stopped halfway, then continued
        args, total = FROZEN[script]
        run(sides[side], script, args, base[script, side] / "resumed", total // 2)
        run(sides[side], script, args, None, total, resume_from=base[script, side] / "resumed")

    with ThreadPoolExecutor(opts.jobs) as pool:  # each run is a process of its own, on one torch thread
        tasks = [pool.submit(how, script, side) for how in (resumed, straight) for script, side in base]
        for task in tasks:
            task.result()
    for script in opts.files:
        prints = {side: {how: fingerprint(base[script, side] / how) for how in ("straight", "resumed")}
                  for side in sides}
        for how in ("straight", "resumed"):
            difference = first_difference(prints["before"][how], prints["after"][how])
            scalars, state = prints["after"][how]
            print(f"{script} {how}: " + (f"DIFFERENT: {difference}" if difference else
                                          f"identical ({sum(map(len, scalars.values()))} scalars in {len(scalars)} "
                                          f"tags, {len(state)} checkpoint entries)"))
            problems += [script] if difference else []
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
