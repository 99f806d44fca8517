"""The rows a direct step writes into the head's and the target's CUDA-graph input buffers, as SGLang's buffer fill
would leave them for a batch padded to its graph's size.

``sglang/direct_verify.py`` replays SGLang's captured graphs without a ``ForwardBatch``, so it writes their input
buffers itself: token ids, positions, KV slots (``req_to_token[req, seq_len + j]``), ``seq_lens`` and request rows,
with position and slot 0 and ``seq_len_fill`` on rows past the batch (SGLang's ZERO and FILL_SENTINEL padding).

- ``head_graph_inputs_reference`` / ``pad_verify_inputs_reference``: the PyTorch definitions (the head's block from
  ``make_draft_inputs``: the one-launch ``draft_inputs_fused`` in serving, ``draft_inputs_torch`` in tests), about 20
  small launches each; on an H100 (fourteenth session, SmolLM2 shape, bs 1) they were 24 us before the head's graph
  and about 25 us of the tree graph, most of a step's launches under 2 us (``benchmark/results/step_breakdown_h100/``).
- ``head_graph_inputs`` / ``pad_verify_inputs``: the same in one Triton launch each (``graph_inputs_triton.py``);
  no host sync, so a CUDA graph can capture them. ``JETSPEC_GRAPH_INPUTS=fused`` selects them.

Every function takes the graph's buffers for ``B`` rows (``rows_of``): ``input_ids``, ``positions``,
``out_cache_loc`` of ``[B * W]`` int64 and ``seq_lens``, ``req_pool_indices`` of ``[B]`` int64; the step's
static ``seq_lens`` and ``req_pool_indices`` (``[B]`` int64, stale past the batch) and ``num_real`` (a 0-d int64
tensor: how many rows are this step's requests).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import Tensor

from .draft_inputs import DraftBlock, draft_inputs_fused

ENV = "JETSPEC_GRAPH_INPUTS"
CHOICES = ("torch", "fused")


def select_graph_inputs(choice: str | None = None) -> str:
    """``choice``, else ``$JETSPEC_GRAPH_INPUTS``, else ``torch``: how a direct step writes the graphs' input
    buffers. ``fused`` (one Triton launch for the head's, one for the target's) is opt-in until a GPU run shows
    the step token-identical with it."""
    choice = choice or os.environ.get(ENV) or "torch"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {CHOICES}, got {choice!r}")
    return choice


def real_rows(num_real: Tensor, rows: int) -> Tensor:
    """``[rows]`` bool: which rows hold a request of this step."""
    return torch.arange(rows, device=num_real.device) < num_real


def fill_padded_inputs(buffers: dict[str, Tensor], real: Tensor, positions: Tensor, slots: Tensor, seq_lens: Tensor,
                       req_pool_indices: Tensor, seq_len_fill: int) -> None:
    """Positions, KV slots, ``seq_lens`` and request rows of ``B`` rows into a graph's input ``buffers``, padded past
    the batch (``~real``) as SGLang pads: position and slot 0, ``seq_len_fill``. ``positions``, ``slots``: ``[B, T]``
    or ``[B * T]``; ``seq_lens``, ``req_pool_indices``: already 0 past the batch."""
    tokens = slots.numel() // real.shape[0]
    real_tokens = real[:, None].expand(real.shape[0], tokens).reshape(-1)  # (repeat_interleave may sync)
    buffers["out_cache_loc"].copy_(torch.where(real_tokens, slots.flatten(), 0))
    buffers["positions"].copy_(torch.where(real_tokens, positions.flatten(), 0))
    buffers["seq_lens"].copy_(torch.where(real, seq_lens, seq_len_fill))
    buffers["req_pool_indices"].copy_(req_pool_indices)


def head_graph_inputs_reference(head: dict[str, Tensor], block_slots: Tensor, block_positions: Tensor,
                                num_real: Tensor, seq_lens: Tensor, req_pool_indices: Tensor, bonus: Tensor,
                                req_to_token: Tensor, mask_token_id: int, seq_len_fill: int,
                                make_draft_inputs: Callable[..., DraftBlock] = draft_inputs_fused) -> None:
    """The head graph's inputs, ``[bonus, MASK x (W - 1)]`` at positions ``seq_len ..``, and the block's slots and
    positions (``block_slots``, ``block_positions``: ``[B, W]``; rows past the batch get request row 0's first
    slots and positions ``0 .. W - 1``, which nothing reads)."""
    real = real_rows(num_real, seq_lens.shape[0])
    seq_lens, req_pool_indices = torch.where(real, seq_lens, 0), torch.where(real, req_pool_indices, 0)
    block_ids, slots, positions = make_draft_inputs(seq_lens, req_pool_indices, req_to_token, bonus, mask_token_id,
                                                    block_slots.shape[1])  # fmt: skip
    head["input_ids"].copy_(block_ids.flatten())
    fill_padded_inputs(head, real, positions, slots, seq_lens, req_pool_indices, seq_len_fill)
    block_slots.copy_(slots)
    block_positions.copy_(positions)


def pad_verify_inputs_reference(target: dict[str, Tensor], lists: Tensor, num_real: Tensor, seq_lens: Tensor,
                                req_pool_indices: Tensor, req_to_token: Tensor, seq_len_fill: int,
                                own_nodes: Tensor) -> None:
    """The target graph's KV slots (node ``i`` at ``req_to_token[req, seq_len + i]``), ``seq_lens`` and request rows,
    its positions (already written by the verify-inputs kernel) zeroed past the batch, and the retrieve lists
    (``lists``: ``[3, B, N]`` index, next token, next sibling, rewritten in place) of a root-only tree over each
    padding row's own node ids (``own_nodes``: ``[B, N]``), so that padding rows accept nothing."""
    real = real_rows(num_real, seq_lens.shape[0])
    seq_lens, req_pool_indices = torch.where(real, seq_lens, 0), torch.where(real, req_pool_indices, 0)
    offsets = torch.arange(lists.shape[2], device=real.device)
    slots = req_to_token[req_pool_indices[:, None], seq_lens[:, None] + offsets].to(torch.int64)
    fill_padded_inputs(target, real, target["positions"], slots, seq_lens, req_pool_indices, seq_len_fill)
    padding = ~real[:, None]
    lists[0].copy_(torch.where(padding, own_nodes, lists[0]))
    lists[1:].masked_fill_(padding, -1)


