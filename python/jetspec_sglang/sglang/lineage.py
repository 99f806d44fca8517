"""Our draft trees in SGLang's EAGLE candidate-lineage encoding (pure torch).

``sglang.srt.speculative.eagle_worker_common.build_eagle_verify_input`` (0.5.17)
takes a tree as ``(parent_list, top_scores_index, draft_tokens)`` and has
``sgl_kernel.build_tree_kernel_efficient`` turn it into the verify mask,
positions and ``retrieve_*`` lists. For node ``p >= 1`` with parent ``q`` and
sibling rank ``r``:

- ``top_scores_index[b, p - 1] = q * K_enc + r``;
- ``parent_list[b, q] = top_scores_index[b, q - 1]`` for every parent ``q >= 1``;
- ``parent_list`` is ``[bs, K_enc * (depth - 1) + 1]`` exactly (the kernel hard-codes
  that row stride), so ``K_enc`` must exceed every sibling rank and the width
  must exceed every parent slot.

This module only imports torch, so the encoding is tested on CPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..tree import DraftTree


def lineage_topk(budget: int, depth: int, width: int) -> int:
    """The smallest ``K_enc`` (>= 2) that encodes any ``budget``-node tree of this depth and width.

    ``width`` is the per-depth candidate count (max sibling rank + 1).
    """
    if depth <= 1:
        return max(2, width)
    return max(2, width, math.ceil((budget - 1) / (depth - 1)))


@dataclass(frozen=True, slots=True)
class EagleLineage:
    """Arguments for ``build_eagle_verify_input``: all int64, contiguous.

    Attributes:
        parent_list: ``[bs, topk * (depth - 1) + 1]``; column 0 is unused (-1).
        top_scores_index: ``[bs, N - 1]``, ``parent * topk + rank`` of nodes ``1..N-1``.
        draft_tokens: ``[bs, N - 1]`` tokens of nodes ``1..N-1``.
        topk: the encoding's ``K_enc`` (pass as ``topk``).
        depth: pass as ``num_steps``.
    """

    parent_list: Tensor
    top_scores_index: Tensor
    draft_tokens: Tensor
    topk: int
    depth: int


def sibling_ranks(parents: Tensor) -> Tensor:
    """``[bs, N]`` int64: how many earlier slots share each node's parent (0 at roots)."""
    same = (parents[:, :, None] == parents[:, None, :]) & (parents[:, :, None] >= 0)
    earlier = torch.ones(parents.shape[1], parents.shape[1], dtype=torch.bool, device=parents.device).tril(-1)
    return (same & earlier).sum(dim=2)


def encode_lineage(tree: DraftTree, topk: int) -> EagleLineage:
    """Encode full trees (no padding slots) for SGLang's tree kernel; never syncs.

    Parameters:
        tree: ``N``-slot trees whose slots are all real nodes.
        topk: ``K_enc``, at least ``lineage_topk(N, tree.max_depth, width)``.
    """
    bs, n = tree.tokens.shape
    depth = tree.max_depth
    cols = topk * (depth - 1) + 1 if depth > 1 else 1
    parents = tree.parents[:, 1:]
    sel = parents.clamp_min(0) * topk + sibling_ranks(tree.parents)[:, 1:]
    parent_list = torch.full((bs, cols), -1, dtype=torch.int64, device=sel.device)
    used = min(cols - 1, n - 1)
    parent_list[:, 1 : used + 1] = sel[:, :used]
    return EagleLineage(parent_list, sel.contiguous(), tree.tokens[:, 1:].contiguous(), topk, depth)


def decode_lineage_reference(lineage: EagleLineage) -> Tensor:
    """Parents as ``build_tree_kernel_efficient`` reads them (tests only; loops).

    Node ``i``'s parent is the root when ``sel[i-1] // topk == 0``; otherwise it is
    the node whose ``sel`` equals ``parent_list[sel[i-1] // topk]``. Unresolvable
    links become -2 (the kernel leaves such nodes unlinked).
    """
    sel, plist, k = lineage.top_scores_index, lineage.parent_list, lineage.topk
    bs, n_minus_1 = sel.shape
    parents = torch.full((bs, n_minus_1 + 1), -1, dtype=torch.int64)
    for b in range(bs):
        for i in range(1, n_minus_1 + 1):
            t = int(sel[b, i - 1]) // k
            if t == 0:
                parents[b, i] = 0
                continue
            if t >= plist.shape[1]:
                parents[b, i] = -2
                continue
            hits = (sel[b] == plist[b, t]).nonzero().flatten()
            parents[b, i] = int(hits[0]) + 1 if len(hits) else -2
    return parents
