# carry: .devwork/m3 .devwork/data .devwork/head
# One GPU, after stage1.sh and stage2.sh (the fp32 tests run in those calls through quick_tests.sh): the SmolLM2
# breakdown at bs 1 and 4 (random head) and the side-by-side one request at a time (24 GSM8K prompts, the committed
# head) of $CONFIGS, one job after another to one deadline (STAGE_SECONDS, default 520; timeout_s 598).
# CONFIGS defaults to plain, the head's block inputs from torch ops (`jetspec-torch-draft-inputs`) and the default.
# (A side-by-side at 16 concurrent requests needs about 2.5 min a configuration: stage3_c16.sh.)
pkill -f sglang.launch_server && sleep 5  # servers an earlier call left (a timeout mid-startup once orphaned one)
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-520} NEED_HEAD=1 MIN_GPUS=1 source scripts/device_session/stage3_lib.sh
CONFIGS=${CONFIGS:-plain jetspec-torch-draft-inputs:64 jetspec:64}
breakdown 0 breakdown_smollm2 $SMOL $SMOL_RANDOM_HEAD "$CONFIGS" "1 4" --vocab 49152
side_by_side 0 side_by_side_c1 1 24 "$CONFIGS"
prefill_graphs
grep -h "draft inputs=" /tmp/res/*.log 2>/dev/null | grep -o "draft inputs=[a-z]*" | sort | uniq -c
report
