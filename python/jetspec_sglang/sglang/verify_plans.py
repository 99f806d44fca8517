"""The verify plans of a JETSPEC worker: one per tree budget, and which one a batch size uses.

SGLang captures the target's verify graphs for one width, ``--speculative-num-draft-tokens``, and its
Triton backend sizes its verify buffers by that width when it is built. A smaller budget for large
batches (``budget_plan``) therefore needs its own backend and graph runner. They are built the way
SGLang 0.5.17's adaptive speculative decoding builds one per configuration
(``eagle_worker_v2.EAGLEWorkerV2.build_adaptive_runtime_state``): a fresh backend with its own
workspace, and a ``DecodeCudaGraphRunner`` of that width, captured only for the batch sizes that use
the budget. Each step swaps its plan's pair into the target's ``ModelRunner``, as SGLang's
``apply_runtime_state`` does. The KV reservation keeps following the full budget, so every plan fits it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch

from .budget_plan import budgets_by_batch, describe
from .direct_verify import DirectVerify
from .greedy_accept import GreedyAccept
from .lineage import lineage_topk
from .settings import TreeSettings
from .tree_builder import TreeBuilder, select_tree_builder
from .tree_verify_attention import TreeMaskBuffer, install_tree_verify_attention
from .verify_metadata import skip_unread_refill


@dataclass
class VerifyPlan:
    """Everything a verify step of one tree budget uses: its tree builder, the tree kernel's mask
    buffer (tree attention only), the target's attention backend and graph runner for that width,
    graphed greedy acceptance for the batch sizes it serves, and the direct greedy verify of those
    sizes where SGLang's replay allows it."""

    budget: int
    lineage_topk: int
    tree_builder_name: str
    build_tree: TreeBuilder
    tree_mask: Optional[TreeMaskBuffer] = None
    attn_backend: Any = None
    graph_runner: Any = None
    graph_batch_sizes: list[int] = field(default_factory=list)
    greedy_accept: Optional[GreedyAccept] = None
    direct_verify: Optional[DirectVerify] = None
    refill_skipped: bool = False  # graph replays skip SGLang's verify metadata (verify_metadata.skip_unread_refill)
    tree_forward: Any = None  # the backend's TreeVerifyForwardExtend (tree attention only)


