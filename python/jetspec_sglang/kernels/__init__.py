"""Fused GPU kernels, built on first use: CUDA ones JIT-compiled (nvcc and a CUDA build of torch),
Triton ones imported with triton on their first call, so this package imports without either.

Each op has one PyTorch reference: ``build_tree_fused`` is ``tree.build_tree_reference``
followed by ``sglang.lineage.encode_lineage``; ``build_verify_inputs_fused`` is
``tree_layout.eagle_verify_inputs``; ``tree_attention`` is
``tree_attention_reference``, beside it in ``tree_attention.py``, and ``build_tree_mask`` (its
ancestor bitmask in one launch) is ``tree_mask_from_parents``; ``draft_inputs_fused`` is
``draft_inputs_torch``; ``vocab_topk`` (Triton) is ``vocab_topk_reference``; ``head_graph_inputs`` and
``pad_verify_inputs`` (Triton, ``graph_inputs.py``) are their ``*_reference``.
"""

from .draft_inputs import draft_inputs_fused as draft_inputs_fused
from .draft_inputs import draft_inputs_torch as draft_inputs_torch
from .tree_attention import build_tree_mask as build_tree_mask
from .tree_attention import tree_attention as tree_attention
from .tree_attention import tree_attention_reference as tree_attention_reference
from .tree_attention import tree_mask_from_parents as tree_mask_from_parents
from .tree_build import build_tree_fused as build_tree_fused
from .tree_build import empty_tree_outputs as empty_tree_outputs
from .verify_inputs import build_verify_inputs_fused as build_verify_inputs_fused
from .verify_inputs import empty_verify_inputs as empty_verify_inputs
from .verify_inputs import verify_mask_numel as verify_mask_numel
from .vocab_topk import vocab_topk as vocab_topk
from .vocab_topk import vocab_topk_reference as vocab_topk_reference

__all__ = [
    "build_tree_fused",
    "build_tree_mask",
    "build_verify_inputs_fused",
    "draft_inputs_fused",
    "draft_inputs_torch",
    "empty_tree_outputs",
    "empty_verify_inputs",
    "tree_attention",
    "tree_attention_reference",
    "tree_mask_from_parents",
    "verify_mask_numel",
    "vocab_topk",
    "vocab_topk_reference",
]
