"""Draft-head context K/V for committed tokens, written into the draft KV pool (sglang 0.5.17).

The head attends to context features ``hidden_norm(fc(taps))`` of every committed
token. Their per-layer K/V depend only on the token's taps and position, so they
are written once, at the token's KV slot, right after the target produced the
taps: after prefill (every prompt token; a radix-cache hit later reuses them)
and after each verify (the accepted path).

Layer by layer (the default) that is six launches a layer: the K/V projection, two copies, the K norm, RoPE and
the store; on an H100 (fourteenth session, SmolLM2 shape, bs 1) about 14 us a layer, 56 us of a step for a
4-layer head (``benchmark/results/step_breakdown_h100/``). ``JETSPEC_CONTEXT_KV=fused`` instead runs SGLang's
DFLASH fused KV materialization (``FusedKVMaterializeHelper``'s K|V weights of every layer stacked into one GEMM,
then its K-norm and RoPE kernel for all layers at once), and one store a layer.
"""

from __future__ import annotations

import logging
import math
import os
from types import ModuleType
from typing import Any, Optional

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

ENV = "JETSPEC_CONTEXT_KV"
CHOICES = ("layers", "fused")


def select_context_kv(choice: Optional[str] = None) -> str:
    """``choice``, else ``$JETSPEC_CONTEXT_KV``, else ``layers``: how the head's context K/V are computed (layer by
    layer through the head's modules, or ``fused``, SGLang's stacked projection; opt-in until a whole step is timed
    with it: lossless and drafting as well in fp32 on an H100)."""
    choice = choice or os.environ.get(ENV) or "layers"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {CHOICES}, got {choice!r}")
    return choice


def stacked_context_kv_refusal(draft_model: Any) -> Optional[str]:
    """Why SGLang's fused KV materialization cannot serve this head (DFLASH's own conditions: unquantized K/V
    projections without bias, unit K/V scales, NeoX RoPE, a model that allows it), or None when it can."""
    from sglang.srt.speculative.dflash_utils import can_dflash_use_fused_qkv_proj

    if not getattr(draft_model, "supports_fused_context_kv", True):
        return f"{type(draft_model).__name__} does not support fused context K/V"
    for i, layer in enumerate(draft_model.layers):
        attn = layer.self_attn
        eligible, reason = can_dflash_use_fused_qkv_proj(attn.qkv_proj)
        if not eligible:
            return f"layer {i}: {reason}"
        scales = (getattr(attn.attn, "k_scale", None), getattr(attn.attn, "v_scale", None))
        if any(s is not None and not math.isclose(float(s), 1.0) for s in scales):
            return f"layer {i}: K/V scales {scales} (only 1.0 is supported)"
        if not bool(getattr(attn.rotary_emb, "is_neox_style", True)):
            return f"layer {i}: RoPE is not NeoX-style"
    return None


