"""The tree-verify attention (``JETSPEC_VERIFY_ATTENTION``: ``auto`` takes it for wide targets) on a CPU.

A stand-in for SGLang's Triton backend (same attribute names) takes the mixin, and the
kernel is replaced by its float64 reference (the kernel itself is tested in
``test_tree_attention.py``). What is checked here is the plumbing: the tree's KV is written at
``out_cache_loc`` first, each node attends to exactly its request's prefix plus its own
ancestors (compared with a brute-force softmax), and everything else goes to SGLang. The GPU
test ``test_tiny_fp32_tree_attention_is_token_identical`` runs it inside a real server.
"""

from __future__ import annotations

import abc
import types

import pytest
import torch

from jetspec_sglang.kernels import tree_attention_reference
from jetspec_sglang.kernels.tree_attention import merge_counter_slots
from jetspec_sglang.sglang import tree_verify_attention as tva
from jetspec_sglang.tree_layout import ancestor_mask

HKV, GROUP, D, N = 2, 2, 64, 5


class MHATokenToKVPool:
    """Stand-in for SGLang's KV pool: the calls the mixin makes, over plain tensors (page_size 1)."""

    def __init__(self, slots: int) -> None:
        self.k = torch.full((slots, HKV, D), float("nan"))
        self.v = torch.full((slots, HKV, D), float("nan"))

    def set_kv_buffer(self, layer, loc, k, v) -> None:
        self.k[loc] = k.view(-1, HKV, D)
        self.v[loc] = v.view(-1, HKV, D)

    def get_key_buffer(self, layer_id: int):
        return self.k

    def get_value_buffer(self, layer_id: int):
        return self.v


class AttentionBackend(abc.ABC):
    """Stand-in for SGLang's abstract base (an ABC: instances of its subclasses refuse a ``__class__`` swap)."""


class TritonAttnBackend(AttentionBackend):
    """Stand-in for SGLang's backend: its attribute names, and a forward_extend that records calls."""

    def __init__(self, pool: MHATokenToKVPool, req_to_token: torch.Tensor) -> None:
        self.token_to_kv_pool, self.req_to_token, self.max_context_len, self.page_size = pool, req_to_token, 64, 1
        self.sglang_calls = 0

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        self.sglang_calls += 1
        return "sglang"


def reference_kernel(q, k_buffer, v_buffer, req_to_token, req_pool_indices, prefix_lens, tree_mask, sm_scale,
                     max_prefix_len, out, fp32_dot, merge_counters=None, sliding_window=-1, positions=None,
                     tile=None):  # fmt: skip
    reference_kernel.fp32_dots.append(fp32_dot)
    reference_kernel.merge_counters.append(merge_counters)
    reference_kernel.tiles.append(tile)
    out.copy_(tree_attention_reference(q, k_buffer, v_buffer, req_to_token, req_pool_indices, prefix_lens, tree_mask,
                                       sm_scale, sliding_window=sliding_window, positions=positions))  # fmt: skip
    return out


reference_kernel.fp32_dots = []  # what each call was given
reference_kernel.merge_counters = []
reference_kernel.tiles = []


def layer(**changes) -> types.SimpleNamespace:
    plain = dict(layer_id=0, tp_q_head_num=HKV * GROUP, tp_k_head_num=HKV, qk_head_dim=D, v_head_dim=D, scaling=D**-0.5,
                 sliding_window_size=-1, logit_cap=0.0, k_scale=None, is_cross_attention=False,
                 xai_temperature_len=-1, attn_type=types.SimpleNamespace(name="DECODER"))  # fmt: skip
    return types.SimpleNamespace(**{**plain, **changes})


