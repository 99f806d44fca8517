"""The SGLang plugin's pure parts on a CPU: tree encoding, flag validation, top-K merge, spec-class conformance."""

from __future__ import annotations

import json
from enum import IntEnum
from types import SimpleNamespace

import pytest
import torch

from jetspec_sglang import DraftHead, DraftHeadConfig, build_tree
from jetspec_sglang.sglang.lineage import decode_lineage_reference, encode_lineage, lineage_topk
from jetspec_sglang.sglang.settings import TreeSettings, resolve_tree_settings, validate_server_args
from jetspec_sglang.sglang.vocab_topk import merge_shard_topk, shard_topk
from sglang_source import light_sglang, sglang_source
from test_tree import random_proposals
from tiny_models import tiny_target


@pytest.mark.parametrize("budget,depth,k", [(16, 15, 8), (64, 15, 8), (128, 15, 8), (256, 15, 7), (200, 3, 8), (9, 1, 8)])
def test_lineage_encoding_round_trips_through_the_kernel_rule(budget: int, depth: int, k: int) -> None:
    gen = torch.Generator().manual_seed(budget + depth)
    ids, logprobs, roots = random_proposals(gen, 3, depth, k, vocab=60)
    tree = build_tree(ids, logprobs, roots, budget)
    assert (tree.num_nodes == budget).all()
    lineage = encode_lineage(tree, lineage_topk(budget, depth, k))
    assert lineage.parent_list.shape == (3, lineage.topk * (depth - 1) + 1 if depth > 1 else 1)
    assert lineage.top_scores_index.shape == lineage.draft_tokens.shape == (3, budget - 1)
    assert torch.equal(decode_lineage_reference(lineage), tree.parents)
    assert torch.equal(lineage.draft_tokens, tree.tokens[:, 1:])
    for row in lineage.top_scores_index:
        assert len(set(row.tolist())) == budget - 1, "selected indices must be unique per request"


def test_a_too_small_lineage_topk_is_detected() -> None:
    gen = torch.Generator().manual_seed(0)
    ids, logprobs, roots = random_proposals(gen, 1, 4, 8)
    tree = build_tree(ids, logprobs, roots, 64)
    assert (decode_lineage_reference(encode_lineage(tree, 8)) == -2).any()


def write_head(path, target_config, **kw) -> dict:
    DraftHead(DraftHeadConfig.for_target(target_config, num_hidden_layers=2, block_size=kw.pop("block_size", 16),
                                         **kw)).save_pretrained(path)
    return json.loads((path / "config.json").read_text())


