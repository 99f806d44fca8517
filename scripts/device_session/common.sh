# Sourced by every call: SGLang from the staged wheels, paths, helpers.
set -o pipefail
export PYTHONUNBUFFERED=1 JETSPEC_KERNEL_CACHE=/tmp/jetspec-kernels
source scripts/bootstrap_gpu.sh /tmp/wheels >/tmp/bootstrap.log 2>&1 || { cat /tmp/bootstrap.log; exit 1; }
tail -1 /tmp/bootstrap.log
export SMOL=/tmp/models/smollm2-135m-instruct HEAD=/tmp/heads/smollm2-135m-jetspec
NGPU=$(nvidia-smi -L | wc -l)
TRAIN_GPU=$((NGPU - 1))   # the recipe's GPU; GPU 0 for tests and timings
# Seconds left to $DEADLINE (epoch seconds; at least 5), so that jobs run one after another share one deadline:
# `timeout $(left) ...`.
left() { local s=$(( DEADLINE - $(date +%s) )); echo $(( s > 5 ? s : 5 )); }
