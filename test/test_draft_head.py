"""Draft head: taps, masks, context caching, checkpoint format and target checks."""

from __future__ import annotations

import json

import pytest
import torch

from jetspec_sglang import DraftHead, DraftHeadConfig, default_target_layer_ids
from jetspec_sglang.draft_head import tap_layer_outputs
from tiny_models import tiny_head, tiny_target


def test_taps_are_decoder_layer_outputs() -> None:
    target = tiny_target("llama")
    layer_ids = (1, 3, 4)
    captured = {}
    hooks = [
        target.model.layers[i].register_forward_hook(
            lambda mod, args, out, i=i: captured.__setitem__(i, out[0] if isinstance(out, tuple) else out)
        )
        for i in layer_ids
    ]
    ids = torch.randint(0, 97, (2, 11))
    out = target(input_ids=ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    taps = tap_layer_outputs(out.hidden_states, layer_ids)
    torch.testing.assert_close(taps, torch.cat([captured[i] for i in layer_ids], dim=-1), rtol=0, atol=0)


def run_block(head: DraftHead, ctx_feats: torch.Tensor, block: torch.Tensor, start: int) -> torch.Tensor:
    ctx = head.context_kv(ctx_feats, torch.arange(start)[None])
    mask = head.block_mask(torch.ones(1, start, dtype=torch.bool), block.shape[1])
    return head(block, start + torch.arange(block.shape[1])[None], ctx, mask)


@pytest.mark.parametrize("causal", [True, False])
def test_in_block_attention_is_causal_only_when_configured(causal: bool) -> None:
    head = tiny_head(tiny_target("qwen3"), causal=causal)
    gen = torch.Generator().manual_seed(0)
    feats = head.project_context(torch.randn(1, 7, head.fc.in_features, generator=gen))
    block = torch.randn(1, 6, 64, generator=gen)
    changed = block.clone()
    changed[:, 4:] += 1.0
    a, b = run_block(head, feats, block, 7), run_block(head, feats, changed, 7)
    early_rows_equal = torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert early_rows_equal is causal


def test_context_kv_can_be_extended_incrementally() -> None:
    head = tiny_head(tiny_target("llama"))
    feats = head.project_context(torch.randn(1, 9, head.fc.in_features))
    whole = head.context_kv(feats, torch.arange(9)[None])
    first, rest = head.context_kv(feats[:, :4], torch.arange(4)[None]), head.context_kv(feats[:, 4:], torch.arange(4, 9)[None])
    for (k, v), (k1, v1), (k2, v2) in zip(whole, first, rest):
        torch.testing.assert_close(k, torch.cat((k1, k2), 2))
        torch.testing.assert_close(v, torch.cat((v1, v2), 2))


def test_checkpoint_round_trip(tmp_path) -> None:
    head = tiny_head(tiny_target("qwen3"))
    head.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["DFlashDraftModel"]
    # SGLang's DFlashDraftModel honours is_causal only when layer_types lists every layer.
    assert config["is_causal"] is True and config["layer_types"] == ["full_attention"] * head.config.num_hidden_layers
    assert config["dflash_config"] == {
        "target_layer_ids": list(head.config.target_layer_ids),
        "mask_token_id": head.config.mask_token_id,
        "block_size": 6,
        "causal": True,
    }
    loaded = DraftHead.from_pretrained(tmp_path)
    assert loaded.config == head.config
    feats = torch.randn(1, 5, head.fc.in_features)
    block = torch.randn(1, 6, 64)
    torch.testing.assert_close(
        run_block(loaded, loaded.project_context(feats), block, 5),
        run_block(head, head.project_context(feats), block, 5),
        rtol=0,
        atol=0,
    )


def test_bf16_checkpoint_keeps_dtype(tmp_path) -> None:
    head = tiny_head(tiny_target("llama"))
    head.save_pretrained(tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert DraftHead.from_pretrained(tmp_path).fc.weight.dtype == torch.bfloat16


def test_published_dflash_config_parses() -> None:
    # The shape of z-lab's Qwen3-8B DFlash head config: no causal flag means bidirectional.
    dflash = {
        "architectures": ["DFlashDraftModel"], "model_type": "qwen3", "hidden_size": 4096,
        "intermediate_size": 12288, "num_hidden_layers": 5, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000, "num_target_layers": 36, "block_size": 16,
        "dflash_config": {"mask_token_id": 151669, "target_layer_ids": [1, 9, 17, 25, 33]},
    }
    config = DraftHeadConfig.from_hf_dict(dflash)
    assert (config.causal, config.block_size, config.target_layer_ids) == (False, 16, (1, 9, 17, 25, 33))
    jetspec = dict(dflash, dflash_config=dict(dflash["dflash_config"], causal_head=True))
    assert DraftHeadConfig.from_hf_dict(jetspec).causal is True
    assert DraftHeadConfig.from_hf_dict(dict(dflash, is_causal=True)).causal is True
    no_ids = dict(dflash, dflash_config={"mask_token_id": 1})
    assert DraftHeadConfig.from_hf_dict(no_ids).target_layer_ids == default_target_layer_ids(36, 5)
    del no_ids["num_target_layers"]
    with pytest.raises(ValueError, match="target_layer_ids"):
        DraftHeadConfig.from_hf_dict(no_ids)


def test_mismatched_target_is_rejected_with_both_values() -> None:
    head = tiny_head(tiny_target("llama", hidden=64, vocab=97))
    other = tiny_target("llama", hidden=32, vocab=101)
    with pytest.raises(ValueError) as err:
        head.check_target(other.config)
    message = str(err.value)
    assert "hidden_size=64" in message and "hidden_size=32" in message
    assert "vocab_size=97" in message and "vocab_size=101" in message


def test_load_reports_unexpected_weights(tmp_path) -> None:
    from safetensors.torch import save_file

    head = tiny_head(tiny_target("llama"))
    head.save_pretrained(tmp_path)
    state = {f"model.{k}": v for k, v in head.state_dict().items()}
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="extra.weight"):
        DraftHead.from_pretrained(tmp_path)


def test_default_target_layer_ids() -> None:
    assert default_target_layer_ids(36, 5) == (1, 9, 17, 25, 33)
    assert default_target_layer_ids(30, 4) == (1, 10, 18, 27)
    with pytest.raises(ValueError, match="too shallow"):
        default_target_layer_ids(3, 2)
