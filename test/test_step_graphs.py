"""The worker's own CUDA graphs (``sglang/step_graphs.py``).

``block_topk`` is checked on any device against a per-row computation. On a GPU: the head's
top-K captured in a graph, as SGLang's capture tail hook runs it, equals the eager one after
replays on new inputs; and a ``BucketedGraphs`` replay writes exactly what the eager function
writes, with padding rows writing nothing even where an earlier, larger batch left data in them.
The whole path runs inside SGLang in ``test_sglang_gpu.py``'s token-identity tests.
"""

from __future__ import annotations

import types

import pytest
import torch

from jetspec_sglang.sglang.step_graphs import BucketedGraphs, DraftTopK, _same_memory, block_topk

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DEPTH, TOPK, HIDDEN, VOCAB = 3, 4, 16, 50


def lm_head(gen: torch.Generator) -> types.SimpleNamespace:
    return types.SimpleNamespace(weight=torch.randn(VOCAB, HIDDEN, generator=gen).to(DEVICE))


def test_block_topk_skips_the_bonus_row_and_normalizes_over_the_vocabulary() -> None:
    gen = torch.Generator().manual_seed(0)
    head, bs = lm_head(gen), 2
    hidden = torch.randn(bs * (DEPTH + 1), HIDDEN, generator=gen).to(DEVICE)
    ids, logprobs = block_topk(hidden, head, DEPTH, TOPK)
    assert ids.shape == logprobs.shape == (bs, DEPTH, TOPK)
    for b in range(bs):
        for d in range(DEPTH):
            full = torch.log_softmax(hidden[b * (DEPTH + 1) + 1 + d] @ head.weight.t(), -1)
            want = full.topk(TOPK)
            assert torch.equal(ids[b, d], want.indices)
            torch.testing.assert_close(logprobs[b, d], want.values, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_top_k_captured_in_a_graph_equals_eager_on_new_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    head, bs = lm_head(gen), 3
    sampler = DraftTopK(head, DEPTH, TOPK, max_bs=4, device=DEVICE)
    hidden = torch.zeros(bs * (DEPTH + 1), HIDDEN, device=DEVICE)
    out = types.SimpleNamespace(hidden_states=hidden)
    sampler.capture_hook(None, out, None, hidden.shape[0])  # warm-up, as SGLang's capture runs it first
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sampler.capture_hook(None, out, None, hidden.shape[0])
    for _ in range(3):
        hidden.copy_(torch.randn(hidden.shape, generator=gen))
        graph.replay()
        ids, logprobs = sampler.result(bs)
        want_ids, want_logprobs = block_topk(hidden, head, DEPTH, TOPK)
        assert torch.equal(ids, want_ids)
        torch.testing.assert_close(logprobs, want_logprobs, rtol=0, atol=0)


def masked_row_writer(target: torch.Tensor):
    """``fn(values [bs, W], slots [bs, W], lens [bs])``: ``target[slots[b, j]] = values[b, j] * 2`` for ``j < lens[b]``."""

    def write(values: torch.Tensor, slots: torch.Tensor, lens: torch.Tensor) -> None:
        keep = torch.arange(values.shape[1], device=values.device)[None, :] < lens[:, None]
        target.index_put_((torch.where(keep, slots, 0).flatten(),), torch.where(keep, values * 2, target[0]).flatten())

    return write


@pytest.mark.gpu
def test_bucketed_graphs_write_what_eager_writes_and_padding_writes_nothing() -> None:
    width, slots_total = 4, 200
    gen = torch.Generator().manual_seed(2)
    graphed_target = torch.zeros(slots_total, device=DEVICE)
    eager_target = torch.zeros(slots_total, device=DEVICE)

    def static(bucket: int) -> list[torch.Tensor]:
        return [torch.zeros(bucket, width, device=DEVICE), torch.zeros(bucket, width, dtype=torch.int64, device=DEVICE),
                torch.zeros(bucket, dtype=torch.int64, device=DEVICE)]  # fmt: skip

    def no_rows_past(static_inputs: list[torch.Tensor], bs: int) -> None:
        static_inputs[2][bs:].zero_()

    graphs = BucketedGraphs(masked_row_writer(graphed_target), [1, 2, 4], static, no_rows_past)
    graphs.capture()
    eager = masked_row_writer(eager_target)
    assert [graphs.bucket_for(bs) for bs in (1, 2, 3, 4, 5)] == [1, 2, 4, 4, None]
    for bs in (4, 3, 1, 2, 5):  # bs 3 after 4 reuses the bucket whose last row still holds data
        graphed_target.zero_()  # so a stale row rewritten by the graph would show
        eager_target.zero_()
        values = torch.randn(bs, width, generator=gen).to(DEVICE) + 10
        slots = (1 + torch.randperm(slots_total - 1, generator=gen)[: bs * width]).view(bs, width).to(DEVICE)
        lens = torch.randint(0, width + 1, (bs,), generator=gen).to(DEVICE)
        graphs(values, slots, lens)
        eager(values, slots, lens)
        torch.cuda.synchronize()
        assert torch.equal(graphed_target[1:], eager_target[1:]), bs


def test_an_input_already_in_its_static_buffer_is_recognised() -> None:
    """``BucketedGraphs`` skips copying an input that is the static buffer's own rows (written in place)."""
    buffer = torch.zeros(8, 4)
    assert _same_memory(buffer[:3], buffer[:3])
    assert not _same_memory(buffer[:3], buffer[:3].clone())
    assert not _same_memory(buffer[:3], buffer[:2])  # same start, fewer rows
    assert not _same_memory(buffer[:2, :2], buffer.view(4, 8)[:2, :2])  # same start and shape, other strides
