"""``sglang.draft_kv.StackedContextKV`` (``JETSPEC_CONTEXT_KV=fused``): every head layer's context K and V through
SGLang's fused KV materialization, against the head's per-layer computation written out in PyTorch (the K/V slice
of ``qkv_proj``, the per-head K RMSNorm, NeoX RoPE from the layer's cos/sin table).

SGLang's module is the installed one, or on a CPU machine loaded from its source (``JETSPEC_SGLANG_SRC``; CI unpacks
it), where its Triton kernel runs in Triton's interpreter (``triton_interpreter``); the layers stand in for
``DFlashDecoderLayer``.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType, SimpleNamespace

import pytest
import torch

from jetspec_sglang.sglang.draft_kv import StackedContextKV, select_context_kv
from sglang_source import sglang_source
from triton_interpreter import compiled_or_interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODULE = ("sglang", "kernels", "ops", "speculative", "fused_kv_materialize.py")
# (layers, q heads, kv heads, head_dim, hidden, tokens)
CASES = ((4, 9, 3, 64, 96, 17), (2, 8, 2, 128, 64, 5), (1, 4, 4, 32, 48, 40))


def materialize_module() -> ModuleType | None:
    """SGLang 0.5.17's ``fused_kv_materialize``: installed (GPU machines), else from its source (CPU CI), else None."""
    try:
        return importlib.import_module("sglang.kernels.ops.speculative.fused_kv_materialize")
    except ImportError:
        pass
    src = sglang_source()
    path = src.joinpath(*MODULE) if src else None
    if path is None or not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("fused_kv_materialize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_layers(gen: torch.Generator, n_layers: int, q_heads: int, kv_heads: int, head_dim: int, hidden: int,
                max_position: int) -> list:
    """Layers with what the fused path reads of ``DFlashDecoderLayer.self_attn``, random weights, NeoX RoPE."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.arange(max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
    rope = SimpleNamespace(cos_sin_cache=torch.cat([angles.cos(), angles.sin()], dim=-1).to(DEVICE),
                           rotary_dim=head_dim, is_neox_style=True)  # fmt: skip
    q_size, kv_size = q_heads * head_dim, kv_heads * head_dim
    return [SimpleNamespace(self_attn=SimpleNamespace(
        qkv_proj=SimpleNamespace(weight=torch.randn(q_size + 2 * kv_size, hidden, generator=gen).to(DEVICE)),
        q_size=q_size, kv_size=kv_size, num_kv_heads=kv_heads, head_dim=head_dim, rotary_emb=rope,
        k_norm=SimpleNamespace(weight=(1 + 0.1 * torch.randn(head_dim, generator=gen)).to(DEVICE),
                               variance_epsilon=1e-6),
    )) for _ in range(n_layers)]  # fmt: skip


def layer_kv_reference(attn: SimpleNamespace, features: torch.Tensor, positions: torch.Tensor) -> tuple:
    """One layer's K and V as the head computes them, in float64."""
    w = attn.qkv_proj.weight.double()[attn.q_size :]
    kv = features.double() @ w.T
    k = kv[:, : attn.kv_size].view(-1, attn.num_kv_heads, attn.head_dim)
    v = kv[:, attn.kv_size :].view(-1, attn.num_kv_heads, attn.head_dim)
    k = k * torch.rsqrt(k.square().mean(-1, keepdim=True) + attn.k_norm.variance_epsilon) * attn.k_norm.weight.double()
    half = attn.head_dim // 2
    cos, sin = attn.rotary_emb.cos_sin_cache.double()[positions].split(half, dim=-1)
    first, second = k[..., :half], k[..., half:]
    k = torch.cat([first * cos[:, None] - second * sin[:, None], second * cos[:, None] + first * sin[:, None]], -1)
    return k, v


def stacked_errors() -> dict:
    """Per case: the largest error of the stacked K and V against ``layer_kv_reference``, relative to the largest
    value, and whether the outputs have the per-layer shape."""
    module = materialize_module()
    results = {}
    for seed, (n_layers, q_heads, kv_heads, head_dim, hidden, tokens) in enumerate(CASES):
        gen = torch.Generator().manual_seed(seed)
        layers = fake_layers(gen, n_layers, q_heads, kv_heads, head_dim, hidden, max_position=4096)
        features = torch.randn(tokens, hidden, generator=gen).to(DEVICE)
        positions = torch.randint(0, 4096, (tokens,), generator=gen).to(DEVICE)
        keys, values = StackedContextKV(layers, 4096, materialize=module)(features, positions)
        errors = {"shape": list(keys.shape) == [n_layers, tokens, kv_heads, head_dim] == list(values.shape)}
        for i, layer in enumerate(layers):
            k, v = layer_kv_reference(layer.self_attn, features, positions)
            for name, got, want in (("k", keys[i], k), ("v", values[i], v)):
                error = ((got.double().cpu() - want.cpu()).abs().max() / want.abs().max()).item()
                errors[name] = max(errors.get(name, 0.0), error)
        results[str(seed)] = errors
    return results


@pytest.fixture(scope="module")
def errors() -> dict:
    if materialize_module() is None:
        pytest.skip("needs SGLang 0.5.17's source (JETSPEC_SGLANG_SRC, unpacked by .ci/run)")
    pytest.importorskip("triton")
    return compiled_or_interpreted("test_draft_kv", "stacked_errors")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_stacked_context_kv_equals_the_per_layer_computation(errors: dict, case: int) -> None:
    e = errors[str(case)]
    assert e["shape"]
    assert e["k"] < 1e-5 and e["v"] < 1e-5, e  # float32 (TF32 off) against float64


def test_switch_takes_layers_or_fused(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_CONTEXT_KV", raising=False)
    assert select_context_kv() == "layers"
    monkeypatch.setenv("JETSPEC_CONTEXT_KV", "fused")
    assert select_context_kv() == "fused"
    monkeypatch.setenv("JETSPEC_CONTEXT_KV", "stacked")
    with pytest.raises(ValueError, match="JETSPEC_CONTEXT_KV must be one of"):
        select_context_kv()
