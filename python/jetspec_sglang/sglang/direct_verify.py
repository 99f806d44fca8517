"""Greedy verify with no ``ForwardBatch``: tree, target verify graph and acceptance as three graph replays.

On an H100 (2026-12-06, SmolLM2 shape, bs 1, budget 64) the worker's host took 0.81 ms from the end of the
head's pass to the end of acceptance: building the tree 0.105 ms, the tree masks and SGLang's verify input
0.135, ``eagle_prepare_for_verify`` (cache slots, ``ForwardBatch.init_new``, the graph runner's buffer fill)
0.202, the runner's replay 0.105, greedy acceptance 0.192. The GPU waited through the first 0.45 ms of it, for
the launch of the target's graph (``benchmark/results/step_breakdown_h100/``).

``DirectVerify`` does the same work for an all-greedy batch whose size has a verify graph:

1. one grouped copy puts the step's ``seq_lens``, request rows, bonus tokens and draft-block slots and
   positions into static buffers;
2. ``prepare`` (ours, one graph per batch bucket) builds the trees from the head graph's top-K, writes the
   tree-attention masks, and writes the verify inputs straight into the target graph's static inputs: tokens,
   positions, KV slots (``req_to_token[req, seq_len + i]``), ``seq_lens`` and request rows. Rows past the batch
   get the values SGLang's buffer fill gives them (``CudaGraphBufferRegistry``'s ZERO and FILL_SENTINEL
   policies), and a root-only tree over their own node ids, so they accept nothing;
3. the target's verify graph, as SGLang's ``DecodeCudaGraphRunner`` captured it, replays;
4. ``accept`` (one graph per bucket) takes the argmax of that graph's logits and runs ``GreedyAccept``'s body
   (SGLang's greedy tree walk, bonus tokens, KV move, the head's K/V commit) on its static outputs.

It applies only where SGLang's replay would do nothing but fill those buffers (``direct_verify_refusal``): one
rank, the full-graph backend, the tree kernel on every verify layer (so the attention metadata refill is
skipped), none of SGLang's optional replay-time features. ``JETSPEC_DIRECT_VERIFY=0`` keeps the SGLang path;
``required`` fails the server's start where no budget can take this one.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from ..kernels.verify_inputs import build_verify_inputs_fused
from ..tree_layout import TreeMaskMode, VerifyInputs
from .greedy_accept import GreedyAccept
from .step_graphs import DraftTopK, capture_graph

ENV = "JETSPEC_DIRECT_VERIFY"
MODES = ("0", "1", "required")
FILLED_SLOTS = frozenset({"input_ids", "positions", "out_cache_loc", "req_pool_indices", "seq_lens", "seq_lens_cpu",
                          "mrope_positions"})  # what fill_from copies for our batches (mrope: only when FB has it)
GATHER_SLOTS = frozenset({"global_num_tokens_gpu", "global_num_tokens_for_logprob_gpu"})  # filled for DP gathers only
INT64_SLOTS = ("input_ids", "positions", "out_cache_loc", "req_pool_indices", "seq_lens")


def direct_verify_mode() -> str:
    """``$JETSPEC_DIRECT_VERIFY``: ``1`` (the default: wherever SGLang's replay allows it), ``0`` (SGLang's verify
    path for every batch), or ``required`` (as ``1``, and the server refuses to start if no budget can take it:
    for deployments and tests that must run the fast path)."""
    value = os.environ.get(ENV, "1")
    if value not in MODES:
        raise ValueError(f"{ENV} must be one of {MODES}, got {value!r}")
    return value


def direct_verify_refusal(model_runner: Any, graph_runner: Any, metadata_unread: bool) -> Optional[str]:
    """Why the target's verify graphs in ``graph_runner`` cannot be replayed directly, or None when they can.

    ``metadata_unread``: the tree kernel served every verify layer of the captured graphs, and their replays skip the
    attention metadata refill (``verify_metadata.skip_unread_refill``), so filling the input buffers is all a
    replay needs.
    """
    if graph_runner is None:
        return "no verify CUDA graphs"
    if not metadata_unread:
        return "the verify graphs read SGLang's attention metadata (tree attention is off or deferred)"
    if type(graph_runner.backend).__name__ != "FullCudaGraphBackend":  # its subclasses may replay differently
        return f"graph backend {type(graph_runner.backend).__name__}"
    features = {
        "ragged verify": graph_runner.ragged_verify_mode, "pdmux": graph_runner.enable_pdmux,
        "two-batch overlap": graph_runner.enable_two_batch_overlap, "pipeline parallelism": graph_runner.pp_size > 1,
        "DP / attention-TP gathers": graph_runner.require_mlp_tp_gather or graph_runner.require_attn_tp_gather,
        "encoder-decoder": graph_runner.is_encoder_decoder, "LoRA": model_runner.server_args.enable_lora,
        "KV canary": getattr(model_runner, "canary_manager", None) is not None,
        "hisparse": getattr(model_runner, "hisparse_coordinator", None) is not None,
    }  # fmt: skip
    on = [name for name, enabled in features.items() if enabled]
    if on:
        return "needs SGLang's replay for " + ", ".join(on)
    registry = graph_runner.buffer_registry
    extra = sorted(set(registry.slot_names()) - FILLED_SLOTS - GATHER_SLOTS)  # gathers are refused above
    if extra:
        return f"the graphs read buffers this path does not fill: {extra}"
    wrong = [name for name in INT64_SLOTS if registry.get_slot(name).buffer.dtype != torch.int64]
    if wrong:
        return f"buffers that are not int64: {wrong}"
    return None


def captured_sizes(graph_runner: Any) -> set[int]:
    """The batch sizes ``graph_runner``'s backend holds a plain graph of (no stream index, no variant)."""
    return {key.size for key in graph_runner.backend._outputs if key.stream_idx is None and key.variant_label is None}


