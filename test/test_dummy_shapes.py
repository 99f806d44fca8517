"""``benchmark/dummy_shapes.py``: config-only folders for ``--load-format dummy`` timing runs."""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark
from transformers import AutoConfig

from jetspec_sglang.draft_head import check_head_matches_target
from jetspec_sglang.head_config import DraftHeadConfig


def test_qwen3_8b_shape_and_its_head_match(tmp_path) -> None:
    load_benchmark("dummy_shapes").write_shape("qwen3-8b", tmp_path / "model", tmp_path / "head")
    target = AutoConfig.from_pretrained(tmp_path / "model")
    head = DraftHeadConfig.from_json_file(tmp_path / "head" / "config.json")
    check_head_matches_target(head, target)  # raises on a hidden size, vocab or layer mismatch
    assert (target.hidden_size, target.num_hidden_layers, target.vocab_size) == (4096, 36, 151936)
    assert head.num_hidden_layers == 5 and head.target_layer_ids == (1, 9, 17, 25, 33)
    assert json.loads((tmp_path / "head" / "config.json").read_text())["architectures"] == ["DFlashDraftModel"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json"]  # no weights: dummy load


def test_a_cheaper_head_keeps_the_taps(tmp_path) -> None:
    load_benchmark("dummy_shapes").write_shape("qwen3-8b", tmp_path / "model", tmp_path / "head", head_layers=1)
    head = DraftHeadConfig.from_json_file(tmp_path / "head" / "config.json")
    check_head_matches_target(head, AutoConfig.from_pretrained(tmp_path / "model"))
    assert head.num_hidden_layers == 1 and len(head.target_layer_ids) == 5


def test_smollm2_shape_matches_the_reference_head(tmp_path) -> None:
    load_benchmark("dummy_shapes").write_shape("smollm2-135m", tmp_path / "model", tmp_path / "head")
    target = AutoConfig.from_pretrained(tmp_path / "model")
    head = DraftHeadConfig.from_json_file(tmp_path / "head" / "config.json")
    check_head_matches_target(head, target)
    reference = DraftHeadConfig.from_json_file("benchmark/artifacts/smollm2-135m-jetspec/config.json")
    shape = lambda h: (h.num_hidden_layers, h.target_layer_ids, h.mask_token_id, h.block_size, h.causal)  # noqa: E731
    assert shape(head) == shape(reference) == (4, (1, 10, 18, 27), 16, 16, True)
