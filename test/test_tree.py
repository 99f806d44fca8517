"""The vectorised best-first builder against the heap reference, and tree invariants."""

from __future__ import annotations

import math

import pytest
import torch

from jetspec_sglang.tree import FanoutCap, build_tree, build_tree_reference, child_counts


def random_proposals(gen: torch.Generator, bs: int, depth: int, k: int, vocab: int = 50, *, quantize: bool = False):
    """Per-depth top-K ids (distinct per depth) and sorted log-probs, like a draft head's output."""
    logits = torch.randn(bs, depth, vocab, generator=gen) * 3
    logprobs, ids = torch.log_softmax(logits, -1).topk(k, -1)
    if quantize:  # coarse values create exact score ties across branches and depths
        logprobs = (logprobs * 2).round() / 2
        logprobs = logprobs.sort(-1, descending=True).values
    roots = torch.randint(0, vocab, (bs,), generator=gen)
    return ids, logprobs, roots


def assert_same_tree(a, b) -> None:
    for name in ("tokens", "parents", "depths", "scores", "num_nodes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("quantize", [False, True])
def test_builder_matches_heap_reference_on_random_trees(quantize: bool) -> None:
    gen = torch.Generator().manual_seed(1234 + quantize)
    trees = 0
    while trees < 1200:
        bs = int(torch.randint(1, 5, (1,), generator=gen))
        depth = int(torch.randint(1, 9, (1,), generator=gen))
        k = int(torch.randint(1, 7, (1,), generator=gen))
        budget = int(torch.randint(1, 97, (1,), generator=gen))
        cap = FanoutCap(beta=float(torch.rand(1, generator=gen)) * 4, g0=1.0) if trees % 3 == 0 else None
        ids, logprobs, roots = random_proposals(gen, bs, depth, k, quantize=quantize)
        assert_same_tree(
            build_tree(ids, logprobs, roots, budget, cap), build_tree_reference(ids, logprobs, roots, budget, cap)
        )
        trees += bs


@pytest.mark.parametrize("budget,depth,k", [(1, 3, 2), (5, 1, 3), (7, 3, 1), (64, 15, 8), (256, 6, 7), (13, 4, 4)])
def test_tree_invariants(budget: int, depth: int, k: int) -> None:
    gen = torch.Generator().manual_seed(budget * 100 + depth)
    ids, logprobs, roots = random_proposals(gen, 3, depth, k)
    tree = build_tree(ids, logprobs, roots, budget)
    reachable = sum(k**d for d in range(depth + 1))
    assert tree.tokens.shape == (3, budget)
    assert torch.equal(tree.num_nodes, torch.full((3,), min(budget, reachable)))
    slots = torch.arange(budget)
    for b in range(3):
        n = int(tree.num_nodes[b])
        assert tree.parents[b, 0] == -1 and tree.depths[b, 0] == 0 and tree.tokens[b, 0] == roots[b]
        parents = tree.parents[b, 1:n]
        assert (parents >= 0).all() and (parents < slots[1:n]).all(), "parents precede children"
        assert torch.equal(tree.depths[b, 1:n], tree.depths[b, parents] + 1)
        assert (tree.depths[b, :n] <= depth).all()
        for i in range(1, n):  # each node carries a candidate of its depth, score = parent + its log-prob
            d = int(tree.depths[b, i])
            rank = (ids[b, d - 1] == tree.tokens[b, i]).nonzero().item()
            assert tree.scores[b, i] == tree.scores[b, parents[i - 1]] + logprobs[b, d - 1, rank]
        assert (tree.parents[b, n:] == -1).all() and torch.isinf(tree.scores[b, n:]).all()


def test_siblings_are_distinct_and_ordered_by_rank() -> None:
    gen = torch.Generator().manual_seed(7)
    ids, logprobs, roots = random_proposals(gen, 2, 5, 4)
    tree = build_tree(ids, logprobs, roots, 40)
    for b in range(2):
        for p in range(int(tree.num_nodes[b])):
            kids = (tree.parents[b] == p).nonzero().flatten()
            tokens = tree.tokens[b, kids]
            assert len(set(tokens.tolist())) == len(kids)
            assert torch.equal(kids, kids.sort().values)


def test_best_first_prefers_the_likely_branch() -> None:
    # Depth 1 is confident (0.9 vs 0.05): the budget goes to the deep rank-1 chain.
    lp = torch.log(torch.tensor([[[0.9, 0.05], [0.9, 0.05], [0.9, 0.05]]]))
    ids = torch.tensor([[[10, 11], [20, 21], [30, 31]]])
    tree = build_tree(ids, lp, torch.tensor([1]), budget=5)
    assert tree.tokens.tolist() == [[1, 10, 11, 20, 21]]
    assert tree.parents.tolist() == [[-1, 0, 0, 1, 1]]


def test_fanout_cap_formula() -> None:
    k, beta, g0 = 8, 2.0, 1.0
    lp = torch.tensor([[[-0.1, -5.0] + [-9.0] * 6, [-1.0, -1.2] + [-9.0] * 6, [-0.7, -1.7] + [-9.0] * 6]])
    counts = child_counts(lp, FanoutCap(beta, g0))
    expected = [max(1, round(k / (1 + math.exp(beta * (gap - g0))))) for gap in (4.9, 0.2, 1.0)]
    assert counts.tolist() == [expected]
    assert expected == [1, 7, 4]
    assert child_counts(lp).tolist() == [[8, 8, 8]]


def test_bad_inputs_are_rejected() -> None:
    ids = torch.zeros(2, 3, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="budget"):
        build_tree(ids, torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match=r"\[bs, D, K\]"):
        build_tree(ids, torch.zeros(2, 3, 5), torch.zeros(2, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="root_tokens"):
        build_tree(ids, torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.int64), 4)