class BucketGraphs(NamedTuple):
    """One bucket's graphs: ours, and the target's (replayed by its key, read through its outputs). ``prepared``
    (what ``prepare`` writes and ``accept`` reads) stays referenced, so the pool never lends it to another graph."""

    prepare: torch.cuda.CUDAGraph
    accept: torch.cuda.CUDAGraph
    target_outputs: Any
    target_key: Any
    prepared: tuple[list[Tensor], Tensor]


class DirectVerify:
    """Greedy verify of one tree budget's graphed batch sizes (see the module docstring).

    Parameters:
        build_tree: the plan's tree builder ``(topk_ids, topk_logprobs, roots) -> (tree, lineage)``.
        write_tree_mask: ``(parents [B, N], max_depth) -> None``, the plan's tree-attention masks.
        graph_runner: the target's ``DecodeCudaGraphRunner`` of this budget.
        accept: the plan's ``GreedyAccept`` (its body and output buffers are reused).
        draft_topk: the head graph's top-K buffers.
        req_to_token: the request-to-slot table.
        buckets: the batch sizes to capture (those ``accept`` and ``graph_runner`` both have).
    """

    def __init__(self, build_tree: Callable[..., Any], write_tree_mask: Callable[[Tensor, int], None],
                 graph_runner: Any, accept: GreedyAccept, draft_topk: DraftTopK, req_to_token: Tensor,
                 buckets: list[int], device: torch.device | str) -> None:
        self.build_tree, self.write_tree_mask, self.accept = build_tree, write_tree_mask, accept
        self.graph_runner, self.draft_topk, self.req_to_token = graph_runner, draft_topk, req_to_token
        self.buckets = sorted(buckets)
        self.budget, width = accept.budget, accept.width
        registry = graph_runner.buffer_registry
        self.target = {name: registry.get_slot(name).buffer for name in INT64_SLOTS}
        self.seq_len_fill = graph_runner.seq_len_fill_value
        max_bs = self.buckets[-1]
        i64 = dict(dtype=torch.int64, device=device)
        # The step's inputs (first rows) and its batch size, copied in before each replay.
        self.seq_lens = torch.zeros((max_bs,), **i64)
        self.req_pool_indices = torch.zeros((max_bs,), **i64)
        self.bonus = torch.zeros((max_bs,), **i64)
        self.block_slots = torch.zeros((max_bs, width), **i64)
        self.block_positions = torch.zeros((max_bs, width), **i64)
        self.num_real = torch.zeros((), **i64)
        self.batch_sizes = torch.arange(max_bs + 1, **i64)  # device scalars to copy num_real from
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, BucketGraphs] = {}
        self._inputs: dict[int, list[Tensor]] = {}  # bs -> the static rows a step of bs requests copies into

    def fits(self, bs: int) -> bool:
        return self.bucket_for(bs) is not None

    def bucket_for(self, bs: int) -> Optional[int]:
        return next((b for b in self.buckets if b >= bs and b in self.graphs), None)

    def capture(self) -> None:
        """Capture ``prepare`` and ``accept`` for every bucket, largest first (smaller ones reuse its memory)."""
        from sglang.srt.model_executor.runner.shape_key import ShapeKey

        self.num_real.zero_()  # every row padding while capturing: nothing is accepted, moved or committed
        for bucket in reversed(self.buckets):
            key = ShapeKey(size=bucket)
            outputs = self.graph_runner.backend._outputs[key]
            prepare, prepared = capture_graph(lambda: self.prepare(bucket), self.pool)
            prepare.replay()  # the accept warm-up reads what prepare writes: padding rows' root-only trees
            accept, _ = capture_graph(lambda: self.accept_step(bucket, outputs, *prepared), self.pool)
            self.graphs[bucket] = BucketGraphs(prepare, accept, outputs, key, prepared)

    def load_and_prepare(self, seq_lens: Tensor, req_pool_indices: Tensor, bonus: Tensor, block_slots: Tensor,
                         block_positions: Tensor) -> None:
        """This step's inputs into the static buffers (one grouped copy, SGLang's), then the ``prepare`` replay."""
        from sglang.srt.model_executor.cuda_graph_buffer_registry import _grouped_foreach_copy_

        bs = seq_lens.shape[0]
        rows = self._inputs.get(bs)
        if rows is None:
            rows = self._inputs[bs] = [self.seq_lens[:bs], self.req_pool_indices[:bs], self.bonus[:bs],
                                       self.block_slots[:bs], self.block_positions[:bs], self.num_real]
        _grouped_foreach_copy_(rows, [seq_lens, req_pool_indices, bonus, block_slots, block_positions,
                                      self.batch_sizes[bs]])  # fmt: skip
        self.graphs[self.bucket_for(bs)].prepare.replay()

    def replay_target(self, bs: int) -> None:
        """The target's verify graph for the ``bs`` requests ``load_and_prepare`` loaded."""
        self.graph_runner.backend.replay(self.graphs[self.bucket_for(bs)].target_key, None)

    def replay_accept(self, bs: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``accept`` over what ``replay_target`` scored. Returns the target's logits ``[bs * N, V]`` (a view of the
        graph's output, as SGLang's runner returns it) and ``GreedyAccept.results``."""
        graphs = self.graphs[self.bucket_for(bs)]
        graphs.accept.replay()
        return (graphs.target_outputs.next_token_logits[: bs * self.budget], *self.accept.results(bs))

    def prepare(self, bucket: int) -> tuple[list[Tensor], Tensor]:
        """The trees and every verify input of ``bucket`` rows (graph body); returns ``GreedyAccept``'s
        per-tree inputs (candidates and the three retrieve lists, ``[bucket, N]`` each) and which rows are real."""
        n, rows = self.budget, torch.arange(bucket, device=self.seq_lens.device)
        real = rows < self.num_real
        tree, _ = self.build_tree(self.draft_topk.ids[:bucket], self.draft_topk.logprobs[:bucket], self.bonus[:bucket])
        self.write_tree_mask(tree.parents, tree.max_depth)
        target = {name: buffer[: bucket * n] if name in ("input_ids", "positions", "out_cache_loc") else buffer[:bucket]
                  for name, buffer in self.target.items()}  # fmt: skip
        lists = torch.empty((3, bucket, n), dtype=torch.int64, device=rows.device)
        mask = torch.empty((bucket * n * n,), dtype=torch.bool, device=rows.device)  # SGLang's mask: not read here
        seq_lens = torch.where(real, self.seq_lens[:bucket], 0)
        build_verify_inputs_fused(tree, seq_lens, TreeMaskMode.QLEN_ONLY,
                                  VerifyInputs(mask, target["positions"], *lists, target["input_ids"]))
        accept_inputs = pad_verify_rows(target, lists, real, seq_lens,
                                        torch.where(real, self.req_pool_indices[:bucket], 0), self.req_to_token,
                                        self.seq_len_fill, self.accept.own_nodes[:bucket])  # fmt: skip
        return accept_inputs, real

    def accept_step(self, bucket: int, outputs: Any, accept_inputs: list[Tensor], real: Tensor) -> None:
        """Greedy acceptance of ``bucket`` rows from the target graph's outputs (graph body)."""
        n = self.budget
        predict = self.accept.inputs[0][:bucket]
        torch.argmax(outputs.next_token_logits[: bucket * n], dim=-1, out=predict.view(-1))
        self.accept.accept(predict, outputs.hidden_states[: bucket * n].view(bucket, n, -1), *accept_inputs,
                           self.seq_lens[:bucket], self.req_pool_indices[:bucket],
                           self.target["out_cache_loc"][: bucket * n].view(bucket, n), self.block_positions[:bucket],
                           self.block_slots[:bucket], real)  # fmt: skip


