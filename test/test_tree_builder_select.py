"""JETSPEC's choice of tree builder: fused kernel by default, the torch builder on request or as a fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from jetspec_sglang.kernels import tree_build
from jetspec_sglang.sglang.lineage import encode_lineage
from jetspec_sglang.sglang.tree_builder import select_draft_inputs, select_tree_builder, select_verify_inputs
from jetspec_sglang.tree import build_tree


def _inputs(bs: int = 3, depth: int = 4, k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(bs, depth, 50, generator=gen), -1).topk(k, dim=-1)
    return logprobs.indices, logprobs.values, torch.randint(0, 50, (bs,), generator=gen)


def test_torch_builder_is_build_tree_then_encode_lineage() -> None:
    name, builder = select_tree_builder(budget=9, lineage_topk=4, choice="torch")
    ids, lps, roots = _inputs()
    tree, lineage = builder(ids, lps, roots)
    expected = build_tree(ids, lps, roots, 9)
    assert name == "torch" and torch.equal(tree.parents, expected.parents) and torch.equal(tree.tokens, expected.tokens)
    assert torch.equal(lineage.top_scores_index, encode_lineage(expected, 4).top_scores_index)


def test_fused_falls_back_to_torch_with_a_warning_when_it_cannot_build(monkeypatch, caplog) -> None:
    def no_compiler():
        raise RuntimeError("nvcc not found")

    monkeypatch.setattr(tree_build, "load_extension", no_compiler)
    monkeypatch.delenv("JETSPEC_TREE_BUILDER", raising=False)
    with caplog.at_level(logging.WARNING):
        name, builder = select_tree_builder(budget=9, lineage_topk=4)
    assert name == "torch" and "nvcc not found" in caplog.text and "JETSPEC_TREE_BUILDER=torch" in caplog.text
    ids, lps, roots = _inputs()
    assert torch.equal(builder(ids, lps, roots)[0].parents, build_tree(ids, lps, roots, 9).parents)


def test_fused_is_chosen_when_the_extension_loads(monkeypatch) -> None:
    monkeypatch.setattr(tree_build, "load_extension", lambda: None)
    monkeypatch.setenv("JETSPEC_TREE_BUILDER", "fused")
    assert select_tree_builder(budget=9, lineage_topk=4)[0] == "fused"


def test_unknown_builder_is_rejected(monkeypatch) -> None:
    monkeypatch.setenv("JETSPEC_TREE_BUILDER", "heap")
    with pytest.raises(ValueError, match="JETSPEC_TREE_BUILDER must be one of"):
        select_tree_builder(budget=9, lineage_topk=4)


def test_verify_inputs_default_to_fused_which_needs_the_fused_builder(monkeypatch, caplog) -> None:
    monkeypatch.delenv("JETSPEC_VERIFY_INPUTS", raising=False)
    assert select_verify_inputs("fused") == "fused"
    assert select_verify_inputs("fused", "sglang") == "sglang"
    with caplog.at_level(logging.WARNING):
        assert select_verify_inputs("torch") == "sglang"  # the default falls back quietly
    assert "needs the fused tree builder" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert select_verify_inputs("torch", "fused") == "sglang"
    assert "needs the fused tree builder" in caplog.text
    monkeypatch.setenv("JETSPEC_VERIFY_INPUTS", "mine")
    with pytest.raises(ValueError, match="JETSPEC_VERIFY_INPUTS must be one of"):
        select_verify_inputs("fused")


def test_draft_inputs_default_to_fused_which_needs_the_extension(monkeypatch, caplog) -> None:
    monkeypatch.delenv("JETSPEC_DRAFT_INPUTS", raising=False)
    assert select_draft_inputs("fused") == "fused"
    with caplog.at_level(logging.WARNING):
        assert select_draft_inputs("torch") == "torch"  # no extension: the default falls back quietly
    assert "JETSPEC_DRAFT_INPUTS=fused needs" not in caplog.text
    monkeypatch.setenv("JETSPEC_DRAFT_INPUTS", "torch")
    assert select_draft_inputs("fused") == "torch"
    monkeypatch.setenv("JETSPEC_DRAFT_INPUTS", "fused")
    with caplog.at_level(logging.WARNING):
        assert select_draft_inputs("torch") == "torch"
    assert "JETSPEC_DRAFT_INPUTS=fused needs the fused tree builder" in caplog.text
    monkeypatch.setenv("JETSPEC_DRAFT_INPUTS", "sglang")
    with pytest.raises(ValueError, match=r"JETSPEC_DRAFT_INPUTS must be one of \('torch', 'fused'\)"):
        select_draft_inputs("fused")
