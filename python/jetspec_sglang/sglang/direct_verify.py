"""A greedy step with no ``ForwardBatch``: the head's block, the tree, the target's verify and acceptance as five
graph replays.

On an H100 (2026-12-06, SmolLM2 shape, bs 1, budget 64) the worker's host took 0.81 ms from the end of the
head's pass to the end of acceptance: building the tree 0.105 ms, the tree masks and SGLang's verify input
0.135, ``eagle_prepare_for_verify`` (cache slots, ``ForwardBatch.init_new``, the graph runner's buffer fill)
0.202, the runner's replay 0.105, greedy acceptance 0.192. The GPU waited through the first 0.45 ms of it, for
the launch of the target's graph (``benchmark/results/step_breakdown_h100/``). Once that was direct, the head's
pass through its ``ModelRunner`` (a ``ForwardBatch``, the runner's buffer fill and checks) was the largest host
phase left: 0.31 ms of host time for 0.24 ms on the GPU (thirteenth session, same shape).

``DirectVerify`` does the same work for an all-greedy batch whose size has a head graph and a verify graph:

1. one grouped copy puts the step's ``seq_lens``, request rows and bonus tokens into static buffers;
2. ``draft_inputs`` (ours, one graph per batch bucket) writes the head's block inputs straight into the head
   graph's static inputs: ``[bonus, MASK x D]``, positions, KV slots, ``seq_lens`` and request rows, with the
   padding SGLang's buffer fill gives rows past the batch; then the head's graph, as SGLang's
   ``DecodeCudaGraphRunner`` captured it with the vocabulary top-K folded in (``step_graphs.DraftTopK``), replays;
3. ``prepare`` (ours) builds the trees from the head graph's top-K, writes the tree-attention masks, and writes
   the verify inputs straight into the target graph's static inputs: tokens, positions, KV slots
   (``req_to_token[req, seq_len + i]``), ``seq_lens`` and request rows. Rows past the batch get the values
   SGLang's buffer fill gives them (``CudaGraphBufferRegistry``'s ZERO and FILL_SENTINEL policies), and a
   root-only tree over their own node ids, so they accept nothing;
4. the target's verify graph replays;
5. ``accept`` (ours) takes the argmax of that graph's logits and runs ``GreedyAccept``'s body (SGLang's greedy
   tree walk, bonus tokens, KV move, the head's K/V commit) on its static outputs.

It applies only where SGLang's replays would do nothing but fill those buffers (``direct_verify_refusal``, for
the head's runner and the target's): one rank, the full-graph backend, no attention metadata refill on the
replay path (the tree kernel on every verify layer of the target; the head's refill skipped or inside its
graphs), none of SGLang's optional replay-time features. ``JETSPEC_DIRECT_VERIFY=0`` keeps SGLang's path;
``required`` fails the server's start where no budget can take this one.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from ..kernels.graph_inputs import (
    head_graph_inputs,
    head_graph_inputs_reference,
    pad_verify_inputs,
    pad_verify_inputs_reference,
    real_rows,
    select_graph_inputs,
)
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
    """Why the TARGET_VERIFY graphs in ``graph_runner`` (the target's or the head's) cannot be replayed directly, or
    None when they can.

    ``metadata_unread``: no attention metadata refill is on the replay path (``verify_metadata``: the target's is
    skipped where the tree kernel served every verify layer, the head's is skipped likewise or recorded inside its
    graphs), so filling the input buffers is all a replay needs.
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
    """One bucket's graphs: ours, and the head's and the target's (replayed by their keys, the target's read through
    its outputs). ``prepared`` (what ``prepare`` writes and ``accept`` reads) stays referenced, so the pool never
    lends it to another graph."""

    draft_inputs: torch.cuda.CUDAGraph
    prepare: torch.cuda.CUDAGraph
    accept: torch.cuda.CUDAGraph
    target_outputs: Any
    key: Any
    prepared: tuple[list[Tensor], Tensor]


