"""Which verify plan a batch size gets, and that switching plans swaps the target's backend and graphs
(``sglang/verify_plans.py`` with a stand-in model runner; no sglang needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from jetspec_sglang.sglang.settings import TreeSettings
from jetspec_sglang.sglang.verify_plans import VerifyPlans


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> VerifyPlans:
    """Budget 48, depth 4, graphs at bs 1-4, up to 8 requests, SGLang's own backend and runner in place."""
    monkeypatch.setenv("JETSPEC_TREE_BUILDER", "torch")  # no CUDA extension build on a CPU
    runner = SimpleNamespace(attn_backend="sglang-backend", decode_cuda_graph_runner="sglang-graphs",
                             req_to_token_pool=SimpleNamespace(size=8))
    plans = VerifyPlans(runner, TreeSettings(budget=48, topk=8, depth=4), graph_max_bs=4, device="cpu")
    built, compiled = [], []

    def build_target_runner(plan, batch_sizes):
        built.append((plan.budget, batch_sizes))
        return f"backend-{plan.budget}", f"graphs-{plan.budget}"

    monkeypatch.setattr(plans, "_build_target_runner", build_target_runner)
    monkeypatch.setattr(plans, "_compile_verify_prep", compiled.append)
    plans.adopt_target_backend(tree_attention=False)
    plans.built, plans.compiled = built, compiled
    return plans


def test_each_budget_gets_a_plan_with_graphs_for_its_batch_sizes(plans: VerifyPlans) -> None:
    layout = plans.build([1, 2, 3, 4], max_requests=8, cap=128)
    assert layout == "budget 48 at bs 1-2, 24 at bs 3-8"
    assert sorted(plans.by_budget) == [24, 48]
    assert plans.built == [(24, [3, 4])]  # the full budget keeps SGLang's backend and graphs
    assert plans.full.attn_backend == "sglang-backend" and plans.full.graph_runner == "sglang-graphs"
    assert plans.full.graph_batch_sizes == [1, 2] and plans.by_budget[24].graph_batch_sizes == [3, 4]
    assert sorted(plans.compiled) == [24, 48]  # SGLang's verify-prep kernel compiled for every budget at startup
    assert plans.by_budget[24].lineage_topk >= 8 and plans.by_budget[24].tree_builder_name == "torch"


def test_switching_plans_swaps_the_targets_backend_and_graphs(plans: VerifyPlans) -> None:
    plans.build([1, 2, 3, 4], max_requests=8, cap=128)
    runner = plans.model_runner
    assert plans.for_batch(6).budget == 24
    assert (runner.attn_backend, runner.decode_cuda_graph_runner) == ("backend-24", "graphs-24")
    assert plans.for_batch(2).budget == 48
    assert (runner.attn_backend, runner.decode_cuda_graph_runner) == ("sglang-backend", "sglang-graphs")
    assert plans.for_batch(40).budget == 24  # past max_requests: the smallest budget
    assert plans.attn_backends() == ["sglang-backend", "backend-24"]


def test_no_cap_keeps_one_plan(plans: VerifyPlans) -> None:
    assert plans.build([1, 2, 3, 4], max_requests=8, cap=0) == "budget 48 at bs 1-8"
    assert list(plans.by_budget) == [48] and plans.built == []
    assert plans.for_batch(8) is plans.full


def test_the_tree_builder_of_a_plan_builds_trees_of_its_budget(plans: VerifyPlans) -> None:
    plans.build([1, 2, 3, 4], max_requests=8, cap=128)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (3, 4, 8), generator=gen)
    logprobs = torch.log_softmax(torch.randn(3, 4, 8, generator=gen), -1)
    tree, lineage = plans.by_budget[24].build_tree(ids, logprobs, torch.tensor([1, 2, 3]))
    assert tree.tokens.shape == (3, 24) and lineage.topk == plans.by_budget[24].lineage_topk


def test_tree_attention_gives_a_plan_its_own_mask_with_lone_roots_past_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETSPEC_TREE_BUILDER", "torch")
    installed = []
    # The globals the method reads (other tests re-import sglang-facing modules, so patch by function, not by path).
    monkeypatch.setitem(VerifyPlans._prepare_backend.__globals__, "install_tree_verify_attention",
                        lambda backend, mask: installed.append((backend, mask)))
    runner = SimpleNamespace(attn_backend="sglang-backend", decode_cuda_graph_runner=None,
                             req_to_token_pool=SimpleNamespace(size=6))
    plans = VerifyPlans(runner, TreeSettings(budget=40, topk=4, depth=3), graph_max_bs=4, device="cpu")
    plans.adopt_target_backend(tree_attention=True)
    mask = plans.full.tree_mask
    assert installed == [("sglang-backend", mask)] and tuple(mask.buffer.shape) == (6, 40, 2)
    lone_roots = torch.zeros(40, 2, dtype=torch.int32)
    for node in range(40):  # each node sees only itself: bit node % 32 of word node // 32 (int32, so bit 31 wraps)
        bit = 1 << (node % 32)
        lone_roots[node, node // 32] = bit - (1 << 32) if bit >= 1 << 31 else bit
    root_only = lone_roots.clone()
    root_only[1:, 0] |= 1  # the warm-up's root-only tree: every padding slot also sees the root
    assert torch.equal(mask.buffer[0], root_only) and torch.equal(mask.buffer[5], lone_roots)
