# carry: nothing (after quick_tests.sh, on the machine it left warm) or .devwork/wheels
# A single-GPU step breakdown with no model staging: a SmolLM2-135M-shaped target and a head in the reference
# head's shape, both random (--load-format dummy; step times, not speed-ups), for the configurations $1 at the
# batch sizes $2 (default "1 4"), within $3 seconds (default 400). Tables and server logs come back under $OUT.
# TRACE=W:K also traces K JETSPEC steps after W (step_breakdown.py --trace: Chrome traces beside the logs).
# Usage: bash scripts/device_session/quick_breakdown.sh "plain jetspec-replay-metadata:64 jetspec:64" "1 4" 400
if [ -d .devwork/wheels ]; then mkdir -p /tmp/wheels && cp -r .devwork/wheels/. /tmp/wheels/; fi
pkill -f sglang.launch_server && sleep 5  # servers an earlier call left (a timeout mid-startup once orphaned one)
source scripts/device_session/common.sh
python3 benchmark/dummy_shapes.py smollm2-135m /tmp/models/smollm2-135m-dummy /tmp/heads/smollm2-135m-dummy
timeout "${3:-400}" python3 benchmark/step_breakdown.py --model /tmp/models/smollm2-135m-dummy \
  --head /tmp/heads/smollm2-135m-dummy --batch-sizes ${2:-1 4} --new-tokens 128 --configs $1 --port 31000 \
  --out $OUT/breakdown_smollm2_dummy --load-format dummy --vocab 49152 ${TRACE:+--trace $TRACE} > $OUT/breakdown_smollm2_dummy.out 2>&1
echo "breakdown rc=$?"
grep -h "attention metadata refilled\|JETSPEC direct greedy verify" $OUT/*.log 2>/dev/null | cut -c23-250 | sort | uniq -c
cat $OUT/breakdown_smollm2_dummy.md 2>/dev/null | grep "^|" || tail -20 $OUT/breakdown_smollm2_dummy.out
