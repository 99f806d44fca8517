# carry: nothing (after quick_tests.sh, on the machine it left warm) or .devwork/wheels
# A single-GPU step breakdown with no model staging: a target of SHAPE (smollm2-135m, the default, or qwen3-8b) and
# a head in its published head's shape, both random (--load-format dummy; step times, not speed-ups), for the
# configurations $1 at the batch sizes $2 (default "1 4"), within $3 seconds (default 400). Tables come back under
# $OUT as breakdown_$SHAPE.*. TRACE=W:K also traces K JETSPEC steps after W (step_breakdown.py
# --trace: Chrome traces and their kernel tables, returned as traces_$SHAPE.tgz). Put plain last: the first server on
# a fresh machine runs slow.
# The servers' logs come back as one tarball, logs_$SHAPE.tgz. WARMUP=1 first starts and stops a throwaway plain
# server (its output is discarded), for a fresh machine, whose first server runs slow.
# Usage: bash scripts/device_session/quick_breakdown.sh "jetspec:64 jetspec-torch-topk:64 plain" "1 4" 400
#        SHAPE=qwen3-8b bash scripts/device_session/quick_breakdown.sh "jetspec:128 plain" "1" 400
if [ -d .devwork/wheels ]; then mkdir -p /tmp/wheels && cp -r .devwork/wheels/. /tmp/wheels/; fi
pkill -f sglang.launch_server && sleep 5  # servers an earlier call left (a timeout mid-startup once orphaned one)
source scripts/device_session/common.sh
SHAPE=${SHAPE:-smollm2-135m}
case $SHAPE in
  smollm2-135m) VOCAB=49152 ;;
  qwen3-8b) VOCAB=151000 ;;
  *) echo "SHAPE must be smollm2-135m or qwen3-8b, got $SHAPE"; exit 2 ;;
esac
python3 benchmark/dummy_shapes.py $SHAPE /tmp/models/$SHAPE-dummy /tmp/heads/$SHAPE-dummy
if [ "${WARMUP:-0}" = 1 ]; then
  timeout 120 python3 benchmark/step_breakdown.py --model /tmp/models/$SHAPE-dummy --head /tmp/heads/$SHAPE-dummy \
    --batch-sizes 1 --new-tokens 16 --configs plain --port 30900 --out /tmp/warmup/breakdown --load-format dummy \
    --vocab $VOCAB > /dev/null 2>&1
  echo "warm-up server rc=$?"
fi
timeout "${3:-400}" python3 benchmark/step_breakdown.py --model /tmp/models/$SHAPE-dummy \
  --head /tmp/heads/$SHAPE-dummy --batch-sizes ${2:-1 4} --new-tokens 128 --configs $1 --port 31000 \
  --out $OUT/breakdown_$SHAPE --load-format dummy --vocab $VOCAB ${TRACE:+--trace $TRACE} > $OUT/breakdown_$SHAPE.out 2>&1
echo "breakdown rc=$?"
# A call brings back at most 8 files: each Chrome trace's kernel table, and the traces, go back as one tarball.
for t in $(find $OUT -path "*.traces/*.json*" 2>/dev/null); do python3 benchmark/trace_kernels.py --top 25 $t > $t.kernels.md 2>&1; done
if ls -d $OUT/*.traces > /dev/null 2>&1; then
  tar czf $OUT/traces_$SHAPE.tgz -C $OUT $(cd $OUT && ls -d *.traces) && rm -rf $OUT/*.traces
  tar xzf $OUT/traces_$SHAPE.tgz -O --wildcards "*.kernels.md" | grep -A12 "^| phase" | head -40
fi
grep -h "JETSPEC verify attention\|JETSPEC direct greedy verify\|vocab top-K=" $OUT/*.log 2>/dev/null \
  | grep -o "JETSPEC.*" | cut -c1-200 | sort | uniq -c
if ls $OUT/breakdown_$SHAPE-*.log > /dev/null 2>&1; then
  (cd $OUT && tar czf logs_$SHAPE.tgz breakdown_$SHAPE-*.log && rm breakdown_$SHAPE-*.log)
fi
cat $OUT/breakdown_$SHAPE.md 2>/dev/null | grep "^|" || tail -20 $OUT/breakdown_$SHAPE.out
