# carry: .devwork/m3 .devwork/data [.devwork/head]
# Starts the recipe, or with the committed head the tree-attention grid (last GPU) and, on 4 GPUs, breakdown.sh (GPUs 1, 2) in the background; tests on GPU 0.
source scripts/device_session/common.sh
source scripts/device_session/install_inputs.sh
# Long jobs run from /tmp/repo, in their own session (they outlive the call).
if [ -f .devwork/head/model.safetensors ] && [ -z "${JETSPEC_TRAIN:-}" ]; then
  # The committed reference head (parked by park_head.sh, carried in .devwork/head): no recipe. On several
  # GPUs the last one runs the whole tree-attention grid instead.
  echo "reference_head: the committed head, installed in $HEAD (recipe skipped; JETSPEC_TRAIN=1 runs it)" | tee /tmp/pipeline.log
  if [ "$NGPU" -gt 1 ]; then  # the kernels' GPU tests, then the tree-attention grid, on the last GPU
    KERNEL_TESTS_GPU=$TRAIN_GPU
    ( cd /tmp/repo && CUDA_VISIBLE_DEVICES=$TRAIN_GPU setsid nohup bash -c "timeout 400 python3 -m pytest -q -rA \
        test/test_tree_kernel.py test/test_verify_inputs.py test/test_tree_attention.py > /tmp/res/kernel_gpu_tests.log 2>&1; \
        timeout 900 python3 benchmark/kernels/tree_attention_bench.py --out /tmp/res/tree_attention_grid \
        > /tmp/res/tree_attention_grid.out 2>&1" < /dev/null > /dev/null 2>&1 & )
  fi
else
  SHARE=$([ "$NGPU" -gt 1 ] && echo 0.8 || echo 0.35)   # generate-data's KV share of its GPU
  ( cd /tmp/repo && CUDA_VISIBLE_DEVICES=$TRAIN_GPU PYTHONPATH=/tmp/repo/python:$PYTHONPATH setsid nohup \
      bash benchmark/recipes/reference_head.sh benchmark/recipes/smollm2-135m.json \
      --prompts-file /tmp/prompts/sharegpt-train-prompts.jsonl.gz --mem-fraction-static $SHARE \
      > /tmp/pipeline.log 2>&1 < /dev/null & )
fi
if [ "$NGPU" -ge 4 ]; then  # the step breakdown (SmolLM2 on GPU 1, Qwen3-8B-shaped on GPU 2) in the background too
  ( cd /tmp/repo && SMOL_GPU=1 QWEN_GPU=2 setsid nohup bash scripts/device_session/breakdown.sh \
      > /tmp/breakdown.log 2>&1 < /dev/null & )
fi
if [ "$NGPU" -eq 1 ] && [ ! -f $HEAD/model.safetensors ]; then  # wait until generate-data holds its memory: SGLang counts it against ours
  for i in $(seq 90); do [ "$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits)" -gt 40000 ] && break; sleep 2; done
  export JETSPEC_TEST_MEM_FRACTION=0.55
fi
# The fp32 lossless tests (plain, JETSPEC, overlap, fused verify inputs, tree attention, sampling at T=1, the
# sync check; the first JETSPEC engine JIT-builds the fused kernels), and the kernels' own GPU tests unless
# they run on another GPU. The SmolLM2 tests run in breakdown.sh.
KERNEL_TESTS="test/test_tree_kernel.py test/test_verify_inputs.py test/test_tree_attention.py"
[ -n "${KERNEL_TESTS_GPU:-}" ] && KERNEL_TESTS=""   # running on another GPU (above)
CUDA_VISIBLE_DEVICES=0 timeout 470 python3 -m pytest -q -s -rA -k "not smollm2" test/test_sglang_gpu.py $KERNEL_TESTS \
  2>&1 | tee $OUT/gpu_tests.log | grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -30
tr '\r' '\n' < /tmp/pipeline.log | grep -v "^\s*$" | grep -v "INFO\|Prefill\|Decode" | tail -3
cp /tmp/pipeline.log $OUT/pipeline_stage3.log
