"""Configuration of a JetSpec draft head, and its HF ``config.json`` form.

The on-disk format is the published DFlash one (``architectures:
["DFlashDraftModel"]``, a Qwen3-style layer config plus ``dflash_config``), so
public JetSpec and DFlash heads load unchanged and heads we train load in
SGLang's own DFLASH. The in-block causal flag is read from every spelling in
use (``dflash_config.causal``, ``dflash_config.causal_head`` for JetSpec, and
top-level ``is_causal`` for SGLang) and written in all of them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

ARCHITECTURE = "DFlashDraftModel"


def default_target_layer_ids(num_target_layers: int, num_taps: int) -> tuple[int, ...]:
    """Evenly spaced tap layers over ``1 .. num_target_layers - 3`` (the DFlash rule).

    One tap sits at the middle layer. Layer ids are 0-based decoder-layer
    indices; the tap is that layer's output (HF ``hidden_states[id + 1]``).

    Examples:
        >>> default_target_layer_ids(36, 5)
        (1, 9, 17, 25, 33)
        >>> default_target_layer_ids(30, 1)
        (15,)
    """
    if num_target_layers <= 0 or num_taps <= 0:
        raise ValueError(
            f"need positive layer counts, got num_target_layers={num_target_layers}, num_taps={num_taps}"
        )
    if num_taps == 1:
        return (num_target_layers // 2,)
    start, end = 1, num_target_layers - 3
    if end < start:
        raise ValueError(
            f"a target with {num_target_layers} layers is too shallow for {num_taps} taps; "
            "pass target_layer_ids explicitly"
        )
    span = end - start
    return tuple(int(round(start + i * span / (num_taps - 1))) for i in range(num_taps))


@dataclass(frozen=True, slots=True)
class DraftHeadConfig:
    """Shape and semantics of a draft head.

    ``hidden_size`` and ``vocab_size`` must equal the target's: the head reads the
    target's embeddings and projects through the target's ``lm_head``.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    num_target_layers: int
    target_layer_ids: tuple[int, ...]
    mask_token_id: int
    block_size: int = 16
    causal: bool = True
    qk_norm: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    hidden_act: str = "silu"
    attention_bias: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.target_layer_ids:
            raise ValueError(
                "target_layer_ids is empty: the head needs at least one target layer to read; "
                "set dflash_config.target_layer_ids in the head's config.json"
            )
        bad = [i for i in self.target_layer_ids if not 0 <= i < self.num_target_layers]
        if bad:
            raise ValueError(
                f"target_layer_ids {bad} are outside the target's {self.num_target_layers} layers"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.block_size < 2:
            raise ValueError(f"block_size must be >= 2 (bonus + one mask), got {self.block_size}")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id={self.mask_token_id} is outside the vocab of {self.vocab_size}")
        if self.hidden_act != "silu":
            raise ValueError(f"only silu MLPs are supported, got hidden_act={self.hidden_act!r}")

    @property
    def num_taps(self) -> int:
        return len(self.target_layer_ids)

    @property
    def max_depth(self) -> int:
        """Deepest tree level the head was trained to draft: ``block_size - 1``."""
        return self.block_size - 1

    @classmethod
    def for_target(
        cls,
        target_config: Any,
        *,
        num_hidden_layers: int = 2,
        num_taps: Optional[int] = None,
        target_layer_ids: Optional[tuple[int, ...]] = None,
        mask_token_id: Optional[int] = None,
        block_size: int = 16,
        causal: bool = True,
        intermediate_size: Optional[int] = None,
    ) -> "DraftHeadConfig":
        """A fresh head shaped for ``target_config`` (an HF config object or dict).

        Attention geometry, norms and RoPE follow the target. ``num_taps`` defaults
        to the number of draft layers, as in DFlash. ``mask_token_id`` defaults to
        the last vocab row, which chat tokenizers rarely emit.
        """
        get = _getter(target_config)
        num_target_layers = int(get("num_hidden_layers"))
        hidden = int(get("hidden_size"))
        heads = int(get("num_attention_heads"))
        if target_layer_ids is None:
            target_layer_ids = default_target_layer_ids(num_target_layers, num_taps or num_hidden_layers)
        vocab = int(get("vocab_size"))
        return cls(
            hidden_size=hidden,
            intermediate_size=int(intermediate_size or get("intermediate_size")),
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=heads,
            num_key_value_heads=int(get("num_key_value_heads", heads)),
            head_dim=int(get("head_dim", None) or hidden // heads),
            vocab_size=vocab,
            num_target_layers=num_target_layers,
            target_layer_ids=tuple(int(i) for i in target_layer_ids),
            mask_token_id=vocab - 1 if mask_token_id is None else int(mask_token_id),
            block_size=block_size,
            causal=causal,
            rms_norm_eps=float(get("rms_norm_eps", 1e-6)),
            rope_theta=_rope_theta(get, strict=False),
            max_position_embeddings=int(get("max_position_embeddings", 32768)),
        )

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> "DraftHeadConfig":
        """Parse a DFlash/JetSpec ``config.json`` dict."""
        dflash = dict(d.get("dflash_config") or {})
        get = _getter(d)
        heads = int(get("num_attention_heads"))
        hidden = int(get("hidden_size"))
        num_layers = int(get("num_hidden_layers"))
        num_target_layers = get("num_target_layers", None)
        ids = dflash.get("target_layer_ids", d.get("target_layer_ids"))
        if ids is None:
            if num_target_layers is None:
                raise ValueError(
                    "the head config has neither dflash_config.target_layer_ids nor num_target_layers; "
                    "add dflash_config.target_layer_ids (0-based target decoder layers the head reads)"
                )
            ids = default_target_layer_ids(int(num_target_layers), num_layers)
        ids = tuple(int(i) for i in ids)
        if num_target_layers is None:
            num_target_layers = max(ids) + 4
        mask_token_id = dflash.get("mask_token_id", d.get("mask_token_id"))
        if mask_token_id is None:
            raise ValueError("the head config has no dflash_config.mask_token_id")
        causal = bool(dflash.get("causal", dflash.get("causal_head", d.get("is_causal", False))))
        known = {f.name for f in dataclasses.fields(cls)} | {
            "dflash_config", "architectures", "model_type", "is_causal", "rope_parameters",
            "rope_scaling", "torch_dtype", "dtype", "tie_word_embeddings", "transformers_version", "layer_types",
        }
        rope_scaling = d.get("rope_scaling") or {}
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
            raise ValueError(f"unsupported rope_scaling {rope_scaling!r}: only default RoPE is implemented")
        return cls(
            hidden_size=hidden,
            intermediate_size=int(get("intermediate_size")),
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=int(get("num_key_value_heads", heads)),
            head_dim=int(get("head_dim", None) or hidden // heads),
            vocab_size=int(get("vocab_size")),
            num_target_layers=int(num_target_layers),
            target_layer_ids=ids,
            mask_token_id=int(mask_token_id),
            block_size=int(dflash.get("block_size", d.get("block_size", 16))),
            causal=causal,
            qk_norm=bool(d.get("qk_norm", True)),
            rms_norm_eps=float(get("rms_norm_eps", 1e-6)),
            rope_theta=_rope_theta(get, strict=True),
            max_position_embeddings=int(get("max_position_embeddings", 32768)),
            hidden_act=str(get("hidden_act", "silu")),
            attention_bias=bool(get("attention_bias", False)),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_hf_dict(self, dtype: str = "bfloat16") -> dict[str, Any]:
        """The ``config.json`` dict, readable by SGLang's DFLASH and by DFlash/JetSpec code."""
        d = dict(self.extra)
        d.update(
            architectures=[ARCHITECTURE],
            model_type="qwen3",
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            vocab_size=self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            max_position_embeddings=self.max_position_embeddings,
            hidden_act=self.hidden_act,
            attention_bias=self.attention_bias,
            tie_word_embeddings=False,
            num_target_layers=self.num_target_layers,
            block_size=self.block_size,
            is_causal=self.causal,
            # SGLang's DFlashDraftModel honours is_causal only when layer_types is present.
            layer_types=["full_attention"] * self.num_hidden_layers,
            qk_norm=self.qk_norm,
            torch_dtype=dtype,
            dflash_config={
                "target_layer_ids": list(self.target_layer_ids),
                "mask_token_id": self.mask_token_id,
                "block_size": self.block_size,
                "causal": self.causal,
            },
        )
        return d

    @classmethod
    def from_json_file(cls, path: str | Path) -> "DraftHeadConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_hf_dict(json.load(f))


def _getter(config: Any):
    """Uniform ``get(key, default)`` over HF config objects and plain dicts."""
    if isinstance(config, Mapping):
        text = config.get("text_config") or config

        def get(key: str, *default: Any) -> Any:
            if key in text:
                return text[key]
            if default:
                return default[0]
            raise ValueError(f"config has no {key!r}")

        return get
    text = config.get_text_config() if hasattr(config, "get_text_config") else config

    def get_attr(key: str, *default: Any) -> Any:
        if hasattr(text, key):
            return getattr(text, key)
        if default:
            return default[0]
        raise ValueError(f"config has no {key!r}")

    return get_attr


def _rope_theta(get, *, strict: bool) -> float:
    """RoPE base from either the v4 ``rope_theta`` or the v5 ``rope_parameters`` field.

    ``strict`` rejects scaled RoPE variants (a head's own config must use plain
    RoPE); a fresh head only borrows the target's base, not its scaling.
    """
    params = get("rope_parameters", None)
    if isinstance(params, Mapping) and "rope_theta" in params:
        if strict and params.get("rope_type", "default") != "default":
            raise ValueError(f"unsupported rope_parameters {dict(params)!r}: only default RoPE is implemented")
        return float(params["rope_theta"])
    return float(get("rope_theta", 10000.0))
