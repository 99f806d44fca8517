"""A Hugging Face causal LM seen as a speculative-decoding target.

It runs forwards with explicit positions and an optional tree mask, returns
logits together with the tap-layer features the draft head reads, and keeps
only the committed entries of its KV cache after a tree verify.

Targets with sliding-window layers (Gemma-3, Mistral) keep every key in a full cache, so that a rejected
branch can be dropped like any other, and see the window through the mask: a tree node at position ``q`` sees
a key at position ``k`` of its prefix or ancestors iff ``q - k < sliding_window``, as HF's own masks say.
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
        self.layer_types, self.sliding_window = attention_layer_types(model.config)

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
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache()  # full layers only, whatever the config's layer types (see the module docstring)
        kwargs: dict[str, object] = {self._cache_kwarg: cache}
        if tree_mask is not None:
            masks = {kind: self._additive(self._visible(kind, tree_mask, positions)) for kind in self.layer_types}
            kwargs["attention_mask"] = masks if len(masks) > 1 else next(iter(masks.values()))
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=with_taps,
            **kwargs,
        )
        taps = tap_layer_outputs(out.hidden_states, self.layer_ids) if with_taps else None
        return out.logits, taps, getattr(out, self._cache_kwarg)

    def _visible(self, kind: str, tree_mask: Tensor, positions: Tensor) -> Tensor:
        """``tree_mask`` for a ``kind`` layer: as given for full attention, within the window for sliding."""
        if kind == "full_attention":
            return tree_mask
        past = tree_mask.shape[-1] - positions.shape[-1]
        key_positions = torch.cat((torch.arange(past, device=positions.device)[None], positions), dim=-1)
        return tree_mask & (positions[:, :, None] - key_positions[:, None, :] < self.sliding_window)

    def _additive(self, visible: Tensor) -> Tensor:
        """``[1, T, K]`` bool (True = attend) as HF's ``[1, 1, T, K]`` additive mask."""
        additive = torch.zeros(visible.shape, dtype=self.dtype, device=visible.device)
        return additive.masked_fill_(~visible, torch.finfo(self.dtype).min)[:, None]

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


def attention_layer_types(config: object) -> tuple[tuple[str, ...], Optional[int]]:
    """The distinct attention kinds of ``config``'s layers (HF's ``layer_types``) and its sliding window.

    Without ``layer_types``, a set ``sliding_window`` means every layer slides (Mistral). Kinds other than
    full and sliding attention (chunked, linear) are refused: the reference engine has no mask for them.
    """
    window = getattr(config, "sliding_window", None)
    default = "sliding_attention" if window else "full_attention"
    kinds = tuple(dict.fromkeys(getattr(config, "layer_types", None) or (default,)))
    unsupported = [kind for kind in kinds if kind not in ("full_attention", "sliding_attention")]
    if unsupported:
        raise NotImplementedError(f"the reference engine verifies full and sliding-window attention only, "
                                  f"not {unsupported} layers")
    if "sliding_attention" in kinds and not window:
        raise ValueError("the config has sliding_attention layers but no sliding_window")
    return kinds, window
