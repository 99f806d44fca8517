"""Anchor sampling, block construction and the training attention mask (DFlash/JetSpec recipe).

Training runs many draft blocks per sequence in one head forward. A sequence of
``T`` tokens ``x_0 .. x_{T-1}`` with a response loss-mask gets up to ``m``
*anchors* ``a``. Anchor ``a`` gives the block ``[x_a, MASK x (B - 1)]`` at
positions ``a .. a + B - 1``; block row ``k`` (``1 <= k < B``) predicts
``x_{a+k}``, and row 0 (the bonus) predicts nothing. This is exactly what the
head sees when serving: ``x_a`` is the bonus, context ``< a`` is committed.

The head's forward takes every block at once:

* queries: the ``m * B`` block rows, anchor-major;
* keys: ``[context features of the T positions ; the m * B block rows]``;
* a block row sees context positions ``< a`` and its own block (earlier rows and
  itself when the head is causal, every row otherwise), never another block.

``training_mask`` builds that mask vectorised; ``training_mask_reference`` is
the slow loop it is tested against. Dimension letters: ``bs`` sequences, ``T``
tokens, ``m`` anchors, ``B`` block size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class Anchors:
    """Sampled anchors of a batch.

    Attributes:
        positions: ``[bs, m]`` int64 anchor positions, ascending among valid ones; 0 where invalid.
        valid: ``[bs, m]`` bool; False pads sequences with fewer candidates than ``m``.
    """

    positions: Tensor
    valid: Tensor

    @property
    def num_anchors(self) -> int:
        return self.positions.shape[1]


def anchor_candidates(loss_mask: Tensor) -> Tensor:
    """``[bs, T]`` bool: positions ``a`` with ``a + 1 < T`` and ``x_{a+1}`` a response token.

    So an anchor is a response token or the last prompt token, and its first
    draft target ``x_{a+1}`` is always trained on.

    Parameters:
        loss_mask: ``[bs, T]`` bool, True on response tokens (padding False).
    """
    cand = torch.zeros_like(loss_mask, dtype=torch.bool)
    cand[:, :-1] = loss_mask[:, 1:].bool()
    return cand


def sample_anchors(loss_mask: Tensor, num_anchors: int, generator: Optional[torch.Generator] = None) -> Anchors:
    """Sample up to ``num_anchors`` distinct anchors per sequence, uniformly among candidates.

    Parameters:
        loss_mask: ``[bs, T]`` bool response mask.
        num_anchors: ``m`` (the result has ``min(m, T)`` columns).
        generator: seeds the draw; it may live on the CPU while ``loss_mask`` is on a GPU.

    Returns:
        ``Anchors`` on ``loss_mask.device``.

    Examples:
        >>> mask = torch.tensor([[False, False, True, True, True]])
        >>> a = sample_anchors(mask, 8, torch.Generator().manual_seed(0))
        >>> a.positions.tolist(), a.valid.tolist()
        ([[1, 2, 3, 0, 0]], [[True, True, True, False, False]])
    """
    if num_anchors < 1:
        raise ValueError(f"num_anchors must be >= 1, got {num_anchors}")
    bs, seq_len = loss_mask.shape
    gen_device = generator.device if generator is not None else loss_mask.device
    keys = torch.rand(bs, seq_len, generator=generator, device=gen_device).to(loss_mask.device)
    cand = anchor_candidates(loss_mask)
    keys = torch.where(cand, keys, -1.0)  # random order among candidates, non-candidates last
    m = min(num_anchors, seq_len)
    top = keys.topk(m, dim=1)
    valid = top.values >= 0
    # Ascending positions, invalid anchors last (key T sorts after every position).
    order = torch.where(valid, top.indices, seq_len).sort(dim=1).values
    valid = order < seq_len
    return Anchors(torch.where(valid, order, 0), valid)


def block_inputs(input_ids: Tensor, anchors: Anchors, block_size: int, mask_token_id: int) -> tuple[Tensor, Tensor]:
    """Token ids and positions of every block, anchor-major.

    Parameters:
        input_ids: ``[bs, T]`` int64.

    Returns:
        ``ids: [bs, m * B]`` int64 (``x_a`` then ``MASK`` per block) and
        ``positions: [bs, m * B]`` int64 (``a .. a + B - 1``).
    """
    bs, m = anchors.positions.shape
    first = input_ids.gather(1, anchors.positions)  # [bs, m]
    ids = torch.full((bs, m, block_size), mask_token_id, dtype=torch.int64, device=input_ids.device)
    ids[:, :, 0] = first
    rows = torch.arange(block_size, device=input_ids.device)
    positions = anchors.positions[:, :, None] + rows
    return ids.flatten(1), positions.flatten(1)


def block_targets(loss_mask: Tensor, anchors: Anchors, block_size: int) -> tuple[Tensor, Tensor]:
    """What rows ``k = 1 .. B-1`` of each block learn.

    Row ``k`` of anchor ``a`` predicts ``x_{a+k}``; its teacher is the target's
    next-token distribution at position ``a + k - 1``.

    Returns:
        ``teacher_index: [bs, m, B - 1]`` int64 (``a + k - 1``, clamped into ``[0, T)``) and
        ``valid: [bs, m, B - 1]`` bool (anchor valid, ``a + k < T`` and ``x_{a+k}`` a response token).
    """
    seq_len = loss_mask.shape[1]
    k = torch.arange(1, block_size, device=loss_mask.device)
    target_pos = anchors.positions[:, :, None] + k  # [bs, m, B-1]
    inside = target_pos < seq_len
    clamped = target_pos.clamp_max(seq_len - 1)
    is_response = loss_mask.bool().gather(1, clamped.flatten(1)).view_as(clamped)
    valid = anchors.valid[:, :, None] & inside & is_response
    return clamped - 1, valid


def training_mask(anchors: Anchors, seq_len: int, block_size: int, causal: bool) -> Tensor:
    """Attention mask of the multi-block head forward, True = attend.

    Parameters:
        anchors: ``m`` anchors per sequence (invalid ones see only their own block).
        seq_len: ``T`` context positions (keys ``0 .. T-1``).
        block_size: ``B``.
        causal: in-block causal (JetSpec) or bidirectional (DFlash).

    Returns:
        ``[bs, 1, m * B, T + m * B]`` bool.
    """
    bs, m = anchors.positions.shape
    dev = anchors.positions.device
    limit = torch.where(anchors.valid, anchors.positions, 0)  # context keys < a
    ctx = torch.arange(seq_len, device=dev)[None, None, :] < limit[:, :, None]  # [bs, m, T]
    ctx = ctx[:, :, None, :].expand(bs, m, block_size, seq_len).reshape(bs, m * block_size, seq_len)
    inner = torch.ones(block_size, block_size, dtype=torch.bool, device=dev)
    if causal:
        inner = inner.tril()
    same_block = torch.eye(m, dtype=torch.bool, device=dev)
    blocks = (same_block[:, None, :, None] & inner[None, :, None, :]).reshape(m * block_size, m * block_size)
    return torch.cat((ctx, blocks.expand(bs, -1, -1)), dim=-1)[:, None]


def training_mask_reference(anchors: Anchors, seq_len: int, block_size: int, causal: bool) -> Tensor:
    """``training_mask`` one query and one key at a time (tests only; slow)."""
    bs, m = anchors.positions.shape
    pos = anchors.positions.tolist()
    valid = anchors.valid.tolist()
    mask = torch.zeros(bs, 1, m * block_size, seq_len + m * block_size, dtype=torch.bool)
    for b in range(bs):
        for j in range(m):
            for r in range(block_size):
                q = j * block_size + r
                for t in range(seq_len):
                    mask[b, 0, q, t] = valid[b][j] and t < pos[b][j]
                for r2 in range(block_size):
                    mask[b, 0, q, seq_len + j * block_size + r2] = r2 <= r or not causal
    return mask.to(anchors.positions.device)
