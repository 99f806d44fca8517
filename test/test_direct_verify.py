"""``DirectVerify``'s buffer writes and refusals (``sglang/direct_verify.py``), on a CPU.

The replays themselves need a GPU: ``test_tiny_fp32_sglang_verify_prep_drafts_the_same_trees`` runs the default
(direct) path against SGLang's verify preparation, token-identical to plain decoding with the same accepted
lengths. Here: the target graph's input buffers hold what SGLang 0.5.17's own buffer fill
(``CudaGraphBufferRegistry.fill_from``, loaded from its source) gives a padded batch, and the path refuses every
configuration where a replay needs more than that fill.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch
from sglang_source import sglang_source

from jetspec_sglang.kernels.draft_inputs import draft_inputs_torch
from jetspec_sglang.kernels.graph_inputs import head_graph_inputs_reference, pad_verify_inputs_reference
from jetspec_sglang.sglang import direct_verify as dv

needs_source = pytest.mark.skipif(sglang_source() is None, reason="sglang 0.5.17 source is not unpacked (.ci/run does it)")
N = 4  # tree nodes per request


@contextmanager
def sglang_registry_module() -> Iterator[types.ModuleType]:
    """SGLang's ``cuda_graph_buffer_registry`` from its source, its one heavy import (``sglang.srt.utils``) stubbed."""
    src = sglang_source()
    saved = {k: v for k, v in sys.modules.items() if k == "sglang" or k.startswith("sglang.")}
    for name in saved:
        del sys.modules[name]
    try:
        for name in ("sglang", "sglang.srt", "sglang.srt.model_executor"):
            module = types.ModuleType(name)
            module.__path__ = [str(src.joinpath(*name.split(".")))]
            sys.modules[name] = module
        sys.modules["sglang.srt.utils"] = types.SimpleNamespace(is_npu=lambda: False)
        yield importlib.import_module("sglang.srt.model_executor.cuda_graph_buffer_registry")
    finally:
        for name in [k for k in sys.modules if k == "sglang" or k.startswith("sglang.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def batch_of_two() -> dict:
    """Two real requests padded to a bucket of three: their rows, prefix lengths, the slot table and tree positions."""
    req_to_token = torch.arange(1000, 1000 + 5 * 32, dtype=torch.int32).view(5, 32)
    return {"req_pool_indices": torch.tensor([3, 1]), "seq_lens": torch.tensor([7, 12]), "req_to_token": req_to_token,
            "positions": torch.tensor([7, 8, 8, 9, 12, 13, 14, 13])}


@needs_source
def test_target_buffers_hold_what_sglang_fill_gives_a_padded_batch() -> None:
    b = batch_of_two()
    slots = torch.cat([b["req_to_token"][r, s : s + N] for r, s in zip(b["req_pool_indices"], b["seq_lens"])])
    with sglang_registry_module() as registry_module:
        registry = registry_module.build_decode_registry(device=torch.device("cpu"), max_bs=4, max_num_token=4 * N,
                                                         seq_len_fill_value=1, cache_loc_dtype=torch.int64)
        for name in dv.INT64_SLOTS:
            registry.get_slot(name).buffer.fill_(-7)  # a previous replay's leftovers
        forward_batch = types.SimpleNamespace(
            input_ids=torch.arange(2 * N), positions=b["positions"], out_cache_loc=slots,
            req_pool_indices=b["req_pool_indices"], seq_lens=b["seq_lens"], seq_lens_cpu=None, mrope_positions=None)
        registry.fill_from(forward_batch, raw_bs=2, padded_bs=3, raw_num_tokens=2 * N, padded_num_tokens=3 * N)
        sglang = {name: registry.get_slot(name).buffer for name in dv.INT64_SLOTS}

    target = {name: torch.full((3 * N,) if name in ("input_ids", "positions", "out_cache_loc") else (3,), -7)
              for name in dv.INT64_SLOTS}  # fmt: skip
    target["positions"][: 2 * N] = b["positions"]  # what the verify-inputs kernel wrote; row 2 is a padding tree's
    target["positions"][2 * N :] = torch.arange(N)
    target["input_ids"].copy_(torch.arange(3 * N))
    built = torch.arange(3 * 3 * N).view(3, 3, N)
    lists = built.clone()
    own_nodes = torch.arange(3 * N).view(3, N) + 500
    # two real rows; the padding row keeps a larger earlier step's leftovers in the step's static rows
    pad_verify_inputs_reference(target, lists, torch.tensor(2), torch.tensor([7, 12, 99]), torch.tensor([3, 1, 4]),
                                b["req_to_token"], 1, own_nodes)
    index, next_token, next_sibling = lists
    for name in ("positions", "out_cache_loc"):
        assert torch.equal(target[name], sglang[name][: 3 * N]), name
    for name in ("seq_lens", "req_pool_indices"):
        assert torch.equal(target[name], sglang[name][:3]), name
    # GreedyAccept's inputs: the trees of real rows as built; the padding row a root-only tree over its own nodes.
    assert torch.equal(target["input_ids"], torch.arange(3 * N))
    assert torch.equal(index[:2], built[0, :2]) and torch.equal(index[2], own_nodes[2])
    for got, want in ((next_token, built[1]), (next_sibling, built[2])):
        assert torch.equal(got[:2], want[:2]) and (got[2] == -1).all()


@needs_source
def test_head_buffers_hold_what_sglang_fill_gives_a_padded_block() -> None:
    """The head graph's inputs (``head_graph_inputs_reference``, with the torch reference of the block kernel) against
    SGLang's fill of the same ``ForwardBatch`` the worker's eager draft builds: ``[bonus, MASK x D]``,
    ``seq_len + j``, ``req_to_token[req, seq_len + j]``, and the padding row as SGLang pads it."""
    b, width, mask_id = batch_of_two(), 3, 99
    bonus = torch.tensor([5, 6])
    block_ids, slots, positions = draft_inputs_torch(b["seq_lens"], b["req_pool_indices"], b["req_to_token"], bonus,
                                                     mask_id, width)  # fmt: skip
    with sglang_registry_module() as registry_module:
        registry = registry_module.build_decode_registry(device=torch.device("cpu"), max_bs=4,
                                                         max_num_token=4 * width, seq_len_fill_value=1,
                                                         cache_loc_dtype=torch.int64)  # fmt: skip
        for name in dv.INT64_SLOTS:
            registry.get_slot(name).buffer.fill_(-7)
        forward_batch = types.SimpleNamespace(
            input_ids=block_ids.flatten(), positions=positions.flatten(), out_cache_loc=slots.flatten(),
            req_pool_indices=b["req_pool_indices"], seq_lens=b["seq_lens"], seq_lens_cpu=None, mrope_positions=None)
        registry.fill_from(forward_batch, raw_bs=2, padded_bs=3, raw_num_tokens=2 * width,
                           padded_num_tokens=3 * width)  # fmt: skip
        sglang = dv.rows_of({name: registry.get_slot(name).buffer for name in dv.INT64_SLOTS}, 3, width)

    head = dv.rows_of({name: torch.full((4 * width,) if name in ("input_ids", "positions", "out_cache_loc") else (4,),
                                        -7) for name in dv.INT64_SLOTS}, 3, width)  # fmt: skip
    stale = torch.tensor([4, 2])  # a padding row's leftovers from an earlier, larger step
    got_slots, got_positions = torch.full((3, width), -7), torch.full((3, width), -7)
    head_graph_inputs_reference(
        head, got_slots, got_positions, torch.tensor(2), torch.cat([b["seq_lens"], stale[:1]]),
        torch.cat([b["req_pool_indices"], stale[1:]]), torch.cat([bonus, torch.tensor([7])]), b["req_to_token"],
        mask_id, 1, make_draft_inputs=draft_inputs_torch)
    for name in ("positions", "out_cache_loc", "seq_lens", "req_pool_indices"):
        assert torch.equal(head[name], sglang[name]), name
    assert torch.equal(head["input_ids"][: 2 * width], sglang["input_ids"][: 2 * width])  # SGLang leaves padding ids
    assert torch.equal(got_slots[:2], slots) and torch.equal(got_positions[:2], positions)


class FullCudaGraphBackend:
    """Stand-in for SGLang's full-graph backend (only its class name is read)."""


def graph_runner(**overrides) -> types.SimpleNamespace:
    slots = {name: types.SimpleNamespace(buffer=torch.zeros(1, dtype=torch.int64)) for name in dv.INT64_SLOTS}
    registry = types.SimpleNamespace(slot_names=lambda: [*slots, *dv.GATHER_SLOTS, "seq_lens_cpu",
                                                                "mrope_positions"],
                                     get_slot=slots.__getitem__)
    fields = dict(backend=FullCudaGraphBackend(), ragged_verify_mode=False, enable_pdmux=False,
                  enable_two_batch_overlap=False, pp_size=1, require_mlp_tp_gather=False, require_attn_tp_gather=False,
                  is_encoder_decoder=False, buffer_registry=registry)
    return types.SimpleNamespace(**{**fields, **overrides})


def model_runner(lora: bool = False) -> types.SimpleNamespace:
    return types.SimpleNamespace(server_args=types.SimpleNamespace(enable_lora=lora), canary_manager=None,
                                 hisparse_coordinator=None)


def test_plain_single_rank_graphs_replay_directly() -> None:
    assert dv.direct_verify_refusal(model_runner(), graph_runner(), metadata_unread=True) is None


@pytest.mark.parametrize("change, reason", [
    (dict(metadata_unread=False), "attention metadata"),
    (dict(runner=None), "no verify CUDA graphs"),
    (dict(backend=types.SimpleNamespace()), "graph backend SimpleNamespace"),
    (dict(ragged_verify_mode=True), "ragged verify"),
    (dict(pp_size=2), "pipeline parallelism"),
    (dict(require_attn_tp_gather=True), "gathers"),
    (dict(lora=True), "LoRA"),
    (dict(extra_slot="num_token_non_padded"), "does not fill: ['num_token_non_padded']"),
    (dict(int32_slot="seq_lens"), "not int64: ['seq_lens']"),
])  # fmt: skip
def test_replays_that_need_more_than_the_buffer_fill_are_refused(change: dict, reason: str) -> None:
    runner = graph_runner(**{k: v for k, v in change.items() if k in ("backend", "ragged_verify_mode", "pp_size",
                                                                    "require_attn_tp_gather")})
    if "extra_slot" in change:
        names = runner.buffer_registry.slot_names()
        runner.buffer_registry.slot_names = lambda: [*names, change["extra_slot"]]
    if "int32_slot" in change:
        runner.buffer_registry.get_slot(change["int32_slot"]).buffer = torch.zeros(1, dtype=torch.int32)
    refusal = dv.direct_verify_refusal(model_runner(lora=change.get("lora", False)),
                                       None if change.get("runner", 1) is None else runner,
                                       metadata_unread=change.get("metadata_unread", True))
    assert refusal is not None and reason in refusal


def test_switch_takes_zero_one_or_required(monkeypatch) -> None:
    monkeypatch.delenv(dv.ENV, raising=False)
    assert dv.direct_verify_mode() == "1"
    for value in ("0", "required"):
        monkeypatch.setenv(dv.ENV, value)
        assert dv.direct_verify_mode() == value
    monkeypatch.setenv(dv.ENV, "yes")
    with pytest.raises(ValueError, match="JETSPEC_DIRECT_VERIFY must be one of"):
        dv.direct_verify_mode()
