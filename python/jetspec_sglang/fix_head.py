"""``jetspec fix-head``: rewrite a head's ``config.json`` in the form every loader reads.

Public JetSpec heads mark causality as ``dflash_config.causal_head``; SGLang's
DFLASH model reads only top-level ``is_causal`` together with ``layer_types``.
Re-saving the config through ``DraftHeadConfig`` writes every spelling.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .head_config import DraftHeadConfig


def fix_head_config(path: str | Path) -> dict:
    """Rewrite ``path/config.json`` in place; return the new dict. Weights are untouched."""
    config_path = Path(path) / "config.json"
    with open(config_path, encoding="utf-8") as f:
        original = json.load(f)
    fixed = DraftHeadConfig.from_hf_dict(original).to_hf_dict(dtype=original.get("torch_dtype", "bfloat16"))
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(fixed, f, indent=2, sort_keys=True)
    return fixed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("head", help="folder holding the head's config.json")


def run(args: argparse.Namespace) -> int:
    fixed = fix_head_config(args.head)
    print(f"{args.head}/config.json: is_causal={fixed['is_causal']}, {len(fixed['layer_types'])} layer_types")
    return 0
