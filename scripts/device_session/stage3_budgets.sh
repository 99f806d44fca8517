# carry: .devwork/m3 .devwork/data .devwork/head
# Budget by batch size against a fixed budget, on 4 GPUs, all ended by one deadline (STAGE_SECONDS after the
# inputs are in, default 480):
#   GPU 0: the fp32 lossless tests (budget switching, the fixed budget, overlap, sync, both verify attentions);
#   GPU 1: the Qwen3-8B-shaped breakdown, budget 128 by batch against fixed, bs 1 4 16 32;
#   GPU 2: the same with tree attention, then the SmolLM2 breakdown;
#   GPU 3: the side-by-side with the committed head at 16 concurrent requests, then one at a time.
source scripts/device_session/common.sh
NEED_HEAD=1 source scripts/device_session/stage3_lib.sh
fp32_tests 0 &
breakdown 1 breakdown_qwen3_8b_dummy $QWEN "plain jetspec:128 jetspec-fixed:128" "1 4 16 32" $QWEN_FLAGS &
(
  breakdown 2 breakdown_qwen3_8b_dummy_tree $QWEN "plain jetspec-tree:128" "1 4 16 32" $QWEN_FLAGS
  breakdown 2 breakdown_smollm2 $SMOL $SMOL_RANDOM_HEAD "plain jetspec:128 jetspec-fixed:128" "1 4 16 32" --vocab 49152
) &
(
  side_by_side 3 side_by_side_c16 16 64 "plain jetspec:64 jetspec-fixed:64 dflash"
  side_by_side 3 side_by_side_c1 1 16 "plain jetspec:64"
) &
wait
report
