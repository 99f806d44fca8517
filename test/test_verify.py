"""Tree acceptance against a sequential walk, and the losslessness of sampled acceptance."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from jetspec_sglang.tree import build_tree
from jetspec_sglang.tree_layout import eagle_layout, tree_ancestor_mask
from jetspec_sglang.verify import SamplingConfig, accept_tree, target_choices, target_probs
from test_tree import random_proposals


def sequential_walk(tree, choices, b: int) -> tuple[list[int], int]:
    """Follow, from the root, the child whose token equals the parent's choice; return path and bonus."""
    node, path = 0, [0]
    while True:
        kids = [i for i in range(int(tree.num_nodes[b])) if int(tree.parents[b, i]) == node]
        match = [i for i in kids if int(tree.tokens[b, i]) == int(choices[b, node])]
        if not match:
            return path, int(choices[b, node])
        node = match[0]
        path.append(node)


@pytest.mark.parametrize("seed", range(4))
def test_accept_tree_matches_sequential_walk(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    vocab = 6
    ids, logprobs, roots = random_proposals(gen, 64, 5, 3, vocab=vocab)
    tree = build_tree(ids, logprobs, roots, 24)
    # Choices follow some child (the first one) three times in four, so paths get deep.
    first_child = eagle_layout(tree.parents).retrieve_next_token
    follow = (torch.rand(tree.tokens.shape, generator=gen) < 0.75) & (first_child >= 0)
    choices = torch.where(follow, tree.tokens.gather(1, first_child.clamp_min(0)),
                          torch.randint(0, vocab, tree.tokens.shape, generator=gen))
    result = accept_tree(tree, tree_ancestor_mask(tree), choices)
    depths_seen = set()
    for b in range(64):
        path, bonus = sequential_walk(tree, choices, b)
        depths_seen.add(len(path) - 1)
        assert result.accept_len[b] == len(path) - 1
        assert result.path[b, : len(path)].tolist() == path and (result.path[b, len(path) :] == -1).all()
        assert result.bonus[b] == bonus
        assert result.accepted[b].nonzero().flatten().tolist() == sorted(path)
        emitted = result.emitted_tokens(tree)[b]
        assert emitted[: len(path)].tolist() == [int(tree.tokens[b, i]) for i in path[1:]] + [bonus]
    assert max(depths_seen) >= 3, "the test should exercise deep acceptance"


def test_padding_nodes_are_never_accepted() -> None:
    # A chain of 2 real nodes in 5 slots; the padding repeats the root token, which the choice matches.
    ids = torch.tensor([[[7]]])
    tree = build_tree(ids, torch.zeros(1, 1, 1), torch.tensor([3]), budget=5)
    assert int(tree.num_nodes[0]) == 2
    choices = torch.tensor([[7, 3, 3, 3, 3]])
    result = accept_tree(tree, tree_ancestor_mask(tree), choices)
    assert result.accept_len.tolist() == [1] and result.bonus.tolist() == [3]


def test_top_k_top_p_match_transformers_warpers() -> None:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 40, generator=gen) * 3
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 12, 0.6)]:
        ours = target_probs(logits, SamplingConfig(temperature, top_k, top_p))
        scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            scores = TopKLogitsWarper(top_k)(None, scores)
        if top_p < 1:
            scores = TopPLogitsWarper(top_p)(None, scores)
        torch.testing.assert_close(ours, torch.softmax(scores, -1), rtol=1e-5, atol=1e-6)


def test_greedy_choice_is_argmax() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 2.9, 0.0]])
    assert target_choices(logits, SamplingConfig()).tolist() == [1, 0]


def test_sampled_acceptance_is_lossless() -> None:
    """Two tokens of a Markov-chain target, decoded through random draft trees, keep the target's law.

    Chi-square over the 36 cells of (x1, x2) with 2e5 draws; alpha = 1e-3 is the
    false-failure rate of a correct implementation over random seeds.
    """
    gen = torch.Generator().manual_seed(2024)
    vocab, draws, root = 6, 200_000, 2
    transition = torch.softmax(torch.randn(vocab, vocab, generator=gen) * 1.5, -1)
    sampling = SamplingConfig(temperature=1.0)

    def step(last: torch.Tensor):
        ids, logprobs, _ = random_proposals(gen, draws, 3, 3, vocab=vocab)
        tree = build_tree(ids, logprobs, last, budget=8)
        logits = transition[tree.tokens].log()  # the target's next-token logits at every node
        result = accept_tree(tree, tree_ancestor_mask(tree), target_choices(logits, sampling, gen))
        return result.emitted_tokens(tree), result.accept_len + 1

    first, count = step(torch.full((draws,), root))
    second, _ = step(first[:, 0])  # used where the first step emitted one token only
    x1, x2 = first[:, 0], torch.where(count >= 2, first[:, 1], second[:, 0])
    assert (count >= 2).float().mean() > 0.2, "the test should exercise accepted drafts"
    observed = torch.bincount(x1 * vocab + x2, minlength=vocab * vocab)
    expected = (transition[root][:, None] * transition).flatten().double()
    expected *= draws / expected.sum()
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