def server_args(tmp_path, **overrides) -> SimpleNamespace:
    target = tiny_target("llama", layers=8)
    (tmp_path / "target").mkdir(exist_ok=True)
    (tmp_path / "target" / "config.json").write_text(target.config.to_json_string())
    if not (tmp_path / "head" / "config.json").exists():
        write_head(tmp_path / "head", target.config)
    base = dict(
        speculative_draft_model_path=str(tmp_path / "head"), model_path=str(tmp_path / "target"), device="cuda",
        pp_size=1, enable_dp_attention=False, page_size=1, attention_backend="triton",
        prefill_attention_backend=None, decode_attention_backend=None, speculative_draft_attention_backend=None,
        speculative_use_rejection_sampling=False, speculative_accept_threshold_single=1.0,
        speculative_accept_threshold_acc=1.0, speculative_num_draft_tokens=None, speculative_eagle_topk=None,
        speculative_num_steps=None, enable_mixed_chunk=True, disable_overlap_schedule=False,
        max_running_requests=None,
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def test_validator_fills_defaults_from_the_head(tmp_path) -> None:
    sa = server_args(tmp_path)
    tree = validate_server_args(sa)
    assert tree == TreeSettings(budget=64, topk=8, depth=15)
    assert (sa.speculative_num_draft_tokens, sa.speculative_eagle_topk, sa.speculative_num_steps) == (64, 8, 15)
    assert sa.speculative_draft_attention_backend == "triton"
    assert sa.enable_mixed_chunk is False and sa.disable_overlap_schedule is False
    assert sa.max_running_requests == 32


def test_overlap_follows_sglang_flag_unless_turned_off(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_OVERLAP", raising=False)
    sa = server_args(tmp_path, disable_overlap_schedule=True)
    validate_server_args(sa)
    assert sa.disable_overlap_schedule is True
    monkeypatch.setenv("JETSPEC_OVERLAP", "0")
    sa = server_args(tmp_path)
    validate_server_args(sa)
    assert sa.disable_overlap_schedule is True
    monkeypatch.setenv("JETSPEC_OVERLAP", "yes")
    with pytest.raises(ValueError, match="JETSPEC_OVERLAP must be 0 or 1"):
        validate_server_args(server_args(tmp_path))


@pytest.mark.parametrize("env", ["JETSPEC_VERIFY_ATTENTION", "JETSPEC_GRAPH_METADATA", "JETSPEC_TREE_BUILDER",
                                 "JETSPEC_VERIFY_INPUTS", "JETSPEC_DRAFT_INPUTS", "JETSPEC_GREEDY_ACCEPT",
                                 "JETSPEC_DIRECT_VERIFY", "JETSPEC_VOCAB_TOPK", "JETSPEC_HEAD_ATTENTION",
                                 "JETSPEC_SPLIT_MERGE", "JETSPEC_TREE_TILE", "JETSPEC_GRAPH_INPUTS",
                                 "JETSPEC_ACCEPT_WALK", "JETSPEC_CONTEXT_KV"])
def test_validator_rejects_a_bad_switch_before_the_scheduler_starts(tmp_path, monkeypatch, env) -> None:
    monkeypatch.setenv(env, "maybe")
    with pytest.raises(ValueError, match=env):
        validate_server_args(server_args(tmp_path))


def test_validator_keeps_explicit_flags_and_caps_depth(tmp_path) -> None:
    sa = server_args(tmp_path, speculative_num_draft_tokens=8, speculative_eagle_topk=4, speculative_num_steps=12)
    assert validate_server_args(sa) == TreeSettings(budget=8, topk=4, depth=7)


def test_head_recommendations_are_defaults(tmp_path) -> None:
    head = DraftHeadConfig.for_target(tiny_target("llama", layers=8).config)
    head = DraftHeadConfig.from_hf_dict(dict(head.to_hf_dict(), jetspec_config={"budget": 128, "topk": 6}))
    assert resolve_tree_settings(head, None, None, None) == TreeSettings(budget=128, topk=6, depth=15)
    assert resolve_tree_settings(head, 32, None, 4) == TreeSettings(budget=32, topk=6, depth=4)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(speculative_draft_model_path=None), "--speculative-draft-model-path"),
        (dict(attention_backend="fa3"), "triton or flashinfer"),
        (dict(attention_backend=None), "triton or flashinfer"),
        (dict(device="cpu"), "CUDA"),
        (dict(pp_size=2), "pipeline"),
        (dict(enable_dp_attention=True), "DP attention"),
        (dict(page_size=16), "page-size 1"),
        (dict(speculative_use_rejection_sampling=True), "rejection"),
        (dict(speculative_accept_threshold_acc=0.5), "lossy"),
        (dict(speculative_num_draft_tokens=300, speculative_eagle_topk=1, speculative_num_steps=4), "at most 5"),
    ],
)
def test_validator_rejects_unsupported_setups(tmp_path, overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_server_args(server_args(tmp_path, **overrides))


def test_validator_rejects_a_head_for_another_target(tmp_path) -> None:
    write_head(tmp_path / "head", tiny_target("llama", hidden=32, vocab=50, layers=8).config)
    with pytest.raises(ValueError, match="hidden_size=32.*hidden_size=64"):
        validate_server_args(server_args(tmp_path))


def test_validator_rejects_causal_flags_sglang_cannot_see(tmp_path) -> None:
    config = write_head(tmp_path / "head", tiny_target("llama", layers=8).config)
    del config["is_causal"], config["layer_types"]
    config["dflash_config"]["causal_head"] = config["dflash_config"].pop("causal")
    (tmp_path / "head" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="jetspec fix-head"):
        validate_server_args(server_args(tmp_path))
    from jetspec_sglang.fix_head import fix_head_config

    fix_head_config(tmp_path / "head")
    validate_server_args(server_args(tmp_path))


def test_sharded_topk_merge_equals_full_vocab_topk() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 16, generator=gen)
    weight = torch.randn(103, 16, generator=gen)
    bounds = [0, 30, 61, 103]
    parts = [shard_topk(hidden, weight[a:b], a, 5) for a, b in zip(bounds, bounds[1:])]
    ids, logprobs = merge_shard_topk(*(torch.stack(x) for x in zip(*parts)), 5)
    expected_lp, expected_ids = torch.log_softmax(hidden @ weight.t(), -1).topk(5, -1)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(logprobs, expected_lp, rtol=1e-5, atol=1e-5)


