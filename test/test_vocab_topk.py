"""``kernels.vocab_topk`` (the draft's vocabulary top-K in two Triton launches) against PyTorch's.

Without CUDA the kernels run in Triton's interpreter, in a fresh process (Triton reads TRITON_INTERPRET
when first imported); with CUDA the same cases run the compiled kernels. The values must equal
PyTorch's ``topk`` of the float32 logits exactly, the ids must point at them (ties to the lower id),
and the log-sum-exp must match ``torch.logsumexp`` to float32 rounding.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os

import types

import pytest
import torch

from jetspec_sglang.kernels.vocab_topk import MAX_K, vocab_topk, vocab_topk_reference
from jetspec_sglang.sglang.step_graphs import block_topk
from jetspec_sglang.sglang.vocab_topk import merge_shard_topk, select_vocab_topk, shard_topk
from triton_interpreter import compiled_or_interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")

# name: (rows, vocab, k, dtype, vocab_start, logits kind)
CASES = {
    "bf16, vocab not a chunk multiple (49 chunks), many ties": (5, 49152 + 37, 8, "bfloat16", 0, "randn"),
    "float32, one chunk": (3, 300, 7, "float32", 0, "randn"),
    "float16, k 64, shard offset": (2, 5000, 64, "float16", 1000, "randn"),
    "Qwen3's vocab (38 chunks of 4096)": (2, 151936, 10, "bfloat16", 0, "randn"),
    "every logit tied": (2, 3000, 5, "float32", 0, "zeros"),
    "three finite logits, k 6": (1, 2500, 6, "float32", 0, "mostly -inf"),
}


def make_logits(rows: int, vocab: int, dtype: str, kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(rows * vocab)
    if kind == "zeros":
        logits = torch.zeros(rows, vocab)
    elif kind == "mostly -inf":
        logits = torch.full((rows, vocab), float("-inf"))
        logits[:, [2400, 7, 1300]] = torch.tensor([0.5, -2.0, 3.0])
    else:
        logits = 3 * torch.randn(rows, vocab, generator=gen)
    return logits.to(getattr(torch, dtype)).to(DEVICE)


def run_cases() -> dict:
    results = {}
    for name, (rows, vocab, k, dtype, start, kind) in CASES.items():
        logits = make_logits(rows, vocab, dtype, kind)
        values, ids, lse = vocab_topk(logits, k, vocab_start=start)
        ref_values, _, ref_lse = vocab_topk_reference(logits, k)
        results[name] = {
            "dtypes": [str(values.dtype), str(ids.dtype), str(lse.dtype)],
            "values": values.tolist(), "ids": ids.tolist(), "lse": lse.tolist(),
            "ref_values": ref_values.tolist(), "ref_lse": ref_lse.tolist(),
            "picked": logits.float().gather(1, ids - start).tolist(),
        }  # fmt: skip
    # One vocabulary in three shards, merged as tensor-parallel ranks merge them: the same as one shard.
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 32, generator=gen).to(DEVICE)
    weight = torch.randn(3000, 32, generator=gen).to(DEVICE)
    parts = [shard_topk(hidden, weight[a:b], a, 6, fused=True) for a, b in ((0, 1000), (1000, 2200), (2200, 3000))]
    merged = merge_shard_topk(*(torch.stack(x) for x in zip(*parts)), 6)
    values, ids, lse = shard_topk(hidden, weight, 0, 6, fused=False)
    results["shards"] = {"merged_ids": merged[0].tolist(), "merged_logprobs": merged[1].tolist(),
                         "ids": ids.tolist(), "logprobs": (values - lse[:, None]).tolist()}  # fmt: skip
    # The worker's entry: a head block of bs 2 x (bonus + 4 depths) through an lm_head, fused and not.
    lm_head = types.SimpleNamespace(weight=weight)
    block = torch.randn(2 * 5, 32, generator=gen).to(DEVICE)
    fused, unfused = (block_topk(block, lm_head, depth=4, topk=6, fused=f) for f in (True, False))
    results["block"] = {"shapes": [list(t.shape) for t in (*fused, *unfused)],
                        "ids": [fused[0].tolist(), unfused[0].tolist()],
                        "logprob_diff": (fused[1] - unfused[1]).abs().max().item()}  # fmt: skip
    return results


@pytest.fixture(scope="module")
def case_results() -> dict:
    return compiled_or_interpreted("test_vocab_topk", "run_cases")


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_matches_pytorch(case_results: dict, name: str) -> None:
    got = case_results[name]
    assert got["dtypes"] == ["torch.float32", "torch.int64", "torch.float32"]
    assert got["values"] == got["ref_values"]  # exactly: the same float32 numbers, best first
    assert got["picked"] == got["values"]  # each id's logit is its value
    for row_ids, row_values in zip(got["ids"], got["values"]):
        assert len(set(row_ids)) == len(row_ids)
        for (a, va), (b, vb) in zip(zip(row_ids, row_values), zip(row_ids[1:], row_values[1:])):
            assert va > vb or a < b, "tied logits must come lower id first"
    for lse, ref in zip(got["lse"], got["ref_lse"]):
        assert lse == pytest.approx(ref, rel=1e-6, abs=1e-6)


@needs_triton
def test_ties_and_masked_vocabulary_pick_the_lowest_ids(case_results: dict) -> None:
    tied = case_results["every logit tied"]
    assert tied["ids"] == [[0, 1, 2, 3, 4]] * 2
    assert tied["lse"][0] == pytest.approx(math.log(3000))
    masked = case_results["three finite logits, k 6"]
    assert masked["ids"] == [[1300, 2400, 7, 0, 1, 2]]
    assert masked["lse"][0] == pytest.approx(math.log(math.exp(3.0) + math.exp(0.5) + math.exp(-2.0)))


@needs_triton
def test_shards_merged_equal_one_shard(case_results: dict) -> None:
    shards = case_results["shards"]
    assert shards["merged_ids"] == shards["ids"]
    for got, want in zip(shards["merged_logprobs"], shards["logprobs"]):  # a GPU matmul of a slice may round
        assert got == pytest.approx(want, abs=1e-4)  # differently from one of the whole (1.1e-5 seen on an H100)


@needs_triton
def test_the_head_block_top_k_is_the_same_fused_or_not(case_results: dict) -> None:
    block = case_results["block"]
    assert block["shapes"] == [[2, 4, 6]] * 4  # ids and log-probs per request and depth; the bonus row dropped
    assert block["ids"][0] == block["ids"][1]
    assert block["logprob_diff"] < 1e-5


def test_bad_inputs_are_refused() -> None:
    logits = torch.zeros(2, 100)
    with pytest.raises(ValueError, match="k must be in"):
        vocab_topk(logits, 0)
    with pytest.raises(ValueError, match="k must be in"):
        vocab_topk(logits, 101)
    with pytest.raises(ValueError, match="k must be in"):
        vocab_topk(torch.zeros(2, 1000), MAX_K + 1)
    with pytest.raises(ValueError, match="2-d float tensor"):
        vocab_topk(torch.zeros(100), 3)
    with pytest.raises(ValueError, match="contiguous along its last dim"):
        vocab_topk(torch.zeros(100, 2).t(), 3)
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="runs on CUDA"):
            vocab_topk(logits, 3)


def test_selection_defaults_to_fused_where_triton_runs_and_k_is_small(monkeypatch, caplog) -> None:
    monkeypatch.delenv("JETSPEC_VOCAB_TOPK", raising=False)
    has_triton = importlib.util.find_spec("triton") is not None
    assert select_vocab_topk(8) == ("fused" if has_triton else "torch")
    with caplog.at_level(logging.WARNING):
        assert select_vocab_topk(MAX_K + 1) == "torch"  # auto falls back quietly
    assert caplog.text == ""
    assert select_vocab_topk(8, "torch") == "torch"
    monkeypatch.setenv("JETSPEC_VOCAB_TOPK", "torch")
    assert select_vocab_topk(8) == "torch"
    monkeypatch.setenv("JETSPEC_VOCAB_TOPK", "fused")
    assert select_vocab_topk(8) == ("fused" if has_triton else "torch")
    with caplog.at_level(logging.WARNING):
        assert select_vocab_topk(MAX_K + 1) == "torch"
    assert "JETSPEC_VOCAB_TOPK=fused needs triton and topk <= 64 (topk is 65)" in caplog.text
    monkeypatch.setenv("JETSPEC_VOCAB_TOPK", "triton")
    with pytest.raises(ValueError, match=r"JETSPEC_VOCAB_TOPK must be one of \('auto', 'fused', 'torch'\)"):
        select_vocab_topk(8)
