"""Tiny random-weight targets and draft heads for CPU tests."""

from __future__ import annotations

import torch


def tiny_target(family: str, *, vocab: int = 97, hidden: int = 64, layers: int = 6, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random-weight HF causal LM of the given family (``llama``, ``qwen3``, or ``gemma3``: Gemma-3's layer mix,
    every second layer sliding over an 8-token window, so that tests' contexts outgrow it), in eval mode."""
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
               "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}
    config_cls, model_cls = classes[family]
    extra = {}
    if family == "gemma3":
        kinds = ("sliding_attention", "full_attention")
        extra = dict(sliding_window=8, layer_types=[kinds[i % 2] for i in range(layers)],
                     query_pre_attn_scalar=hidden // 4)
    config = config_cls(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=1024,
        tie_word_embeddings=False, **extra,
    )
    torch.manual_seed(seed)
    return model_cls(config).to(dtype).eval()


def tiny_head(target: torch.nn.Module, *, layers: int = 2, block_size: int = 6, causal: bool = True,
              seed: int = 1):
    """A random draft head shaped for ``target``, same dtype."""
    from jetspec_sglang import DraftHead, DraftHeadConfig

    torch.manual_seed(seed)
    config = DraftHeadConfig.for_target(target.config, num_hidden_layers=layers, block_size=block_size, causal=causal)
    dtype = target.get_input_embeddings().weight.dtype
    return DraftHead(config).to(dtype).eval()
