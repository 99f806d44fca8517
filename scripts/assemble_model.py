#!/usr/bin/env python3
"""Reassemble a GGUF model from the chunks of scripts/stage_model.sh, verify it, convert it.

Runs on the air-gapped GPU machine, after ``source scripts/bootstrap_gpu.sh``
(which puts jetspec_sglang, transformers and gguf on PYTHONPATH), once per
upload, with that upload's chunk folders::

    python3 scripts/assemble_model.py .devwork/m1            # upload 1: keeps m1
    python3 scripts/assemble_model.py .devwork/m2            # upload 2
    python3 scripts/assemble_model.py .devwork/m3 --out /tmp/models/smollm2-135m-instruct

Each CHUNK_DIR's files are copied into PARTS (default /tmp/model-parts), a
folder that outlives the upload. Once every part that ``parts.txt`` names is
there with its size, the parts are concatenated in order, the result is checked
against ``NAME.sha256``, and jetspec_sglang.assets.convert_gguf_to_hf writes a
Hugging Face folder (bf16 safetensors, tokenizer, chat template, generation
config) to OUT (default /tmp/models/<model>). Steps already done are skipped.

Exit status: 0 when OUT is ready, 3 while parts are still missing, 1 on an error
(a sha256 mismatch included). The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from jetspec_sglang.assets import GEMMA3_270M, SMOLLM2, convert_gguf_to_hf

_FOLDER_NAMES = {asset.file: asset.name for asset in (SMOLLM2, GEMMA3_270M)}


def collect(chunk_dirs: list[Path], parts: Path) -> None:
    """Copy every file of ``chunk_dirs`` into ``parts``."""
    parts.mkdir(parents=True, exist_ok=True)
    for chunk_dir in chunk_dirs:
        if not chunk_dir.is_dir():
            raise ValueError(f"no chunk folder {chunk_dir}")
        for f in chunk_dir.iterdir():
            if f.is_file() and f.resolve() != (parts / f.name).resolve():
                shutil.copyfile(f, parts / f.name)


def missing_parts(parts: Path) -> list[str]:
    """Parts named in ``parts.txt`` that are absent or of the wrong size."""
    manifest = parts / "parts.txt"
    if not manifest.is_file():
        return ["parts.txt"]
    missing = []
    for line in manifest.read_text().split("\n"):
        if line.strip():
            name, size = line.split()
            if not (parts / name).is_file() or (parts / name).stat().st_size != int(size):
                missing.append(name)
    return missing


def assemble(parts: Path) -> Path:
    """Concatenate the parts in manifest order into ``parts/NAME`` and check its sha256."""
    (sha_file,) = parts.glob("*.sha256")
    expected, name = sha_file.read_text().split()
    target = parts / name
    if target.is_file():
        return target
    digest, partial = hashlib.sha256(), parts / f"{name}.partial"
    with open(partial, "wb") as out:
        for line in (parts / "parts.txt").read_text().split("\n"):
            if line.strip():
                with open(parts / line.split()[0], "rb") as src:
                    while block := src.read(1 << 24):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise RuntimeError(f"{name}: sha256 {digest.hexdigest()} != expected {expected}")
    os.replace(partial, target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("chunk_dirs", nargs="*", type=Path, help="chunk folders of this upload (m1, m2, ...)")
    parser.add_argument("--parts", type=Path, default=Path("/tmp/model-parts"), help="where the parts collect")
    parser.add_argument("--out", type=Path, help="the Hugging Face folder to write (default /tmp/models/<model>)")
    args = parser.parse_args()

    t0 = time.time()
    try:
        collect(args.chunk_dirs, args.parts)
    except ValueError as error:
        parser.error(str(error))
    missing = missing_parts(args.parts)
    if missing:
        print(json.dumps({"status": "waiting", "parts": str(args.parts), "missing": missing}))
        return 3
    gguf = assemble(args.parts)
    out = args.out or Path("/tmp/models") / _FOLDER_NAMES.get(gguf.name, gguf.stem.lower())
    converted = not (out / "config.json").is_file()
    if converted:
        convert_gguf_to_hf(gguf, out)
    config = json.loads((out / "config.json").read_text())
    print(json.dumps({
        "status": "ready", "gguf": str(gguf), "out": str(out), "converted_now": converted,
        "seconds": round(time.time() - t0, 1), "architectures": config.get("architectures"),
        "eos_token_id": config.get("eos_token_id"), "files": sorted(p.name for p in out.iterdir()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
