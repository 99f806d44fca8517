"""The JetSpec draft head: a few decoder layers conditioned on frozen target features.

One forward over ``[bonus, MASK x D]`` yields one distribution per tree depth.
The head owns no embedding and no ``lm_head``; callers pass the target's
embeddings in and project its output through the target's ``lm_head``.

Each layer's queries come from the block; its keys and values cover
``[context features; block]``. Context features are ``hidden_norm(fc(taps))``
where ``taps`` concatenates target decoder-layer outputs at
``target_layer_ids``. Context keys carry RoPE at their absolute positions, so
their K/V can be cached across steps (``context_kv``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head_config import DraftHeadConfig

ContextKV = list[tuple[Tensor, Tensor]]
"""Per draft layer ``(k, v)``, each ``[bs, num_kv_heads, T, head_dim]``, RoPE applied to ``k``."""

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Plain (NeoX-style, ``rotate_half``) RoPE at absolute positions."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``positions: [bs, T]`` -> ``cos, sin: [bs, 1, T, head_dim]`` in ``dtype``."""
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


class DraftAttention(nn.Module):
    def __init__(self, config: DraftHeadConfig) -> None:
        super().__init__()
        h, hd = config.hidden_size, config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = hd
        bias = config.attention_bias
        self.q_proj = nn.Linear(h, self.num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(h, self.num_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(h, self.num_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * hd, h, bias=bias)
        norm = (lambda: nn.RMSNorm(hd, eps=config.rms_norm_eps)) if config.qk_norm else nn.Identity
        self.q_norm = norm()
        self.k_norm = norm()

    def _heads(self, x: Tensor, n: int) -> Tensor:
        # [bs, T, n*hd] -> [bs, n, T, hd]
        return x.view(*x.shape[:-1], n, self.head_dim).transpose(1, 2)

    def context_kv(self, features: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """K/V of context features ``[bs, T, H]``; cacheable, they never change."""
        k = self.k_norm(self._heads(self.k_proj(features), self.num_kv_heads))
        v = self._heads(self.v_proj(features), self.num_kv_heads)
        return apply_rope(k, cos, sin), v

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, ctx: tuple[Tensor, Tensor], mask: Tensor
    ) -> Tensor:
        q = apply_rope(self.q_norm(self._heads(self.q_proj(x), self.num_heads)), cos, sin)
        k_blk, v_blk = self.context_kv(x, cos, sin)
        k = torch.cat((ctx[0], k_blk), dim=2)
        v = torch.cat((ctx[1], v_blk), dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class DraftMLP(nn.Module):
    def __init__(self, config: DraftHeadConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DraftDecoderLayer(nn.Module):
    def __init__(self, config: DraftHeadConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = DraftAttention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = DraftMLP(config)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, ctx: tuple[Tensor, Tensor], mask: Tensor
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, ctx, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class DraftHead(nn.Module):
    """DFlash-format draft head with a causal (JetSpec) or bidirectional (DFlash) block.

    Examples:
        >>> cfg = DraftHeadConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...     num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=50,
        ...     num_target_layers=4, target_layer_ids=(1, 2), mask_token_id=49)
        >>> head = DraftHead(cfg)
        >>> feats = head.project_context(torch.randn(1, 5, 64))
        >>> ctx = head.context_kv(feats, torch.arange(5)[None])
        >>> block = torch.randn(1, 4, 32)
        >>> head(block, torch.arange(5, 9)[None], ctx, head.block_mask(torch.ones(1, 5, dtype=torch.bool), 4)).shape
        torch.Size([1, 4, 32])
    """

    def __init__(self, config: DraftHeadConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.fc = nn.Linear(config.num_taps * h, h, bias=False)
        self.hidden_norm = nn.RMSNorm(h, eps=config.rms_norm_eps)
        self.layers = nn.ModuleList(DraftDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(h, eps=config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)

    # ----------------------------------------------------------------- context
    def project_context(self, taps: Tensor) -> Tensor:
        """``taps: [bs, T, num_taps * H]`` (target layer outputs, concatenated) -> ``[bs, T, H]``."""
        expected = self.fc.in_features
        if taps.shape[-1] != expected:
            raise ValueError(
                f"tap features have width {taps.shape[-1]}, the head expects {expected} "
                f"({self.config.num_taps} taps x hidden {self.config.hidden_size})"
            )
        return self.hidden_norm(self.fc(taps.to(self.fc.weight.dtype)))

    def context_kv(self, features: Tensor, positions: Tensor) -> ContextKV:
        """Per-layer K/V of projected context ``features: [bs, T, H]`` at ``positions: [bs, T]``."""
        cos, sin = self.rotary(positions, features.dtype)
        return [layer.self_attn.context_kv(features, cos, sin) for layer in self.layers]

    # ------------------------------------------------------------------ blocks
    def block_mask(self, context_valid: Tensor, block_len: int) -> Tensor:
        """Attention mask ``[bs, 1, B, T + B]`` (True = attend) for one block per request.

        Every block row sees the valid context (``context_valid: [bs, T]`` bool);
        inside the block it sees earlier rows and itself when the head is causal,
        and every row otherwise.
        """
        bs = context_valid.shape[0]
        dev = context_valid.device
        if self.config.causal:
            inner = torch.ones(block_len, block_len, dtype=torch.bool, device=dev).tril()
        else:
            inner = torch.ones(block_len, block_len, dtype=torch.bool, device=dev)
        ctx = context_valid[:, None, None, :].expand(bs, 1, block_len, -1)
        return torch.cat((ctx, inner.expand(bs, 1, block_len, block_len)), dim=-1)

    def forward(self, block_embeds: Tensor, block_positions: Tensor, context: ContextKV, mask: Tensor) -> Tensor:
        """Run the block.

        Parameters:
            block_embeds: ``[bs, B, H]`` target embeddings of ``[bonus, MASK, ...]``.
            block_positions: ``[bs, B]`` absolute positions.
            context: per-layer cached context K/V (see ``context_kv``), ``T`` tokens.
            mask: ``[bs, 1, B, T + B]`` bool, True = attend.

        Returns:
            ``[bs, B, H]`` final-normed hidden states; row ``d`` predicts the token at
            ``block_positions[:, d]`` (row 0, the bonus, predicts nothing).
        """
        x = block_embeds.to(self.fc.weight.dtype)
        cos, sin = self.rotary(block_positions, x.dtype)
        for layer, ctx in zip(self.layers, context):
            x = layer(x, cos, sin, ctx, mask)
        return self.norm(x)

    # --------------------------------------------------------------------- I/O
    def check_target(self, target_config: Any) -> None:
        """Raise ``ValueError`` naming both values if the head cannot serve this target."""
        check_head_matches_target(self.config, target_config)

    def save_pretrained(self, path: str | Path, dtype: Optional[torch.dtype] = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` in the published DFlash format."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        dtype_name = str(next(iter(state.values())).dtype).removeprefix("torch.")
        with open(path / CONFIG_NAME, "w", encoding="utf-8") as f:
            json.dump(self.config.to_hf_dict(dtype=dtype_name), f, indent=2, sort_keys=True)
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: Optional[torch.dtype] = None,
    ) -> "DraftHead":
        """Load a DFlash/JetSpec head from a local folder or a Hugging Face Hub repo id."""
        from safetensors.torch import load_file

        folder = resolve_head_folder(path_or_repo)
        config = DraftHeadConfig.from_json_file(folder / CONFIG_NAME)
        state: dict[str, Tensor] = {}
        for file in sorted(folder.glob("*.safetensors")):
            state.update(load_file(str(file)))
        if not state:
            raise FileNotFoundError(f"no *.safetensors weights in {folder}")
        head = cls(config)
        load_head_state(head, state)
        return head.to(device=device, dtype=dtype or next(iter(state.values())).dtype)


def load_head_state(head: DraftHead, state: dict[str, Tensor]) -> None:
    """Load published-format weights, tolerating a ``model.`` prefix; report mismatches by name."""
    state = {k.removeprefix("model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if "rotary" not in k}
    own = head.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"head checkpoint does not match its config: missing {missing}, unexpected {unexpected}")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != config shape {tuple(own[name].shape)}")
    head.load_state_dict(state, strict=True)


def resolve_head_folder(path_or_repo: str | Path) -> Path:
    """A local folder as is, otherwise a Hub snapshot (config and safetensors only)."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the folder holding config.json and *.safetensors")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_repo), allow_patterns=["*.json", "*.safetensors"]))


def check_head_matches_target(config: DraftHeadConfig, target_config: Any) -> None:
    """Raise ``ValueError`` if the head's hidden size, vocab or taps do not fit the target.

    ``target_config`` is an HF config object or dict (its text config is used).
    """
    text = target_config.get_text_config() if hasattr(target_config, "get_text_config") else target_config
    get = text.get if isinstance(text, dict) else (lambda k, d=None: getattr(text, k, d))
    problems = []
    if int(get("hidden_size")) != config.hidden_size:
        problems.append(f"head hidden_size={config.hidden_size} but target hidden_size={get('hidden_size')}")
    if int(get("vocab_size")) != config.vocab_size:
        problems.append(f"head vocab_size={config.vocab_size} but target vocab_size={get('vocab_size')}")
    layers = int(get("num_hidden_layers"))
    if max(config.target_layer_ids) >= layers:
        problems.append(f"head target_layer_ids={list(config.target_layer_ids)} but the target has {layers} layers")
    if problems:
        raise ValueError(
            "draft head does not fit the target model: " + "; ".join(problems)
            + ". Use a head trained for this target (jetspec train) or pass the matching --speculative-draft-model-path."
        )


def per_depth_topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` token ids and their log-probs, normalised over the full vocabulary.

    Parameters:
        logits: ``[..., V]`` (any float dtype; normalised in float32).

    Returns:
        ``ids: [..., k]`` int64 and ``logprobs: [..., k]`` float32, best first.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = logprobs.topk(k, dim=-1)
    return ids, values


def tap_layer_outputs(hidden_states: Sequence[Tensor], layer_ids: Sequence[int]) -> Tensor:
    """Concatenate decoder-layer outputs from an HF ``hidden_states`` tuple.

    HF's ``hidden_states[0]`` is the embedding output, so decoder layer ``L``'s
    output is ``hidden_states[L + 1]``.
    """
    return torch.cat([hidden_states[i + 1] for i in layer_ids], dim=-1)
