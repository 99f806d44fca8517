"""The head's block attention through the tree kernel (``JETSPEC_HEAD_ATTENTION=tree``) on a CPU.

The stand-in Triton backend and the float64 kernel reference of ``test_tree_verify_attention`` serve the
head's block here: each block position must attend to its request's prefix and to the block positions up
to itself (causal), and bidirectional (``ENCODER_ONLY``) head layers must stay on SGLang's kernel. The GPU
test ``test_tiny_fp32_tree_head_attention_is_lossless_and_drafts_as_well`` runs it in a real engine.
"""

from __future__ import annotations

import types

import pytest
import torch

from jetspec_sglang.sglang import head_attention as ha
from jetspec_sglang.sglang import tree_verify_attention as tva
from jetspec_sglang.tree_layout import ancestor_mask
from test_tree_verify_attention import (
    D,
    GROUP,
    HKV,
    N,
    TritonAttnBackend,
    brute_force,
    layer,
    reference_kernel,
    verify_batch,
)


def test_select_head_attention(monkeypatch) -> None:
    monkeypatch.delenv(ha.ENV, raising=False)
    assert ha.select_head_attention() == "auto"
    assert ha.select_head_attention("sglang") == "sglang"
    monkeypatch.setenv(ha.ENV, "tree")
    assert ha.select_head_attention() == "tree"
    monkeypatch.setenv(ha.ENV, "flash")
    with pytest.raises(ValueError, match=r"JETSPEC_HEAD_ATTENTION must be one of \('auto', 'sglang', 'tree'\)"):
        ha.select_head_attention()


def test_chain_mask_is_causal_in_every_block() -> None:
    mask = ha.chain_mask(rows=3, width=N, device="cpu")
    chain = torch.arange(-1, N - 1).repeat(3, 1)
    want = ancestor_mask(chain, N - 1)  # [3, N, N]: node i sees j <= i
    assert torch.equal(want[0], torch.ones(N, N, dtype=torch.bool).tril())
    bits = (mask.view(3)[..., 0, None] >> torch.arange(N)) & 1
    assert torch.equal(bits.bool(), want)


def test_head_block_attends_to_the_prefix_and_the_positions_before_it(monkeypatch) -> None:
    monkeypatch.setattr(tva, "tree_attention", reference_kernel)
    pool, req_to_token, forward_batch, bs = verify_batch([7, 3])
    backend = TritonAttnBackend(pool, req_to_token)
    forward = ha.install_head_tree_attention(backend, rows=4, width=N, device="cpu")
    assert backend.forward_extend is forward
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(bs * N, HKV * GROUP * D, generator=gen)
    k, v = (torch.randn(bs * N, HKV * D, generator=gen) for _ in range(2))
    out = backend.forward_extend(q, k, v, layer(), forward_batch)
    assert backend.sglang_calls == 0 and forward.deferred_verify_layers == 0
    chain = torch.arange(-1, N - 1).repeat(bs, 1)
    want = brute_force(q.view(-1, HKV * GROUP, D), pool, req_to_token, forward_batch, chain)
    torch.testing.assert_close(out.view(-1, HKV * GROUP, D).double(), want, rtol=1e-5, atol=1e-5)


def test_a_bidirectional_head_stays_on_sglangs_kernel(monkeypatch) -> None:
    monkeypatch.setattr(tva, "tree_attention", reference_kernel)
    pool, req_to_token, forward_batch, bs = verify_batch([7, 3])
    backend = TritonAttnBackend(pool, req_to_token)
    forward = ha.install_head_tree_attention(backend, rows=4, width=N, device="cpu")
    encoder_only = layer(attn_type=types.SimpleNamespace(name="ENCODER_ONLY"))
    q = torch.zeros(bs * N, HKV * GROUP * D)
    assert backend.forward_extend(q, q[:, : HKV * D], q[:, : HKV * D], encoder_only, forward_batch) == "sglang"
    assert forward.deferred_verify_layers == 1  # so the metadata refill SGLang's kernel reads is kept


def test_auto_takes_the_tree_kernel_for_a_causal_head_where_the_backend_serves_it() -> None:
    triton = TritonAttnBackend(*verify_batch([7, 3])[:2])
    assert ha.resolve_head_attention("auto", True, triton) == ("tree", None)
    assert ha.resolve_head_attention("tree", True, triton) == ("tree", None)
    assert ha.resolve_head_attention("sglang", True, triton) == ("sglang", None)
    assert ha.resolve_head_attention("auto", False, triton) == ("sglang", None)  # bidirectional


def test_other_backends_keep_sglangs_attention_and_an_explicit_tree_says_why() -> None:
    class FlashInferAttnBackend:
        page_size = 1

    assert ha.resolve_head_attention("auto", True, FlashInferAttnBackend()) == ("sglang", None)
    choice, warning = ha.resolve_head_attention("tree", True, FlashInferAttnBackend())
    assert choice == "sglang"
    assert warning.startswith("JETSPEC_HEAD_ATTENTION=tree works with --attention-backend triton")
    assert warning.endswith("; the head keeps SGLang's attention")
