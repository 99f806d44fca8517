"""Greedy acceptance of a batch of verified trees, with every per-request output of it, in one launch.

After the target's verify forward, ``sglang/greedy_accept.py`` turns the target's choice at every node into what
the step emits. With SGLang's pieces that is about 20 small launches (the greedy tree walk, masks for padding rows,
the accepted tokens and the bonus token, the KV move's slot lists, the copies into static outputs); on an H100
(fourteenth session, SmolLM2 shape, bs 1) they were about 35 us of a 1.78 ms step, each under 2 us
(``benchmark/results/step_breakdown_h100/``). ``greedy_walk`` writes all of it in one Triton launch
(``greedy_walk_triton.py``); the KV move and the head's commit then read its slot lists and node ids.
``JETSPEC_ACCEPT_WALK=fused`` selects it (opt-in until a whole step is timed with it; it is token-identical
in fp32 on an H100, with the same accepted lengths).

The walk is SGLang's ``verify_tree_greedy``: from the root, the first child (in ``retrieve_next_token`` /
``retrieve_next_sibling`` order) whose draft token equals the target's choice at the last accepted node is
accepted, for at most ``W - 1`` levels. No host sync, so a CUDA graph can capture it.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor

from .graph_inputs import triton_block

ENV = "JETSPEC_ACCEPT_WALK"
CHOICES = ("sglang", "fused")


def select_accept_walk(choice: str | None = None) -> str:
    """``choice``, else ``$JETSPEC_ACCEPT_WALK``, else ``sglang``: how graphed greedy acceptance walks the trees
    and writes its outputs (SGLang's kernels and torch ops, or ``greedy_walk``'s one launch)."""
    choice = choice or os.environ.get(ENV) or "sglang"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {CHOICES}, got {choice!r}")
    return choice


class WalkOutputs(NamedTuple):
    """What ``greedy_walk`` writes, for ``B`` trees of ``N`` nodes and an accept width ``W`` (root + deepest level).

    Attributes:
        predict: ``[B, N]`` int32: the target's choice at each node of the accepted path, root first (the last is
            the bonus token), then zeros. SGLang reads the first ``accept_lens[b]`` of each row.
        accept_lens: ``[B]`` int32: the root plus the accepted drafts; 0 on padding rows.
        bonus: ``[B]`` int32: the target's choice at the deepest accepted node.
        new_seq_lens: ``[B]`` int64: ``seq_lens + accept_lens``.
        accepted_nodes: ``[B, W]`` int64: global node ids (``retrieve_index``) of the path, 0 past it.
        move_tgt, move_src: ``[B * W]`` int64: KV slot pairs that move the path's K/V to the front of its block
            (``out_cache_loc[b, j]`` <- the path's ``j``-th node's slot); ``0 <- 0`` past the path.
    """

    predict: Tensor
    accept_lens: Tensor
    bonus: Tensor
    new_seq_lens: Tensor
    accepted_nodes: Tensor
    move_tgt: Tensor
    move_src: Tensor

    @classmethod
    def empty(cls, rows: int, n: int, width: int, device: torch.device | str) -> "WalkOutputs":
        i32, i64 = dict(dtype=torch.int32, device=device), dict(dtype=torch.int64, device=device)
        return cls(torch.zeros((rows, n), **i32), torch.zeros((rows,), **i32), torch.zeros((rows,), **i32),
                   torch.zeros((rows,), **i64), torch.zeros((rows, width), **i64), torch.zeros((rows * width,), **i64),
                   torch.zeros((rows * width,), **i64))  # fmt: skip

    def rows(self, bs: int) -> "WalkOutputs":
        """The first ``bs`` trees' outputs (views)."""
        w = self.accepted_nodes.shape[1]
        return WalkOutputs(self.predict[:bs], self.accept_lens[:bs], self.bonus[:bs], self.new_seq_lens[:bs],
                           self.accepted_nodes[:bs], self.move_tgt[: bs * w], self.move_src[: bs * w])


def greedy_walk(target_predict: Tensor, candidates: Tensor, retrieve_index: Tensor, retrieve_next_token: Tensor,
                retrieve_next_sibling: Tensor, real: Tensor, seq_lens: Tensor, out_cache_loc: Tensor,
                out: WalkOutputs) -> None:
    """Walk ``B`` trees and write ``out`` (``WalkOutputs.rows(B)`` of a larger buffer works).

    Parameters:
        target_predict: ``[B, N]`` int64, the target's choice (argmax) at every node.
        candidates: ``[B, N]`` int64 draft tokens; ``retrieve_index``: ``[B, N]`` int64 global node ids
            (``b * N + i``); ``retrieve_next_token`` / ``retrieve_next_sibling``: ``[B, N]`` int64 first child and
            next sibling, ``-1`` for none (SGLang's verify lists).
        real: ``[B]`` bool, False on padding rows (they accept nothing).
        seq_lens: ``[B]`` int64; ``out_cache_loc``: ``[B, N]`` int64, the KV slot of every node.
    """
    bs, n = target_predict.shape
    width = out.accepted_nodes.shape[1]
    tensors = (target_predict, candidates, retrieve_index, retrieve_next_token, retrieve_next_sibling, out_cache_loc)
    if any(t.shape != (bs, n) or t.dtype != torch.int64 or not t.is_contiguous() for t in tensors):
        raise ValueError(f"the tree inputs must be contiguous int64 [{bs}, {n}], got "
                         f"{[(t.dtype, tuple(t.shape)) for t in tensors]}")  # fmt: skip
    if real.shape != (bs,) or real.dtype != torch.bool or seq_lens.shape != (bs,) or seq_lens.dtype != torch.int64:
        raise ValueError(f"real must be bool [{bs}] and seq_lens int64 [{bs}], got {real.dtype} "
                         f"{tuple(real.shape)} and {seq_lens.dtype} {tuple(seq_lens.shape)}")  # fmt: skip
    if out.predict.shape != (bs, n) or out.accept_lens.shape != (bs,) or out.move_tgt.shape != (bs * width,):
        raise ValueError(f"out must hold {bs} trees of {n} nodes (WalkOutputs.rows), got predict "
                         f"{tuple(out.predict.shape)} and moves {tuple(out.move_tgt.shape)}")  # fmt: skip
    if bs == 0:
        return
    from . import greedy_walk_triton as kernels  # imports triton

    kernels.greedy_walk_rows[(bs,)](
        target_predict, candidates, retrieve_index, retrieve_next_token, retrieve_next_sibling, real, seq_lens,
        out_cache_loc, *out, n, width,
        BLOCK_W=triton_block(width), BLOCK_N=triton_block(n), num_warps=1 if n <= 128 else 4,
    )  # fmt: skip

