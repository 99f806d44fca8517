# carry: .devwork/m3 .devwork/data .devwork/head
# With the committed head on a 4-GPU machine, every measurement at once, all ended by one deadline
# (MEASURE_SECONDS after the inputs are in, default 530), so the call returns inside the device's limit:
#   GPU 0: the fp32 lossless tests, the worker-graph and greedy-acceptance tests, then (a pytest of its own,
#          since a failing engine kills its parent) the tree-attention fp32 test;
#   GPU 1: the Qwen3-8B-shaped step breakdown (QWEN_CONFIGS);
#   GPU 2: the side-by-side (GSM8K: SIDE_CONFIGS), then the SmolLM2 server tests when SMOL_TESTS=1;
#   GPU 3: the SmolLM2 step breakdown (SMOL_CONFIGS).
# Timings share the host's cores with the other GPUs' jobs. Results come back in $OUT/results.tgz.
source scripts/device_session/common.sh
[ "$NGPU" -ge 4 ] || { echo "stage3_measure.sh needs 4 GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
[ -f $HEAD/model.safetensors ] || { echo "no head: carry .devwork/head (park_head.sh park)"; exit 2; }
bash scripts/device_session/bench_models.sh > /tmp/res/bench_models.log 2>&1 || { tail /tmp/res/bench_models.log; exit 1; }
DEADLINE=$(( $(date +%s) + ${MEASURE_SECONDS:-530} ))
SIDE_CONFIGS=${SIDE_CONFIGS:-plain jetspec:64 jetspec-tree:64 dflash}
SMOL_CONFIGS=${SMOL_CONFIGS:-plain jetspec:64 jetspec:128 jetspec-tree:128}
QWEN_CONFIGS=${QWEN_CONFIGS:-plain jetspec:128 jetspec-tree:128 jetspec:16 jetspec:32}
(
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_greedy_accept.py test/test_step_graphs.py \
    test/test_sglang_gpu.py -k "not smollm2 and not tree_attention" > /tmp/res/gpu_tests.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py -k "tree_attention" \
    > /tmp/res/gpu_tests_tree_attention.log 2>&1
) &
CUDA_VISIBLE_DEVICES=1 timeout $(left) python3 benchmark/step_breakdown.py --model /tmp/models/qwen3-8b-dummy \
  --head /tmp/heads/qwen3-8b-dummy --load-format dummy --vocab 151000 --batch-sizes 1 4 --new-tokens 128 \
  --configs $QWEN_CONFIGS --mem-fraction 0.6 --port 31300 --out /tmp/res/step_breakdown_qwen3_8b_dummy \
  > /tmp/res/step_breakdown_qwen3_8b_dummy.out 2>&1 &
(
  CUDA_VISIBLE_DEVICES=2 timeout $(left) python3 benchmark/side_by_side.py --model $SMOL --head $HEAD --dataset gsm8k \
    --num-prompts 16 --max-new-tokens 256 --configs $SIDE_CONFIGS --out /tmp/res/side_by_side \
    > /tmp/res/side_by_side.out 2>&1
  [ "${SMOL_TESTS:-0}" = 1 ] && JETSPEC_SMOLLM2=$SMOL CUDA_VISIBLE_DEVICES=2 timeout $(left) python3 -m pytest -q -s \
    -rA -k smollm2 test/test_sglang_gpu.py > /tmp/res/smollm2_tests.log 2>&1
) &
CUDA_VISIBLE_DEVICES=3 timeout $(left) python3 benchmark/step_breakdown.py --model $SMOL --head /tmp/heads/random-4layer \
  --vocab 49152 --batch-sizes 1 4 16 32 --new-tokens 128 --configs $SMOL_CONFIGS --port 31700 \
  --out /tmp/res/step_breakdown_smollm2 > /tmp/res/step_breakdown_smollm2.out 2>&1 &
wait
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|Killed|host syncs" /tmp/res/gpu_tests*.log /tmp/res/smollm2_tests.log \
  2>/dev/null | tail -40
for f in /tmp/res/*.md; do echo "== $f"; grep "^|" "$f"; done
tar -czf $OUT/results.tgz -C /tmp/res .
