"""GPU time of one call, for the kernel benchmarks beside this file."""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def event_time_us(fn: Callable[[], object], iters: int, warmup: int, flush: torch.Tensor | None = None) -> float:
    """Median GPU microseconds of one call from CUDA events around it, L2 flushed before each unless ``flush`` is
    None (the flush is outside the events). A call shorter than its launch times the host, not the GPU."""
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        if flush is not None:
            flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return 1000.0 * statistics.median(start.elapsed_time(end) for start, end in events)


def graph_time_us(fn: Callable[[], object], iters: int, warmup: int, calls: int = 20) -> float:
    """Median GPU microseconds of one call inside a CUDA graph of ``calls`` back-to-back calls, as serving's graphs
    replay kernels: no launch overhead, no host gap between calls."""
    for _ in range(warmup):
        fn()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        for _ in range(calls):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    return event_time_us(graph.replay, iters, warmup) / calls
