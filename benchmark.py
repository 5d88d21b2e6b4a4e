"""benchmark.py: how fast the algorithm files train, against the machine's own limits.

In one run on one machine, for each task:
- env-only: random-action steps/s of the vector env configuration training uses
  (8 envs, SAME_STEP autoreset, the PPO normalisation chain);
- update-only: seconds of one PPO update of the paper's shape (10 epochs x 32 minibatches
  of 256 on random data, 3x256 tanh actor and critic, Adam);
- training: steps/s of each unmodified algorithm file, run as a subprocess (the SPS the
  file prints, measured from the start of its training loop, so start-up is excluded);
- efficiency: training time / (env time + update time) for the same steps; 1.0 is the
  ideal of "stepping the envs and updating the networks, nothing else";
- vs PPO: each file's training time relative to ppo_continuous.py, and the seconds it
  spent in resets/distillation (its `reset/seconds` TensorBoard scalar);
- SAC (--sac-envs): learning-phase steps/s of sac_sbp.py (one update per env step, so this is
  the update's speed) and, with --cleanrl-sac, of CleanRL's sac_continuous_action.py run the
  same way, and their ratio. CleanRL's file needs two gymnasium 1.x fixes and a learning-phase
  timer, in studies/cleanrl_sac.patch (against CleanRL commit 004f8a0):
      git clone https://github.com/vwxyzjn/cleanrl && cd cleanrl && git checkout 004f8a0
      git apply <this repo>/studies/cleanrl_sac.patch
Every measurement is repeated --repeats times, interleaved, and reported as median [min-max].
With --compile/--cudagraphs a training run's steps/s includes its compilation (tens of seconds):
give --steps large enough that it is small beside the run.

    python benchmark.py                                   # every PPO-family file, Hopper-v5 and Humanoid-v5
    python benchmark.py --algos ppo_continuous p3o_continuous --envs Hopper-v5 --repeats 1
    python benchmark.py --algos --envs --sac-envs Hopper-v5 --cleanrl-sac ../cleanrl/cleanrl/sac_continuous_action.py
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from ppo_continuous import directory_problem

ROOT = Path(__file__).resolve().parent
PPO_FAMILY = ["ppo_continuous", "p3o_continuous", "ppo_cycle", "ppo_redo", "ppo_cbp"]


@dataclass
class Args:
    algos: list[str] = field(default_factory=lambda: list(PPO_FAMILY))
    """algorithm files to train (names without .py); the first should be ppo_continuous for the 'vs PPO' column"""
    envs: list[str] = field(default_factory=lambda: ["Hopper-v5", "Humanoid-v5"])
    """environment ids"""
    steps: int = 57_344
    """environment steps per training measurement (7 rollouts of 8192: one 50k-step reset happens)"""
    env_steps: int = 4096
    """vector steps (x num_envs env steps) for the env-only measurement"""
    repeats: int = 3
    """repetitions of every measurement; the median and the range are reported"""
    threads: int = 0
    """torch threads for the update measurement and the training runs; 0 = the files' default"""
    num_envs: int = 8
    """number of envs, as in the files' default"""
    num_steps: int = 1024
    """steps per env per rollout, as in the files' default"""
    sac_envs: list[str] = field(default_factory=list)
    """environment ids for the SAC measurement (none: no SAC measurement)"""
    sac_steps: int = 4000
    """SAC learning-phase steps per measurement, after --sac-learning-starts random steps"""
    sac_learning_starts: int = 1000
    """random-action steps before SAC's updates start (not timed)"""
    sac_threads: int = 1
    """torch threads of both SAC files (CleanRL's through OMP_NUM_THREADS)"""
    cleanrl_sac: str = ""
    """CleanRL's sac_continuous_action.py with studies/cleanrl_sac.patch applied, timed beside sac_sbp.py"""
    out: str = "results/benchmark"
    """folder for benchmark.md and benchmark.json"""
    cuda: bool = False
    """run the networks on the CUDA GPU (update-only measurement and every training run, CleanRL's SAC too)"""
    compile: bool = False
    """pass --compile to the training files and compile the update-only measurement's step"""
    cudagraphs: bool = False
    """pass --cudagraphs to the training files and replay the update-only step as a CUDA graph (needs --cuda)"""
    async_envs: bool = False
    """step the envs in worker processes, in the env-only measurement and the PPO-family training runs"""


