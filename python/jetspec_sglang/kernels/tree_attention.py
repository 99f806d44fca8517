"""Tree attention for target verify: ``N`` draft-tree nodes per request attend to the request's
whole KV prefix and to their own ancestors in the tree, in one Triton pass over SGLang's KV pool.

- ``tree_mask_from_parents``: the compact per-request ancestor bitmask the kernel reads.
- ``tree_attention``: the kernel (Triton, ``tree_attention_triton.py``); no host sync, optional
  caller-provided output, so a CUDA graph can capture it.
- ``tree_attention_reference``: the dense PyTorch definition, any dtype (float64 for tests).

The KV pool is SGLang's with page_size 1: prefix token ``j`` of request ``b`` lives in slot
``req_to_token[req_pool_indices[b], j]`` and tree node ``i`` in slot
``req_to_token[req_pool_indices[b], prefix_lens[b] + i]`` (verify writes the tree's KV before
attention runs). This module imports torch only; triton is imported on the first kernel call.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..tree_layout import ancestor_mask

HEAD_DIMS = (64, 128, 256)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
MIN_SPLIT_KEYS = 512  # split the prefix no finer than this many keys per program
MAX_SPLITS = 64  # the merge kernel holds every split's partial row at once
MERGE_WARPS = 8
LOG2_E = 1.4426950408889634


class Tile(NamedTuple):
    """How the kernel is launched: query rows (node x head) and keys per tile, warps, software-pipeline stages.

    ``tree_attention`` picks one by size (``_tile_config``); passing one is for benchmarks that sweep them.
    """

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    @classmethod
    def parse(cls, text: str) -> "Tile":
        """``"128x64x8x3"`` -> ``Tile(128, 64, 8, 3)``; raises ``ValueError`` on a tile the kernel cannot take."""
        try:
            tile = cls(*(int(part) for part in text.split("x")))
        except (TypeError, ValueError):
            raise ValueError(f"a tile is BLOCK_MxBLOCK_NxWARPSxSTAGES, e.g. 128x64x8x3, got {text!r}") from None
        tile.check()
        return tile

    def check(self) -> None:
        """``BLOCK_M`` 16-128 (``tl.dot``'s minimum up), ``BLOCK_N`` 32-128 (whole 32-bit mask words), powers of 2."""
        if (self.block_m not in (16, 32, 64, 128) or self.block_n not in (32, 64, 128)
                or self.num_warps not in (1, 2, 4, 8) or not 1 <= self.num_stages <= 4):
            raise ValueError(f"{self} must have block_m in 16-128 and block_n in 32-128 (powers of 2), num_warps in "
                             "1-8 (a power of 2) and num_stages in 1-4")  # fmt: skip


def tree_mask_from_parents(parents: Tensor, max_depth: int) -> Tensor:
    """The ancestor bitmask ``tree_attention`` reads, from parent arrays.

    Parameters:
        parents: ``[bs, N]`` integer, ``-1`` at the root: ``parents[b, i]`` is node ``i``'s parent.
        max_depth: an upper bound on node depth (``N - 1`` always is); ``DraftTree.max_depth``.

    Returns:
        ``[bs, N, ceil(N / 32)]`` int32: bit ``j % 32`` of word ``j // 32`` of row ``[b, i]`` is set
        iff ``j == i`` or ``j`` is an ancestor of ``i`` (bit 31 is the sign bit).

    Examples:
        >>> tree_mask_from_parents(torch.tensor([[-1, 0, 0, 1]]), max_depth=2)[0, :, 0].tolist()
        [1, 3, 5, 11]
    """
    anc = ancestor_mask(parents.to(torch.int64), max_depth)
    bs, n, _ = anc.shape
    words = (n + 31) // 32
    bits = torch.zeros(bs, n, words * 32, dtype=torch.int32, device=anc.device)
    bits[:, :, :n] = anc.to(torch.int32)
    # Bit k weighs 2**k; bit 31 weighs -2**31, so the int32 sum is the two's-complement word.
    weights = torch.tensor([1 << k for k in range(31)] + [-(1 << 31)], dtype=torch.int32, device=anc.device)
    return (bits.view(bs, n, words, 32) * weights).sum(dim=3, dtype=torch.int32)


def build_tree_mask(parents: Tensor, max_depth: int, out: Optional[Tensor] = None,
                    padding_to_root: bool = False) -> Tensor:
    """``tree_mask_from_parents`` in one Triton launch on a GPU (the torch version takes ~9 launches per
    depth level), written into ``out`` (``[bs, N, ceil(N / 32)]`` int32, e.g. a CUDA graph's static
    buffer) when given. Elsewhere it is ``tree_mask_from_parents``.

    ``padding_to_root``: a slot past 0 whose parent is ``-1`` (a ``DraftTree``'s padding) hangs off slot 0,
    as SGLang verifies it (``tree_layout.verify_parents``); ``max_depth`` must then be at least 1.
    """
    bs, n = parents.shape
    words = (n + 31) // 32
    if out is None:
        out = torch.empty(bs, n, words, dtype=torch.int32, device=parents.device)
    elif out.shape != (bs, n, words) or out.dtype != torch.int32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous int32 {(bs, n, words)}, got {out.dtype} {tuple(out.shape)}")
    if parents.device.type != "cuda" and not _interpreting():
        if padding_to_root:
            slots = torch.arange(n, device=parents.device)
            parents = torch.where((parents < 0) & (slots > 0), 0, parents)
        return out.copy_(tree_mask_from_parents(parents, max_depth))
    from . import tree_attention_triton as kernels  # imports triton

    kernels.tree_mask_rows[(bs * n,)](parents.contiguous(), out, n, words, max_depth,
                                      WORDS=_next_power_of_2(words), PADDING_TO_ROOT=padding_to_root)  # fmt: skip
    return out


def _interpreting() -> bool:
    """Whether Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, the CPU tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def unpack_tree_mask(tree_mask: Tensor) -> Tensor:
    """``[bs, N, ceil(N / 32)]`` int32 bitmask -> ``[bs, N, N]`` bool (``N`` is ``tree_mask.shape[1]``)."""
    n = tree_mask.shape[1]
    cols = torch.arange(n, device=tree_mask.device)
    return ((tree_mask[:, :, cols // 32] >> (cols % 32)) & 1).bool()


def tree_attention_reference(
    q: Tensor,
    k_buffer: Tensor,
    v_buffer: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Tensor,
    tree_mask: Tensor,
    sm_scale: float,
    dtype: torch.dtype = torch.float64,
    sliding_window: int = -1,
    positions: Optional[Tensor] = None,
) -> Tensor:
    """Dense tree attention computed in ``dtype``: the definition ``tree_attention`` implements.

    Takes ``tree_attention``'s inputs. Products run in ``dtype``, the softmax in at least fp32
    (``float64`` is the accuracy reference; the inputs' own dtype gives a same-precision baseline).
    Reads ``prefix_lens`` on the host (one sync per request): for tests and benchmarks only.

    Returns:
        ``[bs * N, Hq, head_dim]`` in ``dtype``.
    """
    bs, n, _ = tree_mask.shape
    group = q.shape[1] // k_buffer.shape[1]
    anc = unpack_tree_mask(tree_mask)
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    for b in range(bs):
        prefix_len = int(prefix_lens[b])
        slots = req_to_token[req_pool_indices[b], : prefix_len + n].to(torch.int64)
        k = k_buffer[slots].to(dtype).repeat_interleave(group, dim=1)  # [P + N, Hq, head_dim]
        v = v_buffer[slots].to(dtype).repeat_interleave(group, dim=1)
        rows = slice(b * n, (b + 1) * n)
        scores = torch.einsum("qhd,khd->hqk", q[rows].to(dtype), k) * sm_scale  # [Hq, N, P + N]
        visible = torch.cat([torch.ones(n, prefix_len, dtype=torch.bool, device=q.device), anc[b]], dim=1)
        if sliding_window >= 0:
            node_pos = positions[rows].to(torch.int64)
            key_pos = torch.cat([torch.arange(prefix_len, device=q.device), node_pos])
            visible &= node_pos[:, None] - key_pos[None, :] <= sliding_window
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores.to(torch.promote_types(dtype, torch.float32)), dim=-1).to(dtype)
        out[rows] = torch.einsum("hqk,khd->qhd", probs, v)
    return out


def tree_attention(
    q: Tensor,
    k_buffer: Tensor,
    v_buffer: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Tensor,
    tree_mask: Tensor,
    sm_scale: float,
    max_prefix_len: int,
    out: Optional[Tensor] = None,
    num_splits: Optional[int] = None,
    fp32_dot: str = "ieee",
    min_split_keys: int = MIN_SPLIT_KEYS,
    merge_counters: Optional[Tensor] = None,
    sliding_window: int = -1,
    positions: Optional[Tensor] = None,
    tile: Optional[Tile] = None,
) -> Tensor:
    """Attention of every tree node to its request's KV prefix (all of it, or a sliding window of it) and its
    tree ancestors.

    One online softmax over prefix + tree per (node, head), fp32 accumulation. The prefix is
    split across programs when the batch alone would leave the GPU idle (bs 1 at 32k context),
    and the splits' partial states are merged by a second small kernel, or by the last split to
    finish when ``merge_counters`` is given (one launch instead of two). Nothing syncs with
    the host and no allocation depends on tensor values, so a CUDA graph can capture the call
    (the split workspace is a ``torch.empty`` sized by the Python ints below).

    Parameters:
        q: ``[bs * N, Hq, head_dim]`` bfloat16 (float16 and float32 work too: float32 multiplies in
            IEEE fp32, for exact tests), the ``N`` nodes of each request in turn
            (request ``b``'s node ``i`` is row ``b * N + i``); last dim contiguous.
        k_buffer: ``[pool_size, Hkv, head_dim]`` of q's dtype, one layer's key pool (page_size 1);
            ``Hq`` a multiple of ``Hkv``, ``head_dim`` in {64, 128, 256}; last dim contiguous.
        v_buffer: ``[pool_size, Hkv, head_dim]``, the value pool, laid out like ``k_buffer``.
        req_to_token: ``[max_reqs, max_context]`` int32, pool slot of each request position;
            row ``req_pool_indices[b]`` must hold ``prefix_lens[b] + N`` slots.
        req_pool_indices: ``[bs]`` int64 (or int32), each request's row of ``req_to_token``.
        prefix_lens: ``[bs]`` int32 (or int64), committed tokens before the tree, ``>= 0``.
        tree_mask: ``[bs, N, ceil(N / 32)]`` int32 from ``tree_mask_from_parents``; every row must
            have its own bit set (a node attends to itself). Contiguous.
        sm_scale: softmax scale, usually ``head_dim ** -0.5``.
        max_prefix_len: a host-side bound on ``prefix_lens`` that sizes the grid's prefix splits (e.g.
            the context length a CUDA graph is captured for). Each request then uses one split per
            ``min_split_keys`` of its own prefix, up to that many, so a short prefix costs no empty
            splits; a prefix longer than the bound is still attended in full.
        out: ``[bs * N, Hq, head_dim]`` of q's dtype to write into (e.g. a CUDA graph's static
            buffer); allocated when ``None``. Every row is written.
        num_splits: prefix splits per (row tile, request, kv head), at most 64; chosen from the
            GPU's SM count and ``max_prefix_len`` when ``None``.
        fp32_dot: how float32 inputs multiply, as ``tl.dot``'s ``input_precision``: ``"ieee"`` (exact fp32),
            ``"tf32"`` (Triton's default, which SGLang's own Triton attention kernels use) or ``"tf32x3"``.
            Serving passes what SGLang's kernels use (``sglang_fp32_dot``), so that ``--dtype float32``
            scores match the target's own attention.
        min_split_keys: the fewest prefix keys worth a split of their own (tests lower it).
        merge_counters: int32, contiguous, all zero, at least ``merge_counter_slots`` of them: the tickets
            by which the last split of each program column merges; the call leaves them zero. One buffer
            serves every call issued on one stream after another.
        sliding_window: ``-1`` for full attention; else a node at position ``p`` sees only keys at positions
            ``p - sliding_window`` to ``p`` (SGLang's ``sliding_window_size``). Prefix key ``j`` is at position
            ``j``; a tree node's position comes from ``positions``. The window follows each node's own position,
            which SGLang's Triton verify kernel does not: it windows by a node's index in the tree, which is its
            depth only along a chain.
        positions: ``[bs * N]`` int64 (or int32), each node's position (prefix length plus depth); required
            with a sliding window.
        tile: the launch configuration; chosen by size when ``None`` (``merge_counters`` must then be sized for
            the same tile).

    Returns:
        ``[bs * N, Hq, head_dim]`` of q's dtype, ``out`` when given.

    Examples:
        >>> q = torch.randn(4, 2, 64, dtype=torch.bfloat16)
        >>> kv = torch.randn(8, 1, 64, dtype=torch.bfloat16)
        >>> r2t = torch.arange(8, dtype=torch.int32)[None]
        >>> mask = tree_mask_from_parents(torch.tensor([[-1, 0, 0, 1]]), max_depth=2)
        >>> args = (q, kv, kv, r2t, torch.tensor([0]), torch.tensor([4], dtype=torch.int32), mask)
        >>> o = tree_attention(*args, sm_scale=0.125, max_prefix_len=4)  # doctest: +SKIP
        >>> torch.allclose(o.double(), tree_attention_reference(*args, sm_scale=0.125), atol=2e-2)  # doctest: +SKIP
        True
    """
    bs, n, group = _check_inputs(q, k_buffer, v_buffer, req_to_token, req_pool_indices, prefix_lens, tree_mask)
    if sliding_window >= 0 and (positions is None or positions.shape != (bs * n,) or positions.device != q.device
                                or positions.dtype not in (torch.int32, torch.int64) or positions.stride(0) != 1):
        got = None if positions is None else (positions.dtype, tuple(positions.shape), positions.device)
        raise ValueError(f"a sliding window needs positions: contiguous int32 or int64 [{bs * n}] on {q.device}, "
                         f"got {got}")
    if fp32_dot not in ("ieee", "tf32", "tf32x3"):
        raise ValueError(f"fp32_dot must be 'ieee', 'tf32' or 'tf32x3', got {fp32_dot!r}")
    if max_prefix_len < 0 or min_split_keys < 1 or (num_splits is not None and not 1 <= num_splits <= MAX_SPLITS):
        raise ValueError(f"need max_prefix_len >= 0, min_split_keys >= 1 and 1 <= num_splits <= {MAX_SPLITS}, "
                         f"got {max_prefix_len}, {min_split_keys}, {num_splits}")  # fmt: skip
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
        raise ValueError(
            f"out must be {q.dtype} {tuple(q.shape)} on {q.device} with a contiguous last dim, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    from . import tree_attention_triton as kernels  # imports triton

    total_q, num_q_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    if tile is not None:
        tile.check()
    block_m, block_n, num_warps, num_stages = tile or _tile_config(head_dim, n * group, q.element_size())
    row_tiles = _cdiv(n * group, block_m)
    if merge_counters is not None:
        _check_merge_counters(merge_counters, row_tiles * bs * num_kv_heads, q.device)
    if num_splits is None:
        programs = row_tiles * bs * num_kv_heads
        num_splits = min(_cdiv(2 * _sm_count(q.device), programs), _cdiv(max_prefix_len, min_split_keys), MAX_SPLITS)
    num_splits = max(num_splits, 1)
    if num_splits > 1:
        part_acc = torch.empty(num_splits, total_q, num_q_heads, head_dim, dtype=torch.float32, device=q.device)
        part_m = torch.empty(num_splits, total_q, num_q_heads, dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
    else:
        part_acc = part_m = part_l = out  # not read: the kernel writes out directly
    fused_merge = num_splits > 1 and merge_counters is not None
    kernels.tree_attention_fwd[(row_tiles, bs * num_kv_heads, num_splits)](
        q, k_buffer, v_buffer, out, part_acc, part_m, part_l, merge_counters if fused_merge else prefix_lens,
        req_to_token, req_pool_indices, prefix_lens, tree_mask, positions if sliding_window >= 0 else prefix_lens,
        sm_scale * LOG2_E, n, tree_mask.shape[2], num_kv_heads, num_q_heads, total_q, num_splits, min_split_keys,
        sliding_window, q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0),
        v_buffer.stride(1), out.stride(0), out.stride(1), req_to_token.stride(0),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT=num_splits > 1,
        DOT_PRECISION=fp32_dot if q.dtype == torch.float32 else "tf32", FUSED_MERGE=fused_merge,
        WINDOW=sliding_window >= 0, num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    if num_splits > 1 and not fused_merge:
        kernels.merge_splits[(total_q, num_q_heads)](
            out, part_acc, part_m, part_l, prefix_lens, n, min_split_keys, num_splits, total_q, num_q_heads,
            out.stride(0), out.stride(1),
            SPLITS=_next_power_of_2(num_splits), HEAD_DIM=head_dim, num_warps=MERGE_WARPS,
        )  # fmt: skip
    return out


def merge_counter_slots(bs: int, n: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                        dtype: torch.dtype = torch.bfloat16, tile: Optional[Tile] = None) -> int:
    """How many ``merge_counters`` a ``tree_attention`` call of these sizes (and ``tile``) reads: one per program
    column (row tile, request, kv head)."""
    rows = n * (num_q_heads // num_kv_heads)
    block_m = (tile or _tile_config(head_dim, rows, dtype.itemsize)).block_m
    return _cdiv(rows, block_m) * bs * num_kv_heads


def _check_merge_counters(counters: Tensor, needed: int, device: torch.device) -> None:
    if (counters.dtype != torch.int32 or counters.dim() != 1 or not counters.is_contiguous()
            or counters.device != device):
        raise ValueError(f"merge_counters must be a contiguous 1-d int32 on {device}, got {counters.dtype} "
                         f"{tuple(counters.shape)} on {counters.device}")  # fmt: skip
    if counters.numel() < needed:
        raise ValueError(f"merge_counters holds {counters.numel()} tickets, this call needs {needed} "
                         "(merge_counter_slots)")


def _tile_config(head_dim: int, rows: int, element_size: int = 2) -> Tile:
    """The ``Tile`` for ``rows = N * group`` query rows per kv head.

    128 x 64 tiles as in Triton's flash-attention tutorial; 64 x 32 at head_dim 256, and for float32
    inputs (twice the bytes per tile), to fit shared memory and registers; ``BLOCK_M`` shrinks (to 16,
    tl.dot's minimum) for small trees.
    """
    small = head_dim == 256 or element_size > 2
    block_m = min(64 if small else 128, max(16, _next_power_of_2(rows)))
    block_n = 32 if small else 64
    return Tile(block_m, block_n, 8 if block_m == 128 or small else 4, 2 if small else 3)


@functools.cache
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a host-side property query); 1 elsewhere."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_power_of_2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()


def _check_inputs(
    q: Tensor,
    k_buffer: Tensor,
    v_buffer: Tensor,
    req_to_token: Tensor,
    req_pool_indices: Tensor,
    prefix_lens: Tensor,
    tree_mask: Tensor,
) -> tuple[int, int, int]:
    """Raise ``ValueError`` on a bad dtype, shape, layout or device; return ``(bs, N, Hq // Hkv)``."""
    for name, t in (("q", q), ("k_buffer", k_buffer), ("v_buffer", v_buffer)):
        if t.dim() != 3 or t.dtype != q.dtype or t.dtype not in DTYPES or t.stride(-1) != 1:
            raise ValueError(
                f"{name} must be a 3-d tensor of q's dtype (bfloat16, float16 or float32) with a contiguous "
                f"last dim, got {t.dtype} {tuple(t.shape)}"
            )
    if k_buffer.shape != v_buffer.shape:
        raise ValueError(f"k_buffer and v_buffer shapes differ: {tuple(k_buffer.shape)} vs {tuple(v_buffer.shape)}")
    (total_q, num_q_heads, head_dim), (_, num_kv_heads, kv_dim) = q.shape, k_buffer.shape
    if head_dim not in HEAD_DIMS or kv_dim != head_dim:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS} for q and k/v alike, got {head_dim} and {kv_dim}")
    if num_kv_heads == 0 or num_q_heads % num_kv_heads:
        raise ValueError(f"Hq ({num_q_heads}) must be a multiple of Hkv ({num_kv_heads})")
    if tree_mask.dim() != 3 or tree_mask.dtype != torch.int32 or not tree_mask.is_contiguous():
        raise ValueError(f"tree_mask must be a contiguous [bs, N, ceil(N/32)] int32, got {tree_mask.dtype} "
                         f"{tuple(tree_mask.shape)}")  # fmt: skip
    bs, n, words = tree_mask.shape
    if bs < 1 or n < 1 or words != (n + 31) // 32 or total_q != bs * n:
        raise ValueError(f"tree_mask {tuple(tree_mask.shape)} must be [bs, N, ceil(N/32)], bs, N >= 1, "
                         f"with q's {total_q} rows = bs * N")  # fmt: skip
    if req_to_token.dim() != 2 or req_to_token.dtype != torch.int32 or req_to_token.stride(-1) != 1:
        raise ValueError(f"req_to_token must be a 2-d int32 with a contiguous last dim, got {req_to_token.dtype} "
                         f"{tuple(req_to_token.shape)}")  # fmt: skip
    for name, t in (("req_pool_indices", req_pool_indices), ("prefix_lens", prefix_lens)):
        if t.shape != (bs,) or t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be [bs={bs}] int32 or int64, got {t.dtype} {tuple(t.shape)}")
    tensors = (q, k_buffer, v_buffer, req_to_token, req_pool_indices, prefix_lens, tree_mask)
    if any(t.device != q.device for t in tensors):
        raise ValueError(f"all inputs must be on one device, got {[str(t.device) for t in tensors]}")
    return bs, n, num_q_heads // num_kv_heads
