"""The head's block attention through our tree kernel (``JETSPEC_HEAD_ATTENTION``: ``auto``, ``tree`` or ``sglang``).

The head's block forward is a TARGET_VERIFY forward of SGLang's ``DFlashDraftModel`` over ``[bonus, MASK x D]``:
each block position attends to the request's committed prefix in the head's KV pool and, for a causal head,
to the block positions before it. That is tree attention over a chain, so the target's tree kernel serves it
with a fixed chain mask (``kernels.tree_attention``; ``tree_verify_attention`` installs it). On SGLang's Triton
backend each head layer instead runs two ``contiguous`` copies of K and V and its extend kernel (13 + 3.7 us a
layer in an H200 SmolLM2 trace, ``benchmark/results/step_breakdown_h200/``), and every head graph replays the
backend's verify-metadata refill, which only SGLang's kernel reads and which is then skipped
(``verify_metadata.skip_unread_refill``). A bidirectional head (DFLASH's own, ``ENCODER_ONLY`` layers) stays on
SGLang's kernel layer by layer, and its refill with it.

The draft does not decide what is emitted (the target's verify does), so this changes speed only. ``auto`` (the
default) takes the tree kernel for a causal head wherever the head's backend can take it: on an H100 it cut the
head's graph by 0.06-0.10 ms a step on a SmolLM2 shape (bs 1-32) and 0.05-0.06 ms on a Qwen3-8B shape, and drafted
as well (``benchmark/results/step_breakdown_h100/``, ``sglang_plugin_h100/``, twelfth session). ``tree`` asks for
it and warns where it cannot be had; ``sglang`` keeps SGLang's kernel. The same installation with a tree mask
instead of a chain is the draft-side mask that path-conditioned drafting needs.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from .tree_verify_attention import (
    TreeMaskBuffer,
    TreeVerifyForwardExtend,
    install_tree_verify_attention,
    tree_attention_refusal,
)

ENV = "JETSPEC_HEAD_ATTENTION"
CHOICES = ("auto", "sglang", "tree")


def select_head_attention(choice: Optional[str] = None) -> str:
    """``choice``, else ``$JETSPEC_HEAD_ATTENTION``, else ``auto``."""
    choice = choice or os.environ.get(ENV) or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {CHOICES}, got {choice!r}")
    return choice


def chain_mask(rows: int, width: int, device: torch.device | str) -> TreeMaskBuffer:
    """A ``TreeMaskBuffer`` of ``rows`` blocks of ``width`` positions, each position's parent the one before it:
    causal attention inside each block."""
    mask = TreeMaskBuffer(rows, width, device)
    parents = torch.arange(-1, width - 1, device=device).repeat(rows, 1)
    mask.write(parents, max_depth=width - 1)
    return mask


def resolve_head_attention(choice: str, causal: bool, backend: Any) -> tuple[str, Optional[str]]:
    """``tree`` or ``sglang`` for a head with in-block ``causal`` attention on the head's ``backend``, and a
    warning to log when an explicit ``tree`` cannot be had. A bidirectional head keeps SGLang's kernel under
    ``auto``: every layer of it would defer there anyway (``ENCODER_ONLY``)."""
    if choice == "sglang" or (choice == "auto" and not causal):
        return "sglang", None
    refusal = tree_attention_refusal(backend)
    if refusal is None:
        return "tree", None
    if choice == "tree":
        return "sglang", refusal.replace("JETSPEC_VERIFY_ATTENTION", ENV) + "; the head keeps SGLang's attention"
    return "sglang", None


def install_head_tree_attention(backend: Any, rows: int, width: int, device: torch.device | str
                                ) -> TreeVerifyForwardExtend:
    """The head backend's TARGET_VERIFY through the tree kernel over ``rows`` blocks of ``width`` (a backend
    ``resolve_head_attention`` took); returns the installed ``forward_extend``."""
    return install_tree_verify_attention(backend, chain_mask(rows, width, device))
