# carry: nothing (on a machine still warm from quick_tests.sh) or .devwork/wheels
# The tree kernel's launch configurations at SHAPE (smollm2-135m, the default, or qwen3-8b), then a whole-step A/B of
# the fastest one against the default, beside the opt-ins named in $1, on that shape's random target and head:
# 1. `tree_attention_bench.py --tiles default $TILES --graph` at the shape's heads, bs 1 and 4, budgets 64 and 128,
#    two short contexts ($OUT/tiles_$SHAPE.{json,md});
# 2. the tile whose fused-merge kernel time has the smallest geometric mean over those rows, if it beats the
#    default's by 3% or more, becomes `jetspec-tile-TILE:BUDGET` in the A/B;
# 3. `quick_breakdown.sh "jetspec:BUDGET [jetspec-tile-TILE:BUDGET] $1 jetspec:BUDGET plain" "$BS"` (4 files).
# AB=0 stops after the sweep, which stays in /tmp for a later call on the same warm machine to reuse.
# At most $2 seconds in all (default 560). Usage:
#   bash scripts/device_session/tile_ab.sh "jetspec-fused-graph-inputs:64" 560
#   SHAPE=qwen3-8b BUDGET=128 BS="1" bash scripts/device_session/tile_ab.sh "" 560
if [ -d .devwork/wheels ]; then mkdir -p /tmp/wheels && cp -r .devwork/wheels/. /tmp/wheels/; fi
source scripts/device_session/common.sh
START=$(date +%s)
SHAPE=${SHAPE:-smollm2-135m} BUDGET=${BUDGET:-64} BS=${BS:-1 4}
TILES=${TILES:-64x64x4x3 64x128x4x2 128x128x8x2 32x64x4x3 16x64x2x3 32x128x4x2}
case $SHAPE in
  smollm2-135m) HEADS="--q-heads 9 --kv-heads 3 --head-dim 64"; CONTEXTS="128 512" ;;
  qwen3-8b) HEADS="--q-heads 32 --kv-heads 8 --head-dim 128"; CONTEXTS="256 1024" ;;
  *) echo "SHAPE must be smollm2-135m or qwen3-8b, got $SHAPE"; exit 2 ;;
esac
if [ -f /tmp/tiles_$SHAPE.json ]; then  # swept by an earlier call on this machine (AB=0)
  echo "tile sweep: reusing /tmp/tiles_$SHAPE.json"
else
  timeout ${SWEEP_SECONDS:-150} python3 benchmark/kernels/tree_attention_bench.py $HEADS --bs 1 4 --budgets 64 128 \
    --contexts $CONTEXTS --grid-context 8192 --tiles default $TILES --graph --no-flashinfer --out /tmp/tiles_$SHAPE \
    > /tmp/tiles_$SHAPE.out 2>&1
  echo "tile sweep rc=$? in $(( $(date +%s) - START )) s"
fi
cp /tmp/tiles_$SHAPE.json /tmp/tiles_$SHAPE.md $OUT/
BEST=$(python3 - "$OUT/tiles_$SHAPE.json" <<'EOF'
import json, math, sys
rows = json.load(open(sys.argv[1]))["rows"]
cases = {(r["bs"], r["N"], r["context"]) for r in rows}
times = {}
for r in rows:
    times.setdefault(r["tile"], {})[(r["bs"], r["N"], r["context"])] = r.get("fused_us")
mean = {t: math.exp(sum(math.log(v) for v in c.values()) / len(c)) for t, c in times.items()
        if set(c) == cases and all(c.values())}
for t, m in sorted(mean.items(), key=lambda kv: kv[1]):
    print(f"  {t}: {m:.2f} us geometric mean over {len(cases)} cases", file=sys.stderr)
best = min(mean, key=mean.get)
print(best if best != "default" and mean[best] <= 0.97 * mean["default"] else "")
EOF
)
grep "^|" $OUT/tiles_$SHAPE.md | cut -d'|' -f2-7 | head -60
echo "fastest tile against the default: ${BEST:-none by 3% or more}"
[ "${AB:-1}" = 0 ] && exit 0
CONFIGS="jetspec:$BUDGET ${BEST:+jetspec-tile-$BEST:$BUDGET} $1 jetspec:$BUDGET plain"
echo "A/B: $CONFIGS"
SHAPE=$SHAPE bash scripts/device_session/quick_breakdown.sh "$CONFIGS" "$BS" $(( ${2:-560} - ($(date +%s) - START) - 15 ))
