"""``GreedyAccept`` (the graphed greedy acceptance of the SGLang worker) against the core's tree walk, on a GPU;
on a CPU, which batch buckets it graphs.

It runs SGLang's own greedy pieces inside a CUDA graph, so it needs sglang and sgl_kernel; the KV pool
and the head's commit are stand-ins that record what they were asked to do. Batches smaller than
their bucket leave stale rows from earlier steps in the graph's buffers: padding must accept nothing,
move no KV and commit nothing, and must not disturb the real rows.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from jetspec_sglang.kernels import build_tree_fused, build_verify_inputs_fused
from jetspec_sglang.kernels.verify_inputs import empty_verify_inputs, verify_mask_numel
from jetspec_sglang.sglang.greedy_accept import buckets_within
from jetspec_sglang.sglang.lineage import lineage_topk
from jetspec_sglang.tree_layout import TreeMaskMode, tree_ancestor_mask
from jetspec_sglang.verify import accept_tree
from test_tree import random_proposals

BUDGET, DEPTH, TOPK, VOCAB, FEATURES = 24, 5, 4, 50, 8
WIDTH = DEPTH + 1
BUCKETS = [1, 2, 4]
REQ_ROWS, REQ_LEN = 8, 200


class MovingKVPool:
    """Stands in for SGLang's KV pool: one number per slot, which ``move_kv_cache`` moves like K/V."""

    def __init__(self, slots: int) -> None:
        self.payload = torch.arange(slots, dtype=torch.float32, device="cuda")

    def get_kvcache(self) -> "MovingKVPool":
        return self

    def move_kv_cache(self, tgt: torch.Tensor, src: torch.Tensor) -> None:
        self.payload[tgt] = self.payload[src]


class CommitRecorder:
    """Stands in for the head's commit: keeps rows ``j < commit_lens[b]`` of what it is given."""

    def __init__(self) -> None:
        self.rows = torch.zeros((max(BUCKETS), WIDTH, FEATURES), device="cuda")
        self.slots = torch.zeros((max(BUCKETS), WIDTH), dtype=torch.int64, device="cuda")

    def __call__(self, rows, positions, slots, commit_lens) -> None:
        bs = rows.shape[0]
        keep = torch.arange(WIDTH, device="cuda")[None, :] < commit_lens[:, None]
        self.rows[:bs].copy_(torch.where(keep[..., None], rows, self.rows[:bs]))
        self.slots[:bs].copy_(torch.where(keep, slots, self.slots[:bs]))


def target_choices_along(tree, gen: torch.Generator) -> torch.Tensor:
    """The target's token at every node: mostly one of the node's children, so paths go deep."""
    parents, tokens = tree.parents.cpu(), tree.tokens.cpu()
    bs, n = tokens.shape
    choices = torch.randint(0, VOCAB, (bs, n), generator=gen)
    for b in range(bs):
        for i in range(n):
            children = (parents[b] == i).nonzero().flatten()
            if len(children) and torch.rand((), generator=gen) < 0.85:
                choices[b, i] = tokens[b, children[torch.randint(len(children), (), generator=gen)]]
    return choices


@pytest.fixture(scope="module")
def greedy_accept_or_skip():
    pytest.importorskip("sglang.srt.speculative.eagle_utils", reason="needs sglang (the GPU machine has it)")
    pytest.importorskip("sgl_kernel", reason="needs sgl_kernel")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from jetspec_sglang.sglang.greedy_accept import GreedyAccept

    return GreedyAccept


def test_buckets_whose_taps_would_not_fit_keep_sglang_path() -> None:
    # SmolLM2 (3 taps x 576), budget 64, bf16: 221 KiB per request, so all of SGLang's default sizes fit.
    assert buckets_within([1, 2, 4, 8, 16, 32], 64, 3 * 576, torch.bfloat16) == [1, 2, 4, 8, 16, 32]
    # A Qwen3-8B head (3 taps x 4096), budget 256, bf16: 6 MiB per request; 256 MiB holds 42.
    assert buckets_within([32, 1, 16, 64, 256, 40], 256, 3 * 4096, torch.bfloat16) == [1, 16, 32, 40]
    assert buckets_within([1, 2], 64, 3 * 576, torch.float32, limit=64 * 3 * 576 * 4) == [1]


