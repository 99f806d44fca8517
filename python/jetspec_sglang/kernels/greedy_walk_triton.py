"""The Triton kernel behind ``greedy_walk``; that module validates and launches it.

``greedy_walk_rows``: one program per tree ``b``. From the root it follows the first child whose draft token is the
target's choice at the last accepted node (SGLang's ``retrieve_next_token`` / ``retrieve_next_sibling`` lists),
for at most ``width - 1`` levels, keeping the path in registers; then it writes every output of the row.

Imported on first use only, so ``jetspec_sglang.kernels`` imports where triton is missing.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def greedy_walk_rows(
    target_predict, candidates, retrieve_index, next_token, next_sibling, real, seq_lens, out_cache_loc,  # inputs
    predict, accept_lens, bonus, new_seq_lens, accepted_nodes, move_tgt, move_src,  # outputs
    n, width, BLOCK_W: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    row = b.to(tl.int64) * n
    j = tl.arange(0, BLOCK_W)
    in_block = j < width
    path = tl.zeros([BLOCK_W], dtype=tl.int64)  # local node ids by depth; the root is node 0
    last = row * 0  # the deepest accepted node (int64)
    count = b * 0  # accepted drafts (int32)
    going = b * 0 + 1  # 0 once a level matched nothing
    for _ in range(1, width):
        want = tl.load(target_predict + row + last)
        child = tl.where(going != 0, tl.load(next_token + row + last), -1)
        matched = b * 0
        while (child >= 0) & (matched == 0):
            hit = tl.load(candidates + row + child) == want
            matched = hit.to(tl.int32)
            child = tl.where(hit, child, tl.load(next_sibling + row + child))
        count += matched
        path = tl.where((j == count) & (matched != 0), child, path)
        last = tl.where(matched != 0, child, last)
        going = going & matched

    is_real = tl.load(real + b).to(tl.int32) != 0
    length = tl.where(is_real, count + 1, 0)  # SGLang's accept_lens: the root plus accepted drafts
    on_path = j < length
    node = row + path
    tokens = tl.load(target_predict + node, mask=in_block, other=0)
    ids = tl.load(retrieve_index + node, mask=in_block, other=0)
    tl.store(predict + row + j, tl.where(on_path, tokens, 0).to(tl.int32), mask=in_block & (j < n))
    rest = tl.arange(0, BLOCK_N)
    tl.store(predict + row + rest, tl.zeros([BLOCK_N], dtype=tl.int32), mask=(rest >= width) & (rest < n))
    tl.store(accept_lens + b, length)
    tl.store(bonus + b, tl.sum(tl.where(j == count, tokens, 0)).to(tl.int32))
    tl.store(new_seq_lens + b, tl.load(seq_lens + b) + length)
    at = b.to(tl.int64) * width + j
    tl.store(accepted_nodes + at, tl.where(on_path, ids, 0), mask=in_block)
    tl.store(move_tgt + at, tl.load(out_cache_loc + row + j, mask=on_path, other=0), mask=in_block)
    tl.store(move_src + at, tl.load(out_cache_loc + ids, mask=on_path, other=0), mask=in_block)
