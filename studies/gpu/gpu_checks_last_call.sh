#!/bin/bash
# The script of the last GPU call behind results/benchmark/gpu.md, kept as it ran. It expects, beside
# the repository: .whl/ (Python 3.12 wheels of gymnasium 1.4.0, mujoco 3.17.0, tyro and their small
# dependencies, which that machine lacks) and .bench/cleanrl/ (CleanRL's sac_continuous_action.py at
# 004f8a0 with studies/cleanrl_sac.patch applied, plus its cleanrl_utils/buffers.py).
# One-shot GPU checks: install wheels, then timed runs; every log timestamped into $OUT.
# (Its set-up lines now live in gpu_call_setup.sh, shared with the next call's script.)
cd "$(dirname "$0")/../.."
source studies/gpu/gpu_call_setup.sh
A="--env-id Hopper-v5 --run-dir /tmp/runs --async-envs --num-envs 16 --num-steps 512"
run p3o_fast 110 python3 p3o_continuous.py $A --cuda --compile --cudagraphs --total-timesteps 81920 --reset-frequency 16384
run sac_fast_cycle 80 python3 sac_sbp.py --env-id Hopper-v5 --run-dir /tmp/runs --cuda --compile --cudagraphs --reset cycle --learning-starts 1000 --total-timesteps 9000 --reset-frequency 2000 --metrics-every 1000 --no-save-buffer