class StackedContextKV:
    """Every head layer's context K and V in one GEMM and one Triton launch.

    Parameters:
        layers: the head's decoder layers (``self_attn`` with ``qkv_proj``, ``k_norm``, ``rotary_emb``).
        max_position: the largest position ever written (the target's context length plus a block), so that
            SGLang's RoPE table covers it without a host sync.
        materialize: SGLang's ``fused_kv_materialize`` module (tests pass it from SGLang's source).
    """

    def __init__(self, layers: Any, max_position: int, materialize: Optional[ModuleType] = None) -> None:
        if materialize is None:
            from sglang.kernels.ops.speculative import fused_kv_materialize as materialize
        attn = layers[0].self_attn
        device = attn.qkv_proj.weight.device
        self.helper = materialize.FusedKVMaterializeHelper(layers, attn.rotary_emb, int(attn.num_kv_heads),
                                                           int(attn.head_dim), device, max_position_hint=max_position)
        # The helper's own ``materialize`` grows a workspace when T grows: inside a captured graph that would leave the
        # graph writing freed memory, so K/V go to fresh tensors (the graph's pool when captured) through its kernel.
        self.norm_rope = materialize._fused_norm_rope_stacked
        self.cos_sin_cache = attn.rotary_emb.cos_sin_cache  # at least max_position long now (the helper's check)

    def __call__(self, features: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """K (normed, rotated) and V of ``features [T, hidden]`` at ``positions [T]`` (int64) for every layer:
        ``[layers, T, kv_heads, head_dim]`` each."""
        h = self.helper
        projected = torch.mm(features, h.flat_kv_weight_t).view(features.shape[0], h.n_layers, h.layer_out_dim)
        return self.norm_rope(projected, h.k_norm_weights, h.eps_values, self.cos_sin_cache, positions,
                              h.num_kv_heads, h.head_dim, h.rotary_dim)  # fmt: skip


class DraftContextWriter:
    """Projects target taps into each draft layer's K/V and stores them.

    ``draft_runner`` is the head's ModelRunner; its ``model`` is SGLang's
    ``DFlashDraftModel`` and its KV pool exists once the scheduler allocated it.
    ``max_position``: the largest position a token may take (for the fused path's RoPE table).
    """

    def __init__(self, draft_runner: Any, max_position: int) -> None:
        self.draft_runner = draft_runner
        self.draft_model = draft_runner.model
        self.stacked: Optional[StackedContextKV] = None
        if select_context_kv() == "fused":
            refusal = stacked_context_kv_refusal(self.draft_model)
            if refusal is not None:
                raise ValueError(f"{ENV}=fused cannot serve this head ({refusal}); unset {ENV} to compute its "
                                 "context K/V layer by layer")
            self.stacked = StackedContextKV(self.draft_model.layers, max_position)
            logger.info("JETSPEC context K/V by SGLang's fused KV materialization (%d layers)",
                        len(self.draft_model.layers))

    @torch.inference_mode()
    def write(
        self,
        taps: Tensor,
        positions: Tensor,
        cache_loc: Tensor,
        *,
        cache_loc_2d: Optional[Tensor] = None,
        commit_lens: Optional[Tensor] = None,
    ) -> None:
        """Store K/V of ``T`` tokens.

        Parameters:
            taps: ``[T, num_taps * H]`` concatenated target-layer outputs.
            positions: ``[T]`` int64 absolute positions.
            cache_loc: ``[T]`` int64 KV slots (used when ``cache_loc_2d`` is None).
            cache_loc_2d, commit_lens: ``[bs, W]`` slots with ``T = bs * W`` and ``[bs]``
                int32 counts; only the first ``commit_lens[b]`` rows of request ``b`` are
                stored (the accepted path; the rest are left as they are).
        """
        if taps.shape[0] == 0:
            return
        features = self.draft_model.project_target_hidden(taps)
        layers = self.draft_model.layers
        if self.stacked is not None:
            keys, values = self.stacked(features, positions)
        else:
            keys, values = zip(*(self.layer_kv(layer, features, positions) for layer in layers))
        kv_pool = self.draft_runner.token_to_kv_pool
        for layer, k, v in zip(layers, keys, values):
            attn = layer.self_attn.attn
            if cache_loc_2d is None:
                kv_pool.set_kv_buffer(attn, cache_loc, k, v, attn.k_scale, attn.v_scale)
            else:
                kv_pool.set_kv_buffer_prefix_valid(attn, cache_loc_2d, commit_lens, k, v, attn.k_scale, attn.v_scale)

    def layer_kv(self, layer: Any, features: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """One layer's K (normed, rotated) and V through the head's own modules: ``[T, kv_heads, head_dim]``."""
        attn = layer.self_attn
        k, v = attn.kv_proj_only(self.draft_model.prepare_context_hidden_for_kv(layer, features))
        k = attn.apply_k_rope(positions, attn.apply_k_norm(k))
        return k.view(-1, attn.num_kv_heads, attn.head_dim), v.view(-1, attn.num_kv_heads, attn.head_dim)
