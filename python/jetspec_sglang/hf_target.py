"""A Hugging Face causal LM seen as a speculative-decoding target.

It runs forwards with explicit positions and an optional tree mask, returns
logits together with the tap-layer features the draft head reads, and keeps
only the committed entries of its KV cache after a tree verify.
"""

from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .draft_head import tap_layer_outputs


class HFTarget:
    """Wraps ``model`` (an HF ``*ForCausalLM``) with the taps at ``layer_ids``."""

    def __init__(self, model: nn.Module, layer_ids: Sequence[int]) -> None:
        self.model = model
        self.layer_ids = tuple(layer_ids)
        self.embed_tokens: nn.Module = model.get_input_embeddings()
        self.lm_head: nn.Module = model.get_output_embeddings()
        # transformers >= 5.2x renamed ``past_key_values`` to ``cache`` (input and output).
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        cache: Optional[object],
        tree_mask: Optional[Tensor] = None,
        *,
        with_taps: bool = True,
    ) -> tuple[Tensor, Optional[Tensor], object]:
        """One target forward.

        Parameters:
            input_ids: ``[1, T]`` int64.
            positions: ``[1, T]`` int64 absolute positions.
            cache: the HF cache from the previous call, or None for a prefill.
            tree_mask: ``[1, T, past + T]`` bool (True = attend), or None for causal.

        Returns:
            ``logits [1, T, V]``, ``taps [1, T, len(layer_ids) * H]`` (None without
            ``with_taps``) and the cache.
        """
        kwargs: dict[str, object] = {self._cache_kwarg: cache}
        if tree_mask is not None:
            additive = torch.zeros(tree_mask.shape, dtype=self.dtype, device=tree_mask.device)
            additive.masked_fill_(~tree_mask, torch.finfo(self.dtype).min)
            kwargs["attention_mask"] = additive[:, None]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=with_taps,
            **kwargs,
        )
        taps = tap_layer_outputs(out.hidden_states, self.layer_ids) if with_taps else None
        return out.logits, taps, getattr(out, self._cache_kwarg)

    @staticmethod
    def keep_committed(cache: object, prefix_len: int, tree_slots: Tensor) -> None:
        """Drop rejected tree entries: keep ``[0, prefix_len)`` plus ``prefix_len + tree_slots``.

        ``tree_slots``: ``[n]`` int64 accepted node slots, root first.
        """
        layers = getattr(cache, "layers", None)
        if layers is None:
            raise NotImplementedError(f"unsupported cache type {type(cache).__name__}: expected an HF DynamicCache")
        for layer in layers:
            if getattr(layer, "sliding_window", None) or not hasattr(layer, "keys"):
                raise NotImplementedError(
                    f"{type(layer).__name__}: the reference engine supports full-attention KV caches only"
                )
            keep = torch.cat(
                (torch.arange(prefix_len, device=layer.keys.device), prefix_len + tree_slots.to(layer.keys.device))
            )
            layer.keys = layer.keys.index_select(-2, keep)
            layer.values = layer.values.index_select(-2, keep)
