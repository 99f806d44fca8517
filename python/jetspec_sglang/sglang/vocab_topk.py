"""Per-depth top-K with full-vocabulary log-probs from a (possibly vocab-parallel) ``lm_head``.

Under tensor parallelism each rank holds a vocab shard. Each computes its local
top-K and log-sum-exp, the ranks exchange those ``[T, K]`` and ``[T]`` tensors,
and every rank merges them the same way, so trees agree across ranks. Full
logits are never gathered.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Optional

import torch
from torch import Tensor

from ..kernels.vocab_topk import MAX_K, vocab_topk, vocab_topk_reference

logger = logging.getLogger(__name__)

ENV = "JETSPEC_VOCAB_TOPK"
CHOICES = ("auto", "fused", "torch")


def select_vocab_topk(topk: int, choice: Optional[str] = None) -> str:
    """How the head's vocabulary top-K runs (``fused`` or ``torch``): ``choice``, else ``$JETSPEC_VOCAB_TOPK``,
    else ``auto``.

    ``fused`` is ``kernels.vocab_topk``, two Triton launches; ``torch`` is PyTorch's ``logsumexp`` and ``topk``,
    about 35 kernels. ``auto`` takes ``fused`` where it can run (triton, ``topk <= 64``): on an H100 it cut the
    head's graph by 0.09-0.12 ms a step at SmolLM2's vocabulary and by 0.11-0.24 ms at Qwen3's, and its trees equal
    PyTorch's (``benchmark/results/step_breakdown_h100/``, ``sglang_plugin_h100/``, twelfth session). An explicit
    ``fused`` that cannot run falls back to ``torch`` with a warning.
    """
    choice = choice or os.environ.get(ENV) or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {CHOICES}, got {choice!r}")
    if choice == "torch":
        return choice
    if topk <= MAX_K and importlib.util.find_spec("triton") is not None:
        return "fused"
    if choice == "fused":
        logger.warning("JETSPEC: %s=fused needs triton and topk <= %d (topk is %d); using torch", ENV, MAX_K, topk)
    return "torch"


def shard_topk(hidden: Tensor, weight: Tensor, vocab_start: int, k: int, fused: bool = False
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Local top-K of one vocab shard.

    Parameters:
        hidden: ``[T, H]`` draft hidden states.
        weight: ``[V_shard, H]`` the shard's ``lm_head`` rows (padding rows excluded).
        vocab_start: global id of the shard's first row.
        fused: take the top-K with ``kernels.vocab_topk`` (CUDA) instead of PyTorch's ops.

    Returns:
        ``logits [T, k]`` float32 (best first), global ``ids [T, k]`` int64, and ``lse [T]`` float32.
    """
    logits = torch.matmul(hidden.to(weight.dtype), weight.t())
    k = min(k, logits.shape[-1])
    if fused:
        return vocab_topk(logits, k, vocab_start)
    values, ids, lse = vocab_topk_reference(logits, k)
    return values, ids + vocab_start, lse


def merge_shard_topk(values: Tensor, ids: Tensor, lse: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Merge per-shard results into global top-K ids and log-probs.

    Parameters:
        values: ``[P, T, k]`` shard logits; ``ids``: ``[P, T, k]`` global ids; ``lse``: ``[P, T]``.

    Returns:
        ``ids [T, k]`` int64 and ``logprobs [T, k]`` float32, best first. Ties go to the
        lower shard (a stable order every rank reproduces).
    """
    shards, tokens, per_shard = values.shape
    total_lse = torch.logsumexp(lse, dim=0)  # [T]
    flat_values = values.permute(1, 0, 2).reshape(tokens, shards * per_shard)
    flat_ids = ids.permute(1, 0, 2).reshape(tokens, shards * per_shard)
    order = torch.sort(flat_values, dim=-1, descending=True, stable=True).indices[:, :k]
    return flat_ids.gather(1, order), flat_values.gather(1, order) - total_lse[:, None]


def lm_head_shard(lm_head: Any) -> tuple[Tensor, int]:
    """The real (unpadded) vocab rows of this rank's ``lm_head`` and their first global id."""
    weight = lm_head.weight
    shard = getattr(lm_head, "shard_indices", None)
    if shard is None:
        return weight, 0
    if int(shard.num_added_elements) != 0:
        raise ValueError("JETSPEC does not support lm_heads with added vocabulary (LoRA extra vocab)")
    return weight[: int(shard.num_org_elements)], int(shard.org_vocab_start_index)


def vocab_parallel_topk(hidden: Tensor, lm_head: Any, k: int, tp_group: Optional[Any] = None, fused: bool = False
                        ) -> tuple[Tensor, Tensor]:
    """Global top-K ids and log-probs of ``hidden: [T, H]`` through ``lm_head``.

    ``tp_group`` is SGLang's TP ``GroupCoordinator`` (None for one rank); ``fused`` as in ``shard_topk``.
    Never syncs with the host.
    """
    weight, start = lm_head_shard(lm_head)
    values, ids, lse = shard_topk(hidden, weight, start, k, fused)
    if tp_group is None or tp_group.world_size == 1:
        return ids, values - lse[:, None]
    # One all-gather of [values | ids | lse]; ids ride as float32, exact below 2**24.
    gathered = tp_group.all_gather(torch.cat((values, ids.float(), lse[:, None]), dim=-1).unsqueeze(0), dim=0)
    per = values.shape[-1]
    return merge_shard_topk(gathered[..., :per], gathered[..., per : 2 * per].long(), gathered[..., -1], k)