def validate(args: Args) -> None:
    errors = [f"--algos {a}: no file {a}.py (available: {', '.join(p.stem for p in sorted(ROOT.glob('*.py')))})"
              for a in args.algos if not (ROOT / f"{a}.py").is_file()]
    errors += [f"--{k.replace('_', '-')} {v} must be >= 1" for k, v in
               [("steps", args.steps), ("env_steps", args.env_steps), ("repeats", args.repeats),
                ("num_envs", args.num_envs), ("num_steps", args.num_steps), ("sac_steps", args.sac_steps),
                ("sac_learning_starts", args.sac_learning_starts), ("sac_threads", args.sac_threads)] if v < 1]
    if not args.algos and not args.sac_envs:
        errors.append("nothing to measure: give --algos and --envs, or --sac-envs")
    if args.cleanrl_sac and not Path(args.cleanrl_sac).is_file():
        errors.append(f"--cleanrl-sac {args.cleanrl_sac}: no such file")
    if args.steps < args.num_envs * args.num_steps:
        errors.append(f"--steps {args.steps} must be at least one rollout ({args.num_envs * args.num_steps})")
    if args.threads < 0:
        errors.append(f"--threads {args.threads} must be >= 0")
    if directory_problem(args.out):
        errors.append(f"--out {args.out}: {directory_problem(args.out)}")
    if args.cuda and not torch.cuda.is_available():
        errors.append("--cuda was given but torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                      "install a CUDA build of torch or drop --cuda")
    if args.cudagraphs and not args.cuda:
        errors.append("--cudagraphs needs --cuda (CUDA graphs run on a CUDA GPU only)")
    try:
        from envs import validate_env_id

        for env_id in args.envs + args.sac_envs:
            validate_env_id(env_id)
    except ValueError as e:
        errors.append(f"--envs/--sac-envs: {e}")
    if errors:
        sys.exit("error: " + "\nerror: ".join(errors))


def env_only_sps(env_id, args):
    """Random-action env steps/s of the training vector env (actions sampled up front)."""
    from envs import make_env

    envs, _ = make_env(env_id, args.num_envs, seed=0, normalize=True, async_envs=args.async_envs)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(args.env_steps, *envs.action_space.shape)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        envs.step(a)
    elapsed = time.perf_counter() - start
    envs.close()
    return args.env_steps * args.num_envs / elapsed


def update_seconds(env_id, args):
    """One PPO update of the paper's shape on random data: ppo_continuous.py's Agent and minibatch
    step, on the fast path when --compile/--cudagraphs ask (its first update, which compiles and
    records, is not timed)."""
    import ppo_continuous as ppo
    from envs import make_env

    envs, _ = make_env(env_id, 1)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    envs.close()
    torch.set_num_threads(args.threads or min(4, os.cpu_count() or 1))
    torch.manual_seed(0)
    device = torch.device("cuda" if args.cuda else "cpu")
    config = ppo.Args(cuda=args.cuda, compile=args.compile, cudagraphs=args.cudagraphs)
    agent = ppo.Agent(obs_dim, act_dim, config).to(device)
    lr = torch.tensor(config.learning_rate, device=device) if args.cudagraphs else config.learning_rate
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5, capturable=args.cudagraphs)
    batch = args.num_envs * args.num_steps
    rollout = (torch.randn(batch, obs_dim, device=device), torch.randn(batch, act_dim, device=device),
               *torch.randn(4, batch, device=device))
    step = ppo.fast_path(ppo.make_ppo_step(agent, optimizer, {"actor": agent.actor_mean}, rollout, config), config)

    def update():
        for _ in range(config.update_epochs):
            permutation = torch.randperm(batch, device=device)
            for i in range(0, batch, config.minibatch_size):
                step(permutation[i:i + config.minibatch_size])
        if args.cuda:
            torch.cuda.synchronize()

    if args.compile or args.cudagraphs:
        update()
    start = time.perf_counter()
    update()
    return time.perf_counter() - start


def train_run(algo, env_id, args):
    """Train with the unmodified file; return (steps/s of its loop, reset seconds or None)."""
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [sys.executable, str(ROOT / f"{algo}.py"), "--env-id", env_id, "--total-timesteps", str(args.steps),
               "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps), "--run-dir", run_dir]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += fast_flags(args) + (["--async-envs"] if args.async_envs else [])
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        sps = [int(m.replace(",", "")) for m in re.findall(r"SPS ([\d,]+)", proc.stdout)]
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        run = next(p for p in Path(run_dir).iterdir() if p.is_dir())
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        reset = acc.Scalars("reset/seconds")[-1].value if "reset/seconds" in acc.Tags()["scalars"] else None
        return sps[-1], reset


def fast_flags(args):
    """The training files' device and fast-path flags this benchmark was given."""
    return [flag for flag, on in (("--cuda", args.cuda), ("--compile", args.compile), ("--cudagraphs", args.cudagraphs))
            if on]


def sac_sps(script, env_id, args):
    """Learning-phase steps/s of one SAC file: sac_sbp.py prints it as 'learning phase: X steps/s',
    the patched CleanRL file as 'LEARNING_SPS X'. Both run --sac-threads torch threads."""
    script = Path(script).resolve()  # it runs in a temporary folder: a relative path would break there
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [sys.executable, str(script), "--env-id", env_id, "--learning-starts", str(args.sac_learning_starts),
               "--total-timesteps", str(args.sac_learning_starts + args.sac_steps)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.sac_threads))
        if script == ROOT / "sac_sbp.py":
            cmd += ["--reset", "none", "--threads", str(args.sac_threads), "--run-dir", run_dir, "--no-save-buffer",
                    *fast_flags(args)]
        else:  # CleanRL's file imports cleanrl_utils from its repository root and writes runs/ in the cwd
            env["PYTHONPATH"] = str(script.parent.parent)
            cmd += ["--cuda"] if args.cuda else []
        proc = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True)
        found = re.search(r"(?:learning phase:|LEARNING_SPS) ([\d.]+)", proc.stdout)
        if proc.returncode != 0 or not found:
            sys.exit(f"error: {' '.join(cmd)} failed or printed no learning-phase speed:\n"
                     f"{proc.stdout[-1000:]}{proc.stderr[-2000:]}")
        return float(found.group(1))


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def fmt(s, digits=0):
    return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}–{s['max']:,.{digits}f}]"


