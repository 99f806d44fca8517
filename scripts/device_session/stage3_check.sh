# carry: .devwork/m3 .devwork/data .devwork/head
# A checking lease on 4 GPUs, all ended by one deadline (STAGE_SECONDS after the inputs are in, default 480):
#   GPU 0: every fp32 lossless test (budget switching, overlap, sync, both verify attentions);
#   GPU 1: the Qwen3-8B shape at budget 128, bs 1 4 16 32: the default (tree attention on triton),
#          SGLang's verify attention, the fixed budget;
#   GPU 2: the same shape at bs 1 with cheaper heads (1 and 2 draft layers) at budgets 128 and 64;
#   GPU 3: after the first server starts, the SmolLM2 breakdown at bs 1 and 4 (SGLang's verify attention and ours),
#          a host-traced bs-1 run, then the side-by-side at 16 concurrent requests (256 GSM8K prompts).
# Last, how each server's prefill batches ran (`cuda graph: True/False` in SGLang's log lines).
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-480} NEED_HEAD=1 source scripts/device_session/stage3_lib.sh
for layers in 1 2; do
  python3 benchmark/dummy_shapes.py qwen3-8b /tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy-${layers}layer \
    --head-layers $layers > /dev/null
done
fp32_tests 0 &
breakdown 1 breakdown_qwen3_8b_dummy $QWEN "plain jetspec:128 jetspec-sglang-attention:128 jetspec-fixed:128" \
  "1 4 16 32" $QWEN_FLAGS &
(
  for layers in 1 2; do
    breakdown 2 breakdown_qwen3_8b_dummy_${layers}layer /tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy-${layers}layer \
      "plain jetspec:128 jetspec:64" "1" $QWEN_FLAGS
  done
) &
(
  sleep 60
  breakdown 3 breakdown_smollm2 $SMOL $SMOL_RANDOM_HEAD "plain jetspec:64 jetspec-tree:64" "1 4" --vocab 49152
  breakdown 3 traced_smollm2_64 $SMOL $SMOL_RANDOM_HEAD "jetspec:64" "1" --vocab 49152 --trace 40:16
  side_by_side 3 side_by_side_c16 16 256 "plain jetspec:64"
) &
wait
prefill_graphs
report
