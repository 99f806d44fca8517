"""The reference engine is lossless: greedy token equality and the sampled distribution."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from jetspec_sglang import FanoutCap, speculative_generate, target_generate
from tiny_models import tiny_head, tiny_target


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_greedy_equals_target_greedy_on_30_prompts(family: str) -> None:
    target = tiny_target(family, layers=4)
    head = tiny_head(target)
    gen = torch.Generator().manual_seed(3)
    for _ in range(30):
        prompt = torch.randint(0, 97, (int(torch.randint(1, 24, (1,), generator=gen)),), generator=gen)
        expected = target_generate(target, prompt, 20).tokens
        for budget in (1, 16, 64):
            assert speculative_generate(target, head, prompt, 20, budget=budget, topk=4).tokens == expected


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_greedy_with_high_acceptance_small_vocab(family: str) -> None:
    """An 8-token vocab with K=8: every target choice has a drafted sibling, so paths go deep (and, with
    Gemma-3's 8-token window, deeper than the window reaches back into the prefix)."""
    target = tiny_target(family, vocab=8, layers=4, seed=5)
    head = tiny_head(target, block_size=8)
    gen = torch.Generator().manual_seed(4)
    taus = []
    for _ in range(10):
        prompt = torch.randint(0, 8, (6,), generator=gen)
        expected = target_generate(target, prompt, 40).tokens
        for cap in (None, FanoutCap()):
            out = speculative_generate(target, head, prompt, 40, budget=64, topk=8, fanout_cap=cap)
            assert out.tokens == expected
            taus.append(out.tau)
    assert sum(taus) / len(taus) > 2.0, "this setup must accept several drafts per step"


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_match_with_hf_generate(family: str) -> None:
    """Our plain decoding is HF's (for Gemma-3: its sliding cache against our full one and the window's mask)."""
    target = tiny_target(family, layers=3)
    prompt = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(0))
    hf = target.generate(prompt, max_new_tokens=15, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert target_generate(target, prompt, 15).tokens == hf[0, 9:].tolist()


def test_stops_after_eos_and_at_max_new_tokens() -> None:
    target = tiny_target("llama", layers=4)
    head = tiny_head(target)
    prompt = torch.tensor([5, 6, 7])
    full = target_generate(target, prompt, 30).tokens
    eos = full[7]
    stopped = speculative_generate(target, head, prompt, 30, budget=16, topk=4, eos_token_id=eos)
    assert stopped.tokens == full[: full.index(eos) + 1]
    assert len(speculative_generate(target, head, prompt, 13, budget=16, topk=4).tokens) == 13


def test_rejects_a_head_for_another_target() -> None:
    head = tiny_head(tiny_target("llama", hidden=32, layers=4))
    with pytest.raises(ValueError, match="hidden_size"):
        speculative_generate(tiny_target("llama", hidden=64), head, [1, 2], 4)


@pytest.mark.slow
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.8, 6, 0.9)])
def test_sampling_keeps_the_target_distribution(temperature: float, top_k: int, top_p: float) -> None:
    """The 2nd and 3rd generated tokens (the first speculative step's) follow the target's law.

    Expected law: sum over x1 of p(x1) p(x2 | x1) p(x3 | x1, x2), computed exactly from
    the target. Chi-square over the non-empty cells with 3000 draws; alpha = 1e-3 is
    the false-failure rate of a correct implementation over random seeds.
    """
    from jetspec_sglang.verify import SamplingConfig, target_probs

    vocab = 10
    target = tiny_target("llama", vocab=vocab, hidden=32, layers=2, seed=11)
    head = tiny_head(target, layers=1, block_size=4)
    prompt = torch.tensor([[1, 4, 2]])
    sampling = SamplingConfig(temperature, top_k, top_p)

    def next_probs(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return target_probs(target(input_ids=ids).logits[:, -1], sampling).double()

    expected = torch.zeros(vocab, vocab, dtype=torch.float64)
    p1 = next_probs(prompt)[0]
    for x1 in range(vocab):
        ids1 = torch.cat((prompt, torch.tensor([[x1]])), 1)
        p2 = next_probs(ids1)[0]
        second = torch.cat((ids1.repeat(vocab, 1), torch.arange(vocab)[:, None]), 1)
        expected += p1[x1] * p2[:, None] * next_probs(second)
    gen = torch.Generator().manual_seed(99)
    counts = torch.zeros(vocab * vocab)
    draws = 3000
    for _ in range(draws):
        out = speculative_generate(
            target, head, prompt, 3, budget=12, topk=4, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=gen,
        )
        counts[out.tokens[1] * vocab + out.tokens[2]] += 1
    expected = expected.flatten()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "sampled a token the filtered target cannot produce"
    expected_counts = expected[keep] / expected[keep].sum() * draws
    assert chisquare(counts[keep].numpy(), expected_counts.numpy()).pvalue > 1e-3


def test_layer_kinds_the_reference_engine_cannot_mask_are_refused() -> None:
    from types import SimpleNamespace

    from jetspec_sglang.hf_target import attention_layer_types

    assert attention_layer_types(SimpleNamespace()) == (("full_attention",), None)
    assert attention_layer_types(SimpleNamespace(sliding_window=4096)) == (("sliding_attention",), 4096)  # Mistral
    mixed = SimpleNamespace(sliding_window=512, layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    assert attention_layer_types(mixed) == (("sliding_attention", "full_attention"), 512)
    with pytest.raises(NotImplementedError, match=r"not \['chunked_attention'\] layers"):
        attention_layer_types(SimpleNamespace(layer_types=["chunked_attention", "full_attention"]))
    with pytest.raises(ValueError, match="no sliding_window"):
        attention_layer_types(SimpleNamespace(sliding_window=None, layer_types=["sliding_attention"]))
