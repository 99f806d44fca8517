# carry: nothing. Run after stage3_train_test.sh (and wait_for_head.sh), on the same warm machine.
[ -d /tmp/wheels ] && [ -d /tmp/models/smollm2-135m-instruct ] || { echo "cold machine: stage again"; exit 9; }
source scripts/device_session/common.sh
# One GPU: wait for the whole recipe (its tau evaluation would disturb the timings). Two: the head suffices.
t0=$(date +%s)
for i in $(seq 30); do
  if [ "$NGPU" -gt 1 ]; then [ -f $HEAD/model.safetensors ] && break; else grep -q "^reference_head:" /tmp/pipeline.log && break; fi
  grep -q Traceback /tmp/pipeline.log && { echo "the recipe failed"; break; }
  sleep 2
done
echo "waited $(( $(date +%s) - t0 )) s for the head"; [ -f $HEAD/model.safetensors ] || exit 1
tr '\r' '\n' < /tmp/pipeline.log | grep -v "^\s*$" | grep -v "INFO\|Prefill\|Decode\|train: \|generate-data: " | tail -8
mkdir -p /tmp/res
export CUDA_VISIBLE_DEVICES=0
timeout 500 python3 benchmark/side_by_side.py --model $SMOL --head $HEAD --dataset gsm8k --num-prompts 16 \
  --max-new-tokens 256 --configs plain dflash jetspec:64 jetspec:128 jetspec-tree:64 --out /tmp/res/side_by_side \
  2>&1 | grep -v "^\s*$" | tail -9
[ -f /tmp/res/tree_attention_grid.json ] || timeout 60 python3 benchmark/kernels/tree_attention_bench.py --contexts 4096 \
  --out /tmp/res/tree_attention 2>&1 | tail -3
if [ -d $HEAD/logs ]; then  # a head trained in this session: send it back
  split -b 15000000 -d $HEAD/model.safetensors $OUT/head.safetensors.part
  tar -czf $OUT/head_meta.tgz -C $HEAD config.json logs
fi
tar -czf $OUT/results.tgz -C /tmp/res . && cp /tmp/pipeline.log $OUT/pipeline_measure.log
ls -la $OUT
