#!/bin/bash
# Prepared, not yet run: the GPU checks left open (docs/performance.md; results/benchmark/gpu.md), as one call
# of at most 9 minutes, every log timestamped into $OUT. It expects in the repository root (carried, not committed) what
# gpu_checks_last_call.sh does: .whl/ (Python 3.12 wheels of gymnasium 1.4.0, mujoco 3.17.0, tyro,
# imageio and their small dependencies) and, for the CleanRL rows, .bench/cleanrl/ (CleanRL's
# sac_continuous_action.py with studies/cleanrl_sac.patch applied, and ppo_continuous_action.py
# ported to gymnasium 1.x at 3x256).
#   1. why the distillation step does not record as a CUDA graph: distill_graph_repro.py, each variant
#      in its own process, eager and compiled;
#   2. benchmark.py --cuda --compile --cudagraphs: the efficiency table, CleanRL's SAC in the same call;
#   3. a box's throughput: 4, then 8 P3O runs side by side on the fast path, 100 s each, their summed
#      steps/s read from the progress lines (wall time between two lines, compilation excluded).
cd "$(dirname "$0")/../.."
source studies/gpu/gpu_call_setup.sh

run distill_graph_eager 60 python3 studies/distill_graph_repro.py
run distill_graph_compiled 150 python3 studies/distill_graph_repro.py --compile

CLEANRL_SAC=.bench/cleanrl/sac_continuous_action.py
run benchmark 150 python3 benchmark.py --cuda --compile --cudagraphs --async-envs --num-envs 16 --num-steps 512 \
    --envs Hopper-v5 --algos ppo_continuous p3o_continuous --repeats 1 --steps 81920 --sac-envs Hopper-v5 \
    --sac-steps 3000 --cleanrl-sac $CLEANRL_SAC --out $OUT/benchmark

for n in 4 8; do  # n P3O runs at once, one thread each, 16 async envs x 512 steps each
    echo "== box_$n start" | stamp >> $OUT/log.txt
    for i in $(seq 1 $n); do
        timeout 100 python3 p3o_continuous.py --env-id Hopper-v5 --seed $i --run-dir /tmp/box$n --cuda --compile \
            --cudagraphs --async-envs --num-envs 16 --num-steps 512 --threads 1 --total-timesteps 2000000 2>&1 \
            | stamp > $OUT/box${n}_run$i.txt &
    done
    wait
    echo "== box_$n end" | stamp >> $OUT/log.txt
done
