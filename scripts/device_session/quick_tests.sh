# carry: .devwork/wheels (or nothing, on a machine still warm from a call that installed them)
# A single-GPU call with no model staging: install SGLang's wheels, then the GPU tests of the fp32 set
# (`fp32_tests` in stage3_lib.sh) that `pytest -k "$1"` selects, within $2 seconds (default 400). The log comes
# back as $OUT/quick_tests.log. TESTS (default: the greedy-accept, step-graph and SGLang GPU test files) picks
# the files. Each tiny engine takes about 45 s; the first start on a fresh machine JIT-compiles. pytest runs verbose:
# a crashing SGLang server kills pytest with it (SIGQUIT), and then only the per-test lines name what ran.
# Usage: bash scripts/device_session/quick_tests.sh "graph_metadata or greedy_is_token" [SECONDS]
if [ -d .devwork/wheels ]; then mkdir -p /tmp/wheels && cp -r .devwork/wheels/. /tmp/wheels/; fi
pkill -f sglang.launch_server && sleep 5  # servers an earlier call left (a timeout mid-startup once orphaned one)
source scripts/device_session/common.sh
timeout "${2:-400}" python3 -m pytest -v -s -rA ${TESTS:-test/test_greedy_accept.py test/test_step_graphs.py test/test_sglang_gpu.py} \
  -k "$1" > $OUT/quick_tests.log 2>&1
echo "pytest rc=$?"
grep -hoE "^test/[^ ]*::[^ ]*|^(PASSED|FAILED|ERROR).*|.*(passed|failed).*|.*Error.*" $OUT/quick_tests.log | cut -c1-200 \
  | tail -40  # each test's name as it starts (-v), then its result
