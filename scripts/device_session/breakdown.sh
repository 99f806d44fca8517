# carry: nothing. Step cost per phase, JETSPEC vs plain (and NGRAM), on two models:
#   - SmolLM2-135M (real weights, a random head in the recipe's shape) on GPU $SMOL_GPU, after its
#     lossless GPU tests;
#   - a Qwen3-8B-shaped target with a 5-layer head, both --load-format dummy, on GPU $QWEN_GPU.
# Per-step cost does not depend on head quality, so no trained head is needed. On a 4-GPU machine
# stage3_train_test.sh starts this in the background (SMOL_GPU=1 QWEN_GPU=2, beside the tests on GPU 0
# and the recipe on GPU 3); alone it runs both parts on GPU 0, one after the other (~12 min).
# SMOL_TESTS=0 skips the SmolLM2 GPU tests (another GPU runs them); SMOL_TRACE=W:K adds the host trace
# (step_breakdown.py --trace; it slows the traced configurations, so not in timing runs).
# Results go to /tmp/res (wait_all.sh or wait_for_head.sh send them back); /tmp/res/breakdown.done marks the end.
[ -d /tmp/wheels ] || { echo "cold machine: stage again"; exit 9; }
source scripts/device_session/common.sh
SMOL_GPU=${SMOL_GPU:-0} QWEN_GPU=${QWEN_GPU:-0}
# The configurations each model runs (override to shorten a lease).
SMOL_CONFIGS=${SMOL_CONFIGS:-plain jetspec:16 jetspec:32 jetspec:64 jetspec:128 jetspec-sglang-inputs:128 jetspec-tree:128 jetspec-no-overlap:128}
QWEN_CONFIGS=${QWEN_CONFIGS:-plain jetspec:16 jetspec:32 jetspec:64 jetspec:128 jetspec-tree:128}
mkdir -p /tmp/res && rm -f /tmp/res/breakdown.done
bash scripts/device_session/bench_models.sh

smollm2() {
  [ "${SMOL_TESTS:-1}" = 1 ] && JETSPEC_SMOLLM2=$SMOL CUDA_VISIBLE_DEVICES=$SMOL_GPU timeout 420 python3 -m pytest -q \
    -s -rA -k smollm2 test/test_sglang_gpu.py > /tmp/res/smollm2_tests.log 2>&1
  CUDA_VISIBLE_DEVICES=$SMOL_GPU timeout 660 python3 benchmark/step_breakdown.py --model $SMOL \
    --head /tmp/heads/random-4layer --vocab 49152 --batch-sizes 1 4 16 32 --new-tokens 128 \
    --configs $SMOL_CONFIGS \
    ${SMOL_TRACE:+--trace $SMOL_TRACE} --out /tmp/res/step_breakdown_smollm2 > /tmp/res/step_breakdown_smollm2.out 2>&1
}
qwen3_8b_dummy() {
  CUDA_VISIBLE_DEVICES=$QWEN_GPU timeout 900 python3 benchmark/step_breakdown.py --model /tmp/models/qwen3-8b-dummy \
    --head /tmp/heads/qwen3-8b-dummy --load-format dummy --vocab 151000 --batch-sizes 1 4 16 32 --new-tokens 128 \
    --configs $QWEN_CONFIGS --mem-fraction 0.6 --port 31300 \
    --out /tmp/res/step_breakdown_qwen3_8b_dummy > /tmp/res/step_breakdown_qwen3_8b_dummy.out 2>&1
}
if [ "$QWEN_GPU" != "$SMOL_GPU" ]; then qwen3_8b_dummy & smollm2; wait; else smollm2; qwen3_8b_dummy; fi
touch /tmp/res/breakdown.done
grep -E "PASSED|FAILED|ERROR|passed|failed" /tmp/res/smollm2_tests.log | tail -6
for f in /tmp/res/step_breakdown_*.md; do grep "^|" "$f"; done
