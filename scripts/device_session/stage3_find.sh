# carry: .devwork/m3 .devwork/data
# A short finding lease (about 8 min on 4 GPUs) before the measuring one, all ended by one deadline
# (FIND_SECONDS after the inputs are in, default 470); results come back in $OUT/results.tgz:
#   GPU 0: the fp32 lossless, worker-graph and greedy-acceptance tests with the sync test, then (a pytest of
#          its own, since a failing engine kills its parent) the tree-attention fp32 test;
#   GPU 1: the Qwen3-8B-shaped breakdown, SGLang's verify attention against ours, bs 1 4 16;
#   GPU 2: the linear-layer floor of the 8B shape, one traced 8B step configuration, then budgets 16 and 64;
#   GPU 3: the SmolLM2 breakdown with tree attention.
source scripts/device_session/common.sh
[ "$NGPU" -ge 4 ] || { echo "stage3_find.sh needs 4 GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
bash scripts/device_session/bench_models.sh > /tmp/res/bench_models.log 2>&1 || { tail /tmp/res/bench_models.log; exit 1; }
DEADLINE=$(( $(date +%s) + ${FIND_SECONDS:-470} ))
breakdown() {  # GPU NAME MODEL HEAD CONFIGS BATCHES [extra step_breakdown flags]
  local gpu=$1 name=$2 model=$3 head=$4 configs=$5 batches=$6; shift 6
  CUDA_VISIBLE_DEVICES=$gpu timeout $(left) python3 benchmark/step_breakdown.py --model $model --head $head \
    --batch-sizes $batches --new-tokens 128 --configs $configs --port $((31000 + 200 * gpu)) \
    --out /tmp/res/$name "$@" > /tmp/res/$name.out 2>&1
}
QWEN="/tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy"
QWEN_FLAGS="--load-format dummy --vocab 151000 --mem-fraction 0.6"
(
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_greedy_accept.py test/test_step_graphs.py \
    test/test_sglang_gpu.py -k "not smollm2 and not tree_attention" > /tmp/res/gpu_tests.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py -k "tree_attention" \
    > /tmp/res/gpu_tests_tree_attention.log 2>&1
) &
breakdown 1 breakdown_qwen3_8b_dummy $QWEN "plain jetspec:128 jetspec-tree:128 jetspec:32" "1 4 16" $QWEN_FLAGS &
(
  CUDA_VISIBLE_DEVICES=2 timeout $(left) python3 benchmark/kernels/linear_floor.py \
    --config /tmp/models/qwen3-8b-dummy/config.json --out /tmp/res/linear_floor_qwen3_8b > /tmp/res/linear_floor.out 2>&1
  breakdown 2 traced_qwen3_8b_dummy_128 $QWEN "jetspec:128" "1" $QWEN_FLAGS --trace 40:16
  breakdown 2 breakdown_qwen3_8b_dummy_budgets $QWEN "plain jetspec:16 jetspec:64" "1 4 16" $QWEN_FLAGS
) &
breakdown 3 breakdown_smollm2 $SMOL /tmp/heads/random-4layer "plain jetspec:64 jetspec-tree:64 jetspec:128 jetspec-tree:128" \
  "1 4 16 32" --vocab 49152 &
wait
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|Killed|host syncs" /tmp/res/gpu_tests*.log 2>/dev/null | tail -30
cat /tmp/res/linear_floor.out | tail -12
for f in /tmp/res/*.md; do echo "== $f"; grep "^|\|^- jetspec" "$f"; done
tar -czf $OUT/results.tgz -C /tmp/res .
