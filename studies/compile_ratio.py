"""Eager against --compile on the CPU, one thread, in one repository tree: the PPO update of the paper's shape
(10 epochs x 32 minibatches of 256 on an 8,192-step rollout, Hopper-v5's shapes; benchmark.update_seconds) and
the rollout's policy step on 8 observations. Run each mode in its own process, nothing else running:

    for tree in ../before .; do for mode in eager compile; do
        OMP_NUM_THREADS=1 python studies/compile_ratio.py $tree $mode; done; done

docs/performance.md has the numbers.
"""
import argparse
import statistics
import sys
import time
import types


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tree", help="the repository tree whose ppo_continuous.py and benchmark.py to time")
    p.add_argument("mode", choices=["eager", "compile"])
    p.add_argument("--updates", type=int, default=3, help="timed PPO updates (the median is reported)")
    p.add_argument("--calls", type=int, default=2000, help="policy steps per timing (3 timings, the median)")
    opts = p.parse_args()
    sys.path.insert(0, opts.tree)
    import torch

    import benchmark
    import ppo_continuous as ppo

    torch.set_num_threads(1)
    compile = opts.mode == "compile"
    args = types.SimpleNamespace(threads=1, cuda=False, compile=compile, cudagraphs=False, num_envs=8,
                                 num_steps=1024)
    updates = [benchmark.update_seconds("Hopper-v5", args) for _ in range(opts.updates)]
    config = ppo.Args(compile=compile)
    act = ppo.fast_path(ppo.Agent(11, 3, config).act, config)
    obs = torch.randn(8, 11)
    with torch.inference_mode():
        for _ in range(20):  # compiles
            act(obs)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(opts.calls):
                act(obs)
            times.append((time.perf_counter() - start) / opts.calls)
    print(f"{opts.tree} {opts.mode}: PPO update {statistics.median(updates):.3f} s (range {min(updates):.3f}-"
          f"{max(updates):.3f}), policy step {statistics.median(times) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
