# carry: nothing. Polls the background jobs (the recipe; breakdown.sh if stage 3 started it) for up to
# 9 min so the machine stays warm, then sends back what /tmp/res holds so far; rerun if needed.
[ -d /tmp/wheels ] || { echo "cold machine: stage again"; exit 9; }
breakdown_done() { [ ! -f /tmp/breakdown.log ] || [ -f /tmp/res/breakdown.done ]; }
for i in $(seq 270); do
  [ -f /tmp/heads/smollm2-135m-jetspec/model.safetensors ] && grep -q "^reference_head:" /tmp/pipeline.log \
    && breakdown_done && break
  grep -q Traceback /tmp/pipeline.log && break
  sleep 2
done
tr '\r' '\n' < /tmp/pipeline.log | grep -v "^\s*$" | grep -v "INFO\|Prefill\|Decode" | tail -4
[ -f /tmp/breakdown.log ] && { tail -3 /tmp/breakdown.log; ls /tmp/res; for f in /tmp/res/*.md; do grep "^|" "$f"; done; }
[ -d /tmp/res ] && tar -czf $OUT/res_partial.tgz -C /tmp/res . ; cp /tmp/pipeline.log $OUT/pipeline_wait.log