needs_source = pytest.mark.skipif(sglang_source() is None, reason="sglang 0.5.17 source is not unpacked (.ci/run does it)")


@needs_source
def test_spec_class_conforms_to_sglang_and_registers_once() -> None:
    with light_sglang(sglang_source()) as sgl:
        from jetspec_sglang.sglang import registration
        from jetspec_sglang.sglang.hooks import (CREATE_DUMMY_VERIFY_INPUT, EXTRA_CONTEXT_LEN, GET_SPEC_INFO,
                                                  PREFILL_GRAPH_CAPTURE)
        from jetspec_sglang.sglang.spec_algo import JetSpecAlgo

        sgl.spec_registry._assert_custom_spec_algo_conforms(JetSpecAlgo)
        registration.register_with_sglang()
        registration.register_with_sglang()  # idempotent
        algo = sgl.spec_info.SpeculativeAlgorithm.from_string("jetspec")
        assert isinstance(algo, JetSpecAlgo) and algo.is_speculative() and not algo.is_eagle()
        assert algo.supports_target_verify_for_draft() and not algo.need_topk()
        assert not algo.carries_draft_hidden_states() and algo.supports_overlap is True
        assert algo.get_num_tokens_per_req_for_target_verify(64, False) == 64
        for method in ("create_future_map", "need_topk", "carries_draft_hidden_states"):
            assert method not in vars(sgl.spec_registry.CustomSpecAlgo), f"sglang now defines {method}; revisit"
        hooks = sgl.hook_registry.HookRegistry._hooks
        assert all(len(hooks[t]) == 1 for t in (GET_SPEC_INFO, CREATE_DUMMY_VERIFY_INPUT, EXTRA_CONTEXT_LEN,
                                                PREFILL_GRAPH_CAPTURE))


class _CaptureMode(IntEnum):  # SGLang's CaptureHiddenMode values
    NULL = 0
    LAST = 1
    FULL = 2


@needs_source
@pytest.mark.parametrize("algorithm,is_draft_worker,expected", [
    ("JETSPEC", False, _CaptureMode.FULL), ("JETSPEC", True, _CaptureMode.NULL), ("EAGLE", False, _CaptureMode.NULL),
])
def test_prefill_graphs_capture_taps_only_for_the_jetspec_target(algorithm, is_draft_worker, expected) -> None:
    runner = SimpleNamespace(capture_hidden_mode=_CaptureMode.NULL, model_runner=SimpleNamespace(
        spec_algorithm=SimpleNamespace(name=algorithm), is_draft_worker=is_draft_worker))
    with light_sglang(sglang_source()):
        from jetspec_sglang.sglang.hooks import prefill_graph_capture_before

        prefill_graph_capture_before(runner)
    assert runner.capture_hidden_mode is expected


@needs_source
def test_prefill_runner_sets_its_capture_mode_before_it_captures() -> None:
    """The hook runs at ``capture()``; SGLang's ``__init__`` must decide the mode before calling it."""
    import ast

    with light_sglang(sglang_source()):
        from jetspec_sglang.sglang.hooks import PREFILL_GRAPH_CAPTURE
    module_path, cls_name, method = PREFILL_GRAPH_CAPTURE.rsplit(".", 2)
    tree = ast.parse((sglang_source() / (module_path.replace(".", "/") + ".py")).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert method in methods

    def lines(predicate) -> list[int]:
        return [n.lineno for n in ast.walk(methods["__init__"]) if predicate(n)]

    sets_mode = lines(lambda n: isinstance(n, ast.Attribute) and n.attr == "capture_hidden_mode"
                      and isinstance(n.ctx, ast.Store))
    calls_capture = lines(lambda n: isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                          and n.func.attr == method)
    assert sets_mode and calls_capture and max(sets_mode) < min(calls_capture)
