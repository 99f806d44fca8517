"""The fused best-first tree builder (``csrc/tree_build.cu``): one launch for the whole batch.

``build_tree_fused`` returns exactly what ``tree.build_tree_reference`` followed by
``sglang.lineage.encode_lineage`` returns, from one kernel with one thread block per
request, instead of the hundreds of small launches of ``tree.build_tree``. It never
syncs with the host and can write into preallocated outputs, so a CUDA graph can
capture it.

The same extension holds ``verify_inputs.build_verify_inputs_fused`` (``csrc/verify_inputs.cu``) and
``draft_inputs.draft_inputs_fused`` (``csrc/draft_inputs.cu``).
It is JIT-built with ninja on first use (``torch.utils.cpp_extension.load``)
and cached on disk, under ``$JETSPEC_KERNEL_CACHE`` when set, else in torch's extension
cache. It targets sm_90 with a compute_90 PTX fallback, or ``TORCH_CUDA_ARCH_LIST`` when set.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType
from typing import Optional, Union

import torch
from torch import Tensor

from ..sglang.lineage import EagleLineage
from ..tree import DraftTree, FanoutCap, _check_inputs, child_counts

MAX_BUDGET = 512  # csrc/tree_build.h: kMaxBudget
MAX_TOPK = 32  # kMaxTopK
MAX_DEPTH = 64  # kMaxDepth

_CSRC = Path(__file__).resolve().parents[3] / "csrc"
_TREE_FIELDS = ("tokens", "parents", "depths", "scores", "num_nodes")
_LINEAGE_FIELDS = ("parent_list", "top_scores_index", "draft_tokens")
_ARCH_FLAGS = ["-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90,code=compute_90"]


@functools.cache
def load_extension() -> ModuleType:
    """Build the extension (first call in a fresh cache only) and load it; raises if it cannot be built."""
    from torch.utils.cpp_extension import load

    sources = [_CSRC / name for name in (
        "tree_build_binding.cpp", "tree_build.cu", "verify_inputs.cu", "draft_inputs.cu")]
    if not all(path.exists() for path in sources):
        raise RuntimeError(f"the fused tree builder compiles from the source checkout's csrc/, not found at {_CSRC}")
    build_dir = None
    if os.environ.get("JETSPEC_KERNEL_CACHE"):
        build_dir = Path(os.environ["JETSPEC_KERNEL_CACHE"]) / "jetspec_tree_build"
        build_dir.mkdir(parents=True, exist_ok=True)
    # With no arch flag of ours, torch derives -gencode flags from TORCH_CUDA_ARCH_LIST.
    arch = [] if os.environ.get("TORCH_CUDA_ARCH_LIST") else _ARCH_FLAGS
    return load(
        name="jetspec_tree_build",
        sources=[str(path) for path in sources],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", *arch],
        build_directory=None if build_dir is None else str(build_dir),
    )


def _output_specs(bs: int, budget: int, depth: int, lineage_topk: int) -> dict[str, tuple[torch.dtype, tuple]]:
    """``{field: (dtype, shape)}`` of every output, ``DraftTree``'s then ``EagleLineage``'s."""
    nodes, lineage = (bs, budget), (bs, budget - 1)
    cols = lineage_topk * (depth - 1) + 1 if depth > 1 else 1
    return {
        "tokens": (torch.int64, nodes), "parents": (torch.int64, nodes), "depths": (torch.int64, nodes),
        "scores": (torch.float32, nodes), "num_nodes": (torch.int64, (bs,)),
        "parent_list": (torch.int64, (bs, cols)), "top_scores_index": (torch.int64, lineage),
        "draft_tokens": (torch.int64, lineage),
    }  # fmt: skip


def empty_tree_outputs(
    bs: int, budget: int, depth: int, lineage_topk: int, device: Union[torch.device, str]
) -> tuple[DraftTree, EagleLineage]:
    """Uninitialised output buffers for ``build_tree_fused(..., out=...)``.

    Allocate them once at the largest ``bs`` (static CUDA-graph buffers); every
    element is overwritten by each call.

    Returns:
        ``(DraftTree, EagleLineage)`` with ``tokens, parents, depths`` ``[bs, N]`` int64,
        ``scores`` ``[bs, N]`` float32, ``num_nodes`` ``[bs]`` int64,
        ``parent_list`` ``[bs, K_enc * (D - 1) + 1]`` (``[bs, 1]`` when ``D == 1``),
        ``top_scores_index`` and ``draft_tokens`` ``[bs, N - 1]``, all int64.
    """
    specs = _output_specs(bs, budget, depth, lineage_topk)
    t = {name: torch.empty(shape, dtype=dtype, device=device) for name, (dtype, shape) in specs.items()}
    tree = DraftTree(**{name: t[name] for name in _TREE_FIELDS}, max_depth=depth)
    lineage = EagleLineage(**{name: t[name] for name in _LINEAGE_FIELDS}, topk=lineage_topk, depth=depth)
    return tree, lineage


def build_tree_fused(
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    root_tokens: Tensor,
    budget: int,
    lineage_topk: int,
    fanout_cap: Optional[FanoutCap] = None,
    out: Optional[tuple[DraftTree, EagleLineage]] = None,
) -> tuple[DraftTree, EagleLineage]:
    """Build best-first trees and their EAGLE lineage encoding in one kernel launch.

    Parameters:
        topk_ids: ``[bs, D, K]`` int64, contiguous, CUDA: the draft's top-K tokens at depths ``1..D``.
        topk_logprobs: ``[bs, D, K]`` float32, contiguous: their log-probs, best first per depth
            (the builder relies on this order, and on log-probs being ``<= 0``).
        root_tokens: ``[bs]`` int64: the pending bonus token of each request.
        budget: ``N``, node slots per tree, root included; ``1 <= N <= 512``. ``K <= 32``, ``D <= 64``.
        lineage_topk: ``K_enc`` of the encoding (see ``sglang.lineage.lineage_topk``).
        fanout_cap: optional ``top2gap`` cap; its per-depth child counts come from
            ``tree.child_counts`` (a few small torch ops before the launch).
        out: buffers from ``empty_tree_outputs`` (same ``bs, N, D, K_enc``, same device) to
            write into, e.g. static buffers of a CUDA graph; allocated when ``None``.

    Returns:
        ``(tree, lineage)``: ``tree`` equals ``build_tree_reference(topk_ids, topk_logprobs,
        root_tokens, budget, fanout_cap)`` (padding slots repeat the root, parent ``-1``,
        depth 0, score ``-inf``), and ``lineage`` equals ``encode_lineage(tree, lineage_topk)``.
        They are ``out`` when given. Nothing syncs with the host.

    Examples:
        >>> lp = torch.log(torch.tensor([[[0.6, 0.3], [0.9, 0.05]]]))
        >>> ids, roots = torch.tensor([[[5, 6], [7, 8]]]), torch.tensor([1])
        >>> tree, lineage = build_tree_fused(ids.cuda(), lp.cuda(), roots.cuda(), 4, 2)  # doctest: +SKIP
        >>> tree.parents.tolist(), lineage.top_scores_index.tolist()  # doctest: +SKIP
        ([[-1, 0, 0, 1]], [[0, 1, 2]])
    """
    _check_args(topk_ids, topk_logprobs, root_tokens, budget, lineage_topk)
    bs, depth, _ = topk_ids.shape
    if out is None:
        out = empty_tree_outputs(bs, budget, depth, lineage_topk, topk_ids.device)
    else:
        _check_out(out, bs, budget, depth, lineage_topk, topk_ids.device)
    _check_device(topk_ids, topk_logprobs, root_tokens)
    counts = None if fanout_cap is None else child_counts(topk_logprobs, fanout_cap)
    tree, lineage = out
    load_extension().build_tree(
        topk_ids, topk_logprobs, root_tokens, counts, budget, lineage_topk,
        tree.tokens, tree.parents, tree.depths, tree.scores, tree.num_nodes,
        lineage.top_scores_index, lineage.parent_list, lineage.draft_tokens,
    )  # fmt: skip
    return out


def _check_args(topk_ids: Tensor, topk_logprobs: Tensor, root_tokens: Tensor, budget: int, lineage_topk: int) -> None:
    _check_inputs(topk_ids, topk_logprobs, root_tokens, budget)
    _, depth, k = topk_ids.shape
    for name, value, limit in (("budget", budget, MAX_BUDGET), ("K", k, MAX_TOPK), ("D", depth, MAX_DEPTH)):
        if value > limit:
            raise ValueError(f"the fused tree builder supports {name} <= {limit}, got {value}")
    if not 1 <= lineage_topk < 2**31:
        raise ValueError(f"lineage_topk must be in [1, 2**31), got {lineage_topk}")
    for name, t, dtype in (("topk_ids", topk_ids, torch.int64), ("topk_logprobs", topk_logprobs, torch.float32),
                           ("root_tokens", root_tokens, torch.int64)):  # fmt: skip
        if t.dtype != dtype:
            raise ValueError(f"{name} must be {dtype}, got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def _check_out(
    out: tuple[DraftTree, EagleLineage], bs: int, budget: int, depth: int, lineage_topk: int, device: torch.device
) -> None:
    tree, lineage = out
    if (tree.max_depth, lineage.depth, lineage.topk) != (depth, depth, lineage_topk):
        raise ValueError(
            f"out was made for D={tree.max_depth} (lineage D={lineage.depth}, K_enc={lineage.topk}); "
            f"this call has D={depth}, K_enc={lineage_topk}"
        )
    for name, (dtype, shape) in _output_specs(bs, budget, depth, lineage_topk).items():
        t = getattr(tree if name in _TREE_FIELDS else lineage, name)
        if t.dtype != dtype or t.shape != shape:
            raise ValueError(f"out {name} must be {dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
        if t.device != device or not t.is_contiguous():
            raise ValueError(f"out {name} must be contiguous on {device}, got a tensor on {t.device}")


def _check_device(*tensors: Tensor) -> None:
    device = tensors[0].device
    if device.type != "cuda" or any(t.device != device for t in tensors):
        raise ValueError(f"inputs must be on one CUDA device, got {[str(t.device) for t in tensors]}")
