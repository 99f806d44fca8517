"""The target's tree-verify attention through our Triton kernel (``JETSPEC_VERIFY_ATTENTION``).

SGLang's Triton backend verifies a tree with its extend kernel and a dense
``N x (prefix + N)`` custom mask per request, built and read every step. Our kernel
(``kernels.tree_attention``) reads the prefix unmasked, straight from ``req_to_token``,
and the tree part under a compact ``[N, ceil(N / 32)]`` ancestor bitmask.

- ``TreeMaskBuffer``: the bitmask, in one static buffer the worker rewrites before each
  verify, so CUDA graphs captured over it replay with the new tree.
- ``install_tree_verify_attention``: gives the target's attention backend instance a
  ``forward_extend`` that serves TARGET_VERIFY with our kernel, layer by layer where the
  layer is plain causal attention, and defers to SGLang's otherwise. A causal head's backend takes it too
  (``head_attention``: a chain mask over the head's block; ``JETSPEC_HEAD_ATTENTION``).

``JETSPEC_VERIFY_ATTENTION`` is ``auto`` (the default), ``tree`` or ``sglang``. ``auto`` takes the tree kernel
wherever the target's backend can take it (Triton, page size 1, plain MHA pool). On the H200 it was faster
on both measured targets (``benchmark/results/step_breakdown_h200/``, ``side_by_side_h200/``):
- a Qwen3-8B shape at bs 1, 16 and 32 (budget 128 at bs 1: 8.16 vs 9.29 ms a step; bs 32: 22.1 vs 24.9),
  about 4% slower at bs 4 (9.31 vs 8.93);
- SmolLM2-135M in six of six same-lease comparisons at bs 1 and 4 (bs 1, budget 64: 2.78 vs 4.10 ms and
  3.06 vs 3.36), and 1.61x plain against 1.19x one request at a time with the trained head.
  A sixth-session run had it slower on SmolLM2. That run predates the mask kernel's compile at startup (its
  first use per budget compiled mid-run), the likely cause; narrow targets kept SGLang's attention until then.
SGLang still builds its own verify mask (the verify inputs need it for other backends).

``JETSPEC_SPLIT_MERGE`` says how the kernel's prefix splits are merged: ``fused`` (the default) lets the last
split to finish merge in the same launch, ``kernel`` launches ``merge_splits`` after each layer's attention (one
launch a layer more: 30 more a SmolLM2 step at small batches, where serving's grid, sized for the full context,
always has splits). Its CPU tests run ``fused`` in Triton's interpreter, one program at a time, so only a GPU shows
its cross-program ordering: on an H100 it passed the kernel tests at serving sizes (up to 64 splits, CUDA-graph
replay) and the fp32 identity test on 600-1100-token prompts, and took 0.05-0.09 ms off a SmolLM2-shaped verify
forward (thirteenth and fourteenth sessions, ``benchmark/results/*_h100/``).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import Tensor

from ..kernels.tree_attention import (
    DTYPES,
    HEAD_DIMS,
    Tile,
    build_tree_mask,
    merge_counter_slots,
    tree_attention,
    tree_mask_from_parents,
)

CHOICES = ("auto", "sglang", "tree")
SPLIT_MERGE_ENV = "JETSPEC_SPLIT_MERGE"
TILE_ENV = "JETSPEC_TREE_TILE"
SPLIT_MERGE_CHOICES = ("kernel", "fused")
TRITON_FP32_ENV = "TRITON_F32_DEFAULT"
FP32_DOTS = ("tf32", "tf32x3", "ieee")


def sglang_fp32_dot() -> str:
    """How SGLang 0.5.17's Triton attention multiplies float32: its kernels call ``tl.dot`` without
    ``input_precision``, so Triton's default decides, TF32 unless ``$TRITON_F32_DEFAULT`` names another.

    Ours follows it, so that a ``--dtype float32`` run scores the tree as the target's own attention would.
    With IEEE dots against SGLang's TF32 the fp32 GPU test diverged from plain SGLang on some prompts; with
    TF32 on both sides it is token-identical (H200, 2026-11-28, ``benchmark/results/sglang_plugin_h200/``).
    ``TRITON_F32_DEFAULT=ieee`` makes both sides exact fp32: on prompts of 600-1100 tokens, plain SGLang's TF32
    already chose other greedy tokens than transformers' fp32 for the fp32 GPU tests' random target (H100,
    2026-12-06), so identity there is only defined with IEEE dots on both sides.
    """
    choice = os.environ.get(TRITON_FP32_ENV) or "tf32"
    if choice not in FP32_DOTS:
        raise ValueError(f"{TRITON_FP32_ENV} must be one of {FP32_DOTS} for JETSPEC's tree attention, got {choice!r}; "
                         f"unset it for Triton's TF32 default")
    return choice


def select_verify_attention(choice: Optional[str] = None) -> str:
    """``$JETSPEC_VERIFY_ATTENTION``: ``auto`` (the default), ``sglang`` or ``tree``."""
    choice = choice or os.environ.get("JETSPEC_VERIFY_ATTENTION", "auto")
    if choice not in CHOICES:
        raise ValueError(f"JETSPEC_VERIFY_ATTENTION must be one of {CHOICES}, got {choice!r}")
    return choice


def select_split_merge(choice: Optional[str] = None) -> str:
    """``choice``, else ``$JETSPEC_SPLIT_MERGE``, else ``fused``."""
    choice = choice or os.environ.get(SPLIT_MERGE_ENV) or "fused"
    if choice not in SPLIT_MERGE_CHOICES:
        raise ValueError(f"{SPLIT_MERGE_ENV} must be one of {SPLIT_MERGE_CHOICES}, got {choice!r}")
    return choice


def select_tree_tile(choice: Optional[str] = None) -> Optional[Tile]:
    """``choice``, else ``$JETSPEC_TREE_TILE``: the tree kernel's launch configuration, ``BLOCK_MxBLOCK_NxWARPSxSTAGES``
    (e.g. ``64x128x4x2``), for the target's verify and the head alike; unset or ``auto`` lets the kernel pick by size.
    For tuning a deployment (``benchmark/kernels/tree_attention_bench.py --tiles`` times them kernel by kernel, the
    ``jetspec-tile-TILE:BUDGET`` configuration of the benchmarks a whole step); outputs do not depend on it."""
    choice = choice or os.environ.get(TILE_ENV) or "auto"
    if choice == "auto":
        return None
    try:
        return Tile.parse(choice)
    except ValueError as err:
        raise ValueError(f"{TILE_ENV}: {err}; unset it to let the kernel choose") from None


def resolve_verify_attention(choice: str, backend: Any) -> str:
    """``sglang`` or ``tree`` for the target's ``backend``: ``auto`` takes ``tree`` where the backend can
    take it; a named choice stays as asked (an impossible ``tree`` then fails at install, saying why)."""
    if choice != "auto":
        return choice
    return "tree" if tree_attention_refusal(backend) is None else "sglang"


def tree_attention_refusal(backend: Any) -> Optional[str]:
    """Why ``backend`` cannot serve verify attention through the tree kernel (with the fix), or None."""
    name = type(backend).__name__
    if name != "TritonAttnBackend":
        return (f"JETSPEC_VERIFY_ATTENTION=tree works with --attention-backend triton, not {name}; "
                "unset it or switch the backend")
    if getattr(backend, "page_size", 1) != 1:
        return "JETSPEC_VERIFY_ATTENTION=tree needs --page-size 1"
    pool = type(backend.token_to_kv_pool).__name__
    if pool != "MHATokenToKVPool" or getattr(backend, "_translate_kv_loc", None) is not None:
        return (f"JETSPEC_VERIFY_ATTENTION=tree needs SGLang's plain MHA KV pool (slot = token index), "
                f"not {pool}; unset it for this model")
    return None


class TreeMaskBuffer:
    """``[capacity, N, ceil(N / 32)]`` int32 ancestor bitmasks at one fixed address.

    Rows start as lone roots (each node sees itself only), so batch rows a CUDA graph pads
    with never divide by zero.
    """

    def __init__(self, capacity: int, budget: int, device: torch.device | str) -> None:
        roots = torch.full((capacity, budget), -1, dtype=torch.int64, device=device)
        self.buffer = tree_mask_from_parents(roots, max_depth=1)

    @property
    def budget(self) -> int:
        """``N``, tree nodes per request."""
        return self.buffer.shape[1]

    def write(self, parents: Tensor, max_depth: int) -> None:
        """The masks of this step's trees (``[bs, N]`` parents), for rows ``0 .. bs - 1`` (one launch on a GPU).

        A padding slot (parent ``-1`` past slot 0) sees the root, as in SGLang's verify mask and retrieve lists:
        SGLang verifies it as the root's child at depth 1, so accepting it must mean what SGLang's mask would.
        """
        build_tree_mask(parents, max_depth, out=self.view(parents.shape[0]), padding_to_root=True)

    def view(self, bs: int) -> Tensor:
        if bs > self.buffer.shape[0]:
            raise ValueError(f"a verify batch of {bs} requests exceeds the tree-mask buffer ({self.buffer.shape[0]})")
        return self.buffer[:bs]


def install_tree_verify_attention(backend: Any, mask: TreeMaskBuffer) -> "TreeVerifyForwardExtend":
    """Serve ``backend``'s TARGET_VERIFY attention with the tree kernel, reading ``mask``.

    Only this backend instance changes: its ``forward_extend`` becomes the ``TreeVerifyForwardExtend`` returned
    (an instance attribute, which ``AttentionBackend.forward`` finds before the class's method).
    Raises ``ValueError`` naming the fix where the backend cannot take it.
    """
    refusal = tree_attention_refusal(backend)
    if refusal is not None:
        raise ValueError(refusal)
    backend.forward_extend = TreeVerifyForwardExtend(backend, mask, fused_merge=select_split_merge() == "fused",
                                                     tile=select_tree_tile())
    return backend.forward_extend


class TreeVerifyForwardExtend:
    """A backend's ``forward_extend`` with TARGET_VERIFY through ``tree_attention``.

    Wraps sglang 0.5.17's ``sglang.srt.layers.attention.triton_backend.TritonAttnBackend.forward_extend``
    (same signature), which every other call goes to; the KV write mirrors its ``_set_kv_buffer`` for a
    plain MHA pool without DCP. ``deferred_verify_layers`` counts the TARGET_VERIFY calls it sent to SGLang's
    kernel, the only reader of the backend's verify metadata (``verify_metadata.skip_unread_refill``).
    ``fused_merge``: the kernel's last split merges (``JETSPEC_SPLIT_MERGE=fused``), with tickets in
    ``merge_counters``, allocated at the first call (SGLang's eager warm-up, before any graph is captured) for the
    mask's full capacity, so that every captured graph reads the same buffer. ``tile``: the kernel's launch
    configuration (``select_tree_tile``), None to let it pick by size.
    """

    def __init__(self, backend: Any, mask: TreeMaskBuffer, fused_merge: bool = False, tile: Optional[Tile] = None
                 ) -> None:
        self.backend = backend
        self.mask = mask
        self.sglang_forward_extend = backend.forward_extend
        self.deferred_verify_layers = 0
        self.fused_merge = fused_merge
        self.merge_counters: Optional[Tensor] = None
        self.fp32_dot = sglang_fp32_dot()
        self.tile = tile

    def __call__(self, q: Tensor, k: Optional[Tensor], v: Optional[Tensor], layer: Any, forward_batch: Any,
                 save_kv_cache: bool = True, **kwargs: Any) -> Tensor:
        backend = self.backend
        verify = forward_batch.forward_mode.is_target_verify()
        if not (verify and k is not None and v is not None
                and _plain_causal_layer(layer, q.dtype, getattr(backend, "dcp_size", 1), kwargs)):
            self.deferred_verify_layers += int(verify)
            return self.sglang_forward_extend(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)
        if save_kv_cache:
            backend.token_to_kv_pool.set_kv_buffer(layer, forward_batch.out_cache_loc, k, v)
        out = getattr(forward_batch, "_attn_output", None)
        if out is None:
            out = torch.empty_like(q)
        heads, head_dim = layer.tp_q_head_num, layer.qk_head_dim
        q_rows = q.view(-1, heads, head_dim)  # q may be [T, H * D] or, from Gemma-3's layers, [1, T, H, D]
        tree_attention(
            q_rows,
            backend.token_to_kv_pool.get_key_buffer(layer.layer_id),
            backend.token_to_kv_pool.get_value_buffer(layer.layer_id),
            backend.req_to_token,
            forward_batch.req_pool_indices,
            forward_batch.seq_lens,
            self.mask.view(q_rows.shape[0] // self.mask.budget),
            layer.scaling,
            backend.max_context_len,
            out=out.view(-1, heads, head_dim),
            fp32_dot=self.fp32_dot,
            merge_counters=self._merge_counters(q, heads, layer.tp_k_head_num, head_dim) if self.fused_merge else None,
            sliding_window=_sliding_window(layer),
            positions=forward_batch.positions,
            tile=self.tile,
        )
        return out

    def _merge_counters(self, q: Tensor, heads: int, kv_heads: int, head_dim: int) -> Tensor:
        """The ticket buffer, allocated at the first call for the mask's every row, never while a graph is captured
        (``tree_attention`` refuses a later call that would need more)."""
        if self.merge_counters is None:
            if q.is_cuda and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(f"{SPLIT_MERGE_ENV}=fused: the first tree-attention call came inside a CUDA-graph "
                                   f"capture, so its merge tickets cannot be allocated; set {SPLIT_MERGE_ENV}=kernel")
            slots = merge_counter_slots(self.mask.buffer.shape[0], self.mask.budget, heads, kv_heads, head_dim, q.dtype,
                                        self.tile)  # fmt: skip
            self.merge_counters = torch.zeros(slots, dtype=torch.int32, device=q.device)
        return self.merge_counters


def windowed_verify_refusal(model: torch.nn.Module, backend: Any, verify_attention: str, dtype: torch.dtype,
                            topk: int) -> Optional[str]:
    """Why this target's sliding-window layers cannot verify a tree on ``backend``, or None.

    SGLang 0.5.17's Triton verify windows a tree node by its index in the flattened tree
    (``extend_attention.py``: ``prefix + node index <= key + window``), which is the node's depth only along a
    chain: with ``topk > 1`` most nodes would lose keys they see when decoded plainly. Our kernel windows each
    node by its own position, so every sliding-window layer must reach it (verify attention ``tree``, and a
    layer our kernel takes: no attention sinks, logit cap or KV scale).
    """
    modules = dict(model.named_modules())
    windowed = [name for name, module in modules.items()
                if hasattr(module, "qk_head_dim") and _sliding_window(module) >= 0]  # fmt: skip
    if topk <= 1 or not windowed:
        return None
    fix = "serve a chain (--speculative-eagle-topk 1)"
    if verify_attention != "tree":
        why = tree_attention_refusal(backend) or "JETSPEC_VERIFY_ATTENTION=sglang asks for SGLang's; unset it"
        return (f"{len(windowed)} sliding-window layers (e.g. {windowed[0]}) need JETSPEC's tree attention to verify "
                f"a tree, since SGLang's windows a node by its index in the tree, not its depth. It cannot run here "
                f"({why}), so {fix}")
    dcp_size = getattr(backend, "dcp_size", 1)
    for name in windowed:
        parent = modules.get(name.rpartition(".")[0])
        if not _plain_causal_layer(modules[name], dtype, dcp_size, {}) or getattr(parent, "sinks", None) is not None:
            return (f"sliding-window layer {name} has features JETSPEC's tree attention does not take (attention "
                    f"sinks, logit cap, KV scale, another head size), and SGLang's verify windows a node by its index "
                    f"in the tree, not its depth: {fix}")
    return None


def _sliding_window(layer: Any) -> int:
    """SGLang's window of ``layer`` (a query at position p sees keys p - window to p), -1 for full attention."""
    window = getattr(layer, "sliding_window_size", None)
    return window if window is not None and window > 0 else -1


def _plain_causal_layer(layer: Any, dtype: torch.dtype, dcp_size: int, kwargs: dict) -> bool:
    """Whether the tree kernel computes this layer's attention as SGLang's kernels define it; for a sliding window,
    as its prefill does (each node windowed by its own position), which its tree verify gets wrong."""
    return (
        dtype in DTYPES
        and dcp_size == 1
        and layer.qk_head_dim == layer.v_head_dim
        and layer.qk_head_dim in HEAD_DIMS
        and not getattr(layer, "logit_cap", 0)
        and getattr(layer, "k_scale", None) is None
        and not getattr(layer, "is_cross_attention", False)
        and (getattr(layer, "xai_temperature_len", None) or -1) <= 0
        and getattr(getattr(layer, "attn_type", None), "name", "DECODER") == "DECODER"
        and all(kwargs.get(key) is None for key in ("sinks", "score_mod", "aux_tensors"))
    )
