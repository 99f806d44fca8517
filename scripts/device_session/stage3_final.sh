# carry: .devwork/m3 .devwork/data .devwork/head
# A short closing lease on 4 GPUs, all ended by one deadline (MEASURE_SECONDS after the inputs are in, default
# 250); results come back in $OUT/results.tgz:
#   GPU 0: the side-by-side with the committed head at 16 concurrent requests (128 GSM8K prompts);
#   GPU 1: the same one at a time (16 prompts), with tree attention beside the default;
#   GPU 2: host traces of budget 64 at bs 1, SGLang's verify attention and ours;
#   GPU 3: the fp32 token-identity tests of budget switching and the fixed budget.
source scripts/device_session/common.sh
[ "$NGPU" -ge 4 ] || { echo "stage3_final.sh needs 4 GPUs (found $NGPU)"; exit 2; }
source scripts/device_session/install_inputs.sh
[ -f $HEAD/model.safetensors ] || { echo "no head: carry .devwork/head (park_head.sh park)"; exit 2; }
bash scripts/device_session/bench_models.sh > /tmp/res/bench_models.log 2>&1 || { tail /tmp/res/bench_models.log; exit 1; }
DEADLINE=$(( $(date +%s) + ${MEASURE_SECONDS:-250} ))
side_by_side() {  # GPU NAME CONCURRENCY PROMPTS CONFIGS
  CUDA_VISIBLE_DEVICES=$1 timeout $(left) python3 benchmark/side_by_side.py --model $SMOL --head $HEAD --dataset gsm8k \
    --num-prompts $4 --max-new-tokens 256 --concurrency $3 --configs $5 --out /tmp/res/$2 > /tmp/res/$2.out 2>&1
}
side_by_side 0 side_by_side_c16 16 128 "plain jetspec:64 dflash" &
side_by_side 1 side_by_side_c1 1 16 "plain jetspec:64 jetspec-tree:64" &
CUDA_VISIBLE_DEVICES=2 timeout $(left) python3 benchmark/step_breakdown.py --model $SMOL --head /tmp/heads/random-4layer \
  --vocab 49152 --batch-sizes 1 --new-tokens 128 --configs jetspec:64 jetspec-tree:64 --trace 40:16 --port 31400 \
  --out /tmp/res/traced_smollm2_64 > /tmp/res/traced_smollm2_64.out 2>&1 &
CUDA_VISIBLE_DEVICES=3 timeout $(left) python3 -m pytest -q -s -rA test/test_sglang_gpu.py \
  -k "greedy_is_token_identical or fixed_budget" > /tmp/res/gpu_tests.log 2>&1 &
wait
grep -hE "^(PASSED|FAILED|ERROR)|passed|failed|Killed" /tmp/res/gpu_tests.log | tail -8
grep -h "JETSPEC verifies" /tmp/res/*.log 2>/dev/null | cut -c23-200 | sort | uniq -c
for f in /tmp/res/*.md; do echo "== $f"; grep "^|\|^- jetspec" "$f"; done
tar -czf $OUT/results.tgz -C /tmp/res .
