# carry: .devwork/m3 .devwork/data .devwork/head
# A short closing lease on 4 GPUs, all ended by one deadline (STAGE_SECONDS after the inputs are in, default 250):
#   GPU 0: the side-by-side with the committed head at 16 concurrent requests (128 GSM8K prompts);
#   GPU 1: the same one at a time (16 prompts), with tree attention beside the default;
#   GPU 2: host traces of budget 64 at bs 1, SGLang's verify attention and ours;
#   GPU 3: the fp32 token-identity tests of budget switching and the fixed budget.
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-250} NEED_HEAD=1 source scripts/device_session/stage3_lib.sh
side_by_side 0 side_by_side_c16 16 128 "plain jetspec:64 dflash" &
side_by_side 1 side_by_side_c1 1 16 "plain jetspec:64 jetspec-tree:64" &
breakdown 2 traced_smollm2_64 $SMOL $SMOL_RANDOM_HEAD "jetspec:64 jetspec-tree:64" "1" --vocab 49152 --trace 40:16 &
CUDA_VISIBLE_DEVICES=3 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py \
  -k "greedy_is_token_identical or fixed_budget" > /tmp/res/gpu_tests.log 2>&1 &
wait
report