def head_graph_inputs(head: dict[str, Tensor], block_slots: Tensor, block_positions: Tensor, num_real: Tensor,
                      seq_lens: Tensor, req_pool_indices: Tensor, bonus: Tensor, req_to_token: Tensor,
                      mask_token_id: int, seq_len_fill: int) -> None:
    """``head_graph_inputs_reference`` in one Triton launch (``bonus``: ``[B]`` int64)."""
    rows, width = block_slots.shape
    _launch(head, num_real, seq_lens, req_pool_indices, req_to_token, seq_len_fill, rows, width, head=True,
            bonus=bonus, mask_token_id=mask_token_id, block_slots=block_slots, block_positions=block_positions)


def pad_verify_inputs(target: dict[str, Tensor], lists: Tensor, num_real: Tensor, seq_lens: Tensor,
                      req_pool_indices: Tensor, req_to_token: Tensor, seq_len_fill: int, own_nodes: Tensor) -> None:
    """``pad_verify_inputs_reference`` in one Triton launch (``lists`` and ``own_nodes`` contiguous int64)."""
    _, rows, width = lists.shape
    _launch(target, num_real, seq_lens, req_pool_indices, req_to_token, seq_len_fill, rows, width, head=False,
            lists=lists, own_nodes=own_nodes)


def _launch(buffers: dict[str, Tensor], num_real: Tensor, seq_lens: Tensor, req_pool_indices: Tensor,
            req_to_token: Tensor, seq_len_fill: int, rows: int, width: int, head: bool, **extra) -> None:
    tensors = [*buffers.values(), num_real, seq_lens, req_pool_indices, *(t for t in extra.values()
                                                                          if isinstance(t, Tensor))]
    if any(t.dtype != torch.int64 or not t.is_contiguous() for t in tensors):
        raise ValueError("graph inputs, the step's rows and the extra outputs must be contiguous int64")
    if req_to_token.dim() != 2 or req_to_token.stride(-1) != 1:
        raise ValueError(f"req_to_token must be 2-d with a contiguous last dim, got {tuple(req_to_token.shape)}")
    from . import graph_inputs_triton as kernels  # imports triton

    unused = buffers["positions"]  # any int64 pointer for the other mode's arguments
    kernels.graph_rows[(rows,)](
        seq_lens, req_pool_indices, num_real, req_to_token, req_to_token.stride(0),
        buffers["input_ids"], buffers["positions"], buffers["out_cache_loc"], buffers["seq_lens"],
        buffers["req_pool_indices"], seq_len_fill, width,
        extra.get("bonus", unused), extra.get("mask_token_id", 0), extra.get("block_slots", unused),
        extra.get("block_positions", unused), extra.get("lists", unused), extra.get("own_nodes", unused), rows * width,
        HEAD=head, BLOCK=triton_block(width), num_warps=1 if width <= 128 else 4,
    )  # fmt: skip


def triton_block(width: int) -> int:
    """The power of two a program's lanes span for ``width`` tokens a row."""
    return 1 << max(width - 1, 0).bit_length()
