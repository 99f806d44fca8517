# carry: nothing. Step cost per phase, JETSPEC vs plain, on GPU 0. It needs no trained head (per-step cost
# does not depend on head quality), so on a 2-GPU machine it runs while the recipe trains on GPU 1.
[ -d /tmp/wheels ] || { echo "cold machine: stage again"; exit 9; }
source scripts/device_session/common.sh
python3 - <<'PY'
import json, torch
from transformers import AutoConfig
from jetspec_sglang import DraftHead, DraftHeadConfig
r = json.load(open("benchmark/recipes/smollm2-135m.json"))  # the reference head's shape, random weights
cfg = DraftHeadConfig.for_target(AutoConfig.from_pretrained("/tmp/models/smollm2-135m-instruct"),
                                 num_hidden_layers=r["num_hidden_layers"], num_taps=r["num_taps"],
                                 mask_token_id=r["mask_token_id"], block_size=r["block_size"], causal=r["causal"])
torch.manual_seed(0)
DraftHead(cfg).save_pretrained("/tmp/heads/random-4layer", dtype=torch.bfloat16)
PY
mkdir -p /tmp/res
JETSPEC_SMOLLM2=$SMOL CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m pytest -q -s -rA -k smollm2 test/test_sglang_gpu.py \
  2>&1 | tee /tmp/res/smollm2_tests.log | grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -6
CUDA_VISIBLE_DEVICES=0 timeout 330 python3 benchmark/step_breakdown.py --model $SMOL --head /tmp/heads/random-4layer \
  --vocab 49152 --configs plain jetspec:64 jetspec:128 jetspec-overlap:128 --batch-sizes 1 4 16 32 --new-tokens 128 \
  --out /tmp/res/step_breakdown 2>&1 | grep -v "^\s*$" | tail -26
tar -czf $OUT/breakdown.tgz -C /tmp/res .
