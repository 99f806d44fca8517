"""The Triton kernels behind ``vocab_topk.vocab_topk``; that module validates and launches them.

``chunk_topk``: one program per (row, vocabulary chunk) takes its chunk's ``K`` largest logits (ties to
the lower id), their ids and the chunk's log-sum-exp. ``merge_chunks``: one program per row takes the
``K`` largest of the ``chunks x K`` candidates and combines the chunks' log-sum-exps. Candidates are
laid out chunk by chunk, each chunk's best first, so "the first maximum" is always the lowest id. A chunk
holds at least ``K`` real logits (the caller's chunks are at least 1024 wide, ``K <= 64``) except a lone
or last one, whose -inf filler picks trail every real candidate.

Imported on first use only, so ``jetspec_sglang.kernels`` imports where triton is missing.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _log_sum_exp(x, axis: tl.constexpr):
    """log(sum(exp(x))) along ``axis``; -inf where every entry is -inf (no NaN from -inf - -inf)."""
    m = tl.max(x, axis)
    safe = tl.where(m == float("-inf"), 0.0, m)
    return safe + tl.log(tl.sum(tl.exp(x - safe), axis))


@triton.jit
def _take_best(values, alive, ids, out_values, out_ids, K: tl.constexpr, SIZE: tl.constexpr, GATHER: tl.constexpr):
    """Store the K largest ``alive`` entries of ``values`` (of equal ones, the lowest position first), best first,
    with their ids: ``ids[position]`` where ``GATHER``, else ``ids + position`` (``ids`` a scalar base).

    Taken entries leave ``alive`` rather than turning -inf, so -inf logits (a masked vocabulary) are taken
    in order too.
    """
    positions = tl.arange(0, SIZE)
    for i in tl.static_range(K):
        best_value = tl.max(tl.where(alive, values, float("-inf")), 0)
        best = tl.min(tl.where(alive & (values == best_value), positions, SIZE), 0)
        tl.store(out_values + i, best_value)
        if GATHER:
            tl.store(out_ids + i, tl.sum(tl.where(positions == best, ids, 0), 0))
        else:
            tl.store(out_ids + i, ids + best)
        alive = alive & (positions != best)


@triton.jit
def chunk_topk(logits, part_values, part_ids, part_lse, vocab, num_chunks, stride_row,
               K: tl.constexpr, CHUNK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    first = chunk.to(tl.int64) * CHUNK
    ids = first + tl.arange(0, CHUNK)
    values = tl.load(logits + row.to(tl.int64) * stride_row + ids, mask=ids < vocab, other=float("-inf"))
    values = values.to(tl.float32)
    at = row * num_chunks + chunk
    tl.store(part_lse + at, _log_sum_exp(values, 0))
    _take_best(values, ids < vocab, first, part_values + at * K, part_ids + at * K, K, CHUNK, False)


@triton.jit
def merge_chunks(part_values, part_ids, part_lse, values_out, ids_out, lse_out, num_chunks, vocab_start,
                 K: tl.constexpr, CANDIDATES: tl.constexpr, CHUNKS: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    chunks = tl.arange(0, CHUNKS)
    lse = tl.load(part_lse + row * num_chunks + chunks, mask=chunks < num_chunks, other=float("-inf"))
    tl.store(lse_out + row, _log_sum_exp(lse, 0))
    candidates = tl.arange(0, CANDIDATES)
    valid = candidates < num_chunks * K
    at = row * num_chunks * K + candidates
    values = tl.load(part_values + at, mask=valid, other=float("-inf"))
    ids = tl.load(part_ids + at, mask=valid, other=0) + vocab_start
    _take_best(values, valid, ids, values_out + row * K, ids_out + row * K, K, CANDIDATES, True)
