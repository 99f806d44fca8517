# carry: nothing. The step-timing models, written once per machine: a random SmolLM2 head in the
# reference recipe's shape (/tmp/heads/random-4layer) and a Qwen3-8B-shaped target with a 5-layer
# head, both config-only for --load-format dummy (/tmp/models/qwen3-8b-dummy, /tmp/heads/qwen3-8b-dummy).
# Per-step cost does not depend on head quality, so random weights serve.
[ -f /tmp/heads/random-4layer/config.json ] && [ -f /tmp/heads/qwen3-8b-dummy/config.json ] && exit 0
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
python3 benchmark/dummy_shapes.py qwen3-8b /tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy
