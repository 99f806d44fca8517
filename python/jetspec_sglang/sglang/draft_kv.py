"""Draft-head context K/V for committed tokens, written into the draft KV pool (sglang 0.5.17).

The head attends to context features ``hidden_norm(fc(taps))`` of every committed
token. Their per-layer K/V depend only on the token's taps and position, so they
are written once, at the token's KV slot, right after the target produced the
taps: after prefill (every prompt token; a radix-cache hit later reuses them)
and after each verify (the accepted path).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor


class DraftContextWriter:
    """Projects target taps into each draft layer's K/V and stores them.

    ``draft_runner`` is the head's ModelRunner; its ``model`` is SGLang's
    ``DFlashDraftModel`` and its KV pool exists once the scheduler allocated it.
    """

    def __init__(self, draft_runner: Any) -> None:
        self.draft_runner = draft_runner
        self.draft_model = draft_runner.model

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
        kv_pool = self.draft_runner.token_to_kv_pool
        for layer in self.draft_model.layers:
            attn = layer.self_attn
            k, v = attn.kv_proj_only(self.draft_model.prepare_context_hidden_for_kv(layer, features))
            k = attn.apply_k_rope(positions, attn.apply_k_norm(k))
            k = k.view(-1, attn.num_kv_heads, attn.head_dim)
            v = v.view(-1, attn.num_kv_heads, attn.head_dim)
            if cache_loc_2d is None:
                kv_pool.set_kv_buffer(attn.attn, cache_loc, k, v, attn.attn.k_scale, attn.attn.v_scale)
            else:
                kv_pool.set_kv_buffer_prefix_valid(
                    attn.attn, cache_loc_2d, commit_lens, k, v, attn.attn.k_scale, attn.attn.v_scale
                )
