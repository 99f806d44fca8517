"""Greedy acceptance after the target's verify forward, replayed from one CUDA graph per batch bucket.

After the target scores the tree, SGLang 0.5.17's ``run_eagle_verify`` accepts a path and moves
it to the front of each request's block in about 45 host-side torch ops (argmax, the greedy tree
walk, bonus tokens, the KV move, two compactions), and JETSPEC's commit graph then writes the
head's context K/V. On SmolLM2 at bs 1 that host work, not the GPU, bounds the step
(``benchmark/results/step_breakdown_h200``). For all-greedy batches ``GreedyAccept`` runs the same
SGLang pieces (``verify_tree_greedy``, ``fill_bonus_tokens``, ``move_accept_tokens_to_target_kvcache``)
and the head's commit as one graph replay, with the argmax written straight into its input.
``JETSPEC_ACCEPT_WALK=fused`` replaces those pieces' ~20 launches by ``kernels.greedy_walk``'s one, then moves the
KV through the same pool call SGLang's move makes.

Every other batch (sampling, grammar, logprobs, penalties, logit bias) keeps SGLang's path.
Padding rows of a bucket accept nothing, so they move no KV and commit nothing.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..kernels.greedy_walk import WalkOutputs, greedy_walk, select_accept_walk
from .step_graphs import BucketedGraphs

TAPS_BUFFER_LIMIT = 256 << 20  # bytes of static tap features ``GreedyAccept`` may hold (all buckets share it)


def buckets_within(buckets: Sequence[int], budget: int, tap_features: int, tap_dtype: torch.dtype,
                   limit: int = TAPS_BUFFER_LIMIT) -> list[int]:
    """The batch buckets whose tap features (``bs * N * F``) fit ``limit`` bytes.

    The graph needs every tree node's taps in a static buffer, which SGLang's memory planning does not
    know of; larger batches are compute-bound anyway, so they keep SGLang's verify path instead.
    """
    row_bytes = budget * tap_features * torch.empty((), dtype=tap_dtype).element_size()
    return [bs for bs in sorted(set(buckets)) if bs * row_bytes <= limit]


def greedy_accept_enabled() -> bool:
    """``JETSPEC_GREEDY_ACCEPT=0`` sends greedy batches through SGLang's ``run_eagle_verify`` as well."""
    value = os.environ.get("JETSPEC_GREEDY_ACCEPT", "1")
    if value not in ("0", "1"):
        raise ValueError(f"JETSPEC_GREEDY_ACCEPT must be 0 or 1, got {value!r}")
    return value == "1"


def greedy_acceptable(batch: Any) -> bool:
    """Whether SGLang's verify would take its plain greedy branch for this batch (no sampling,
    grammar, logprobs, penalties or logit bias), which is all ``GreedyAccept`` implements."""
    from sglang.srt.speculative.spec_utils import SIMULATE_ACC_LEN

    info = batch.sampling_info
    return bool(
        info.is_all_greedy and not batch.has_grammar and not batch.return_logprob and SIMULATE_ACC_LEN <= 0
        and info.acc_additive_penalties is None and info.acc_scaling_penalties is None and info.logit_bias is None
    )  # fmt: skip


def greedy_accept_supported(model_runner: Any) -> bool:
    """``GreedyAccept`` leaves out the verify steps of hybrid models: mamba state commits and
    compressed-KV draft states (neither applies to the Llama/Qwen3 targets JETSPEC serves)."""
    from sglang.srt.configs.hybrid_arch import mambaish_config

    kvcache = model_runner.token_to_kv_pool_allocator.get_kvcache()
    return (mambaish_config(model_runner.model_config) is None
            and getattr(kvcache, "clear_unaccepted_c128_draft_states", None) is None)  # fmt: skip


