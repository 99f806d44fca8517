# carry: .devwork/m3 .devwork/data
# A short first lease (about 8 min on 4 GPUs) that finds what to fix before the measuring lease:
#   GPU 0: the overlap sync test (the counter names each sync's file:line) and the tree-attention fp32 test;
#   GPU 1: the SmolLM2 server tests on --attention-backend flashinfer, then a flashinfer step breakdown;
#   GPU 2: a triton step breakdown of overlap at budgets 32-128, then one traced overlap configuration;
#   GPU 3: the Qwen3-8B shape (dummy) on flashinfer.
# Every job ends by one deadline, PROBE_SECONDS after the inputs are in (default 470); results come back
# in $OUT/results.tgz.
source scripts/device_session/common.sh
[ "$NGPU" -ge 4 ] || { echo "stage3_probe.sh needs 4 GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
bash scripts/device_session/bench_models.sh > /tmp/res/bench_models.log 2>&1 || { tail /tmp/res/bench_models.log; exit 1; }
DEADLINE=$(( $(date +%s) + ${PROBE_SECONDS:-470} ))
breakdown() {  # GPU NAME MODEL HEAD CONFIGS BATCHES [extra step_breakdown flags]
  local gpu=$1 name=$2 model=$3 head=$4 configs=$5 batches=$6; shift 6
  CUDA_VISIBLE_DEVICES=$gpu timeout $(left) python3 benchmark/step_breakdown.py --model $model --head $head \
    --batch-sizes $batches --new-tokens 128 --configs $configs --port $((31000 + 200 * gpu)) \
    --out /tmp/res/$name "$@" > /tmp/res/$name.out 2>&1
}
SMOL_HEAD=/tmp/heads/random-4layer
(
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py -k "sync_the_host" \
    > /tmp/res/gpu_tests_sync.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py -k "tree_attention" \
    > /tmp/res/gpu_tests_tree_attention.log 2>&1
) &
(
  JETSPEC_TEST_ATTENTION_BACKEND=flashinfer JETSPEC_SMOLLM2=$SMOL CUDA_VISIBLE_DEVICES=1 timeout $(left) \
    python3 -m pytest -q -s -rA -k smollm2 test/test_sglang_gpu.py > /tmp/res/smollm2_tests_flashinfer.log 2>&1
  breakdown 1 breakdown_smollm2_flashinfer $SMOL $SMOL_HEAD "plain jetspec-no-overlap:64 jetspec:64 jetspec:128" \
    "1 4 16" --vocab 49152 --attention-backend flashinfer
) &
(
  breakdown 2 breakdown_smollm2_triton $SMOL $SMOL_HEAD "plain jetspec:32 jetspec:64 jetspec-no-overlap:64" \
    "1 4 16" --vocab 49152
  breakdown 2 traced_smollm2_overlap64 $SMOL $SMOL_HEAD "jetspec:64" "1" --vocab 49152 --trace 40:16
) &
breakdown 3 breakdown_qwen3_8b_dummy_flashinfer /tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy \
  "plain jetspec:16 jetspec:128" "1 4" --load-format dummy --vocab 151000 --mem-fraction 0.6 \
  --attention-backend flashinfer &
wait
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|host syncs" /tmp/res/gpu_tests_sync.log \
  /tmp/res/gpu_tests_tree_attention.log /tmp/res/smollm2_tests_flashinfer.log | tail -30
cp /tmp/pytest-of-*/pytest-*/test_tiny_overlap_steps_never0/server.log /tmp/res/sync_server.log 2>/dev/null
grep -h "JETSPEC host syncs" /tmp/res/sync_server.log | tail -5
for f in /tmp/res/*.md; do echo "== $f"; grep "^|\|^- jetspec" "$f"; done
tar -czf $OUT/results.tgz -C /tmp/res .
