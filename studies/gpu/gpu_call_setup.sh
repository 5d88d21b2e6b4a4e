# Sourced by the GPU call scripts beside it, from the repository root: installs the wheels in .whl/ (the
# machine has no package registry), records the machine in $OUT/machine.txt and defines `run NAME SECONDS
# COMMAND...`, which appends the command's output, timestamped, to $OUT/log.txt.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site MUJOCO_GL=disable PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $OUT/machine.txt; nproc >> $OUT/machine.txt
python3 -c "import torch; print(torch.__version__, torch.version.cuda)" >> $OUT/machine.txt
lscpu | grep "Model name" >> $OUT/machine.txt
stamp() { while IFS= read -r l; do echo "$(date +%s.%N) $l"; done; }
run() { name=$1; lim=$2; shift 2; echo "== $name: $*" | stamp >> $OUT/log.txt; timeout $lim "$@" 2>&1 | stamp >> $OUT/log.txt; echo "== $name rc ${PIPESTATUS[0]}" | stamp >> $OUT/log.txt; }