def main():
    args = tyro.cli(Args)
    validate(args)
    batch = args.num_envs * args.num_steps
    results = {"machine": f"{os.cpu_count()} cores, torch {torch.__version__}, "
                          + (f"GPU {torch.cuda.get_device_name()}" if args.cuda else "networks on the CPU"),
               "command": "python benchmark.py " + " ".join(sys.argv[1:]), "steps": args.steps, "envs": {}}
    for env_id in args.envs if args.algos else []:
        env_sps, upd, train, reset = [], [], {a: [] for a in args.algos}, {a: [] for a in args.algos}
        for r in range(args.repeats):  # interleaved, so drifting load hits every column alike
            env_sps.append(env_only_sps(env_id, args))
            upd.append(update_seconds(env_id, args))
            for algo in args.algos:
                sps, reset_s = train_run(algo, env_id, args)
                train[algo].append(sps)
                if reset_s is not None:
                    reset[algo].append(reset_s)
                print(f"{env_id} repeat {r + 1}/{args.repeats}: {algo} {sps:,} SPS", flush=True)
        env_s, upd_s = statistics.median(env_sps), statistics.median(upd)
        ideal_seconds = args.steps / env_s + (args.steps // batch) * upd_s
        base = statistics.median(train[args.algos[0]])
        results["envs"][env_id] = {
            "env_only_sps": summary(env_sps), "update_seconds": summary(upd), "ideal_sps": args.steps / ideal_seconds,
            "algos": {a: {"train_sps": summary(train[a]),
                          "efficiency": (args.steps / statistics.median(train[a])) / ideal_seconds,
                          "time_vs_first": base / statistics.median(train[a]),
                          "reset_seconds": summary(reset[a]) if reset[a] else None} for a in args.algos},
        }
    sac_files = {"sac_sbp": ROOT / "sac_sbp.py", **({"cleanrl_sac": args.cleanrl_sac} if args.cleanrl_sac else {})}
    results["sac"] = {}
    for env_id in args.sac_envs:
        sps = {name: [] for name in sac_files}
        for r in range(args.repeats):  # interleaved, as above
            for name, script in sac_files.items():
                sps[name].append(sac_sps(script, env_id, args))
                print(f"{env_id} repeat {r + 1}/{args.repeats}: {name} {sps[name][-1]:.1f} learning-phase steps/s",
                      flush=True)
        results["sac"][env_id] = {name: summary(v) for name, v in sps.items()}
        if args.cleanrl_sac:
            results["sac"][env_id]["ratio"] = summary([a / b for a, b in zip(sps["sac_sbp"], sps["cleanrl_sac"])])
    lines = [f"Machine: {results['machine']}. Command: `{results['command']}`. "
             f"{args.repeats} repeat(s), interleaved, median [min–max]."]
    if results["envs"]:
        lines += ["", f"PPO family, {args.steps:,} env steps per training run:", "",
                  "| env | algorithm | env-only steps/s | update s | ideal steps/s | training steps/s | efficiency | "
                  f"time vs {args.algos[0]} | reset+distill s |", "|---|---|---|---|---|---|---|---|---|"]
    for env_id, e in results["envs"].items():
        for algo, a in e["algos"].items():
            lines.append(f"| {env_id} | {algo} | {fmt(e['env_only_sps'])} | {fmt(e['update_seconds'], 2)} | "
                         f"{e['ideal_sps']:,.0f} | {fmt(a['train_sps'])} | {a['efficiency']:.2f} | "
                         f"{a['time_vs_first']:.2f} | {fmt(a['reset_seconds'], 2) if a['reset_seconds'] else '–'} |")
    if results["sac"]:
        lines += ["", f"SAC, learning phase ({args.sac_steps:,} steps after {args.sac_learning_starts:,} random ones, "
                      f"{args.sac_threads} torch thread(s) each, batch 256, one update per env step):", "",
                  "| env | sac_sbp.py steps/s | CleanRL sac_continuous_action.py steps/s | ratio (same round) |",
                  "|---|---|---|---|"]
        for env_id, e in results["sac"].items():
            lines.append(f"| {env_id} | {fmt(e['sac_sbp'], 1)} | "
                         + (f"{fmt(e['cleanrl_sac'], 1)} | {fmt(e['ratio'], 2)} |" if "ratio" in e else "– | – |"))
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "benchmark.md").write_text(table + "\n")
    Path(args.out, "benchmark.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}/benchmark.md and benchmark.json")


if __name__ == "__main__":
    main()
