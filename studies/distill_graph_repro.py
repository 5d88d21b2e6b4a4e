"""Why does recording P3O's distillation minibatch step as a CUDA graph fail? A minimal reproduction.

On the H100 (results/benchmark/gpu.md) the PPO, SAC critic and SAC actor steps recorded as CUDA graphs,
while the distillation step failed with cudaErrorStreamCaptureInvalidated inside its backward. This
script builds p3o_continuous.py's InnerDistillation on random data and records its minibatch step
through the file's own fast_path under variants that each remove one suspect:

  as-is          the file's step and optimiser (plain Adam: its step count lives on the host)
  capturable     Adam(capturable=True) with a tensor learning rate, as the PPO optimiser on the fast path
  no-mask        capturable, without zeroing the frozen rows' gradients after backward
  nondeterministic  capturable, torch.use_deterministic_algorithms(False)
  keep-grads     capturable, zero_grad(set_to_none=False): gradients stay at fixed addresses
  eager          capturable, recorded without torch.compile

For each it prints one line: recorded or the error, and whether 3 replays leave the actor where 3 eager
steps from the same start leave it (max |difference|). On a machine without CUDA it runs every variant
eagerly (and compiled with --compile) on the CPU, checks they agree, and says the recording needs a GPU.

    python studies/distill_graph_repro.py            # GPU if present, else the CPU check
    python studies/distill_graph_repro.py --compile  # also compile the steps
"""

import argparse
import os
import subprocess
import sys
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import p3o_continuous as p3o  # noqa: E402

VARIANTS = ("as-is", "capturable", "no-mask", "nondeterministic", "keep-grads", "eager")


def build(variant, device, compile_, cudagraphs):
    """An InnerDistillation after a reset of slice 0, its step wrapped as the variant asks."""
    torch.manual_seed(0)
    args = p3o.Args(cuda=device.type == "cuda", compile=compile_ and variant != "eager", cudagraphs=cudagraphs)
    agent = p3o.Agent(11, 3, args).to(device)
    obs = torch.randn(8192, 11, device=device)
    distiller = p3o.InnerDistillation(agent.actor_mean, agent.actor_logstd, obs, args)
    distiller.snapshot()
    frozen = p3o.cycle_reset(agent.actor_mean, p3o.KEEP_ADAM, 0, args)
    for keep in distiller.keep.values():
        keep.fill_(1)
    for layer, rows in frozen:
        distiller.keep[layer][rows] = 0
    distiller.target_mean.copy_(distiller.teacher_mean(obs))
    if variant != "as-is":
        lr = torch.tensor(args.learning_rate, device=device) if device.type == "cuda" else args.learning_rate
        distiller.optimizer = torch.optim.Adam([*agent.actor_mean.parameters(), agent.actor_logstd], lr=lr, eps=1e-5,
                                               capturable=device.type == "cuda")
    torch.use_deterministic_algorithms(variant != "nondeterministic")

    def step(idx):
        distiller.optimizer.zero_grad(set_to_none=variant != "keep-grads")
        loss = distiller.loss_on(idx)
        loss.backward()
        if variant != "no-mask":
            for layer, keep in distiller.keep.items():
                layer.weight.grad.mul_(keep[:, None])
                layer.bias.grad.mul_(keep)
        distiller.optimizer.step()
        return loss.detach()

    return agent, p3o.fast_path(step, args)


def actor_after(variant, device, compile_, cudagraphs, calls=5):
    agent, step = build(variant, device, compile_, cudagraphs)
    g = torch.Generator(device="cpu").manual_seed(1)
    for _ in range(calls):
        step(torch.randperm(8192, generator=g)[:256].to(device))
    return torch.cat([p.detach().flatten() for p in agent.actor_mean.parameters()])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compile", action="store_true", help="torch.compile the steps (the fast path's --compile)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    cli = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if len(cli.variants) > 1:  # one process each: a failed recording can leave the CUDA context unusable, and
        # torch.compile would recompile the step per variant until its cache limit, then silently run it eagerly
        for variant in cli.variants:
            subprocess.run([sys.executable, __file__, "--variants", variant] + ["--compile"] * cli.compile)
        return
    for variant in cli.variants:
        reference = actor_after(variant, device, cli.compile, cudagraphs=False)
        if device.type == "cpu":
            plain = actor_after(variant, device, compile_=False, cudagraphs=False)
            print(f"{variant:>17}: CPU, {'compiled' if cli.compile else 'eager'} step, max |diff| to eager "
                  f"{(reference - plain).abs().max().item():.2e}; recording needs a CUDA GPU")
            continue
        try:
            graphed = actor_after(variant, device, cli.compile, cudagraphs=True)
            diff = (graphed - reference).abs().max().item()
            print(f"{variant:>17}: recorded; max |diff| to the unrecorded step {diff:.2e}")
        except Exception as e:  # the point of the script: which variant records
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"{variant:>17}: FAILED {type(e).__name__}: {' '.join(str(e).split())[:200]} "
                  f"(at {os.path.basename(where.filename)}:{where.lineno})")
            torch.cuda.synchronize()


if __name__ == "__main__":
    main()