def verify_batch(prefix_lens: list[int], verify: bool = True):
    """Two requests' pool rows, prefix KV filled, and the ForwardBatch fields the mixin reads."""
    gen = torch.Generator().manual_seed(0)
    bs = len(prefix_lens)
    req_to_token = torch.randperm(64, generator=gen).to(torch.int32).view(4, 16)
    req_pool_indices = torch.tensor([2, 0])
    pool = MHATokenToKVPool(64)
    for row, p in zip(req_pool_indices.tolist(), prefix_lens):
        pool.k[req_to_token[row, :p].long()] = torch.randn(p, HKV, D, generator=gen)
        pool.v[req_to_token[row, :p].long()] = torch.randn(p, HKV, D, generator=gen)
    out_cache_loc = torch.cat([req_to_token[r, p : p + N] for r, p in zip(req_pool_indices.tolist(), prefix_lens)])
    forward_batch = types.SimpleNamespace(
        forward_mode=types.SimpleNamespace(is_target_verify=lambda: verify), req_pool_indices=req_pool_indices,
        seq_lens=torch.tensor(prefix_lens, dtype=torch.int32), out_cache_loc=out_cache_loc.long(),
        positions=torch.zeros(bs * N, dtype=torch.int64))  # a test's tree sets them: prefix length plus depth
    return pool, req_to_token, forward_batch, bs


