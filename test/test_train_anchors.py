"""Anchor sampling, block construction, the training mask and the multi-block head forward."""

from __future__ import annotations

import pytest
import torch

from jetspec_sglang.train.anchors import (
    Anchors,
    anchor_candidates,
    block_inputs,
    block_targets,
    sample_anchors,
    training_mask,
    training_mask_reference,
)
from jetspec_sglang.train.trainer import HeadForTraining
from train_fixtures import target_and_blocks, tiny_head, tiny_llama


def _loss_mask(lengths: list[int], starts: list[int], seq_len: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.bool)
    for i, (n, s) in enumerate(zip(lengths, starts)):
        mask[i, s:n] = True
    return mask


def test_sample_anchors_are_distinct_candidates_and_seeded() -> None:
    mask = _loss_mask([23, 17, 9], [5, 3, 8], seq_len=23)
    cand = anchor_candidates(mask)
    a = sample_anchors(mask, 7, torch.Generator().manual_seed(0))
    b = sample_anchors(mask, 7, torch.Generator().manual_seed(0))
    assert torch.equal(a.positions, b.positions) and torch.equal(a.valid, b.valid)
    for row in range(3):
        pos = a.positions[row][a.valid[row]].tolist()
        assert pos == sorted(set(pos))
        assert len(pos) == min(7, int(cand[row].sum()))
        assert all(cand[row, p] and mask[row, p + 1] for p in pos)
    # Last sequence: one candidate (the last prompt token, 7), the rest padding.
    assert a.positions[2].tolist() == [7, 0, 0, 0, 0, 0, 0]
    assert a.valid[2].tolist() == [True] + [False] * 6


def test_sample_anchors_cover_every_candidate_over_draws() -> None:
    mask = _loss_mask([19], [4], seq_len=19)
    g = torch.Generator().manual_seed(3)
    counts = torch.zeros(19)
    for _ in range(400):
        a = sample_anchors(mask, 3, g)
        counts.index_add_(0, a.positions[0], torch.ones(3))
    cand = anchor_candidates(mask)[0]
    assert (counts[cand] > 0).all() and (counts[~cand] == 0).all()
    expected = 400 * 3 / int(cand.sum())
    assert (counts[cand] - expected).abs().max() < 0.35 * expected


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bs,seq_len,m,block", [(1, 7, 3, 2), (3, 23, 5, 4), (2, 31, 9, 7)])
def test_training_mask_matches_reference(bs: int, seq_len: int, m: int, block: int, causal: bool) -> None:
    g = torch.Generator().manual_seed(bs * 100 + seq_len)
    starts = torch.randint(0, seq_len - 2, (bs,), generator=g).tolist()
    mask = _loss_mask([seq_len] * bs, starts, seq_len)
    anchors = sample_anchors(mask, m, g)
    got = training_mask(anchors, seq_len, block, causal)
    assert got.shape == (bs, 1, anchors.num_anchors * block, seq_len + anchors.num_anchors * block)
    assert torch.equal(got, training_mask_reference(anchors, seq_len, block, causal))


def test_block_inputs_and_targets_match_loops() -> None:
    seq_len, block, mask_id = 13, 4, 96
    ids = torch.randint(0, 90, (2, seq_len), generator=torch.Generator().manual_seed(0))
    mask = _loss_mask([13, 10], [6, 2], seq_len)
    anchors = Anchors(torch.tensor([[5, 9, 11], [1, 4, 0]]), torch.tensor([[True, True, True], [True, True, False]]))
    blk_ids, blk_pos = block_inputs(ids, anchors, block, mask_id)
    index, valid = block_targets(mask, anchors, block)
    for b in range(2):
        for j in range(3):
            a = int(anchors.positions[b, j])
            rows = slice(j * block, (j + 1) * block)
            assert blk_ids[b, rows].tolist() == [int(ids[b, a])] + [mask_id] * (block - 1)
            assert blk_pos[b, rows].tolist() == list(range(a, a + block))
            for k in range(1, block):
                ok = bool(anchors.valid[b, j]) and a + k < seq_len and bool(mask[b, a + k])
                assert bool(valid[b, j, k - 1]) == ok
                if ok:
                    assert int(index[b, j, k - 1]) == a + k - 1


@pytest.mark.parametrize("causal", [True, False])
def test_multi_block_forward_matches_one_block_at_a_time(causal: bool) -> None:
    torch.manual_seed(0)
    target = tiny_llama()
    head = tiny_head(target, causal=causal, block_size=5)
    block = head.config.block_size
    seq_len = 19
    ids = torch.randint(7, 97, (2, seq_len))
    # Anchor 0 has an empty context; anchor 17 runs past the end; the last one is padding.
    anchors = Anchors(torch.tensor([[0, 3, 8, 14, 17], [5, 7, 9, 12, 0]]),
                      torch.tensor([[True] * 5, [True, True, True, True, False]]))
    _, taps, embeds, blk_pos = target_and_blocks(target, head, ids, anchors)
    with torch.no_grad():
        hidden = HeadForTraining(head)(taps, embeds, blk_pos, training_mask(anchors, seq_len, block, causal))
        features = head.project_context(taps)
        for b in range(2):
            for j in range(anchors.num_anchors):
                if not anchors.valid[b, j]:
                    continue
                a = int(anchors.positions[b, j])
                context = head.context_kv(features[b : b + 1, :a], torch.arange(a)[None])
                rows = slice(j * block, (j + 1) * block)
                one = head(embeds[b : b + 1, rows], blk_pos[b : b + 1, rows], context,
                           head.block_mask(torch.ones(1, a, dtype=torch.bool), block))
                torch.testing.assert_close(hidden[b : b + 1, rows], one, atol=2e-5, rtol=1e-5)
