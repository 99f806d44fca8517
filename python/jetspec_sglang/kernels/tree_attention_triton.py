"""The Triton kernels behind ``tree_attention.tree_attention``; that module validates and launches them.

``tree_attention_fwd``: one program per (row tile, request x kv head, split). A row is one
(tree node, q head) pair of the kv head's GQA group, so every K/V tile loaded serves the whole
group. The grid's splits are a ceiling: a request uses one split per ``min_split_keys`` of its own
prefix (at least one), read on the device, so a short prefix in a graph captured for long ones
costs no empty work. Active split ``s`` attends its slice of the prefix; the last active split also
takes the tree keys under the ancestor bitmask. A request with one active split writes the output
directly; with several, each writes its unnormalised state ``(acc, m, l)`` and ``merge_splits``
combines them, or, with ``FUSED_MERGE``, the last of them to finish does (a ticket counter per program
column, taken with an acquire-release atomic and left at zero), which saves the second launch. Scores are in log2 units
(``exp2``), accumulators fp32. float32 inputs multiply as ``DOT_PRECISION`` says: IEEE fp32 for the
accuracy tests, TF32 in serving, as SGLang's Triton attention does. With ``WINDOW`` a row also needs its
key within ``sliding_window`` positions: prefix key ``j`` is at position ``j``, tree node ``j`` at
``positions[b * N + j]``.

Imported on first use only, so ``jetspec_sglang.kernels`` imports where triton is missing.
"""

from __future__ import annotations

import triton
import triton.language as tl

# A finite "no key seen yet" running max: exp2(NO_MAX - NO_MAX) is 1, where -inf - -inf is NaN.
NO_MAX = tl.constexpr(-1.0e30)