def brute_force(q, pool, req_to_token, forward_batch, parents, window: int = -1) -> torch.Tensor:
    """Per node and head: softmax over its request's prefix keys and its own tree ancestors (itself included),
    those within ``window`` positions of the node if ``window >= 0`` (a node's position: prefix plus depth)."""
    anc = ancestor_mask(parents, N - 1)
    depth = anc.sum(-1) - 1
    out = torch.empty(q.shape[0], HKV * GROUP, D, dtype=torch.float64)
    for b, (row, p) in enumerate(zip(forward_batch.req_pool_indices.tolist(), forward_batch.seq_lens.tolist())):
        for i in range(N):
            near = range(p) if window < 0 else range(max(0, p + int(depth[b, i]) - window), p)
            ancestors = [j for j in range(N) if anc[b, i, j] and (window < 0 or depth[b, i] - depth[b, j] <= window)]
            keys = [int(req_to_token[row, t]) for t in near] + [int(req_to_token[row, p + j]) for j in ancestors]
            for h in range(HKV * GROUP):
                scores = pool.k[keys, h // GROUP].double() @ q[b * N + i, h].double() * D**-0.5
                out[b * N + i, h] = torch.softmax(scores, 0) @ pool.v[keys, h // GROUP].double()
    return out


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(tva, "tree_attention", reference_kernel)
    pool, req_to_token, forward_batch, bs = verify_batch([7, 3])
    backend = TritonAttnBackend(pool, req_to_token)
    mask = tva.TreeMaskBuffer(capacity=4, budget=N, device="cpu")
    tva.install_tree_verify_attention(backend, mask)
    return backend, mask, pool, req_to_token, forward_batch, bs


@pytest.mark.parametrize("window, layout", [(-1, "flat"), (2, "flat"), (5, "flat"), (2, "gemma3")])
def test_verify_attends_to_the_prefix_and_the_ancestors(installed, window: int, layout: str) -> None:
    """Within the layer's sliding window, if it has one: a node at position p sees positions p - window to p,
    its prefix's and its ancestors' (their positions are the prefix length plus their depth). ``gemma3``: q and k
    come as SGLang's Gemma-3 layers pass them, ``[1, T, H, D]`` views of ``[1, H, T, D]`` tensors."""
    backend, mask, pool, req_to_token, forward_batch, bs = installed
    parents = torch.tensor([[-1, 0, 0, 1, 3], [-1, 0, 1, 0, 2]])
    mask.write(parents, max_depth=N - 1)
    depth = ancestor_mask(parents, N - 1).sum(-1) - 1
    forward_batch.positions = (forward_batch.seq_lens[:, None] + depth).flatten().long()
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(bs * N, HKV * GROUP * D, generator=gen)
    k, v = (torch.randn(bs * N, HKV * D, generator=gen) for _ in range(2))
    if layout == "gemma3":
        heads_first = q.view(bs * N, HKV * GROUP, D).transpose(0, 1).contiguous()[None]  # [1, H, T, D]
        q = heads_first.permute(0, 2, 1, 3)
        k = k.view(bs * N, HKV, D).transpose(0, 1).contiguous()[None].permute(0, 2, 1, 3)
    out = backend.forward_extend(q, k, v, layer(sliding_window_size=window), forward_batch)
    assert backend.sglang_calls == 0 and isinstance(backend.forward_extend, tva.TreeVerifyForwardExtend)
    assert backend.forward_extend.deferred_verify_layers == 0
    assert torch.equal(pool.k[forward_batch.out_cache_loc], k.view(-1, HKV, D))  # the tree's KV, written first
    want = brute_force(q.view(-1, HKV * GROUP, D), pool, req_to_token, forward_batch, parents, window)
    torch.testing.assert_close(out.view(-1, HKV * GROUP, D).double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", [dict(logit_cap=30.0), dict(k_scale=0.5),
                                    dict(v_head_dim=32), dict(is_cross_attention=True), dict(xai_temperature_len=8),
                                    dict(attn_type=types.SimpleNamespace(name="ENCODER_ONLY"))])  # fmt: skip
def test_layers_the_kernel_does_not_cover_go_to_sglang(installed, change: dict) -> None:
    backend, _, _, _, forward_batch, bs = installed
    q = torch.zeros(bs * N, HKV * GROUP * D)
    assert backend.forward_extend(q, q, q, layer(**change), forward_batch) == "sglang"
    assert backend.forward_extend.deferred_verify_layers == 1  # SGLang's kernel reads the verify metadata now


def test_other_modes_and_extras_go_to_sglang(installed) -> None:
    backend, _, _, _, forward_batch, bs = installed
    q = torch.zeros(bs * N, HKV * GROUP * D)
    assert backend.forward_extend(q, q, q, layer(), forward_batch, sinks=torch.zeros(4)) == "sglang"
    assert backend.forward_extend(q.double(), q.double(), q.double(), layer(), forward_batch) == "sglang"  # no fp64 kernel
    assert backend.forward_extend(q, None, None, layer(), forward_batch) == "sglang"
    prefill = types.SimpleNamespace(**{**vars(forward_batch), "forward_mode": types.SimpleNamespace(is_target_verify=lambda: False)})
    assert backend.forward_extend(q, q, q, layer(), prefill) == "sglang"
    assert backend.sglang_calls == 4 and backend.forward_extend.deferred_verify_layers == 3  # the prefill is no verify


def test_mask_buffer_starts_as_lone_roots_and_keeps_its_address() -> None:
    mask = tva.TreeMaskBuffer(capacity=3, budget=40, device="cpu")
    address = mask.buffer.data_ptr()
    assert mask.buffer.shape == (3, 40, 2)
    assert mask.buffer[0, 33].tolist() == [0, 1 << 1] and mask.buffer[2, 0].tolist() == [1, 0]
    chain = torch.arange(-1, 39)[None]  # node i under node i - 1: every earlier node is an ancestor
    mask.write(chain, max_depth=39)
    assert mask.buffer[0, 39].tolist() == [-1, (1 << 8) - 1] and mask.buffer[1, 39].tolist() == [0, 1 << 7]
    assert mask.buffer.data_ptr() == address and mask.view(2).shape == (2, 40, 2)
    with pytest.raises(ValueError, match="exceeds the tree-mask buffer"):
        mask.view(4)


def test_install_names_the_fix_for_other_backends(monkeypatch) -> None:
    class FlashInferAttnBackend:
        page_size = 1

    with pytest.raises(ValueError, match="--attention-backend triton"):
        tva.install_tree_verify_attention(FlashInferAttnBackend(), None)
    backend = TritonAttnBackend(MHATokenToKVPool(1), torch.zeros(1, 1, dtype=torch.int32))
    backend.page_size = 16
    with pytest.raises(ValueError, match="--page-size 1"):
        tva.install_tree_verify_attention(backend, None)
    backend.page_size = 1
    backend._translate_kv_loc = lambda loc: loc  # a unified pool: slots are not token indices
    with pytest.raises(ValueError, match="plain MHA KV pool"):
        tva.install_tree_verify_attention(backend, None)


def test_select_verify_attention(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_VERIFY_ATTENTION", raising=False)
    assert tva.select_verify_attention() == "auto"
    monkeypatch.setenv("JETSPEC_VERIFY_ATTENTION", "tree")
    assert tva.select_verify_attention() == "tree"
    with pytest.raises(ValueError, match="must be one of"):
        tva.select_verify_attention("flash")


def test_auto_takes_the_tree_kernel_where_the_backend_can_take_it() -> None:
    class FlashInferAttnBackend:
        page_size = 1

    triton = TritonAttnBackend(MHATokenToKVPool(1), torch.zeros(1, 1, dtype=torch.int32))
    assert tva.resolve_verify_attention("auto", triton) == "tree"  # measured faster on both targets
    assert tva.resolve_verify_attention("sglang", triton) == "sglang"
    assert tva.resolve_verify_attention("auto", FlashInferAttnBackend()) == "sglang"
    triton.page_size = 16
    assert tva.resolve_verify_attention("auto", triton) == "sglang"
    assert tva.resolve_verify_attention("tree", triton) == "tree"  # asked for by name: install says why not


def test_the_tile_is_the_kernels_choice_unless_one_is_named(monkeypatch) -> None:
    monkeypatch.delenv(tva.TILE_ENV, raising=False)
    assert tva.select_tree_tile() is None
    monkeypatch.setenv(tva.TILE_ENV, "64x128x4x2")
    assert tva.select_tree_tile() == (64, 128, 4, 2)
    monkeypatch.setenv(tva.TILE_ENV, "64x100x4x2")
    with pytest.raises(ValueError, match="JETSPEC_TREE_TILE: .* unset it"):
        tva.select_tree_tile()


def test_a_named_tile_reaches_every_call_and_sizes_the_tickets(monkeypatch) -> None:
    monkeypatch.setenv(tva.TILE_ENV, "16x32x2x1")
    monkeypatch.setenv(tva.SPLIT_MERGE_ENV, "fused")
    verify_through_the_stand_in(monkeypatch, calls=2)
    assert reference_kernel.tiles == [(16, 32, 2, 1)] * 2
    tile = tva.Tile(16, 32, 2, 1)
    assert reference_kernel.merge_counters[0].numel() == merge_counter_slots(4, N, HKV * GROUP, HKV, D, torch.float32,
                                                                             tile)  # fmt: skip


def test_split_merge_is_fused_unless_a_second_kernel_is_asked_for(monkeypatch) -> None:
    monkeypatch.delenv(tva.SPLIT_MERGE_ENV, raising=False)
    assert tva.select_split_merge() == "fused"
    monkeypatch.setenv(tva.SPLIT_MERGE_ENV, "kernel")
    assert tva.select_split_merge() == "kernel"
    monkeypatch.setenv(tva.SPLIT_MERGE_ENV, "atomic")
    with pytest.raises(ValueError, match=r"JETSPEC_SPLIT_MERGE must be one of \('kernel', 'fused'\)"):
        tva.select_split_merge()


@pytest.mark.parametrize("choice", ["kernel", "fused"])
def test_fused_split_merge_hands_every_call_one_zeroed_ticket_buffer(monkeypatch, choice: str) -> None:
    """With ``fused``, the kernel gets tickets for the mask's every row (a graph of any batch size may read them),
    the same buffer on every call; with ``kernel``, none."""
    monkeypatch.setenv(tva.SPLIT_MERGE_ENV, choice)
    verify_through_the_stand_in(monkeypatch, calls=2)
    first, second = reference_kernel.merge_counters
    if choice == "kernel":
        assert first is None and second is None
        return
    assert first is second and first.dtype == torch.int32 and not first.any()
    assert first.numel() == merge_counter_slots(4, N, HKV * GROUP, HKV, D, torch.float32)


@pytest.mark.parametrize("default,want", [(None, "tf32"), ("ieee", "ieee"), ("tf32x3", "tf32x3")])
def test_float32_multiplies_as_tritons_default_says(monkeypatch, default, want: str) -> None:
    """SGLang's Triton attention multiplies float32 as Triton's default says (TF32 unless ``$TRITON_F32_DEFAULT``
    names another); the tree kernel does too, so an fp32 target scores the tree as its own attention would."""
    if default is None:
        monkeypatch.delenv(tva.TRITON_FP32_ENV, raising=False)
    else:
        monkeypatch.setenv(tva.TRITON_FP32_ENV, default)
    verify_through_the_stand_in(monkeypatch, calls=1)
    assert reference_kernel.fp32_dots == [want]


def test_a_float32_default_the_kernel_cannot_follow_is_refused_at_install(monkeypatch) -> None:
    monkeypatch.setenv(tva.TRITON_FP32_ENV, "bf16x3")
    backend = TritonAttnBackend(*verify_batch([7])[:2])
    with pytest.raises(ValueError, match=r"TRITON_F32_DEFAULT must be one of .* got 'bf16x3'; unset it"):
        tva.install_tree_verify_attention(backend, tva.TreeMaskBuffer(capacity=1, budget=N, device="cpu"))


def verify_through_the_stand_in(monkeypatch, calls: int) -> None:
    """Installs the verify attention on a stand-in backend, with ``reference_kernel`` as the kernel (its lists start
    empty), and runs ``calls`` float32 verify layers through it."""
    monkeypatch.setattr(tva, "tree_attention", reference_kernel)
    monkeypatch.setattr(reference_kernel, "fp32_dots", [])
    monkeypatch.setattr(reference_kernel, "merge_counters", [])
    monkeypatch.setattr(reference_kernel, "tiles", [])
    pool, req_to_token, forward_batch, bs = verify_batch([7, 3])
    backend = TritonAttnBackend(pool, req_to_token)
    tva.install_tree_verify_attention(backend, tva.TreeMaskBuffer(capacity=4, budget=N, device="cpu"))
    q = torch.randn(bs * N, HKV * GROUP * D)
    k = torch.randn(bs * N, HKV * D)
    for _ in range(calls):
        backend.forward_extend(q, k, k, layer(), forward_batch)


def test_trees_on_sliding_window_layers_need_our_kernel() -> None:
    """SGLang's Triton verify windows a node by its index in the tree; a target with sliding-window layers serves
    trees only where every such layer reaches our kernel, and is refused at startup otherwise, with the fix."""

    class Attention(torch.nn.Module):
        def __init__(self, window: int, sinks: bool = False, **changes) -> None:
            super().__init__()
            self.attn = torch.nn.Module()
            vars(self.attn).update(vars(layer(sliding_window_size=window, **changes)))
            if sinks:
                self.sinks = torch.nn.Parameter(torch.zeros(4))

    def model(*layers: Attention) -> torch.nn.Module:
        return torch.nn.ModuleList(layers)

    triton = TritonAttnBackend(MHATokenToKVPool(1), torch.zeros(1, 1, dtype=torch.int32))

    def refusal(target: torch.nn.Module, attention: str = "tree", topk: int = 8, backend=triton):
        return tva.windowed_verify_refusal(target, backend, attention, torch.bfloat16, topk)

    gemma = model(Attention(15), Attention(-1))
    assert refusal(gemma) is None
    assert refusal(gemma, topk=1) is None  # a chain: SGLang's index is the depth
    assert refusal(model(Attention(-1)), attention="sglang") is None
    assert "(JETSPEC_VERIFY_ATTENTION=sglang asks for SGLang's; unset it)" in refusal(gemma, attention="sglang")
    triton.page_size = 16
    assert "1 sliding-window layers (e.g. 0.attn) need JETSPEC's tree attention" in refusal(gemma, "sglang")
    assert "(JETSPEC_VERIFY_ATTENTION=tree needs --page-size 1), so serve a chain" in refusal(gemma, "sglang")
    assert "layer 0.attn has features" in refusal(model(Attention(127, sinks=True)))  # GPT-OSS
    assert "--speculative-eagle-topk 1" in refusal(model(Attention(-1), Attention(15, logit_cap=30.0)))
