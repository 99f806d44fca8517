# carry: .devwork/m3 .devwork/data .devwork/head
# The eighth session's measuring call on one GPU (after stage1.sh and stage2.sh; the fp32 tests ran in those
# calls through quick_tests.sh). Attention metadata refilled inside the head's graphs and skipped by the
# tree-attention target's (the default) against SGLang's refill before each replay (JETSPEC_GRAPH_METADATA=0,
# `jetspec-replay-metadata`), one job after another to one deadline (STAGE_SECONDS, default 520; timeout_s 598):
#   the SmolLM2 breakdown at bs 1 and 4 (random head), both refills and plain;
#   the side-by-side one request at a time (24 GSM8K prompts, the committed head), both refills and plain.
# (A side-by-side at 16 concurrent requests needs about 2.5 min a configuration: a call of its own.)
source scripts/device_session/common.sh
STAGE_SECONDS=${STAGE_SECONDS:-520} NEED_HEAD=1 MIN_GPUS=1 source scripts/device_session/stage3_lib.sh
breakdown 0 breakdown_smollm2 $SMOL $SMOL_RANDOM_HEAD "plain jetspec-replay-metadata:64 jetspec:64" "1 4" --vocab 49152
side_by_side 0 side_by_side_c1 1 24 "plain jetspec-replay-metadata:64 jetspec:64"
prefill_graphs
grep -h "attention metadata refilled" /tmp/res/*.log 2>/dev/null | cut -c23-250 | sort | uniq -c
report
