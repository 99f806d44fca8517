# Sourced by the stage-3 scripts, after common.sh: checks the machine has MIN_GPUS GPUs (default 4), installs the
# inputs (data, SmolLM2, the committed head when carried), writes the timing models, sets DEADLINE to STAGE_SECONDS
# from now, and defines the jobs they share. Every job gets the time left to that one deadline (`left`).
# Usage: STAGE_SECONDS=... NEED_HEAD=0|1 [MIN_GPUS=1] source scripts/device_session/stage3_lib.sh
[ "$NGPU" -ge "${MIN_GPUS:-4}" ] || { echo "$(basename "$0") needs ${MIN_GPUS:-4} GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
if [ "${NEED_HEAD:-0}" = 1 ] && [ ! -f $HEAD/model.safetensors ]; then
  echo "no head: carry .devwork/head (park_head.sh park)"; exit 2
fi
bash scripts/device_session/bench_models.sh > /tmp/res/bench_models.log 2>&1 || { tail /tmp/res/bench_models.log; exit 1; }
DEADLINE=$(( $(date +%s) + ${STAGE_SECONDS:-480} ))
QWEN="/tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy"
QWEN_FLAGS="--load-format dummy --vocab 151000 --mem-fraction 0.6"
SMOL_RANDOM_HEAD=/tmp/heads/random-4layer

breakdown() {  # GPU NAME MODEL HEAD CONFIGS BATCHES [extra step_breakdown flags]
  local gpu=$1 name=$2 model=$3 head=$4 configs=$5 batches=$6; shift 6
  CUDA_VISIBLE_DEVICES=$gpu timeout $(left) python3 benchmark/step_breakdown.py --model $model --head $head \
    --batch-sizes $batches --new-tokens 128 --configs $configs --port $((31000 + 200 * gpu)) \
    --out /tmp/res/$name "$@" > /tmp/res/$name.out 2>&1
}

side_by_side() {  # GPU NAME CONCURRENCY PROMPTS CONFIGS: GSM8K with the committed head
  CUDA_VISIBLE_DEVICES=$1 timeout $(left) python3 benchmark/side_by_side.py --model $SMOL --head $HEAD --dataset gsm8k \
    --num-prompts $4 --max-new-tokens 256 --concurrency $3 --configs $5 --out /tmp/res/$2 > /tmp/res/$2.out 2>&1
}

fp32_tests() {  # GPU: the fp32 lossless (tree attention by default, SGLang's by name), worker-graph and
                # greedy-acceptance tests with the sync test
  CUDA_VISIBLE_DEVICES=$1 timeout $(left) python3 -m pytest -v -s -rA test/test_greedy_accept.py test/test_step_graphs.py \
    test/test_sglang_gpu.py -k "not smollm2" > /tmp/res/gpu_tests.log 2>&1
}

prefill_graphs() {  # after `wait`: per server log, how its prefill batches ran (SGLang logs `cuda graph: True/False`)
  for f in /tmp/res/*.log; do
    [ "$(grep -c "Prefill batch" "$f")" -gt 0 ] || continue
    echo "$(basename "$f"): $(grep "Prefill batch" "$f" | grep -o "cuda graph: [A-Za-z]*" | sort | uniq -c | tr -s ' ')"
  done | tee /tmp/res/prefill_graphs.txt
}

report() {  # after `wait`: test results, the budgets chosen, every table; everything back in $OUT/results.tgz
  grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|Killed" /tmp/res/*tests*.log 2>/dev/null | tail -30
  grep -h "JETSPEC verifies" /tmp/res/*.log 2>/dev/null | cut -c23-200 | sort | uniq -c
  for f in /tmp/res/*.md; do echo "== $f"; grep "^|\|^- jetspec" "$f"; done
  tar -czf $OUT/results.tgz -C /tmp/res .
}
