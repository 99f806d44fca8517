# carry: nothing. After stage3_measure.sh: keeps the machine warm until the background jobs mark
# themselves done (at most 9 min), then prints their tables and sends /tmp/res back; rerun if needed.
[ -d /tmp/wheels ] || { echo "cold machine: stage again"; exit 9; }
for i in $(seq 270); do
  [ -f /tmp/res/breakdown.done ] && [ -f /tmp/res/side_by_side.done ] && break
  sleep 2
done
ls /tmp/res
grep -E "^(PASSED|FAILED|ERROR)|passed|failed" /tmp/res/smollm2_tests.log | tail -8
for f in /tmp/res/*.md; do echo "== $f"; grep "^|" "$f"; done
tar -czf $OUT/results.tgz -C /tmp/res .