class GreedyAccept:
    """Accepts the longest greedy path of every tree, moves its KV, commits the head's K/V.

    Parameters:
        budget: tree nodes per request ``N``.
        width: the accept width, root plus the deepest level (``D + 1``, the draft block).
        tap_features: width of the target's tap features (the head's ``fc`` input).
        tap_dtype: their dtype.
        buckets: batch sizes to capture (SGLang's decode graph sizes).
        kv_allocator: the target's, for the KV move.
        write_committed: ``(taps [B, W, F], positions [B, W], slots [B, W], commit_lens [B]) -> None``.
    """

    def __init__(self, budget: int, width: int, tap_features: int, tap_dtype: torch.dtype, buckets: Sequence[int],
                 kv_allocator: Any, write_committed: Callable[..., None], device: torch.device | str) -> None:
        self.budget, self.width = budget, width
        self.kv_allocator = kv_allocator
        self.write_committed = write_committed
        max_bs = max(buckets)
        n, w = budget, width
        i64 = dict(dtype=torch.int64, device=device)
        # Inputs, shared by every bucket (a bucket's graph reads the first B rows).
        self.inputs = [
            torch.zeros((max_bs, n), **i64),  # target argmax per node
            torch.zeros((max_bs, n, tap_features), dtype=tap_dtype, device=device),  # taps per node
            torch.zeros((max_bs, n), **i64),  # draft tokens (candidates)
            torch.zeros((max_bs, n), **i64),  # retrieve_index
            torch.full((max_bs, n), -1, **i64),  # retrieve_next_token
            torch.full((max_bs, n), -1, **i64),  # retrieve_next_sibling
            torch.zeros((max_bs,), **i64),  # seq_lens
            torch.zeros((max_bs, n), **i64),  # out_cache_loc of the tree nodes
            torch.zeros((max_bs, w), **i64),  # block positions (head commit)
            torch.zeros((max_bs, w), **i64),  # block slots (head commit)
            torch.zeros((max_bs,), dtype=torch.bool, device=device),  # real row (False on padding)
        ]
        self.real_rows = torch.ones((max_bs,), dtype=torch.bool, device=device)
        self.own_nodes = torch.arange(max_bs * n, **i64).view(max_bs, n)  # retrieve_index of a root-only tree
        # The KV move's slot table is ``out_cache_loc [B, N]``: request b is its row b, starting at column 0.
        self.table_rows = torch.arange(max_bs, **i64)
        self.table_starts = torch.zeros((max_bs,), **i64)
        # Outputs, read back right after each replay: ``predict``, ``accept_lens``, ``bonus``, ``new_seq_lens``; with
        # ``JETSPEC_ACCEPT_WALK=fused`` one launch writes them, the KV move's slot pairs and the path's nodes.
        self.walk = WalkOutputs.empty(max_bs, n, w, device)
        self.predict, self.accept_lens, self.bonus, self.new_seq_lens = self.walk[:4]
        self.walk_in_one_launch = select_accept_walk() == "fused"
        self.graphs = BucketedGraphs(self.accept, buckets, lambda bs: [x[:bs] for x in self.inputs],
                                     pad_rows=self._accept_nothing_past)

    def capture(self) -> None:
        self.graphs.capture()

    def fits(self, bs: int) -> bool:
        return self.graphs.bucket_for(bs) is not None

    def accept(self, target_predict: Tensor, taps: Tensor, candidates: Tensor, retrieve_index: Tensor,
               retrieve_next_token: Tensor, retrieve_next_sibling: Tensor, seq_lens: Tensor, out_cache_loc: Tensor,
               block_positions: Tensor, block_slots: Tensor, real: Tensor) -> None:
        """The graph's body, on ``B`` rows; writes ``predict``, ``accept_lens``, ``bonus``, ``new_seq_lens``."""
        if self.walk_in_one_launch:
            return self.accept_in_one_walk(target_predict, taps, candidates, retrieve_index, retrieve_next_token,
                                           retrieve_next_sibling, seq_lens, out_cache_loc, block_positions,
                                           block_slots, real)  # fmt: skip
        from sglang.kernels.ops.speculative.eagle import fill_bonus_tokens_func
        from sglang.srt.speculative.eagle_utils import verify_tree_greedy_func
        from sglang.srt.speculative.spec_utils import move_accept_tokens_to_target_kvcache

        bs, n, w = target_predict.shape[0], self.budget, self.width
        predict = torch.zeros((bs * n,), dtype=torch.int32, device=target_predict.device)
        accept_index = torch.full((bs, w), -1, dtype=torch.int32, device=target_predict.device)
        correct = torch.empty((bs,), dtype=torch.int32, device=target_predict.device)
        verify_tree_greedy_func(predicts=predict, accept_index=accept_index, accept_token_num=correct,
                                candidates=candidates, retrieve_index=retrieve_index,
                                retrieve_next_token=retrieve_next_token, retrieve_next_sibling=retrieve_next_sibling,
                                target_predict=target_predict)  # fmt: skip
        accept_index = torch.where(real[:, None], accept_index, -1)
        accept_lens = torch.where(real, correct + 1, 0).to(torch.int32)
        accepted_nodes = accept_index.clamp_min(0).to(torch.int64)  # global node ids; past accept_lens never read
        accept_tokens = predict[accepted_nodes]  # [bs, w]
        fill_bonus_tokens_func(accept_tokens, accept_lens, self.bonus[:bs], w, bs)
        # The accepted path's target KV to the block's first slots (what SGLang's tree path does). Those slots,
        # ``req_to_token[req, seq_len + i]``, are the tree's own first ones (SGLang's verify and ``DirectVerify`` both
        # give node ``i`` that slot), so the move reads them from ``out_cache_loc``: acceptance reads nothing the
        # scheduler writes (the WAR read-done event ``JetSpecWorker.decode_direct`` records relies on it).
        kv_batch = SimpleNamespace(seq_lens=self.table_starts[:bs], req_pool_indices=self.table_rows[:bs],
                                   req_to_token_pool=SimpleNamespace(req_to_token=out_cache_loc),
                                   out_cache_loc=out_cache_loc.flatten())
        move_accept_tokens_to_target_kvcache(kv_batch, accept_index, accept_lens - 1, self.kv_allocator)
        rows = taps.flatten(0, 1)[accepted_nodes]  # [bs, w, F]
        self.write_committed(rows, block_positions, block_slots, accept_lens)
        front = self.predict[:bs]
        front.copy_(predict.view(bs, n))
        front[:, :w] = accept_tokens
        self.accept_lens[:bs].copy_(accept_lens)
        self.new_seq_lens[:bs].copy_(seq_lens + accept_lens)

    def accept_in_one_walk(self, target_predict: Tensor, taps: Tensor, candidates: Tensor, retrieve_index: Tensor,
                           retrieve_next_token: Tensor, retrieve_next_sibling: Tensor, seq_lens: Tensor,
                           out_cache_loc: Tensor, block_positions: Tensor, block_slots: Tensor, real: Tensor) -> None:
        """``accept`` with ``greedy_walk`` in place of SGLang's walk, bonus fill and slot compaction."""
        walk = self.walk.rows(target_predict.shape[0])
        greedy_walk(target_predict, candidates, retrieve_index, retrieve_next_token, retrieve_next_sibling, real,
                    seq_lens, out_cache_loc, walk)  # fmt: skip
        self.kv_allocator.get_kvcache().move_kv_cache(walk.move_tgt, walk.move_src)  # the call SGLang's move makes
        self.write_committed(taps.flatten(0, 1)[walk.accepted_nodes], block_positions, block_slots, walk.accept_lens)

    def __call__(self, logits: Tensor, taps: Tensor, verify_input: Any, seq_lens: Tensor, out_cache_loc: Tensor,
                 block_positions: Tensor, block_slots: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step: returns fresh ``predict [bs * N]`` (accepted path first in each block), ``accept_lens``,
        ``bonus`` and ``new_seq_lens``, as SGLang's verify would."""
        bs, n = seq_lens.shape[0], self.budget
        torch.argmax(logits, dim=-1, out=self.inputs[0][:bs].view(-1))
        self.graphs(self.inputs[0][:bs], taps.view(bs, n, -1), verify_input.draft_token.view(bs, n),
                    verify_input.retrieve_index, verify_input.retrieve_next_token, verify_input.retrieve_next_sibling,
                    seq_lens, out_cache_loc.view(bs, n), block_positions, block_slots,
                    self.real_rows[:bs])  # fmt: skip
        return self.results(bs)

    def results(self, bs: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Copies of the last replay's outputs for ``bs`` requests: ``predict [bs * N]``, ``accept_lens``, ``bonus``,
        ``new_seq_lens`` (under overlap scheduling the next replay may run before these are read)."""
        return (self.predict[:bs].flatten().clone(), self.accept_lens[:bs].clone(), self.bonus[:bs].clone(),
                self.new_seq_lens[:bs].clone())

    def _accept_nothing_past(self, static: list[Tensor], bs: int) -> None:
        """Padding rows are not real, so they accept nothing. Each gets a root-only tree over its own
        node ids: the greedy walk writes ``predict`` at the retrieve index, which must not be a real row's."""
        static[10][bs:].zero_()
        static[3][bs:].copy_(self.own_nodes[bs : static[3].shape[0]])
        static[4][bs:].fill_(-1)
        static[5][bs:].fill_(-1)
