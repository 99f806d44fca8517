"""Tokenizer, saved targets and token datasets shared by the ``test_train_*`` files (CPU, seeded)."""

from __future__ import annotations

from pathlib import Path

import torch

from jetspec_sglang.draft_head import tap_layer_outputs
from jetspec_sglang.train.anchors import Anchors, block_inputs
from jetspec_sglang.train.token_data import FORMAT, MANIFEST_NAME, shard_name, write_json_atomic, write_shard
from tiny_models import tiny_head as tiny_head
from tiny_models import tiny_target

VOCAB = 97
EOS = 2  # LlamaConfig's default eos_token_id


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    """The issue's tiny target: Llama, 6 layers, hidden 64, GQA 4/2 heads of 16, vocab 97."""
    model = tiny_target("llama", vocab=VOCAB, seed=seed)
    if model.config.eos_token_id != EOS:
        raise AssertionError(f"tiny Llama eos is {model.config.eos_token_id}, the fixtures assume {EOS}")
    return model


def target_and_blocks(target: torch.nn.Module, head, ids: torch.Tensor, anchors: Anchors):
    """One no-grad target pass and the anchors' blocks: ``(logits, taps, block_embeds, block_positions)``."""
    with torch.no_grad():
        out = target(input_ids=ids, output_hidden_states=True)
        taps = tap_layer_outputs(out.hidden_states, head.config.target_layer_ids)
        blk_ids, blk_pos = block_inputs(ids, anchors, head.config.block_size, head.config.mask_token_id)
        embeds = target.get_input_embeddings()(blk_ids)
    return out.logits, taps, embeds, blk_pos


def tiny_tokenizer():
    """A whitespace word-level tokenizer with a chat template (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<user>", "<assistant>", "<system>"]
    words = [str(d) for d in range(10)] + [f"w{i}" for i in range(VOCAB - len(specials) - 10)]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    return tok


def save_tiny_target(path: Path, seed: int = 0) -> Path:
    """A tiny Llama and its tokenizer saved as an HF folder."""
    tiny_llama(seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def write_tiny_dataset(path: Path, target: torch.nn.Module, *, rows: int, seed: int = 0, shard_size: int = 8) -> Path:
    """Random prompts answered greedily by ``target`` (so the data is its own output), in the on-disk format."""
    g = torch.Generator().manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        plen = int(torch.randint(3, 9, (1,), generator=g))
        rlen = int(torch.randint(6, 20, (1,), generator=g))
        seq = torch.randint(7, VOCAB, (1, plen), generator=g)
        with torch.no_grad():
            for _ in range(rlen):  # greedy, no cache: HF generate's per-call overhead dominates at this size
                seq = torch.cat((seq, target(input_ids=seq).logits[:, -1:].argmax(-1)), dim=1)
        records.append(dict(prompt_index=i, source="test", temperature=0.0, prompt_ids=seq[0, :plen].tolist(),
                            response_ids=seq[0, plen:].tolist(), finished=False))
    for s, start in enumerate(range(0, rows, shard_size)):
        write_shard(path / shard_name(s), records[start : start + shard_size])
    write_json_atomic(path / MANIFEST_NAME, {"format": FORMAT, "tokenizer": {"eos_token_id": EOS}, "complete": True})
    return path