@pytest.mark.gpu
@pytest.mark.parametrize("walk", ["sglang", "fused"])
def test_graphed_greedy_accept_equals_the_reference_walk(greedy_accept_or_skip, monkeypatch, walk: str) -> None:
    """With SGLang's walk and with ``kernels.greedy_walk`` (``JETSPEC_ACCEPT_WALK``)."""
    monkeypatch.setenv("JETSPEC_ACCEPT_WALK", walk)
    gen = torch.Generator().manual_seed(31)
    req_to_token = (torch.arange(REQ_ROWS * REQ_LEN, dtype=torch.int32) + 1).view(REQ_ROWS, REQ_LEN).cuda()
    kv = MovingKVPool(REQ_ROWS * REQ_LEN + 1)  # slot 0 is SGLang's padding slot
    commit = CommitRecorder()
    accept = greedy_accept_or_skip(BUDGET, WIDTH, FEATURES, torch.float32, BUCKETS, kv, commit, "cuda")
    accept.capture()
    deepest = 0
    for bs in (4, 3, 1, 2, 3, 4, 1):  # bs 3 pads bucket 4 with the previous step's rows
        ids, logprobs, roots = (t.cuda() for t in random_proposals(gen, bs, DEPTH, TOPK, VOCAB))
        tree, _ = build_tree_fused(ids, logprobs, roots, BUDGET, lineage_topk(BUDGET, DEPTH, TOPK))
        seq_lens = torch.randint(0, REQ_LEN - BUDGET, (bs,), generator=gen).cuda()
        req_pool = torch.randperm(REQ_ROWS, generator=gen)[:bs].cuda()
        inputs = empty_verify_inputs(bs, BUDGET, verify_mask_numel(TreeMaskMode.QLEN_ONLY, bs, BUDGET, 0), "cuda")
        build_verify_inputs_fused(tree, seq_lens, TreeMaskMode.QLEN_ONLY, inputs)
        verify_input = SimpleNamespace(draft_token=inputs.draft_tokens, retrieve_index=inputs.retrieve_index,
                                       retrieve_next_token=inputs.retrieve_next_token,
                                       retrieve_next_sibling=inputs.retrieve_next_sibling)  # fmt: skip
        block = seq_lens[:, None] + torch.arange(BUDGET, device="cuda")
        tree_slots = req_to_token[req_pool[:, None], block].to(torch.int64)  # where verify wrote the tree's KV
        choices = target_choices_along(tree, gen).cuda()
        logits = torch.randn(bs * BUDGET, VOCAB, generator=gen).cuda()
        logits.scatter_(1, choices.view(-1, 1), 100.0)
        taps = torch.randn(bs * BUDGET, FEATURES, generator=gen).cuda()
        kv.payload.copy_(torch.arange(kv.payload.numel(), device="cuda"))
        commit.rows.fill_(-7.0)
        before = kv.payload.clone()

        predict, accept_lens, bonus, new_seq_lens = accept(
            logits, taps, verify_input, seq_lens, tree_slots.flatten(), block[:, :WIDTH],
            tree_slots[:, :WIDTH],
        )  # fmt: skip

        ref = accept_tree(tree, tree_ancestor_mask(tree), choices)
        assert torch.equal(accept_lens.long(), ref.accept_len + 1)
        assert torch.equal(bonus.long(), ref.bonus)
        assert torch.equal(new_seq_lens, seq_lens + ref.accept_len + 1)
        path = ref.path  # node slots of root and accepted nodes, -1 past the end
        for b in range(bs):
            n = int(ref.accept_len[b]) + 1
            nodes = path[b, :n]
            assert torch.equal(predict.view(bs, BUDGET)[b, :n].long(), choices[b, nodes])
            assert torch.equal(kv.payload[tree_slots[b, :n]], before[tree_slots[b, nodes]])  # accepted KV up front
            assert torch.equal(commit.rows[b, :n], taps.view(bs, BUDGET, -1)[b, nodes])
            assert torch.equal(commit.slots[b, :n], tree_slots[b, :n])
            assert bool((commit.rows[b, n:] == -7.0).all())  # nothing past the accepted path
        moved = (kv.payload != before).nonzero().flatten()
        front = torch.cat([tree_slots[b, : int(ref.accept_len[b]) + 1] for b in range(bs)])
        assert bool(torch.isin(moved, front).all()), "padding rows or rejected nodes moved KV"
        assert bool((commit.rows[bs:] == -7.0).all()), "padding rows committed"
        deepest = max(deepest, int(ref.accept_len.max()))
    assert deepest >= 3, "the walks stayed shallow; the test would not see a compaction"


def test_switch_takes_zero_or_one(monkeypatch) -> None:
    from jetspec_sglang.sglang.greedy_accept import greedy_accept_enabled

    monkeypatch.delenv("JETSPEC_GREEDY_ACCEPT", raising=False)
    assert greedy_accept_enabled()
    monkeypatch.setenv("JETSPEC_GREEDY_ACCEPT", "0")
    assert not greedy_accept_enabled()
    monkeypatch.setenv("JETSPEC_GREEDY_ACCEPT", "off")
    with pytest.raises(ValueError, match="JETSPEC_GREEDY_ACCEPT must be 0 or 1"):
        greedy_accept_enabled()
