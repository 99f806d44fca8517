#!/usr/bin/env bash
# benchmark/recipes/reference_head.sh RECIPE [EXTRA_GENERATE_DATA_ARGS...]
#
# The whole reference-head recipe, one command: regenerate the training data with
# the target (the recipe's "_generate_data"), train (`jetspec train --config
# RECIPE`), then measure tau on held-out GSM8K-test prompts with the reference
# engine (the recipe's "_eval_tau"). Each step is resumable or idempotent, so a
# rerun continues where the last one stopped. TARGET, DATA and HEAD in the
# recipe's commands stand for its "target", "data" and "output_dir".
#
#   bash benchmark/recipes/reference_head.sh benchmark/recipes/smollm2-135m.json
#   # air-gapped GPU machine, prompts exported where the data wheels are:
#   bash benchmark/recipes/reference_head.sh benchmark/recipes/smollm2-135m.json \
#       --prompts-file sharegpt-train-prompts.jsonl.gz
#
# Extra arguments go to `jetspec generate-data` after the recipe's own (the last
# of a repeated flag wins). NPROC=N trains on N GPUs of this machine with torchrun
# (DDP); the recipe's batch size is per GPU. Writes HEAD/logs/{train_log.csv,
# tau.json,tau_gsm8k.json} and prints the step timings.
set -euo pipefail
RECIPE=${1:?usage: reference_head.sh RECIPE [EXTRA_GENERATE_DATA_ARGS...]}
shift
recipe_cmd() {  # the recipe's command $1 with TARGET, DATA and HEAD filled in
  python3 - "$RECIPE" "$1" <<'PY'
import json, shlex, sys
r = json.load(open(sys.argv[1]))
cmd = r[sys.argv[2]]
for key, field in (("TARGET", "target"), ("DATA", "data"), ("HEAD", "output_dir")):
    cmd = cmd.replace(key, shlex.quote(str(r[field])))
print(cmd)
PY
}
head_dir=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['output_dir'])" "$RECIPE")
t0=$(date +%s)
eval "$(recipe_cmd _generate_data) $(printf '%q ' "$@")"
t1=$(date +%s)
if [ "${NPROC:-1}" -gt 1 ]; then
  torchrun --standalone --nproc_per_node "$NPROC" -m jetspec_sglang.cli train --config "$RECIPE"
else
  jetspec train --config "$RECIPE"
fi
t2=$(date +%s)
eval "$(recipe_cmd _eval_tau)"
t3=$(date +%s)
echo "reference_head: generate-data $((t1 - t0)) s, train $((t2 - t1)) s, eval-tau $((t3 - t2)) s; head in $head_dir"
