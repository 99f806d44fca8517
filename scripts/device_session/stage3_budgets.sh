# carry: .devwork/m3 .devwork/data .devwork/head
# Budget by batch size against a fixed budget, on 4 GPUs, all ended by one deadline (MEASURE_SECONDS after the
# inputs are in, default 490); results come back in $OUT/results.tgz:
#   GPU 0: the fp32 lossless tests (budget switching by default, the fixed budget, overlap, sync), then the
#          tree-attention fp32 test in a pytest of its own;
#   GPU 1: the Qwen3-8B-shaped breakdown, budget 128 by batch against fixed, bs 1 4 16 32;
#   GPU 2: the same with tree attention, then the SmolLM2 breakdown;
#   GPU 3: the side-by-side with the committed head at 16 concurrent requests, then one at a time.
source scripts/device_session/common.sh
[ "$NGPU" -ge 4 ] || { echo "stage3_budgets.sh needs 4 GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
[ -f $HEAD/model.safetensors ] || { echo "no head: carry .devwork/head (park_head.sh park)"; exit 2; }
bash scripts/device_session/bench_models.sh > /tmp/res/bench_models.log 2>&1 || { tail /tmp/res/bench_models.log; exit 1; }
DEADLINE=$(( $(date +%s) + ${MEASURE_SECONDS:-490} ))
breakdown() {  # GPU NAME MODEL HEAD CONFIGS BATCHES [extra step_breakdown flags]
  local gpu=$1 name=$2 model=$3 head=$4 configs=$5 batches=$6; shift 6
  CUDA_VISIBLE_DEVICES=$gpu timeout $(left) python3 benchmark/step_breakdown.py --model $model --head $head \
    --batch-sizes $batches --new-tokens 128 --configs $configs --port $((31000 + 200 * gpu)) \
    --out /tmp/res/$name "$@" > /tmp/res/$name.out 2>&1
}
side_by_side() {  # NAME CONCURRENCY PROMPTS CONFIGS
  CUDA_VISIBLE_DEVICES=3 timeout $(left) python3 benchmark/side_by_side.py --model $SMOL --head $HEAD --dataset gsm8k \
    --num-prompts $3 --max-new-tokens 256 --concurrency $2 --configs $4 --out /tmp/res/$1 > /tmp/res/$1.out 2>&1
}
QWEN="/tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy"
QWEN_FLAGS="--load-format dummy --vocab 151000 --mem-fraction 0.6"
(
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_greedy_accept.py test/test_step_graphs.py \
    test/test_sglang_gpu.py -k "not smollm2 and not tree_attention" > /tmp/res/gpu_tests.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py -k "tree_attention" \
    > /tmp/res/gpu_tests_tree_attention.log 2>&1
) &
breakdown 1 breakdown_qwen3_8b_dummy $QWEN "plain jetspec:128 jetspec-fixed:128" "1 4 16 32" $QWEN_FLAGS &
(
  breakdown 2 breakdown_qwen3_8b_dummy_tree $QWEN "plain jetspec-tree:128" "1 4 16 32" $QWEN_FLAGS
  breakdown 2 breakdown_smollm2 $SMOL /tmp/heads/random-4layer "plain jetspec:128 jetspec-fixed:128" "1 4 16 32" \
    --vocab 49152
) &
(
  side_by_side side_by_side_c16 16 64 "plain jetspec:64 jetspec-fixed:64 dflash"
  side_by_side side_by_side_c1 1 16 "plain jetspec:64"
) &
wait
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|Killed|host syncs" /tmp/res/gpu_tests*.log 2>/dev/null | tail -30
grep -h "JETSPEC verifies" /tmp/res/*.log 2>/dev/null | sort | uniq -c | cut -c1-200 | head
for f in /tmp/res/*.md; do echo "== $f"; grep "^|" "$f"; done
tar -czf $OUT/results.tgz -C /tmp/res .
