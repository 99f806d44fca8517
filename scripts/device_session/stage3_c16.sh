# carry: .devwork/m3 .devwork/data .devwork/head (on the machine stage3_single.sh left warm: nothing is rebuilt)
# One GPU, to one deadline (STAGE_SECONDS, default 540; timeout_s 598), one job after another:
#   the SmolLM2 server tests (bf16 near-tie identity, accept length in server info, 32 streams and abort);
#   the side-by-side at 16 concurrent requests (96 GSM8K prompts, the committed head) of $CONFIGS (default plain,
#   the default JETSPEC, then DFLASH);
#   a traced SmolLM2 step breakdown of the default at bs 1 (random head; host time per phase, a Chrome trace).
pkill -f sglang.launch_server && sleep 5  # servers an earlier call left (a timeout mid-startup once orphaned one)
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-540} NEED_HEAD=1 MIN_GPUS=1 source scripts/device_session/stage3_lib.sh
JETSPEC_SMOLLM2=$SMOL timeout $(left) python3 -m pytest -q -s -rA -k smollm2 test/test_sglang_gpu.py \
  > /tmp/res/smollm2_tests.log 2>&1
side_by_side 0 side_by_side_c16 16 96 "${CONFIGS:-plain jetspec:64 dflash}"
breakdown 0 traced_smollm2 $SMOL $SMOL_RANDOM_HEAD "jetspec:64" "1" --vocab 49152 --trace 40:16
prefill_graphs
report