def pad_verify_rows(target: dict[str, Tensor], lists: Tensor, real: Tensor, seq_lens: Tensor, req_pool_indices: Tensor,
                    req_to_token: Tensor, seq_len_fill: int, own_nodes: Tensor) -> list[Tensor]:
    """The rest of ``prepare`` (separate so that it runs on a CPU in tests): fill the target's ``seq_lens``,
    request rows and KV slots, give rows past the batch (``~real``) SGLang's padding, and return
    ``GreedyAccept``'s inputs with a root-only tree over their own node ids for those rows.

    ``target`` holds the graph's buffers for ``B`` rows (``input_ids``, ``positions``, ``out_cache_loc``:
    ``[B * N]``; ``seq_lens``, ``req_pool_indices``: ``[B]``), tokens and positions already written; ``lists``:
    ``[3, B, N]`` retrieve index, next token, next sibling; ``seq_lens``, ``req_pool_indices``: 0 past the batch.
    """
    bucket, n = lists.shape[1], lists.shape[2]
    real_tokens = real[:, None].expand(bucket, n).reshape(-1)  # (repeat_interleave may sync)
    offsets = torch.arange(n, device=real.device)
    slots = req_to_token[req_pool_indices[:, None], seq_lens[:, None] + offsets].to(torch.int64).flatten()
    target["out_cache_loc"].copy_(torch.where(real_tokens, slots, 0))
    target["positions"].copy_(torch.where(real_tokens, target["positions"], 0))
    target["seq_lens"].copy_(torch.where(real, seq_lens, seq_len_fill))
    target["req_pool_indices"].copy_(req_pool_indices)
    real_rows = real[:, None]
    return [target["input_ids"].view(bucket, n), torch.where(real_rows, lists[0], own_nodes),
            torch.where(real_rows, lists[1], -1), torch.where(real_rows, lists[2], -1)]
