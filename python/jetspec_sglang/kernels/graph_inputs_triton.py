"""The Triton kernel behind ``graph_inputs``; that module validates and launches it.

``graph_rows``: one program per graph row ``b`` writes that row's ``W`` tokens. Row ``b`` is a request of this
step when ``b < num_real``; else its sequence length and request row read as 0 and its buffers get SGLang's
padding. ``HEAD`` writes the head's block (``[bonus, MASK ...]`` at positions ``seq_len + j``, and the block's
slots and positions); otherwise it pads the target's verify inputs (positions already written) and the retrieve
lists of padding rows.

Imported on first use only, so ``jetspec_sglang.kernels`` imports where triton is missing.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def graph_rows(
    seq_lens, req_pool_indices, num_real, req_to_token, stride_r2t,
    input_ids, positions, out_cache_loc, out_seq_lens, out_req_pool_indices, seq_len_fill, width,
    bonus, mask_token_id, block_slots, block_positions,  # HEAD only (else any pointer)
    lists, own_nodes, list_stride,  # not HEAD: [3, B, W] retrieve lists, [B, W] own node ids, B * W
    HEAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    real = b < tl.load(num_real)
    seq = tl.where(real, tl.load(seq_lens + b), 0)
    req = tl.where(real, tl.load(req_pool_indices + b), 0)
    j = tl.arange(0, BLOCK)
    ok = j < width
    at = b * width + j
    slot = tl.load(req_to_token + req * stride_r2t + seq + j, mask=ok, other=0).to(tl.int64)
    if HEAD:
        pos = seq + j
        token = tl.where(j == 0, tl.load(bonus + b), mask_token_id)
        tl.store(input_ids + at, token.to(tl.int64), mask=ok)
        tl.store(block_slots + at, slot, mask=ok)
        tl.store(block_positions + at, pos, mask=ok)
    else:
        pos = tl.load(positions + at, mask=ok, other=0)
        index = tl.load(lists + at, mask=ok, other=0)
        tl.store(lists + at, tl.where(real, index, tl.load(own_nodes + at, mask=ok, other=0)), mask=ok)
        for k in tl.static_range(1, 3):
            link = tl.load(lists + k * list_stride + at, mask=ok, other=0)
            tl.store(lists + k * list_stride + at, tl.where(real, link, -1), mask=ok)
    tl.store(out_cache_loc + at, tl.where(real, slot, 0), mask=ok)
    tl.store(positions + at, tl.where(real, pos, 0), mask=ok)
    tl.store(out_seq_lens + b, tl.where(real, seq, seq_len_fill))
    tl.store(out_req_pool_indices + b, req)
