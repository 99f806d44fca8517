"""CUDA graphs for the small computations a JETSPEC step runs around SGLang's forwards.

SGLang graphs the target's verify forward and the head's block forward. Around them the worker
ran many small eager launches: the head's vocabulary top-K (matmul, log-sum-exp, top-K: 13
launches a step on the host, about 35 kernels on the GPU; ``kernels.vocab_topk`` makes it two)
and the draft-KV write of the committed tokens (``fc``, then K/V projection, RoPE and store per
head layer: 27 launches and about 150 host-side torch ops for a 4-layer head). On an H200 at bs 1
with SmolLM2 that host work outweighed its GPU time (2026-11-28 host trace,
``benchmark/results/step_breakdown_h200/``).

- ``DraftTopK`` folds the top-K into the head's own CUDA graph through SGLang's
  ``ModelRunner.capture_tail_hooks``, as SGLang's DFLASH folds its greedy draft sampler.
- ``BucketedGraphs`` captures the commit once per batch-size bucket and replays it.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from .vocab_topk import vocab_parallel_topk


def block_topk(hidden: Tensor, lm_head: Any, depth: int, topk: int, tp_group: Optional[Any] = None,
               fused: bool = False) -> tuple[Tensor, Tensor]:
    """Per-depth top-K ids and log-probs ``[bs, D, K]`` of the head's block hidden states ``[bs * (D + 1), H]``.

    Row 0 of each block is the bonus token's, which predicts nothing. ``fused``: ``kernels.vocab_topk``.
    """
    bs = hidden.shape[0] // (depth + 1)
    per_depth = hidden.view(bs, depth + 1, -1)[:, 1:].reshape(bs * depth, -1)
    ids, logprobs = vocab_parallel_topk(per_depth, lm_head, topk, tp_group, fused)
    return ids.view(bs, depth, topk), logprobs.view(bs, depth, topk)


class DraftTopK:
    """``block_topk`` inside the head's CUDA graph, into static buffers.

    ``capture_hook`` is the head runner's capture tail hook; after a replay ``result(bs)``
    views this step's ``[bs, D, K]``. The next replay overwrites them: use them within the step.
    """

    def __init__(self, lm_head: Any, depth: int, topk: int, max_bs: int, device: torch.device | str,
                 tp_group: Optional[Any] = None, fused: bool = False) -> None:
        self.lm_head, self.depth, self.topk, self.tp_group, self.fused = lm_head, depth, topk, tp_group, fused
        self.ids = torch.zeros((max_bs, depth, topk), dtype=torch.int64, device=device)
        self.logprobs = torch.zeros((max_bs, depth, topk), dtype=torch.float32, device=device)

    def capture_hook(self, runner: Any, out: Any, forward_batch: Any, num_tokens: int) -> None:
        """``ModelRunner.capture_tail_hooks`` entry: runs at the end of each captured head forward."""
        if getattr(out, "hidden_states", None) is None:
            raise RuntimeError("the draft head's forward returned no hidden states to take the top-K of")
        ids, logprobs = block_topk(out.hidden_states, self.lm_head, self.depth, self.topk, self.tp_group, self.fused)
        bs = ids.shape[0]
        self.ids[:bs].copy_(ids)
        self.logprobs[:bs].copy_(logprobs)

    def result(self, bs: int) -> tuple[Tensor, Tensor]:
        return self.ids[:bs], self.logprobs[:bs]


class BucketedGraphs:
    """``fn(*inputs) -> None`` (it writes its results in place) replayed from one CUDA graph per bucket.

    Every input has the batch as its first dimension. A call copies its inputs into the bucket's
    static buffers (one ``torch._foreach_copy_``, as SGLang's graph runners load theirs: on a small
    target one host op per input was a measurable share of the step), lets ``pad_rows(static, bs)``
    make the rows past the batch harmless, and replays. Past the largest bucket it runs ``fn`` eagerly.
    """

    def __init__(self, fn: Callable[..., None], buckets: Sequence[int], static_inputs: Callable[[int], list[Tensor]],
                 pad_rows: Callable[[list[Tensor], int], None]) -> None:
        self.fn = fn
        self.buckets = sorted(set(buckets))
        self.static_inputs = static_inputs
        self.pad_rows = pad_rows
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[Tensor]]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self._rows: dict[int, list[Tensor]] = {}  # bs -> the first bs rows of its bucket's static inputs

    def capture(self) -> None:
        """Capture every bucket, largest first (smaller ones reuse its memory)."""
        for bucket in reversed(self.buckets):
            static = self.static_inputs(bucket)
            self.pad_rows(static, 0)
            graph, _ = capture_graph(lambda: self.fn(*static), self.pool)
            self.graphs[bucket] = (graph, static)

    def bucket_for(self, bs: int) -> Optional[int]:
        """The smallest captured bucket holding ``bs`` rows, or None past the largest."""
        i = bisect.bisect_left(self.buckets, bs)
        return self.buckets[i] if i < len(self.buckets) and self.buckets[i] in self.graphs else None

    def __call__(self, *inputs: Tensor) -> None:
        bs = inputs[0].shape[0]
        bucket = self.bucket_for(bs)
        if bucket is None:
            self.fn(*inputs)
            return
        graph, static = self.graphs[bucket]
        rows = self._rows.get(bs)
        if rows is None:
            rows = self._rows[bs] = [buffer[:bs] for buffer in static]
        # A caller may write an input in place (a launch saved); that one is not copied.
        moves = [(row, value) for row, value in zip(rows, inputs) if not _same_memory(row, value)]
        if moves:
            torch._foreach_copy_([row for row, _ in moves], [value for _, value in moves])
        if bs < bucket:
            self.pad_rows(static, bs)
        graph.replay()


def capture_graph(body: Callable[[], Any], pool: Any) -> tuple[torch.cuda.CUDAGraph, Any]:
    """A CUDA graph of ``body`` in memory ``pool``, after one eager warm-up on a side stream (lazy
    initialisations stay out of the graph), and what the captured call returned (its static outputs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        result = body()
    return graph, result


def _same_memory(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` are the same elements (one view of one buffer), so copying would be a no-op."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
