"""Tree tensors in the forms attention kernels and SGLang's verify code consume.

- ``ancestor_mask``: dense ``[bs, N, N]`` ancestor-or-self mask.
- ``eagle_layout``: SGLang's ``retrieve_index / retrieve_next_token /
  retrieve_next_sibling`` child/sibling lists (``-1`` = none).
- ``verify_mask``: per request, ``N`` rows of ``prefix_len + N`` columns (prefix
  all visible), concatenated: SGLang's FULL_MASK and FlashInfer's custom mask.
- ``pack_mask``: that mask bit-packed, little-endian, per request, with its
  ``mask_indptr`` (FlashInfer's ``segment_packbits`` layout).
- ``eagle_verify_inputs``: everything SGLang's ``build_tree_kernel_efficient`` returns
  for a tree (mask, positions, ``retrieve_*``, flat tokens): the reference of
  ``kernels.build_verify_inputs_fused``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from .tree import DraftTree


def ancestor_mask(parents: Tensor, max_depth: int) -> Tensor:
    """``[bs, N, N]`` bool: ``mask[b, i, j]`` is True iff ``j`` is ``i`` or an ancestor of ``i``.

    Parameters:
        parents: ``[bs, N]`` int64, ``-1`` at roots (and padding).
        max_depth: an upper bound on node depth (the number of parent hops taken).
    """
    bs, n = parents.shape
    mask = torch.eye(n, dtype=torch.bool, device=parents.device).repeat(bs, 1, 1)
    node = parents
    for _ in range(max_depth):
        hit = node >= 0
        mask.scatter_(2, node.clamp_min(0)[:, :, None], hit[:, :, None] | mask.gather(2, node.clamp_min(0)[:, :, None]))
        node = torch.where(hit, parents.gather(1, node.clamp_min(0)), node)
    return mask


def tree_ancestor_mask(tree: DraftTree) -> Tensor:
    """``ancestor_mask`` of a ``DraftTree``."""
    return ancestor_mask(tree.parents, tree.max_depth)


@dataclass(frozen=True, slots=True)
class EagleLayout:
    """SGLang's EAGLE tree layout, all ``[bs, N]`` int64.

    ``retrieve_index[b, i] = b * N + i``; ``retrieve_next_token[b, i]`` is the
    first child of ``i``; ``retrieve_next_sibling[b, i]`` is the next child of
    ``i``'s parent. Children are linked in slot order (= draft rank order).
    """

    retrieve_index: Tensor
    retrieve_next_token: Tensor
    retrieve_next_sibling: Tensor


def eagle_layout(parents: Tensor) -> EagleLayout:
    """Child/sibling lists of trees given as parent arrays (``-1`` for roots and padding)."""
    bs, n = parents.shape
    dev = parents.device
    slots = torch.arange(n, device=dev)
    none = torch.full((), n, device=dev)
    # child_of[b, p, j]: j's parent is p
    child_of = parents[:, None, :] == slots[None, :, None]
    first_child = torch.where(child_of, slots, none).min(dim=2).values
    # sibling_after[b, i, j]: j > i shares i's (non-negative) parent
    same_parent = (parents[:, :, None] == parents[:, None, :]) & (parents[:, :, None] >= 0)
    after = slots[None, None, :] > slots[None, :, None]
    next_sibling = torch.where(same_parent & after, slots, none).min(dim=2).values
    to_link = lambda x: torch.where(x == n, -1, x)  # noqa: E731
    retrieve_index = (torch.arange(bs, device=dev)[:, None] * n + slots).to(torch.int64)
    return EagleLayout(retrieve_index, to_link(first_child), to_link(next_sibling))


def parents_from_eagle_layout(layout: EagleLayout) -> Tensor:
    """Inverse of ``eagle_layout``: walk child/sibling links back to a ``[bs, N]`` parent array."""
    nxt, sib = layout.retrieve_next_token, layout.retrieve_next_sibling
    bs, n = nxt.shape
    parents = torch.full((bs, n), -1, dtype=torch.int64, device=nxt.device)
    # Each node i links to its first child c; c's sibling chain shares parent i.
    child = nxt.clone()
    owner = torch.arange(n, device=nxt.device).expand(bs, n).clone()
    for _ in range(n):
        live = child >= 0
        if not bool(live.any()):
            break
        b_idx, i_idx = live.nonzero(as_tuple=True)
        parents[b_idx, child[b_idx, i_idx]] = owner[b_idx, i_idx]
        child = torch.where(live, sib.gather(1, child.clamp_min(0)), child)
    return parents


def verify_mask(anc: Tensor, prefix_lens: Tensor) -> tuple[Tensor, Tensor]:
    """Flattened verify mask over ``[prefix; tree]`` keys, one segment per request.

    Parameters:
        anc: ``[bs, N, N]`` ancestor-or-self mask.
        prefix_lens: ``[bs]`` int64 committed tokens before the tree (all visible).

    Returns:
        ``mask``: flat bool of length ``sum(N * (prefix_lens + N))``, row-major per request
        (SGLang's FULL_MASK; FlashInfer's ``custom_mask``), and ``indptr``: ``[bs + 1]`` int64
        segment starts.
    """
    bs, n, _ = anc.shape
    dev = anc.device
    widths = prefix_lens.to(torch.int64) + n
    sizes = n * widths
    indptr = torch.zeros(bs + 1, dtype=torch.int64, device=dev)
    indptr[1:] = torch.cumsum(sizes, 0)
    total = int(indptr[-1])
    flat = torch.arange(total, device=dev)
    req = torch.searchsorted(indptr[1:], flat, right=True)
    local = flat - indptr[req]
    row = local // widths[req]
    col = local % widths[req]
    tree_col = col - prefix_lens[req]
    in_tree = tree_col >= 0
    mask = ~in_tree | anc[req, row, tree_col.clamp_min(0)]
    return mask, indptr


def pack_mask(mask: Tensor, indptr: Tensor) -> tuple[Tensor, Tensor]:
    """Bit-pack each segment of a flat bool mask, little-endian, padded to whole bytes.

    Matches ``numpy.packbits(segment, bitorder="little")`` per segment and
    FlashInfer's ``segment_packbits``.

    Returns:
        ``packed``: uint8 of length ``sum(ceil(seg_len / 8))``; ``packed_indptr``: ``[bs + 1]`` int64.
    """
    dev = mask.device
    seg = indptr[1:] - indptr[:-1]
    nbytes = (seg + 7) // 8
    packed_indptr = torch.zeros_like(indptr)
    packed_indptr[1:] = torch.cumsum(nbytes, 0)
    total = int(packed_indptr[-1])
    byte = torch.arange(total, device=dev)
    req = torch.searchsorted(packed_indptr[1:], byte, right=True)
    bit_in_seg = (byte - packed_indptr[req])[:, None] * 8 + torch.arange(8, device=dev)  # [total, 8]
    present = bit_in_seg < seg[req][:, None]
    src = (indptr[req][:, None] + bit_in_seg).clamp_max(max(mask.numel() - 1, 0))
    bits = mask[src] & present
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.int32, device=dev)
    packed = (bits.to(torch.int32) * weights).sum(dim=1).to(torch.uint8)
    return packed, packed_indptr


class TreeMaskMode(IntEnum):
    """The verify-mask layouts of SGLang 0.5.17 (``speculative/eagle_utils.py::TreeMaskMode``) we write.

    Same values, so SGLang's members compare equal; its ``QLEN_ONLY_BITPACKING`` (2) is not supported.
    ``FULL_MASK``: per request, ``N`` rows of ``seq_len + N`` cells (prefix, then tree), concatenated.
    ``QLEN_ONLY``: per request, ``N`` rows of ``N`` tree cells, concatenated.
    """

    FULL_MASK = 0
    QLEN_ONLY = 1


@dataclass(frozen=True, slots=True)
class VerifyInputs:
    """What SGLang 0.5.17's ``eagle_utils.build_tree_kernel_efficient`` returns for ``bs`` trees of ``N`` slots.

    Node ``i`` of request ``b`` is slot ``i`` of its tree, in the tree ``verify_parents`` describes.

    Attributes:
        tree_mask: flat, 1 byte per cell (bool; SGLang's triton backend passes a uint8 buffer).
            FULL_MASK: request ``b`` starts at cell ``N * sum(seq_lens[:b]) + b * N * N``, row ``i``
            ``i * (seq_lens[b] + N)`` cells later, and holds ``seq_lens[b]`` prefix cells (True)
            then ``N`` tree cells. QLEN_ONLY: row ``i`` of request ``b`` is cells
            ``(b * N + i) * N`` onwards, ``N`` tree cells. Tree cell ``j`` of row ``i`` is True iff
            ``j`` is ``i`` or an ancestor of ``i`` (so the root's column is always True).
        positions: ``[bs * N]`` int64: ``seq_lens[b] + depth`` (root 0, padding 1).
        retrieve_index: ``[bs, N]`` int64: ``b * N + i``.
        retrieve_next_token: ``[bs, N]`` int64: the lowest slot among ``i``'s children, ``-1`` for a leaf.
        retrieve_next_sibling: ``[bs, N]`` int64: the lowest higher slot with ``i``'s parent, ``-1``
            for the last child and for the root. Siblings are thus linked in slot order (= draft
            rank order), and padding comes last among the root's children.
        draft_tokens: ``[bs * N]`` int64: the tree's tokens, root first (``cat(bonus, draft).flatten()``).
    """

    tree_mask: Tensor
    positions: Tensor
    retrieve_index: Tensor
    retrieve_next_token: Tensor
    retrieve_next_sibling: Tensor
    draft_tokens: Tensor


def verify_parents(parents: Tensor) -> Tensor:
    """``[bs, N]`` int64: parents as SGLang's tree kernel reads our lineage encoding.

    ``encode_lineage`` encodes a padding slot (parent ``-1``) as the root's child of rank 0, so
    SGLang verifies it as a depth-1 node holding the root's token (lossless: accepting it means
    the target predicted that token). Any slot ``> 0`` whose parent is not an earlier slot is
    treated so; the root keeps ``-1``.
    """
    slots = torch.arange(parents.shape[1], device=parents.device)
    earlier = (parents >= 0) & (parents < slots)
    return torch.where(earlier, parents, torch.where(slots == 0, -1, 0))


def eagle_verify_inputs(tree: DraftTree, seq_lens: Tensor, mask_mode: TreeMaskMode) -> VerifyInputs:
    """SGLang's verify inputs of ``tree``, the tree ``verify_parents`` describes (syncs; not for the step).

    Parameters:
        tree: ``N``-slot trees; ``N`` is SGLang's ``num_verify_tokens``.
        seq_lens: ``[bs]`` int64 committed tokens before each tree (SGLang's ``batch.seq_lens``).
        mask_mode: the ``tree_mask`` layout; FULL_MASK comes with its prefix cells True
            (SGLang's ``fill_prefix_mask=True``).

    Returns:
        ``VerifyInputs`` with ``tree_mask`` of exactly ``N * seq_lens.sum() + bs * N * N`` cells
        (FULL_MASK) or ``bs * N * N`` (QLEN_ONLY).

    Examples:
        >>> from jetspec_sglang.tree import build_tree
        >>> lp = torch.log(torch.tensor([[[0.6, 0.3], [0.9, 0.05]]]))
        >>> tree = build_tree(torch.tensor([[[5, 6], [7, 8]]]), lp, torch.tensor([1]), budget=4)
        >>> v = eagle_verify_inputs(tree, torch.tensor([10]), TreeMaskMode.QLEN_ONLY)
        >>> v.positions.tolist(), v.retrieve_next_token.tolist(), v.retrieve_next_sibling.tolist()
        ([10, 11, 11, 12], [[1, 3, -1, -1]], [[-1, 2, -1, -1]])
        >>> v.tree_mask.view(4, 4).int().tolist()
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    """
    parents = verify_parents(tree.parents)
    anc = ancestor_mask(parents, tree.max_depth)
    seq_lens = seq_lens.to(torch.int64)
    mask = verify_mask(anc, seq_lens)[0] if mask_mode == TreeMaskMode.FULL_MASK else anc.flatten()
    layout = eagle_layout(parents)
    positions = (seq_lens[:, None] + anc.sum(dim=2) - 1).flatten()
    return VerifyInputs(
        mask, positions, layout.retrieve_index, layout.retrieve_next_token, layout.retrieve_next_sibling,
        tree.tokens.flatten(),
    )  # fmt: skip
