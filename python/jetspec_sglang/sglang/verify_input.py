"""SGLang's ``EagleVerifyInput`` for a JETSPEC tree, from SGLang's tree kernel or from ours.

``fused`` (the default) writes the verify mask, positions and retrieve lists straight from
the tree with ``kernels.build_verify_inputs_fused`` (``csrc/verify_inputs.cu``), into the
backend's verify-mask buffer when the batch fits it, as SGLang does, since the target's CUDA
graph reads that buffer. It needs the fused tree builder (see ``tree_builder``).
``sglang`` (``JETSPEC_VERIFY_INPUTS=sglang``, and the fallback without the fused builder) passes
the tree's EAGLE lineage to SGLang 0.5.17's ``build_eagle_verify_input``, which runs
``sgl_kernel.build_tree_kernel_efficient``: 324 us of GPU time per step at bs 1 and N = 128 on
an H200, against one launch of ours.

On the H200 (2026-11-28) both give equal outputs in both mask modes, both are token-identical to
plain SGLang in fp32, and ``fused`` made the step faster: 10.3 vs 11.4 ms on a Qwen3-8B shape and
7.3 vs 10.2 ms on SmolLM2 at bs 4 (``benchmark/results/step_breakdown_h200/``).
"""

from __future__ import annotations

from typing import Any

import torch
from sglang.srt.speculative.eagle_info import EagleVerifyInput
from sglang.srt.speculative.eagle_utils import TreeMaskMode, default_tree_mask_mode
from sglang.srt.speculative.eagle_worker_common import build_eagle_verify_input

from ..kernels.verify_inputs import build_verify_inputs_fused, verify_mask_numel
from ..tree import DraftTree
from ..tree_layout import VerifyInputs
from .lineage import EagleLineage


def sglang_verify_input(batch: Any, draft_input: Any, tree: DraftTree, lineage: EagleLineage, *,
                        target_worker: Any, budget: int, device: Any) -> EagleVerifyInput:
    """SGLang's own path: the lineage through ``build_eagle_verify_input``."""
    return build_eagle_verify_input(
        batch, draft_input, lineage.parent_list, lineage.top_scores_index, lineage.draft_tokens, None,
        target_worker=target_worker, topk=lineage.topk, num_steps=lineage.depth, num_draft_tokens=budget,
        tree_mask_mode=default_tree_mask_mode(), device=device,
    )  # fmt: skip


def fused_verify_input(batch: Any, draft_input: Any, tree: DraftTree, lineage: EagleLineage, *,
                       target_worker: Any, budget: int, device: Any) -> EagleVerifyInput:
    """Our kernel's path; falls back to SGLang's for mask layouts it does not write (bit-packed)."""
    bs = tree.tokens.shape[0]
    backend = target_worker.model_runner.attn_backend
    static = backend.verify_mask
    if static is not None and static.fits(bs):
        mask, mode, fill = static.buffer, static.mode, static.is_read
    else:
        mode, fill = default_tree_mask_mode(), True
        seq_lens_sum = batch.seq_lens_sum if batch.seq_lens_sum is not None else bs * backend.max_context_len
        mask = torch.empty(verify_mask_numel(mode, bs, budget, seq_lens_sum), dtype=torch.bool, device=device)
    if mode not in (TreeMaskMode.FULL_MASK, TreeMaskMode.QLEN_ONLY):
        return sglang_verify_input(batch, draft_input, tree, lineage, target_worker=target_worker, budget=budget,
                                   device=device)
    # Fresh outputs every step: under overlap scheduling the previous step's may still be read.
    nodes = torch.empty(2, bs * budget, dtype=torch.int64, device=device)
    lists = torch.empty(3, bs, budget, dtype=torch.int64, device=device)
    out = VerifyInputs(mask, nodes[0], *lists, nodes[1])
    build_verify_inputs_fused(tree, batch.seq_lens.to(torch.int64), mode, out, fill_prefix_mask=fill)
    return EagleVerifyInput(
        draft_token=out.draft_tokens, custom_mask=out.tree_mask, positions=out.positions,
        retrieve_index=out.retrieve_index, retrieve_next_token=out.retrieve_next_token,
        retrieve_next_sibling=out.retrieve_next_sibling, retrieve_cum_len=None, spec_steps=lineage.depth,
        topk=lineage.topk, draft_token_num=budget, capture_hidden_mode=None, seq_lens_sum=None,
        seq_lens_cpu=None, draft_probs=None,
    )  # fmt: skip
