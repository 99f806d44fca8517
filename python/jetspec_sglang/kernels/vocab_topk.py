"""The draft's per-position top-K over the whole vocabulary, with the log-sum-exp that turns logits into
log-probs, in two launches.

PyTorch takes about 35 launches for ``logits.float()``, ``logsumexp`` and ``topk`` over a ``[T, V]``
row block (radix select passes, scans, a sort), each a few microseconds of work: in the H200 traces of
``benchmark/results/step_breakdown_h200/`` (s7, s6), the kernels between the head's LM head and the
tree build took 88 us per SmolLM2 step and 114 us per Qwen3-8B-shaped step. Here ``chunk_topk`` reads each logit
once and ``merge_chunks`` combines per-chunk winners (``vocab_topk_triton.py``).

- ``vocab_topk``: the kernels; no host sync, so a CUDA graph can capture them.
- ``vocab_topk_reference``: the PyTorch definition the kernels must match.

Ties go to the lower vocabulary id (PyTorch's ``topk`` leaves their order unspecified). This module
imports torch only; triton is imported on the first kernel call.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

MAX_K = 64
MAX_CHUNKS = 64  # the merge holds every chunk's candidates of a row at once
MIN_CHUNK = 1024
CHUNK_WARPS = 4


def vocab_topk_reference(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest logits of each row (float32, best first), their int64 ids, and each row's float32
    log-sum-exp; ``logits`` is ``[T, V]`` of any float dtype."""
    wide = logits.float()
    values, ids = wide.topk(k, dim=-1)
    return values, ids, torch.logsumexp(wide, dim=-1)


def vocab_topk(logits: Tensor, k: int, vocab_start: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``vocab_topk_reference(logits, k)`` in two Triton launches, ids offset by ``vocab_start`` (a vocab
    shard's first global id); ties go to the lower id.

    Parameters:
        logits: ``[T, V]`` bfloat16, float16 or float32 on a CUDA device, contiguous along V.
        k: ``1 <= k <= min(V, 64)``.

    Returns:
        ``values [T, k]`` float32, ``ids [T, k]`` int64, ``lse [T]`` float32.
    """
    if logits.dim() != 2 or logits.stride(-1) != 1 or not logits.is_floating_point():
        raise ValueError(f"logits must be a 2-d float tensor contiguous along its last dim, got "
                         f"{logits.dtype} {tuple(logits.shape)} with strides {logits.stride()}")  # fmt: skip
    rows, vocab = logits.shape
    if not 1 <= k <= min(vocab, MAX_K):
        raise ValueError(f"k must be in [1, min(V, {MAX_K})] = [1, {min(vocab, MAX_K)}], got {k}")
    if logits.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"vocab_topk runs on CUDA (or under TRITON_INTERPRET=1), got {logits.device}")
    from . import vocab_topk_triton as kernels  # imports triton

    chunk = max(MIN_CHUNK, _next_power_of_2(-(-vocab // MAX_CHUNKS)))
    num_chunks = -(-vocab // chunk)
    part_values = torch.empty(rows, num_chunks, k, dtype=torch.float32, device=logits.device)
    part_ids = torch.empty(rows, num_chunks, k, dtype=torch.int64, device=logits.device)
    part_lse = torch.empty(rows, num_chunks, dtype=torch.float32, device=logits.device)
    values = torch.empty(rows, k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(rows, k, dtype=torch.int64, device=logits.device)
    lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return values, ids, lse
    kernels.chunk_topk[(rows, num_chunks)](
        logits, part_values, part_ids, part_lse, vocab, num_chunks, logits.stride(0),
        K=k, CHUNK=chunk, num_warps=CHUNK_WARPS,
    )  # fmt: skip
    kernels.merge_chunks[(rows,)](
        part_values, part_ids, part_lse, values, ids, lse, num_chunks, vocab_start,
        K=k, CANDIDATES=_next_power_of_2(num_chunks * k), CHUNKS=_next_power_of_2(num_chunks),
    )  # fmt: skip
    return values, ids, lse


def _next_power_of_2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()
