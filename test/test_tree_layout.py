"""Ancestor masks, SGLang's EAGLE layout and verify inputs, and FlashInfer's bit-packed mask, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jetspec_sglang.tree import DraftTree, build_tree
from jetspec_sglang.tree_layout import (
    EagleLayout,
    TreeMaskMode,
    eagle_layout,
    eagle_verify_inputs,
    pack_mask,
    parents_from_eagle_layout,
    tree_ancestor_mask,
    verify_mask,
    verify_parents,
)
from test_tree import random_proposals


def random_trees(seed: int, bs: int = 3, depth: int = 6, k: int = 4, budget: int = 37):
    gen = torch.Generator().manual_seed(seed)
    ids, logprobs, roots = random_proposals(gen, bs, depth, k)
    return build_tree(ids, logprobs, roots, budget)


def brute_force_ancestors(parents: torch.Tensor) -> torch.Tensor:
    bs, n = parents.shape
    out = torch.zeros(bs, n, n, dtype=torch.bool)
    for b in range(bs):
        for i in range(n):
            j = i
            while j >= 0:
                out[b, i, j] = True
                j = int(parents[b, j])
    return out


@pytest.mark.parametrize("seed,depth,k,budget", [(0, 6, 4, 37), (1, 15, 2, 64), (2, 3, 7, 200), (3, 1, 5, 9)])
def test_ancestor_mask_matches_brute_force(seed: int, depth: int, k: int, budget: int) -> None:
    tree = random_trees(seed, depth=depth, k=k, budget=budget)
    assert torch.equal(tree_ancestor_mask(tree), brute_force_ancestors(tree.parents))


@pytest.mark.parametrize("seed", range(5))
def test_eagle_layout_round_trips_to_parents(seed: int) -> None:
    tree = random_trees(seed, budget=17 + 20 * seed)
    layout = eagle_layout(tree.parents)
    n = tree.budget
    assert torch.equal(layout.retrieve_index, torch.arange(3 * n).view(3, n))
    assert torch.equal(parents_from_eagle_layout(layout), tree.parents)
    # Siblings are linked in slot order and every link points forward.
    for links in (layout.retrieve_next_token, layout.retrieve_next_sibling):
        live = links >= 0
        assert (links[live] > torch.arange(n).expand(3, n)[live]).all()


def test_eagle_layout_of_a_hand_tree() -> None:
    #      0
    #    1   2
    #   3 4   5
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2, -1]])  # slot 6 is padding
    layout = eagle_layout(parents)
    assert layout.retrieve_next_token.tolist() == [[1, 3, 5, -1, -1, -1, -1]]
    assert layout.retrieve_next_sibling.tolist() == [[-1, 2, -1, 4, -1, -1, -1]]
    assert isinstance(layout, EagleLayout)


def test_verify_mask_rows_are_prefix_then_ancestors() -> None:
    tree = random_trees(11, bs=2, budget=9)
    anc = tree_ancestor_mask(tree)
    prefix = torch.tensor([5, 0])
    mask, indptr = verify_mask(anc, prefix)
    assert indptr.tolist() == [0, 9 * 14, 9 * 14 + 9 * 9]
    first = mask[: 9 * 14].view(9, 14)
    assert first[:, :5].all() and torch.equal(first[:, 5:], anc[0])
    assert torch.equal(mask[9 * 14 :].view(9, 9), anc[1])


@pytest.mark.parametrize("seed", range(6))
def test_packed_mask_matches_numpy_packbits(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    bs = int(torch.randint(1, 6, (1,), generator=gen))
    tree = random_trees(seed, bs=bs, budget=int(torch.randint(1, 70, (1,), generator=gen)))
    prefix = torch.randint(0, 50, (bs,), generator=gen)
    mask, indptr = verify_mask(tree_ancestor_mask(tree), prefix)
    packed, packed_indptr = pack_mask(mask, indptr)
    expected = [np.packbits(mask[indptr[b] : indptr[b + 1]].numpy(), bitorder="little") for b in range(bs)]
    assert packed_indptr.tolist() == np.concatenate(([0], np.cumsum([len(e) for e in expected]))).tolist()
    assert packed.numpy().tobytes() == np.concatenate(expected).tobytes()


def test_verify_inputs_of_a_hand_tree_with_padding() -> None:
    #      0
    #    1   2   6 (padding: hangs off the root, as SGLang reads its lineage)
    #   3 4   5
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2, -1]] * 2)
    tokens = torch.tensor([[9, 1, 2, 3, 4, 5, 9], [8, 1, 2, 3, 4, 5, 8]])
    depths = torch.tensor([[0, 1, 1, 2, 2, 2, 0]] * 2)
    scores = torch.tensor([[0.0, -1, -2, -3, -4, -5, float("-inf")]] * 2)
    tree = DraftTree(tokens, parents, depths, scores, torch.tensor([6, 6]), max_depth=2)
    assert verify_parents(parents)[0].tolist() == [-1, 0, 0, 1, 1, 2, 0]

    qlen = eagle_verify_inputs(tree, torch.tensor([3, 0]), TreeMaskMode.QLEN_ONLY)
    assert qlen.positions.tolist() == [3, 4, 4, 5, 5, 5, 4] + [0, 1, 1, 2, 2, 2, 1]
    assert qlen.retrieve_index.tolist() == [list(range(7)), list(range(7, 14))]
    assert qlen.retrieve_next_token.tolist() == [[1, 3, 5, -1, -1, -1, -1]] * 2
    assert qlen.retrieve_next_sibling.tolist() == [[-1, 2, 6, 4, -1, -1, -1]] * 2
    assert qlen.draft_tokens.tolist() == tokens.flatten().tolist()
    rows = [[0], [0, 1], [0, 2], [0, 1, 3], [0, 1, 4], [0, 2, 5], [0, 6]]
    anc = torch.zeros(7, 7, dtype=torch.bool)
    for i, row in enumerate(rows):
        anc[i, row] = True
    assert torch.equal(qlen.tree_mask, anc.repeat(2, 1, 1).flatten())

    full = eagle_verify_inputs(tree, torch.tensor([3, 0]), TreeMaskMode.FULL_MASK)
    first = full.tree_mask[: 7 * 10].view(7, 10)
    assert first[:, :3].all() and torch.equal(first[:, 3:], anc)
    assert torch.equal(full.tree_mask[7 * 10 :], anc.flatten())
    assert torch.equal(full.positions, qlen.positions)
