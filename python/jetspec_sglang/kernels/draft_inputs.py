"""The head's block inputs of one draft step (``csrc/draft_inputs.cu``): one launch for the batch.

Each request drafts from ``[bonus, MASK x D]`` at positions ``seq_len .. seq_len + D``, whose KV
slots the scheduler already allocated in ``req_to_token``. ``draft_inputs_torch`` computes the
block's tokens, slots and positions in about six small torch launches; on SmolLM2 at bs 1 the host
time of those launches is a visible share of a step that the host, not the GPU, bounds
(``benchmark/results/step_breakdown_h200/``). ``draft_inputs_fused`` writes the same in one launch.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .tree_build import load_extension

DraftBlock = tuple[Tensor, Tensor, Tensor]
"""``(block_ids, slots, positions)``: ``[bs, W]`` int64 each, contiguous."""


def draft_inputs_torch(seq_lens: Tensor, req_pool_indices: Tensor, req_to_token: Tensor, bonus: Tensor,
                       mask_token_id: int, width: int) -> DraftBlock:
    """The reference: ``positions = seq_lens + j``, ``slots = req_to_token[req, positions]``,
    ``block_ids = [bonus, mask_token_id x (W - 1)]`` for ``j < W`` (index inputs int32 or int64)."""
    positions = seq_lens[:, None].to(torch.int64) + _offsets(width, seq_lens.device)
    slots = req_to_token[req_pool_indices[:, None], positions].to(torch.int64)
    block_ids = torch.full_like(positions, mask_token_id)
    block_ids[:, 0] = bonus
    return block_ids, slots, positions


@functools.lru_cache(maxsize=None)
def _offsets(width: int, device: torch.device) -> Tensor:
    """``arange(width)`` on ``device``, made once (the torch path stays the six ops it replaced)."""
    return torch.arange(width, device=device)


def draft_inputs_fused(seq_lens: Tensor, req_pool_indices: Tensor, req_to_token: Tensor, bonus: Tensor,
                       mask_token_id: int, width: int) -> DraftBlock:
    """``draft_inputs_torch`` in one kernel launch on the current stream; no host sync.

    Fresh outputs every call (under overlap scheduling the previous step's may still be read).
    Shapes and dtypes are checked by the extension; slots are read unchecked, as SGLang's own
    cache-location kernels read them (a position past ``req_to_token``'s row is the caller's bug).
    """
    out = torch.empty((3, seq_lens.shape[0], width), dtype=torch.int64, device=seq_lens.device)
    block_ids, slots, positions = out.unbind(0)
    # ``contiguous`` returns a contiguous tensor itself (no launch); a strided view (e.g. a column) is copied.
    load_extension().draft_inputs(seq_lens.contiguous(), req_pool_indices.contiguous(), req_to_token,
                                  bonus.contiguous(), mask_token_id, block_ids, slots, positions)  # fmt: skip
    return block_ids, slots, positions
