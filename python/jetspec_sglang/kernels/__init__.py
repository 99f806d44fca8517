"""Fused CUDA kernels, JIT-built on first use (needs nvcc and a CUDA build of torch).

Each op has one PyTorch reference in the core package: ``build_tree_fused`` is
``tree.build_tree_reference`` followed by ``sglang.lineage.encode_lineage``.
"""

from .tree_build import build_tree_fused as build_tree_fused
from .tree_build import empty_tree_outputs as empty_tree_outputs

__all__ = ["build_tree_fused", "empty_tree_outputs"]
