"""Which tree builder a JETSPEC step uses: the fused CUDA kernel, or the core's torch builder.

Both give the same trees and the same EAGLE lineage encoding (the kernel is tested
equal to ``tree.build_tree_reference`` + ``lineage.encode_lineage``). The fused
kernel is one launch of about 20 us; the torch builder is a few hundred small
launches (about 4 ms eager on an H200, see benchmark/results/tree_build_h200/).

``JETSPEC_TREE_BUILDER`` picks it (``JETSPEC_VERIFY_INPUTS`` how SGLang's verify inputs are
made from the tree, see ``verify_input``, and ``JETSPEC_DRAFT_INPUTS`` how the head's block inputs
are, see ``kernels.draft_inputs``; all three default to ``fused``, which shares one extension).
``fused`` JIT-builds ``csrc/tree_build.cu`` (and its siblings) when the worker starts (about a
minute the first time, then cached); where that fails (no nvcc, or an install without the
``csrc/`` sources) the worker logs why and falls back to ``torch``, which can also be asked for
directly.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Callable, Optional

from torch import Tensor

from ..tree import DraftTree, build_tree
from .lineage import EagleLineage, encode_lineage

logger = logging.getLogger(__name__)

TreeBuilder = Callable[[Tensor, Tensor, Tensor], tuple[DraftTree, EagleLineage]]
"""``(topk_ids [bs, D, K] int64, topk_logprobs [bs, D, K] float32, roots [bs] int64) -> (tree, lineage)``."""

BUILDERS = ("fused", "torch")
VERIFY_INPUTS = ("sglang", "fused")
DRAFT_INPUTS = ("torch", "fused")


def select_tree_builder(budget: int, lineage_topk: int, choice: Optional[str] = None) -> tuple[str, TreeBuilder]:
    """The builder to use and its name; ``choice`` defaults to ``$JETSPEC_TREE_BUILDER`` or ``fused``."""
    choice = _tree_builder_choice(choice)

    def torch_builder(topk_ids: Tensor, topk_logprobs: Tensor, roots: Tensor) -> tuple[DraftTree, EagleLineage]:
        tree = build_tree(topk_ids, topk_logprobs, roots, budget)
        return tree, encode_lineage(tree, lineage_topk)

    if choice == "torch":
        return "torch", torch_builder
    try:
        from ..kernels.tree_build import build_tree_fused, load_extension

        load_extension()
    except (ImportError, OSError, RuntimeError, subprocess.CalledProcessError) as err:
        logger.warning("JETSPEC: the fused tree builder could not be built (%s); using the torch builder "
                       "(same trees, more launches). Set JETSPEC_TREE_BUILDER=torch to skip this attempt.", err)
        return "torch", torch_builder

    def fused_builder(topk_ids: Tensor, topk_logprobs: Tensor, roots: Tensor) -> tuple[DraftTree, EagleLineage]:
        return build_tree_fused(topk_ids, topk_logprobs, roots, budget, lineage_topk)

    return "fused", fused_builder


def check_kernel_switches() -> None:
    """Fail on a bad ``JETSPEC_TREE_BUILDER``, ``JETSPEC_VERIFY_INPUTS`` or ``JETSPEC_DRAFT_INPUTS`` value at launch,
    without building the extension (the worker builds it in the scheduler process)."""
    _tree_builder_choice(None)
    select_verify_inputs("fused")
    select_draft_inputs("fused")


def _tree_builder_choice(choice: Optional[str]) -> str:
    choice = choice or os.environ.get("JETSPEC_TREE_BUILDER", "fused")
    if choice not in BUILDERS:
        raise ValueError(f"JETSPEC_TREE_BUILDER must be one of {BUILDERS}, got {choice!r}")
    return choice


def select_verify_inputs(tree_builder: str, choice: Optional[str] = None) -> str:
    """How verify inputs are made: ``$JETSPEC_VERIFY_INPUTS`` or ``fused`` (see ``verify_input``);
    ``fused`` needs the fused builder's extension, else ``sglang``."""
    return _fused_or_fallback("JETSPEC_VERIFY_INPUTS", VERIFY_INPUTS, tree_builder, choice)


def select_draft_inputs(tree_builder: str, choice: Optional[str] = None) -> str:
    """How the head's block inputs are made: ``$JETSPEC_DRAFT_INPUTS`` or ``fused`` (one launch,
    ``kernels.draft_inputs``); ``fused`` needs the fused builder's extension, else ``torch``."""
    return _fused_or_fallback("JETSPEC_DRAFT_INPUTS", DRAFT_INPUTS, tree_builder, choice)


def _fused_or_fallback(env: str, choices: tuple[str, str], tree_builder: str, choice: Optional[str]) -> str:
    """``choice``, else ``$env``, else ``fused``; ``fused`` falls back to ``choices[0]`` when the extension
    did not build (``tree_builder`` is not ``fused``), with a warning where ``fused`` was asked for by name."""
    asked = choice or os.environ.get(env)
    choice = asked or "fused"
    if choice not in choices:
        raise ValueError(f"{env} must be one of {choices}, got {choice!r}")
    if choice == "fused" and tree_builder != "fused":
        if asked:
            logger.warning("JETSPEC: %s=fused needs the fused tree builder's extension; using %s", env, choices[0])
        return choices[0]
    return choice
