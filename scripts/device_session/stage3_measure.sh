# carry: .devwork/m3 .devwork/data .devwork/head
# With the committed head on a 4-GPU machine, every measurement at once; then wait_all.sh.
#   GPU 0 (foreground): the fp32 lossless tests and the worker-graph tests;
#   GPU 1: the SmolLM2 server tests, then the side-by-side (GSM8K, plain vs DFLASH vs JETSPEC variants);
#   GPU 2: the SmolLM2 step breakdown; GPU 3: the Qwen3-8B-shaped one (breakdown.sh, SMOL_CONFIGS / QWEN_CONFIGS).
# SIDE_CONFIGS overrides the side-by-side's configurations. Timings share the host's cores with the other GPUs' jobs.
source scripts/device_session/common.sh
[ "$NGPU" -ge 4 ] || { echo "stage3_measure.sh needs 4 GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
[ -f $HEAD/model.safetensors ] || { echo "no head: carry .devwork/head (park_head.sh park)"; exit 2; }
rm -f /tmp/res/*.done
( cd /tmp/repo && SMOL_GPU=2 QWEN_GPU=3 SMOL_TESTS=0 setsid nohup bash scripts/device_session/breakdown.sh \
    > /tmp/breakdown.log 2>&1 < /dev/null & )
SIDE_CONFIGS=${SIDE_CONFIGS:-plain dflash jetspec:64 jetspec-overlap:64 jetspec-tree:64 jetspec:128}
( cd /tmp/repo && CUDA_VISIBLE_DEVICES=1 JETSPEC_SMOLLM2=$SMOL setsid nohup bash -c "
    timeout 420 python3 -m pytest -q -s -rA -k smollm2 test/test_sglang_gpu.py > /tmp/res/smollm2_tests.log 2>&1;
    timeout 600 python3 benchmark/side_by_side.py --model $SMOL --head $HEAD --dataset gsm8k --num-prompts 16 \
      --max-new-tokens 256 --configs $SIDE_CONFIGS --out /tmp/res/side_by_side > /tmp/res/side_by_side.out 2>&1;
    touch /tmp/res/side_by_side.done" < /dev/null > /dev/null 2>&1 & )
# A failing SGLang engine kills its parent process (sigquit), so the opt-in tree attention runs in a pytest of its own.
CUDA_VISIBLE_DEVICES=0 timeout 380 python3 -m pytest -q -s -rA test/test_step_graphs.py test/test_sglang_gpu.py \
  -k "not smollm2 and not tree_attention" > /tmp/res/gpu_tests.log 2>&1
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m pytest -q -s -rA test/test_sglang_gpu.py -k "tree_attention" \
  > /tmp/res/gpu_tests_tree_attention.log 2>&1
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|Killed" /tmp/res/gpu_tests.log /tmp/res/gpu_tests_tree_attention.log | tail -24