class DirectVerify:
    """Greedy steps of one tree budget's graphed batch sizes (see the module docstring).

    Parameters:
        build_tree: the plan's tree builder ``(topk_ids, topk_logprobs, roots) -> (tree, lineage)``.
        write_tree_mask: ``(parents [B, N], max_depth) -> None``, the plan's tree-attention masks.
        graph_runner: the target's ``DecodeCudaGraphRunner`` of this budget.
        head_runner: the head's ``DecodeCudaGraphRunner`` (its graphs end with ``draft_topk``'s top-K).
        accept: the plan's ``GreedyAccept`` (its body and output buffers are reused).
        draft_topk: the head graph's top-K buffers.
        req_to_token: the request-to-slot table.
        mask_token_id: the head's MASK token.
        buckets: the batch sizes to capture (those ``accept``, ``graph_runner`` and ``head_runner`` all have).
    """

    def __init__(self, build_tree: Callable[..., Any], write_tree_mask: Callable[[Tensor, int], None],
                 graph_runner: Any, head_runner: Any, accept: GreedyAccept, draft_topk: DraftTopK,
                 req_to_token: Tensor, mask_token_id: int, buckets: list[int], device: torch.device | str) -> None:
        self.build_tree, self.write_tree_mask, self.accept = build_tree, write_tree_mask, accept
        self.graph_runner, self.head_runner, self.draft_topk = graph_runner, head_runner, draft_topk
        self.req_to_token, self.mask_token_id = req_to_token, mask_token_id
        self.buckets = sorted(buckets)
        self.budget, self.width = accept.budget, accept.width
        self.target = graph_buffers(graph_runner)
        self.head = graph_buffers(head_runner)
        self.seq_len_fill = graph_runner.seq_len_fill_value
        self.head_seq_len_fill = head_runner.seq_len_fill_value
        max_bs = self.buckets[-1]
        i64 = dict(dtype=torch.int64, device=device)
        # The step's inputs (first rows) and its batch size, copied in before each replay.
        self.seq_lens = torch.zeros((max_bs,), **i64)
        self.req_pool_indices = torch.zeros((max_bs,), **i64)
        self.bonus = torch.zeros((max_bs,), **i64)
        self.num_real = torch.zeros((), **i64)
        self.batch_sizes = torch.arange(max_bs + 1, **i64)  # device scalars to copy num_real from
        # The head's block slots and positions, written by ``draft_inputs`` (the head's K/V commit goes there).
        self.block_slots = torch.zeros((max_bs, self.width), **i64)
        self.block_positions = torch.zeros((max_bs, self.width), **i64)
        fused = select_graph_inputs() == "fused"
        self.write_head_inputs = head_graph_inputs if fused else head_graph_inputs_reference
        self.pad_verify_inputs = pad_verify_inputs if fused else pad_verify_inputs_reference
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, BucketGraphs] = {}
        self._inputs: dict[int, list[Tensor]] = {}  # bs -> the static rows a step of bs requests copies into

    def fits(self, bs: int) -> bool:
        return self.bucket_for(bs) is not None

    def bucket_for(self, bs: int) -> Optional[int]:
        return next((b for b in self.buckets if b >= bs and b in self.graphs), None)

    def capture(self) -> None:
        """Capture ``draft_inputs``, ``prepare`` and ``accept`` for every bucket, largest first (smaller ones
        reuse its memory)."""
        from sglang.srt.model_executor.runner.shape_key import ShapeKey

        self.num_real.zero_()  # every row padding while capturing: nothing is accepted, moved or committed
        for bucket in reversed(self.buckets):
            key = ShapeKey(size=bucket)
            outputs = self.graph_runner.backend._outputs[key]
            draft_inputs, _ = capture_graph(lambda: self.write_draft_inputs(bucket), self.pool)
            prepare, prepared = capture_graph(lambda: self.prepare(bucket), self.pool)
            prepare.replay()  # the accept warm-up reads what prepare writes: padding rows' root-only trees
            accept, _ = capture_graph(lambda: self.accept_step(bucket, outputs, *prepared), self.pool)
            self.graphs[bucket] = BucketGraphs(draft_inputs, prepare, accept, outputs, key, prepared)

    def load(self, seq_lens: Tensor, req_pool_indices: Tensor, bonus: Tensor) -> None:
        """This step's inputs into the static buffers (one grouped copy, SGLang's)."""
        from sglang.srt.model_executor.cuda_graph_buffer_registry import _grouped_foreach_copy_

        bs = seq_lens.shape[0]
        rows = self._inputs.get(bs)
        if rows is None:
            rows = self._inputs[bs] = [self.seq_lens[:bs], self.req_pool_indices[:bs], self.bonus[:bs], self.num_real]
        _grouped_foreach_copy_(rows, [seq_lens, req_pool_indices, bonus, self.batch_sizes[bs]])

    def replay_draft_inputs(self, bs: int) -> None:
        """The head's block inputs for the ``bs`` requests ``load`` loaded."""
        self.graphs[self.bucket_for(bs)].draft_inputs.replay()

    def replay_head(self, bs: int) -> None:
        """The head's block forward and its top-K (``draft_topk``'s buffers)."""
        self.head_runner.backend.replay(self.graphs[self.bucket_for(bs)].key, None)

    def replay_prepare(self, bs: int) -> None:
        """The trees and the target's verify inputs."""
        self.graphs[self.bucket_for(bs)].prepare.replay()

    def replay_target(self, bs: int) -> None:
        """The target's verify graph."""
        self.graph_runner.backend.replay(self.graphs[self.bucket_for(bs)].key, None)

    def replay_accept(self, bs: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``accept`` over what ``replay_target`` scored. Returns the target's logits ``[bs * N, V]`` (a view of the
        graph's output, as SGLang's runner returns it) and ``GreedyAccept.results``."""
        graphs = self.graphs[self.bucket_for(bs)]
        graphs.accept.replay()
        return (graphs.target_outputs.next_token_logits[: bs * self.budget], *self.accept.results(bs))

    def write_draft_inputs(self, bucket: int) -> None:
        """The head graph's inputs of ``bucket`` rows, ``[bonus, MASK x D]`` at ``seq_len ..``, and the block's
        slots and positions (graph body)."""
        self.write_head_inputs(rows_of(self.head, bucket, self.width), self.block_slots[:bucket],
                               self.block_positions[:bucket], self.num_real, self.seq_lens[:bucket],
                               self.req_pool_indices[:bucket], self.bonus[:bucket], self.req_to_token,
                               self.mask_token_id, self.head_seq_len_fill)  # fmt: skip

    def prepare(self, bucket: int) -> tuple[list[Tensor], Tensor]:
        """The trees and every verify input of ``bucket`` rows (graph body); returns ``GreedyAccept``'s
        per-tree inputs (candidates and the three retrieve lists, ``[bucket, N]`` each) and which rows are real."""
        n, real = self.budget, real_rows(self.num_real, bucket)
        tree, _ = self.build_tree(self.draft_topk.ids[:bucket], self.draft_topk.logprobs[:bucket], self.bonus[:bucket])
        self.write_tree_mask(tree.parents, tree.max_depth)
        target = rows_of(self.target, bucket, n)
        lists = torch.empty((3, bucket, n), dtype=torch.int64, device=real.device)
        mask = torch.empty((bucket * n * n,), dtype=torch.bool, device=real.device)  # SGLang's mask: not read here
        seq_lens = torch.where(real, self.seq_lens[:bucket], 0)
        build_verify_inputs_fused(tree, seq_lens, TreeMaskMode.QLEN_ONLY,
                                  VerifyInputs(mask, target["positions"], *lists, target["input_ids"]))
        self.pad_verify_inputs(target, lists, self.num_real, self.seq_lens[:bucket], self.req_pool_indices[:bucket],
                               self.req_to_token, self.seq_len_fill, self.accept.own_nodes[:bucket])  # fmt: skip
        return [target["input_ids"].view(bucket, n), *lists], real

    def accept_step(self, bucket: int, outputs: Any, accept_inputs: list[Tensor], real: Tensor) -> None:
        """Greedy acceptance of ``bucket`` rows from the target graph's outputs (graph body)."""
        n = self.budget
        predict = self.accept.inputs[0][:bucket]
        torch.argmax(outputs.next_token_logits[: bucket * n], dim=-1, out=predict.view(-1))
        self.accept.accept(predict, outputs.hidden_states[: bucket * n].view(bucket, n, -1), *accept_inputs,
                           self.seq_lens[:bucket], self.target["out_cache_loc"][: bucket * n].view(bucket, n),
                           self.block_positions[:bucket], self.block_slots[:bucket], real)  # fmt: skip


def graph_buffers(graph_runner: Any) -> dict[str, Tensor]:
    """The static input buffers (``INT64_SLOTS``) of ``graph_runner``'s captured graphs."""
    registry = graph_runner.buffer_registry
    return {name: registry.get_slot(name).buffer for name in INT64_SLOTS}


def rows_of(buffers: dict[str, Tensor], bucket: int, width: int) -> dict[str, Tensor]:
    """The first ``bucket`` rows of a graph's input buffers, ``width`` tokens a row."""
    return {name: buffer[: bucket * width] if name in ("input_ids", "positions", "out_cache_loc") else buffer[:bucket]
            for name, buffer in buffers.items()}  # fmt: skip
