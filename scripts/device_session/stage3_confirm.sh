# carry: .devwork/m3 .devwork/data .devwork/head
# A confirming lease on 4 GPUs, all ended by one deadline (STAGE_SECONDS after the inputs are in, default 470):
#   GPU 0: every fp32 lossless test (budget switching, overlap, sync, graphed greedy acceptance, both attentions);
#   GPU 1: the side-by-side at 16 concurrent requests (256 GSM8K prompts);
#   GPU 2: the side-by-side one request at a time (24 prompts), SGLang's verify attention and ours (the default);
#   GPU 3: the SmolLM2 breakdown at bs 1 and 4, SGLang's verify attention and ours, twice in opposite orders
#          (host-bound steps drift with what else the host runs).
# Last, how each server's prefill batches ran (`cuda graph: True/False` in SGLang's log lines).
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-470} NEED_HEAD=1 source scripts/device_session/stage3_lib.sh
fp32_tests 0 &
side_by_side 1 side_by_side_c16 16 256 "plain jetspec:64" &
side_by_side 2 side_by_side_c1 1 24 "plain jetspec-sglang-attention:64 jetspec:64" &
(
  breakdown 3 breakdown_smollm2_a $SMOL $SMOL_RANDOM_HEAD "plain jetspec-sglang-attention:64 jetspec:64" "1 4" --vocab 49152
  breakdown 3 breakdown_smollm2_b $SMOL $SMOL_RANDOM_HEAD "jetspec:64 jetspec-sglang-attention:64 plain" "1 4" --vocab 49152
) &
wait
prefill_graphs
report
