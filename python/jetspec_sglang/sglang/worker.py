"""``JetSpecWorker``: the JETSPEC speculative worker for SGLang 0.5.17 (spec-v2 schema).

A decode step reads as four phases:

1. ``draft``  the block's tokens, KV slots and positions come from one launch
   (``kernels.draft_inputs``), then the head runs once over ``[bonus, MASK x D]`` on its own
   ModelRunner (TARGET_VERIFY mode) and yields per-depth top-K ids with full-vocabulary log-probs;
   the top-K is part of the head's CUDA graph (``step_graphs.DraftTopK``);
2. ``build_tree``  a best-first tree of ``N`` nodes is built on the GPU and encoded in
   SGLang's EAGLE lineage ABI, by one fused kernel launch (``tree_builder``). ``N`` is the
   server's budget for small batches and shrinks for large ones (``budget_plan``): each budget
   has its own target attention backend and verify graphs (``verify_plans``);
3. ``verify``  the verify inputs come from one more launch (``verify_input``), then the target
   scores the tree in one pass. An all-greedy batch is accepted, its KV moved and the head's
   K/V committed by one graph replay (``greedy_accept.GreedyAccept``, SGLang's own greedy
   pieces); any other batch goes through SGLang's ``run_eagle_verify`` (lossless sampling,
   grammar, penalties, logprobs), which moves the accepted KV to the front. Where the batch
   size has graphs, an all-greedy batch skips SGLang's forward batches altogether: the head's
   inputs and graph, tree and verify inputs, the target's verify graph and acceptance are five
   graph replays (``direct_verify.DirectVerify``, which then covers phases 1 and 2 too);
4. ``commit``  (that other path) the head's context K/V is written for every committed token,
   replayed from one CUDA graph per batch bucket (``step_graphs.BucketedGraphs``).

Prefill runs the target, then writes the head's context K/V for every prompt token,
which keeps radix-cache hits safe. No step reads device values on the host.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any, Callable, NamedTuple, Optional

import torch
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch, ForwardMode, compute_position
from sglang.srt.speculative.base_spec_worker import BaseSpecWorker
from sglang.srt.speculative.draft_worker_common import (
    build_draft_tp_worker,
    make_draft_block_spec_info,
    make_draft_input_v2,
)
from sglang.srt.speculative.eagle_utils import eagle_prepare_for_verify
from sglang.srt.speculative.eagle_worker_common import run_eagle_verify
from sglang.srt.speculative.spec_utils import record_stream_each, record_stream_for_v2_verify

from ..draft_head import check_head_matches_target
from ..head_config import DraftHeadConfig
from ..kernels.draft_inputs import draft_inputs_fused, draft_inputs_torch
from ..tree import DraftTree
from .budget_plan import LOG_PREFIX as BUDGET_LOG_PREFIX
from .budget_plan import verify_token_cap
from .direct_verify import DirectVerify, captured_sizes, direct_verify_mode, direct_verify_refusal
from .draft_kv import DraftContextWriter
from .greedy_accept import (
    GreedyAccept,
    buckets_within,
    greedy_accept_enabled,
    greedy_accept_supported,
    greedy_acceptable,
)
from .head_attention import install_head_tree_attention, resolve_head_attention, select_head_attention
from .hooks import assert_hooks_applied
from .layer_capture import capture_layers
from .lineage import EagleLineage
from .settings import TreeSettings
from .spec_algo import ALGORITHM_NAME
from .step_graphs import BucketedGraphs, DraftTopK, block_topk
from .step_profiler import Profilers, StepProfiler
from .step_tracer import StepTracer
from .sync_check import NoSyncCounter, SyncCounter
from .tree_builder import select_draft_inputs, select_verify_inputs
from .tree_verify_attention import resolve_verify_attention, select_verify_attention, windowed_verify_refusal
from .verify_input import fused_verify_input, sglang_verify_input
from .verify_metadata import ENV as VERIFY_METADATA_ENV
from .verify_metadata import refill_inside_graph, skip_unread_refill
from .verify_plans import VerifyPlan, VerifyPlans
from .vocab_topk import select_vocab_topk

logger = logging.getLogger(__name__)


class JetSpecWorker(BaseSpecWorker):
    """Drives the target and the draft head; the scheduler sees it as its model worker."""

    def __init__(self, server_args: Any, gpu_id: int, ps: Any, nccl_port: int, target_worker: Any) -> None:
        super().__init__()
        assert_hooks_applied()
        self.server_args = server_args
        self._target_worker = target_worker
        self.model_runner = target_worker.model_runner
        self.device = target_worker.device
        self.tree = TreeSettings(
            budget=server_args.speculative_num_draft_tokens,
            topk=server_args.speculative_eagle_topk,
            depth=server_args.speculative_num_steps,
        )
        self.verify_attention = select_verify_attention()
        self.head_attention = select_head_attention()
        # One plan per tree budget; the smaller budgets of large batches come with the graphs.
        self.plans = VerifyPlans(self.model_runner, self.tree,
                                 getattr(server_args, "cuda_graph_max_bs_decode", None) or 0, self.device)
        full = self.plans.full
        self.verify_inputs_name = select_verify_inputs(full.tree_builder_name)
        self.make_verify_input = fused_verify_input if self.verify_inputs_name == "fused" else sglang_verify_input
        self.draft_inputs_name = select_draft_inputs(full.tree_builder_name)
        self.make_draft_inputs = draft_inputs_fused if self.draft_inputs_name == "fused" else draft_inputs_torch
        self.vocab_topk_name = select_vocab_topk(self.tree.topk)
        self.draft_topk: Optional[DraftTopK] = None  # the top-K folded into the head's graphs, once captured
        self.commit_graphs: Optional[BucketedGraphs] = None
        self.head_metadata_unread: Callable[[], bool] = lambda: False  # no refill on the head's replay path
        self.war_fastpath_read_done_event: Optional[torch.cuda.Event] = None  # see ``war_fastpath_runner``
        self.profiler = Profilers(StepProfiler.from_env(), StepTracer.from_env())
        self.sync_counter = SyncCounter.from_env() or NoSyncCounter()

        bundle = build_draft_tp_worker(
            server_args=server_args,
            gpu_id=gpu_id,
            ps=replace(ps, pp_rank=0),
            nccl_port=nccl_port,
            target_model_config=self.model_runner.model_config,
            algo_label=ALGORITHM_NAME,
        )
        self._draft_worker = bundle.draft_worker
        self.draft_model_runner = bundle.draft_model_runner
        self.draft_model = bundle.draft_model

        head = DraftHeadConfig.from_hf_dict(self.draft_model_runner.model_config.hf_config.to_dict())
        check_head_matches_target(head, self.model_runner.model_config.hf_config)
        self.mask_token_id = head.mask_token_id
        self.head_causal = head.causal
        target_model = self.model_runner.model
        capture_layers(target_model, head.target_layer_ids)
        embed_tokens = target_model.get_input_embeddings()
        # The head shares the target's embeddings; a plain function (not a submodule)
        # so that CUDA-graph capture embeds inside the draft graph.
        self.draft_model.forward_embed = lambda input_ids: embed_tokens(input_ids)
        self.lm_head = target_model.lm_head
        max_position = self.model_runner.model_config.context_len + self.block_len  # as DFLASH sizes its RoPE table
        self.context_writer = DraftContextWriter(self.draft_model_runner, max_position)
        self.draft_spec_info = make_draft_block_spec_info(draft_token_num=self.block_len, device=self.device)
        if ps.tp_size > 1:
            from sglang.srt.distributed import get_tp_group

            self.tp_group = get_tp_group()
        else:
            self.tp_group = None
        logger.info(
            "JETSPEC ready: budget=%d topk=%d depth=%d lineage_topk=%d tree builder=%s draft inputs=%s "
            "vocab top-K=%s verify inputs=%s verify attention=%s head=%s (%d layers, taps %s, causal=%s)",
            self.tree.budget, self.tree.topk, self.tree.depth, full.lineage_topk, full.tree_builder_name,
            self.draft_inputs_name, self.vocab_topk_name, self.verify_inputs_name, self.verify_attention,
            type(self.draft_model).__name__, head.num_hidden_layers, list(head.target_layer_ids), head.causal,
        )

    # ------------------------------------------------------------ worker API
    @property
    def war_fastpath_runner(self) -> "JetSpecWorker":
        """Where the scheduler's WAR barrier looks for this step's read-done event (``war_fastpath_read_done_event``):
        here. A direct step records one after the target's verify graph, its last read of anything the scheduler
        writes (``req_to_token``), so the scheduler's work for the next step overlaps acceptance; every other step
        leaves None, and the scheduler then waits for the whole step, as it did for the target's runner."""
        return self

    @property
    def block_len(self) -> int:
        """Draft block width: the bonus plus one MASK per tree depth."""
        return self.tree.depth + 1

    @property
    def spec_v2_attn_backends(self) -> tuple:
        return tuple(dict.fromkeys([self.model_runner.attn_backend, *self.plans.attn_backends(),
                                    self.draft_model_runner.attn_backend]))

    def alloc_memory_pool(self, memory_pool_config=None, req_to_token_pool=None, token_to_kv_pool_allocator=None):
        # The head's KV pool is its own buffer, addressed by the target's slot indices.
        self._draft_worker.alloc_memory_pool(
            memory_pool_config=memory_pool_config,
            req_to_token_pool=req_to_token_pool,
            token_to_kv_pool_allocator=token_to_kv_pool_allocator,
        )

    def init_attention_backends(self) -> None:
        self._draft_worker.init_attention_backends()
        head_metadata = self._init_head_attention()
        # The target's backend exists now, its graphs come next.
        backend = self.model_runner.attn_backend
        self.verify_attention = resolve_verify_attention(self.verify_attention, backend)
        refusal = windowed_verify_refusal(self.model_runner.model, backend, self.verify_attention,
                                          self.model_runner.model_config.dtype, self.tree.topk)
        if refusal:
            raise ValueError(f"JETSPEC: {refusal}")
        self.plans.adopt_target_backend(tree_attention=self.verify_attention == "tree")
        logger.info("JETSPEC verify attention: %s; head attention: %s; attention metadata %s, skipped by the "
                    "target's verify graphs: %s (%s)", self.verify_attention, self.head_attention, head_metadata,
                    self.plans.full.refill_skipped, VERIFY_METADATA_ENV)

    def _init_head_attention(self) -> str:
        """The head's block attention (``head_attention``) and where its backend's verify metadata is refilled;
        returns that place, for the startup log."""
        backend = self.draft_model_runner.attn_backend
        self.head_attention, warning = resolve_head_attention(self.head_attention, self.head_causal, backend)
        if warning:
            logger.warning("JETSPEC: %s", warning)
        if self.head_attention == "tree":
            rows = max(self.model_runner.req_to_token_pool.size, self.plans.graph_max_bs)
            forward = install_head_tree_attention(backend, rows, self.block_len, self.device)
            if skip_unread_refill(backend, lambda: forward.deferred_verify_layers):
                self.head_metadata_unread = lambda: forward.deferred_verify_layers == 0
                return "of the head's graphs skipped while its layers run the tree kernel"
            return "of the head's graphs refilled before each replay"
        in_graph = refill_inside_graph(backend)
        self.head_metadata_unread = lambda: in_graph
        return f"refilled inside the head's graphs: {in_graph}"

    def init_cuda_graphs(self) -> None:
        from sglang.srt.model_executor.cuda_graph_config import Backend
        from sglang.srt.runtime_context import get_exec

        decode_graphs = get_exec().graph.cuda_graph_config.decode
        capture = decode_graphs.backend != Backend.DISABLED
        if capture and self.tp_group is None:  # folded before capture, as SGLang's DFLASH folds its sampler
            self.draft_topk = DraftTopK(self.lm_head, self.tree.depth, self.tree.topk, max(decode_graphs.bs),
                                        self.device, fused=self.vocab_topk_name == "fused")
            self.draft_model_runner.capture_tail_hooks.append(self.draft_topk.capture_hook)
        self._draft_worker.init_cuda_graphs(capture_decode_cuda_graph=capture)
        if capture:
            self.commit_graphs = BucketedGraphs(self.write_committed, decode_graphs.bs, self.committed_static_inputs,
                                                pad_rows=_commit_nothing_past)
            self.commit_graphs.capture()
        cap = verify_token_cap(self.model_runner.model_config.hidden_size)
        max_requests = self.server_args.max_running_requests or self.model_runner.req_to_token_pool.size
        layout = self.plans.build(list(decode_graphs.bs) if capture else [], max_requests, cap)
        logger.info("%s%s (JETSPEC_VERIFY_TOKENS=%d)", BUDGET_LOG_PREFIX, layout, cap)
        if capture and self.tp_group is None and greedy_accept_supported(self.model_runner) and greedy_accept_enabled():
            refusals = []
            for plan in self.plans:
                self.capture_greedy_accept(plan)
                refusals.append(self.capture_direct_verify(plan))
            if direct_verify_mode() == "required" and None not in refusals:
                raise RuntimeError(f"JETSPEC_DIRECT_VERIFY=required, but no verify budget can take it: {refusals}")

    def capture_greedy_accept(self, plan: VerifyPlan) -> None:
        features, dtype = self.draft_model.fc.in_features, self.model_runner.model_config.dtype
        buckets = buckets_within(plan.graph_batch_sizes, plan.budget, features, dtype)
        if buckets:
            plan.greedy_accept = GreedyAccept(
                plan.budget, self.block_len, features, dtype, buckets, self.model_runner.token_to_kv_pool_allocator,
                self.write_committed, self.device,
            )  # fmt: skip
            plan.greedy_accept.capture()
        logger.info("JETSPEC graphed greedy acceptance at budget %d for batch sizes %s (others use SGLang's "
                    "verify path)", plan.budget, buckets)

    def capture_direct_verify(self, plan: VerifyPlan) -> Optional[str]:
        """``DirectVerify`` for ``plan``'s greedy batch sizes where SGLang's replay allows it; returns why not
        (logged either way)."""
        refusal = "JETSPEC_DIRECT_VERIFY=0" if direct_verify_mode() == "0" else None
        if refusal is None and (plan.greedy_accept is None or self.draft_topk is None):
            refusal = "no graphed head top-K and greedy acceptance"
        fused = (plan.tree_builder_name, self.verify_inputs_name, self.draft_inputs_name) == ("fused",) * 3
        if refusal is None and not fused:
            refusal = "needs the fused tree builder, verify inputs and draft inputs"
        metadata_unread = plan.refill_skipped and plan.tree_forward.deferred_verify_layers == 0  # graphs captured
        refusal = refusal or direct_verify_refusal(self.model_runner, plan.graph_runner, metadata_unread)
        head_runner = self.draft_model_runner.decode_cuda_graph_runner
        head_refusal = None if refusal else direct_verify_refusal(self.draft_model_runner, head_runner,
                                                                  self.head_metadata_unread())
        refusal = refusal or (head_refusal and f"the head's graphs: {head_refusal}")
        if refusal is None:
            graphed = set(plan.graph_batch_sizes) & captured_sizes(plan.graph_runner) & captured_sizes(head_runner)
            buckets = [bs for bs in plan.greedy_accept.graphs.buckets if bs in graphed]
            refusal = None if buckets else "no batch size with a head graph, a verify graph and graphed acceptance"
        if refusal is None:
            plan.direct_verify = DirectVerify(
                plan.build_tree, plan.tree_mask.write, plan.graph_runner, head_runner, plan.greedy_accept,
                self.draft_topk, self.model_runner.req_to_token_pool.req_to_token, self.mask_token_id, buckets,
                self.device,
            )  # fmt: skip
            plan.direct_verify.capture()
        logger.info("JETSPEC direct greedy verify at budget %d: %s", plan.budget,
                    f"batch sizes {plan.direct_verify.buckets}" if refusal is None else f"off ({refusal})")
        return refusal

    def clear_cache_pool(self) -> None:
        # Slots and radix cache belong to the target's allocator, which the scheduler flushes.
        return None

    # ------------------------------------------------------------------ step
    def forward_batch_generation(
        self, batch: Any, on_publish: Optional[Callable] = None, grammar_barrier: Optional[Callable] = None
    ) -> GenerationBatchResult:
        if batch.forward_mode.is_extend() or batch.is_extend_in_batch:
            return self.prefill(batch, on_publish)
        if batch.forward_mode.is_idle():
            return self.idle(on_publish)
        with self.sync_counter.step():
            return self.decode(batch, on_publish, grammar_barrier)

    def decode(self, batch: Any, on_publish: Optional[Callable], grammar_barrier: Optional[Callable]
               ) -> GenerationBatchResult:
        """One speculative step: draft, build the tree, verify it, commit the accepted tokens."""
        draft_input = batch.spec_info
        # Under overlap scheduling these come from the schedule stream (FutureMap, batch preparation); keep them
        # alive until this step's kernels have read them (SGLang's verify path records them again, the direct one not).
        stream = torch.cuda.current_stream()
        record_stream_each((batch.seq_lens, batch.req_pool_indices, draft_input.bonus_tokens), stream)
        self.profiler.mark()
        self.war_fastpath_read_done_event = None
        bs = draft_input.bonus_tokens.shape[0]
        plan = self.plans.for_batch(bs)
        direct = plan.direct_verify
        if direct is not None and direct.fits(bs) and greedy_acceptable(batch):
            result, committed = self.decode_direct(direct, batch, draft_input.bonus_tokens), True
        else:
            draft = self.draft(batch, draft_input.bonus_tokens)
            self.profiler.mark()
            roots = draft_input.bonus_tokens.to(torch.int64)
            tree, lineage = plan.build_tree(draft.topk_ids, draft.topk_logprobs, roots)
            self.profiler.mark()
            result, committed = self.verify(batch, draft_input, plan, tree, lineage, grammar_barrier, draft.slots,
                                            draft.positions)
        self.profiler.mark()
        if on_publish is not None:
            on_publish(result.new_seq_lens)
        if not committed:
            self.commit(result, plan.budget, draft.slots, draft.positions)
        self.profiler.mark()
        self.profiler.end_step(bs)
        return result

    def prefill(self, batch: Any, on_publish: Optional[Callable]) -> GenerationBatchResult:
        """Target prefill with tap capture, then the head's context K/V for every prompt token."""
        self.plans.activate(self.plans.full)  # SGLang's own backend, which its prefill graphs captured
        result = self.target_worker.forward_batch_generation(batch, capture_hidden_mode=CaptureHiddenMode.FULL)
        result.new_seq_lens = batch.seq_lens
        if on_publish is not None:
            on_publish(result.new_seq_lens)
        taps = result.logits_output.hidden_states
        if taps is None:
            raise RuntimeError("the target returned no tap features at prefill; its layers-to-capture were not set")
        prefix_lens = torch.tensor(batch.prefix_lens, dtype=torch.int32, device=self.device)
        extend_lens = torch.tensor(batch.extend_lens, dtype=torch.int32, device=self.device)
        positions, _ = compute_position(
            self.model_runner.server_args.attention_backend, prefix_lens, extend_lens, int(sum(batch.extend_lens))
        )
        self.context_writer.write(taps, positions, batch.out_cache_loc)
        result.logits_output.hidden_states = None  # keep the taps off the host copy
        result.next_draft_input = make_draft_input_v2(bonus_tokens=result.next_token_ids, new_seq_lens=batch.seq_lens)
        return result

    def idle(self, on_publish: Optional[Callable]) -> GenerationBatchResult:
        empty = torch.empty((0,), dtype=torch.int64, device=self.device)
        next_input = make_draft_input_v2(bonus_tokens=empty, new_seq_lens=empty)
        if on_publish is not None:
            on_publish(next_input.new_seq_lens)
        return GenerationBatchResult(
            logits_output=None,
            next_token_ids=empty,
            accept_lens=torch.empty((0,), dtype=torch.int32, device=self.device),
            next_draft_input=next_input,
            can_run_cuda_graph=False,
            speculative_num_draft_tokens=self.tree.budget,
            new_seq_lens=empty,
        )

    def draft(self, batch: Any, bonus: torch.Tensor) -> "Draft":
        """One head pass over ``[bonus, MASK x D]`` per request."""
        bs = bonus.shape[0]
        seq_lens = batch.seq_lens
        block_ids, slots, positions = self.make_draft_inputs(
            seq_lens, batch.req_pool_indices, self.model_runner.req_to_token_pool.req_to_token, bonus,
            self.mask_token_id, self.block_len,
        )  # fmt: skip
        seq_lens_cpu = None if batch.seq_lens_cpu is None else batch.seq_lens_cpu + self.block_len
        forward_batch = ForwardBatch(
            forward_mode=ForwardMode.TARGET_VERIFY,
            batch_size=bs,
            input_ids=block_ids.view(-1),
            req_pool_indices=batch.req_pool_indices,
            seq_lens=seq_lens,
            out_cache_loc=slots.view(-1),
            seq_lens_sum=None if seq_lens_cpu is None else int(seq_lens_cpu.sum()),
            seq_lens_cpu=seq_lens_cpu,
            positions=positions.view(-1),
            spec_algorithm=self.draft_model_runner.spec_algorithm,
            spec_info=self.draft_spec_info,
            capture_hidden_mode=CaptureHiddenMode.NULL,
        )
        self.profiler.split("draft_inputs")
        with torch.inference_mode():
            draft_out = self.draft_model_runner.forward(forward_batch)
        self.profiler.split("draft_forward")
        from_graph = self.draft_topk is not None and draft_out.can_run_graph
        if from_graph:
            ids, logprobs = self.draft_topk.result(bs)
        else:
            ids, logprobs = block_topk(draft_out.logits_output.hidden_states, self.lm_head, self.tree.depth,
                                       self.tree.topk, self.tp_group, self.vocab_topk_name == "fused")
        return Draft(ids, logprobs, slots, positions, from_graph)

    def verify(self, batch: Any, draft_input: Any, plan: VerifyPlan, tree: DraftTree, lineage: EagleLineage,
               grammar_barrier: Optional[Callable], block_slots: torch.Tensor, block_positions: torch.Tensor
               ) -> tuple[GenerationBatchResult, bool]:
        """Score the tree with the target and accept a path; also says whether the head's K/V of the
        accepted path is written already (the graphed greedy path does that too)."""
        if plan.tree_mask is not None:
            plan.tree_mask.write(tree.parents, tree.max_depth)
        batch.spec_info = self.make_verify_input(batch, draft_input, tree, lineage, target_worker=self.target_worker,
                                                 budget=plan.budget, device=self.device)
        self.profiler.split("verify_inputs")
        accept = plan.greedy_accept
        if accept is not None and accept.fits(len(tree.tokens)) and greedy_acceptable(batch):
            return self.verify_greedy(batch, accept, block_slots, block_positions), True
        return run_eagle_verify(
            batch,
            target_worker=self.target_worker,
            req_to_token_pool=self.model_runner.req_to_token_pool,
            token_to_kv_pool_allocator=self.model_runner.token_to_kv_pool_allocator,
            plan_stream=None,
            plan_stream_ctx=contextlib.nullcontext(),
            topk=lineage.topk,
            num_steps=lineage.depth,
            num_draft_tokens=plan.budget,
            device=self.device,
            metadata_ready_pre_pad=False,
            finalize_tree_path=True,
            grammar_barrier=grammar_barrier,
        ), False

    def verify_greedy(self, batch: Any, accept: GreedyAccept, block_slots: torch.Tensor,
                      block_positions: torch.Tensor) -> GenerationBatchResult:
        """The target's verify forward through SGLang, then ``GreedyAccept``'s one replay."""
        verify_input = batch.spec_info
        stream = torch.cuda.current_stream()
        record_stream_for_v2_verify(batch, verify_input, stream)  # the batch's tensors get rebound below
        forward_batch, can_run_graph = eagle_prepare_for_verify(
            verify_input, self.model_runner.req_to_token_pool, batch, self.target_worker
        )
        record_stream_each((batch.input_ids, batch.out_cache_loc), stream)
        self.profiler.split("verify_prepare")
        out = self.target_worker.forward_batch_generation(batch=None, forward_batch=forward_batch, is_verify=True)
        self.profiler.split("target_forward")
        logits_output = out.logits_output
        predict, accept_lens, bonus, new_seq_lens = accept(
            logits_output.next_token_logits, logits_output.hidden_states, verify_input, batch.seq_lens,
            batch.out_cache_loc, block_positions, block_slots,
        )  # fmt: skip
        self.profiler.split("accept")
        logits_output.hidden_states = None  # keep the taps off the host copy
        return GenerationBatchResult(
            logits_output=logits_output,
            next_token_ids=predict,
            accept_lens=accept_lens,
            new_seq_lens=new_seq_lens,
            next_draft_input=make_draft_input_v2(bonus_tokens=bonus, new_seq_lens=new_seq_lens),
            can_run_cuda_graph=can_run_graph,
            speculative_num_draft_tokens=accept.budget,
            routed_experts_output=out.routed_experts_output,
            indexer_topk_output=out.indexer_topk_output,
            extra_keep_alive_refs=[forward_batch],  # the scheduler holds the verify tensors across overlap
        )

    def decode_direct(self, direct: DirectVerify, batch: Any, bonus: torch.Tensor) -> GenerationBatchResult:
        """An all-greedy step as ``DirectVerify``'s five replays (draft, tree and verify phases)."""
        bs = bonus.shape[0]
        direct.load(batch.seq_lens, batch.req_pool_indices, bonus)
        direct.replay_draft_inputs(bs)
        self.profiler.split("draft_inputs")
        direct.replay_head(bs)
        self.profiler.split("draft_forward")
        self.profiler.mark()
        direct.replay_prepare(bs)
        self.profiler.mark()
        direct.replay_target(bs)
        self.war_fastpath_read_done_event = torch.cuda.Event()
        self.war_fastpath_read_done_event.record()
        self.profiler.split("target_forward")
        logits, predict, accept_lens, next_bonus, new_seq_lens = direct.replay_accept(bs)
        self.profiler.split("accept")
        return GenerationBatchResult(
            logits_output=LogitsProcessorOutput(next_token_logits=logits, hidden_states=None),
            next_token_ids=predict,
            accept_lens=accept_lens,
            new_seq_lens=new_seq_lens,
            next_draft_input=make_draft_input_v2(bonus_tokens=next_bonus, new_seq_lens=new_seq_lens),
            can_run_cuda_graph=True,
            speculative_num_draft_tokens=direct.budget,
        )

    def commit(self, result: GenerationBatchResult, budget: int, block_slots: torch.Tensor,
               block_positions: torch.Tensor) -> None:
        """Write the head's context K/V for the committed tokens (root plus accepted nodes).

        After verify, the accepted path's taps sit at the front of each request's rows
        and its target KV at the block's first slots, so row ``j`` belongs at
        ``block_slots[:, j]`` / position ``seq_len + j`` for ``j < accept_lens``.
        """
        bs = block_slots.shape[0]
        taps = result.logits_output.hidden_states.view(bs, budget, -1)[:, : self.block_len]
        write = self.commit_graphs or self.write_committed
        write(taps, block_positions, block_slots, result.accept_lens.to(torch.int32))
        result.logits_output.hidden_states = None
        result.next_draft_input = make_draft_input_v2(
            bonus_tokens=result.next_draft_input.bonus_tokens, new_seq_lens=result.new_seq_lens
        )

    def write_committed(self, taps: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                        commit_lens: torch.Tensor) -> None:
        """The head's context K/V of rows ``j < commit_lens[b]`` of ``taps: [bs, W, F]`` at ``slots: [bs, W]``."""
        self.context_writer.write(
            taps.reshape(-1, taps.shape[-1]),
            positions.reshape(-1),
            slots.reshape(-1),
            cache_loc_2d=slots,
            commit_lens=commit_lens,
        )

    def committed_static_inputs(self, bs: int) -> list[torch.Tensor]:
        """``write_committed``'s inputs for a CUDA graph of ``bs`` requests."""
        width, features = self.block_len, self.draft_model.fc.in_features
        dtype = self.model_runner.model_config.dtype
        return [
            torch.zeros((bs, width, features), dtype=dtype, device=self.device),
            torch.zeros((bs, width), dtype=torch.int64, device=self.device),
            torch.zeros((bs, width), dtype=torch.int64, device=self.device),
            torch.zeros((bs,), dtype=torch.int32, device=self.device),
        ]


class Draft(NamedTuple):
    """What the head's pass gives a step: ``topk_ids, topk_logprobs: [bs, D, K]``, the block's
    ``slots, positions: [bs, D + 1]`` (where the accepted path's context K/V goes afterwards), and
    whether the top-K came from the head's CUDA graph (``DraftTopK``'s buffers)."""

    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor
    slots: torch.Tensor
    positions: torch.Tensor
    from_graph: bool


def _commit_nothing_past(static: list[torch.Tensor], bs: int) -> None:
    """Padding rows of a commit graph: commit length 0, so they write nothing."""
    static[3][bs:].zero_()