@triton.jit
def _online_softmax_step(q, k, v, visible, acc, m_i, l_i, qk_scale, DOT_PRECISION: tl.constexpr):
    """Fold one key tile into the running state. q: [M, D], k/v: [BLOCK_N, D], visible: [M, BLOCK_N] bool."""
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def tree_attention_fwd(
    Q, K, V, O, part_acc, part_m, part_l,  # part_*: unused (any pointer) when SPLIT is False
    counters,  # int32 [row tiles * bs * Hkv], zero: the merge tickets with FUSED_MERGE (else unused)
    req_to_token, req_pool_indices, prefix_lens, tree_mask,
    positions,  # [bs * N] each node's position, read with WINDOW only (else any pointer)
    qk_scale, num_nodes, mask_words, num_kv_heads, num_q_heads, total_q, num_splits, min_split_keys, sliding_window,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh, stride_r2t,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr, FUSED_MERGE: tl.constexpr, WINDOW: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(1) // num_kv_heads
    kv_head = tl.program_id(1) % num_kv_heads
    split = tl.program_id(2)

    # Row r of the tile: tree node r // GROUP, q head kv_head * GROUP + r % GROUP.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_nodes * GROUP
    token = b * num_nodes + rows // GROUP  # row of q / o, and of tree_mask viewed as [bs * N, words]
    head = kv_head * GROUP + rows % GROUP
    dims = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + token[:, None] * stride_qt + head[:, None] * stride_qh + dims[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)

    prefix_len = tl.load(prefix_lens + b)
    active = _active_splits(prefix_len, min_split_keys, num_splits)
    is_active = split < active
    is_last_split = split == active - 1
    slots = req_to_token + tl.load(req_pool_indices + b).to(tl.int64) * stride_r2t
    k_head = K + kv_head * stride_kh + dims[None, :]
    v_head = V + kv_head * stride_vh + dims[None, :]
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NO_MAX, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # Prefix keys [lo, hi), all visible: equal slices of this request's prefix, whole key tiles each;
    # the last active split runs to prefix_len. Inactive splits get an empty range.
    split_keys = tl.cdiv(tl.cdiv(prefix_len, active), BLOCK_N) * BLOCK_N
    lo = tl.where(is_active, tl.minimum(split * split_keys, prefix_len), 0)
    hi = tl.where(is_last_split, prefix_len, tl.where(is_active, tl.minimum(lo + split_keys, prefix_len), 0))
    q_pos = tl.zeros([BLOCK_M], dtype=tl.int64)
    if WINDOW:  # prefix key j sits at position j; tiles wholly before every row's window are skipped
        q_pos = tl.load(positions + token, mask=row_ok, other=0).to(tl.int64)
        first = tl.min(tl.where(row_ok, q_pos, prefix_len + num_nodes)) - sliding_window
        lo = tl.maximum(lo, first // BLOCK_N * BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        slot = tl.load(slots + cols, mask=col_ok, other=0).to(tl.int64)
        k = tl.load(k_head + slot[:, None] * stride_kt, mask=col_ok[:, None], other=0.0)
        v = tl.load(v_head + slot[:, None] * stride_vt, mask=col_ok[:, None], other=0.0)
        visible = col_ok[None, :]
        if WINDOW:
            visible = visible & (q_pos[:, None] - cols[None, :] <= sliding_window)
        acc, m_i, l_i = _online_softmax_step(q, k, v, visible, acc, m_i, l_i, qk_scale, DOT_PRECISION)

    # Tree keys, last split only: node j sits at column prefix_len + j and is visible to row
    # (b, i) iff bit j % 32 of word j // 32 of tree_mask[b, i] is set. A tile's BLOCK_N // 32
    # words per row are loaded, then spread to one bit per column (column = word * 32 + bit).
    mask_rows = tree_mask + token.to(tl.int64) * mask_words
    for start in range(0, tl.where(is_last_split, num_nodes, 0), BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < num_nodes
        slot = tl.load(slots + prefix_len + cols, mask=col_ok, other=0).to(tl.int64)
        k = tl.load(k_head + slot[:, None] * stride_kt, mask=col_ok[:, None], other=0.0)
        v = tl.load(v_head + slot[:, None] * stride_vt, mask=col_ok[:, None], other=0.0)
        word = start // 32 + tl.arange(0, BLOCK_N // 32)
        word_ok = row_ok[:, None] & (word < mask_words)[None, :]
        words = tl.load(mask_rows[:, None] + word[None, :], mask=word_ok, other=0)
        bits = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
        visible = (tl.reshape(bits, [BLOCK_M, BLOCK_N]) != 0) & col_ok[None, :]
        if WINDOW:
            key_pos = tl.load(positions + b * num_nodes + cols, mask=col_ok, other=0).to(tl.int64)
            visible = visible & (q_pos[:, None] - key_pos[None, :] <= sliding_window)
        acc, m_i, l_i = _online_softmax_step(q, k, v, visible, acc, m_i, l_i, qk_scale, DOT_PRECISION)

    o_ptrs = O + token[:, None] * stride_ot + head[:, None] * stride_oh + dims[None, :]
    if SPLIT:
        if is_active:
            if active > 1:  # this split's state, for merge_splits or the last split
                at = (split * total_q + token).to(tl.int64) * num_q_heads + head  # [num_splits, total_q, Hq] index
                tl.store(part_acc + at[:, None] * HEAD_DIM + dims[None, :], acc, mask=row_ok[:, None])
                tl.store(part_m + at, m_i, mask=row_ok)
                tl.store(part_l + at, l_i, mask=row_ok)
                if FUSED_MERGE:
                    _merge_if_last(O, part_acc, part_m, part_l, counters, o_ptrs, token, head, row_ok, active,
                                   total_q, num_q_heads, BLOCK_M, HEAD_DIM)
            else:  # the request's only split: the output itself
                tl.store(o_ptrs, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=row_ok[:, None])
    else:
        o = acc / l_i[:, None]
        tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _merge_if_last(O, part_acc, part_m, part_l, counters, o_ptrs, token, head, row_ok, active, total_q, num_q_heads,
                   BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """After a split stored its state: the last of the ``active`` splits of this (row tile, request, kv head) to get
    here merges all of them into ``O``, as ``merge_splits`` would, and resets the ticket.

    The barrier orders every thread's stores before the ticket; the ticket's release and acquire (GPU scope)
    make the other splits' states visible to the last one, which reads them past L1 (``.cg``).
    """
    tl.debug_barrier()
    ticket_at = counters + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    if tl.atomic_add(ticket_at, 1, sem="acq_rel", scope="gpu") == active - 1:
        dims = tl.arange(0, HEAD_DIM)
        m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        for s in range(0, active):
            at = (s * total_q + token).to(tl.int64) * num_q_heads + head
            m = tl.maximum(m, tl.load(part_m + at, mask=row_ok, other=float("-inf"), cache_modifier=".cg"))
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        l_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
        for s in range(0, active):
            at = (s * total_q + token).to(tl.int64) * num_q_heads + head
            weight = tl.math.exp2(tl.load(part_m + at, mask=row_ok, other=float("-inf"), cache_modifier=".cg") - m)
            l_sum += weight * tl.load(part_l + at, mask=row_ok, other=0.0, cache_modifier=".cg")
            acc_s = tl.load(part_acc + at[:, None] * HEAD_DIM + dims[None, :], mask=row_ok[:, None], other=0.0,
                            cache_modifier=".cg")
            acc += weight[:, None] * acc_s
        tl.store(o_ptrs, (acc / l_sum[:, None]).to(O.dtype.element_ty), mask=row_ok[:, None])
        tl.atomic_xchg(ticket_at, 0, sem="relaxed", scope="gpu")


@triton.jit
def _active_splits(prefix_len, min_split_keys, num_splits):
    """Splits a request uses: one per ``min_split_keys`` prefix keys, at least 1, at most ``num_splits``."""
    return tl.minimum(tl.maximum(tl.cdiv(prefix_len, min_split_keys), 1), num_splits)


@triton.jit
def merge_splits(
    O, part_acc, part_m, part_l, prefix_lens, num_nodes, min_split_keys, num_splits, total_q, num_q_heads,
    stride_ot, stride_oh, SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    """One program per (query token, head): o = sum_s 2^(m_s - m) acc_s / sum_s 2^(m_s - m) l_s, m = max_s m_s,
    over the request's active splits; with one active split the forward kernel wrote ``o`` already.

    The last active split saw the node itself, so m is finite; empty splits (m_s = NO_MAX, l_s = 0) and
    the padding up to SPLITS (m_s = -inf) weigh 0.
    """
    token = tl.program_id(0)
    head = tl.program_id(1)
    active = _active_splits(tl.load(prefix_lens + token // num_nodes), min_split_keys, num_splits)
    if active > 1:
        splits = tl.arange(0, SPLITS)
        split_ok = splits < active
        dims = tl.arange(0, HEAD_DIM)
        at = (splits * total_q + token).to(tl.int64) * num_q_heads + head
        m_s = tl.load(part_m + at, mask=split_ok, other=float("-inf"))
        l_s = tl.load(part_l + at, mask=split_ok, other=0.0)
        acc_s = tl.load(part_acc + at[:, None] * HEAD_DIM + dims[None, :], mask=split_ok[:, None], other=0.0)
        weight = tl.math.exp2(m_s - tl.max(m_s, 0))
        o = tl.sum(acc_s * weight[:, None], 0) / tl.sum(l_s * weight, 0)
        tl.store(O + token * stride_ot + head * stride_oh + dims, o.to(O.dtype.element_ty))


@triton.jit
def tree_mask_rows(parents, out, num_nodes, mask_words, max_depth, WORDS: tl.constexpr,
                   PADDING_TO_ROOT: tl.constexpr):
    """One program per tree row (request b, node i): walk up to ``max_depth`` parent hops from i and set
    bit j % 32 of word j // 32 for i and every ancestor j. ``parents`` is ``[bs, N]`` (-1 at roots); with
    ``PADDING_TO_ROOT`` a node past slot 0 whose parent is -1 hangs off slot 0 instead."""
    row = tl.program_id(0)
    base = (row // num_nodes) * num_nodes
    word_ids = tl.arange(0, WORDS)
    node = (row % num_nodes).to(tl.int64)
    words = tl.zeros([WORDS], dtype=tl.int32)
    for _ in range(max_depth + 1):
        on = node >= 0
        bit = tl.full([WORDS], 1, tl.int32) << (node % 32).to(tl.int32)
        words = words | tl.where(on & (word_ids == node // 32), bit, 0)
        parent = tl.load(parents + base + node, mask=on, other=-1).to(tl.int64)
        if PADDING_TO_ROOT:
            parent = tl.where(on & (node > 0) & (parent < 0), 0, parent)
        node = parent
    tl.store(out + row.to(tl.int64) * mask_words + word_ids, words, mask=word_ids < mask_words)
