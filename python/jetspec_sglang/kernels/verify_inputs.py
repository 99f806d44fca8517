"""SGLang's verify inputs of built draft trees (``csrc/verify_inputs.cu``): one launch for the batch.

``build_verify_inputs_fused`` writes what SGLang 0.5.17's
``speculative/eagle_utils.py::build_tree_kernel_efficient`` returns (the verify tree mask,
positions, retrieve lists and flat draft tokens) straight from a ``DraftTree`` into
caller-provided buffers. Verify can then skip that function, which runs
``sgl_kernel.build_tree_kernel_efficient`` on the EAGLE lineage encoding (160-750 us on an H200 at
N = 128-256, benchmark/results/tree_build_h200/). Its reference is
``tree_layout.eagle_verify_inputs``. It lives in the extension of ``build_tree_fused``.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ..tree import DraftTree
from ..tree_layout import TreeMaskMode, VerifyInputs
from .tree_build import MAX_BUDGET, _check_device, load_extension

_LIST_FIELDS = ("retrieve_index", "retrieve_next_token", "retrieve_next_sibling")


def verify_mask_numel(mask_mode: TreeMaskMode, bs: int, budget: int, seq_lens_sum: int) -> int:
    """Cells of a ``mask_mode`` tree mask: ``N * seq_lens_sum + bs * N * N`` (FULL_MASK), ``bs * N * N`` (QLEN_ONLY).

    For a static buffer, pass ``seq_lens_sum = max_bs * max_context_len``, as SGLang does.
    """
    tree_cells = bs * budget * budget
    return budget * seq_lens_sum + tree_cells if _mode(mask_mode) == TreeMaskMode.FULL_MASK else tree_cells


def empty_verify_inputs(
    bs: int, budget: int, mask_numel: int, device: Union[torch.device, str], mask_dtype: torch.dtype = torch.bool
) -> VerifyInputs:
    """Uninitialised output buffers for ``build_verify_inputs_fused``; allocate them once, at the largest ``bs``.

    Returns:
        ``VerifyInputs`` with ``tree_mask`` ``[mask_numel]`` ``mask_dtype`` (bool or uint8),
        ``positions`` and ``draft_tokens`` ``[bs * N]`` and the ``retrieve_*`` lists ``[bs, N]``, all int64.
    """
    mask = torch.empty(mask_numel, dtype=mask_dtype, device=device)
    positions, draft_tokens = torch.empty(2, bs * budget, dtype=torch.int64, device=device)
    lists = torch.empty(3, bs, budget, dtype=torch.int64, device=device)  # one block, as SGLang allocates them
    return VerifyInputs(mask, positions, *lists, draft_tokens)


def build_verify_inputs_fused(
    tree: DraftTree,
    seq_lens: Tensor,
    mask_mode: TreeMaskMode,
    out: VerifyInputs,
    fill_prefix_mask: bool = True,
) -> VerifyInputs:
    """Write SGLang's verify inputs of ``tree`` into ``out``, in one kernel launch.

    Only launches a kernel into the given buffers: no allocation, no host sync, so a CUDA
    graph can capture it (with ``build_tree_fused`` before it).

    Parameters:
        tree: ``N``-slot trees, e.g. from ``build_tree_fused``: ``tokens`` and ``parents``
            ``[bs, N]`` int64, contiguous, CUDA; ``N <= 512``.
        seq_lens: ``[bs]`` int64, contiguous, ``>= 0`` (not checked: that would sync): committed
            tokens before each tree (SGLang's ``batch.seq_lens``).
        mask_mode: ``TreeMaskMode.FULL_MASK`` or ``QLEN_ONLY`` (SGLang's ``TreeMaskMode`` members work too).
        out: e.g. from ``empty_verify_inputs``, all contiguous on the device of ``tree``:
            ``tree_mask`` 1-D bool or uint8, ``positions`` and ``draft_tokens`` ``[bs * N]`` int64,
            ``retrieve_*`` ``[bs, N]`` int64. ``tree_mask`` must hold
            ``verify_mask_numel(mask_mode, bs, N, seq_lens.sum())`` cells; that is checked only
            against its lower bound ``bs * N * N`` (the sum is on the device), and cells past the
            end of ``tree_mask`` are never written. Cells past this batch's mask are left as they
            were (SGLang's wrapper first fills the whole buffer).
        fill_prefix_mask: FULL_MASK only: write True into every prefix cell, as SGLang's
            ``fill_prefix_mask=True`` does; ``False`` leaves them as they were, as SGLang's does
            (for a reader that ignores them).

    Returns:
        ``out``, holding ``tree_layout.eagle_verify_inputs(tree, seq_lens, mask_mode)`` in its
        first cells: the mask of the tree ``verify_parents`` describes (padding hangs off the root,
        as SGLang reads our lineage), positions ``seq_lens + depth``, the child/sibling lists in
        slot order, and ``tree.tokens`` flattened. These equal ``build_tree_kernel_efficient``'s
        outputs on ``build_tree_fused``'s lineage of the same tree.

    Examples:
        >>> tree, _ = build_tree_fused(ids, logprobs, roots, 128, k_enc, out=tree_bufs)  # doctest: +SKIP
        >>> build_verify_inputs_fused(tree, seq_lens, TreeMaskMode.FULL_MASK, verify_bufs)  # doctest: +SKIP
    """
    mode = _mode(mask_mode)
    bs, budget = tree.tokens.shape
    if budget > MAX_BUDGET:
        raise ValueError(f"build_verify_inputs_fused supports N <= {MAX_BUDGET}, got {budget}")
    expected = {"tokens": (tree.tokens, (bs, budget)), "parents": (tree.parents, (bs, budget)),
                "seq_lens": (seq_lens, (bs,)), "positions": (out.positions, (bs * budget,)),
                "draft_tokens": (out.draft_tokens, (bs * budget,)),
                **{name: (getattr(out, name), (bs, budget)) for name in _LIST_FIELDS}}  # fmt: skip
    for name, (t, shape) in expected.items():
        if t.dtype != torch.int64 or t.shape != shape or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous torch.int64 {shape}, got {t.dtype} {tuple(t.shape)}")
    mask = out.tree_mask
    if mask.dtype not in (torch.bool, torch.uint8) or mask.ndim != 1 or not mask.is_contiguous():
        got = f"{mask.dtype} {tuple(mask.shape)}"
        raise ValueError(f"tree_mask must be a contiguous 1-D bool or uint8 tensor, got {got}")
    if mask.numel() < bs * budget * budget:
        raise ValueError(f"tree_mask needs at least bs * N * N = {bs * budget * budget} cells, got {mask.numel()}")
    _check_device(tree.tokens, tree.parents, seq_lens, mask, out.positions, out.draft_tokens,
                  *(getattr(out, name) for name in _LIST_FIELDS))  # fmt: skip
    load_extension().build_verify_inputs(
        tree.tokens, tree.parents, seq_lens, int(mode), fill_prefix_mask, mask, out.positions,
        out.retrieve_index, out.retrieve_next_token, out.retrieve_next_sibling, out.draft_tokens,
    )  # fmt: skip
    return out


def _mode(mask_mode: TreeMaskMode) -> TreeMaskMode:
    try:
        return TreeMaskMode(int(mask_mode))
    except ValueError:
        raise ValueError(f"mask_mode must be FULL_MASK (0) or QLEN_ONLY (1), got {mask_mode!r}") from None
