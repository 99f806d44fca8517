# carry: .devwork/m3 .devwork/data .devwork/head
# With the committed head on a 4-GPU machine, every measurement at once, all ended by one deadline
# (STAGE_SECONDS after the inputs are in, default 530), so the call returns inside the device's limit:
#   GPU 0: the fp32 lossless tests, the worker-graph and greedy-acceptance tests, then the tree-attention fp32 test;
#   GPU 1: the Qwen3-8B-shaped step breakdown (QWEN_CONFIGS);
#   GPU 2: the side-by-side (GSM8K: SIDE_CONFIGS), then the SmolLM2 server tests when SMOL_TESTS=1;
#   GPU 3: the SmolLM2 step breakdown (SMOL_CONFIGS).
# Timings share the host's cores with the other GPUs' jobs. Results come back in $OUT/results.tgz.
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-530} NEED_HEAD=1 source scripts/device_session/stage3_lib.sh
SIDE_CONFIGS=${SIDE_CONFIGS:-plain jetspec:64 jetspec-tree:64 dflash}
SMOL_CONFIGS=${SMOL_CONFIGS:-plain jetspec:64 jetspec:128 jetspec-tree:128}
QWEN_CONFIGS=${QWEN_CONFIGS:-plain jetspec:128 jetspec-tree:128 jetspec:16 jetspec:32}
fp32_tests 0 &
breakdown 1 step_breakdown_qwen3_8b_dummy $QWEN "$QWEN_CONFIGS" "1 4" $QWEN_FLAGS &
(
  side_by_side 2 side_by_side 1 16 "$SIDE_CONFIGS"
  [ "${SMOL_TESTS:-0}" = 1 ] && JETSPEC_SMOLLM2=$SMOL CUDA_VISIBLE_DEVICES=2 timeout $(left) python3 -m pytest -q -s \
    -rA -k smollm2 test/test_sglang_gpu.py > /tmp/res/smollm2_tests.log 2>&1
) &
breakdown 3 step_breakdown_smollm2 $SMOL $SMOL_RANDOM_HEAD "$SMOL_CONFIGS" "1 4 16 32" --vocab 49152 &
wait
report
