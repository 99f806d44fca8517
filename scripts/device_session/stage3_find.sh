# carry: .devwork/m3 .devwork/data
# A short finding lease (about 8 min on 4 GPUs) before the measuring one, all ended by one deadline
# (STAGE_SECONDS after the inputs are in, default 480):
#   GPU 0: the fp32 lossless tests with the sync test, then the tree-attention fp32 test;
#   GPU 1: the Qwen3-8B-shaped breakdown, SGLang's verify attention against ours, bs 1 4 16;
#   GPU 2: the linear-layer floor of the 8B shape, one traced 8B step configuration, then budgets 16 and 64;
#   GPU 3: the SmolLM2 breakdown with tree attention.
source scripts/device_session/common.sh
source scripts/device_session/stage3_lib.sh
fp32_tests 0 &
breakdown 1 breakdown_qwen3_8b_dummy $QWEN "plain jetspec:128 jetspec-tree:128 jetspec:32" "1 4 16" $QWEN_FLAGS &
(
  CUDA_VISIBLE_DEVICES=2 timeout $(left) python3 benchmark/kernels/linear_floor.py \
    --config /tmp/models/qwen3-8b-dummy/config.json --out /tmp/res/linear_floor_qwen3_8b > /tmp/res/linear_floor.out 2>&1
  breakdown 2 traced_qwen3_8b_dummy_128 $QWEN "jetspec:128" "1" $QWEN_FLAGS --trace 40:16
  breakdown 2 breakdown_qwen3_8b_dummy_budgets $QWEN "plain jetspec:16 jetspec:64" "1 4 16" $QWEN_FLAGS
) &
breakdown 3 breakdown_smollm2 $SMOL $SMOL_RANDOM_HEAD "plain jetspec:64 jetspec-tree:64 jetspec:128 jetspec-tree:128" \
  "1 4 16 32" --vocab 49152 &
wait
report