class VerifyPlans:
    """The plans by budget. The full budget's plan uses SGLang's own target backend and graphs.

    Parameters:
        model_runner: the target's.
        tree: the server's tree settings (``budget`` is the full budget).
        graph_max_bs: the largest decode graph (a tree-mask buffer holds that many rows, or the request
            pool's size where larger).
    """

    def __init__(self, model_runner: Any, tree: TreeSettings, graph_max_bs: int, device: torch.device | str) -> None:
        self.model_runner, self.tree, self.device, self.graph_max_bs = model_runner, tree, device, graph_max_bs
        self.tree_attention = False  # decided with the target's backend (adopt_target_backend)
        self.full = self._new_plan(tree.budget)
        self.by_budget: dict[int, VerifyPlan] = {tree.budget: self.full}
        self.budget_of_batch: dict[int, int] = {}

    def __iter__(self) -> Iterator[VerifyPlan]:
        return iter(self.by_budget.values())

    def adopt_target_backend(self, tree_attention: bool) -> None:
        """The full budget's plan takes SGLang's target backend (call once it exists, before its graphs);
        ``tree_attention``: whether every plan's verify attention runs through our tree kernel."""
        self.tree_attention = tree_attention
        self.full.attn_backend = self.model_runner.attn_backend
        self._prepare_backend(self.full, self.full.attn_backend)

    def build(self, graph_batch_sizes: list[int], max_requests: int, cap: int) -> str:
        """A plan for every budget some batch size up to ``max_requests`` uses, each smaller one with its own
        target backend and verify graphs for its share of ``graph_batch_sizes``; returns the layout in words."""
        self.full.graph_runner = self.model_runner.decode_cuda_graph_runner
        layout = budgets_by_batch([*range(1, max_requests + 1), *graph_batch_sizes], self.tree.budget,
                                  self.tree.depth, cap)
        for budget, sizes in layout.items():
            self.budget_of_batch.update(dict.fromkeys(sizes, budget))
            graphed = sorted(set(sizes) & set(graph_batch_sizes))
            if budget not in self.by_budget:
                plan = self.by_budget[budget] = self._new_plan(budget)
                plan.attn_backend, plan.graph_runner = self._build_target_runner(plan, graphed)
            self.by_budget[budget].graph_batch_sizes = graphed
            self._compile_verify_prep(budget)
        return describe(layout)

    def for_batch(self, bs: int) -> VerifyPlan:
        """The plan of a verify batch of ``bs`` requests, made the target's active backend and graphs."""
        budget = self.budget_of_batch.get(bs)
        plan = self.by_budget[budget if budget is not None else min(self.by_budget)]  # past max_requests: smallest
        self.activate(plan)
        return plan

    def activate(self, plan: VerifyPlan) -> None:
        runner = self.model_runner
        if runner.attn_backend is not plan.attn_backend:
            runner.attn_backend = plan.attn_backend
            runner.decode_cuda_graph_runner = plan.graph_runner

    def attn_backends(self) -> list[Any]:
        return [plan.attn_backend for plan in self if plan.attn_backend is not None]

    def _new_plan(self, budget: int) -> VerifyPlan:
        encoding_topk = lineage_topk(budget, self.tree.depth, self.tree.topk)
        builder_name, build = select_tree_builder(budget, encoding_topk)
        return VerifyPlan(budget=budget, lineage_topk=encoding_topk, tree_builder_name=builder_name, build_tree=build)

    def _prepare_backend(self, plan: VerifyPlan, backend: Any) -> None:
        """Tree attention (when asked for) on ``backend``, reading ``plan``'s own ancestor masks; its graph
        replays then skip the verify metadata only SGLang's attention reads."""
        if self.tree_attention:
            rows = max(self.model_runner.req_to_token_pool.size, self.graph_max_bs)
            plan.tree_mask = TreeMaskBuffer(rows, plan.budget, self.device)
            forward_extend = plan.tree_forward = install_tree_verify_attention(backend, plan.tree_mask)
            plan.refill_skipped = skip_unread_refill(backend, lambda: forward_extend.deferred_verify_layers)
            # The mask kernel compiles per mask width on first use; compile it now, writing row 0 with a
            # root-only tree (every other slot padding, which sees the root). Rows past a batch stay lone roots.
            plan.tree_mask.write(torch.full((1, plan.budget), -1, dtype=torch.int64, device=self.device),
                                 self.tree.depth)

    def _compile_verify_prep(self, budget: int) -> None:
        """SGLang's verify preparation gathers the tree's KV slots with a Triton kernel whose draft-token count is a
        compile-time constant (``assign_extend_cache_locs_uniform``), so each budget compiles it on first use, in
        the middle of serving. Compile it now, on one request's row 0 (read only; the result is dropped)."""
        from sglang.kernels.ops.speculative.cache_locs import assign_extend_cache_locs_uniform_func

        zero = torch.zeros((1,), dtype=torch.int64, device=self.device)
        req_to_token = self.model_runner.req_to_token_pool.req_to_token
        assign_extend_cache_locs_uniform_func(req_pool_indices=zero, req_to_token=req_to_token, start_offset=zero,
                                              batch_size=1, draft_token_num=budget, device=self.device)

    def _build_target_runner(self, plan: VerifyPlan, batch_sizes: list[int]) -> tuple[Any, Optional[Any]]:
        """A target attention backend for ``plan``'s width and, when ``batch_sizes`` is not empty, a
        ``DecodeCudaGraphRunner`` captured for those batch sizes over it."""
        from sglang.srt.model_executor.runner import DecodeCudaGraphRunner

        runner = self.model_runner
        with _capture_width(runner, plan.budget, batch_sizes):
            saved_workspace = runner.init_new_workspace
            try:
                backend = runner._get_attention_backend(init_new_workspace=True)
            finally:
                runner.init_new_workspace = saved_workspace
            self._prepare_backend(plan, backend)
            graphs = None
            if batch_sizes:
                graphs = DecodeCudaGraphRunner(runner, attn_backend=backend, speculative_num_steps=self.tree.depth,
                                               speculative_num_draft_tokens=plan.budget)
        return backend, graphs


@contextlib.contextmanager
def _capture_width(model_runner: Any, budget: int, batch_sizes: list[int]) -> Iterator[None]:
    """SGLang's global draft-token count and decode graph sizes, as ``budget`` and ``batch_sizes`` while a
    backend and its graphs are built, restored afterwards."""
    from sglang.srt.runtime_context import get_context, get_spec

    decode = model_runner.server_args.cuda_graph_config.decode
    saved_budget, saved_sizes = get_spec().speculative_num_draft_tokens, decode.bs
    get_context().override("jetspec.budget_plan", speculative_num_draft_tokens=budget)
    if batch_sizes:
        decode.bs = list(batch_sizes)
    try:
        yield
    finally:
        decode.bs = saved_sizes
        get_context().override("jetspec.budget_plan", speculative_num_draft_tokens=saved_budget)
